"""Context windows: coverage, averaging weights and the cyclic shift (property tests)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from vivid.windows import _inner_range, average_windows, context_windows, coverage

sizes = st.integers(1, 24).flatmap(
    lambda window: st.tuples(st.integers(1, 120), st.just(window), st.integers(0, window - 1))
)
#: Videos longer than the window (the cases where windows and their shift exist at all).
long_sizes = st.integers(1, 24).flatmap(
    lambda window: st.tuples(st.integers(window + 1, 120), st.just(window), st.integers(0, window - 1))
)
overlapping = st.integers(2, 24).flatmap(
    lambda window: st.tuples(st.integers(window + 1, 120), st.just(window), st.integers(1, window - 1))
)


@settings(max_examples=300, deadline=None)
@given(sizes=sizes, step=st.integers(0, 500), cyclic=st.booleans(), wrap=st.booleans())
def test_every_frame_covered_at_every_step(sizes, step, cyclic, wrap):
    n, window, overlap = sizes
    windows = context_windows(n, window, overlap, step=step, cyclic=cyclic, wrap=wrap)
    assert set().union(*map(set, windows)) == set(range(n))
    for w in windows:
        assert len(w) == min(window, n) and len(set(w)) == len(w)  # no frame twice in a window
        assert all(0 <= i < n for i in w)
        if not (cyclic and wrap):  # frames in order, never the end of the video next to its start
            assert w == list(range(w[0], w[0] + len(w)))
    if n > window and not (cyclic and wrap):  # consecutive windows overlap by `overlap` frames at least
        starts = sorted(w[0] for w in windows)
        assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))


def ring_count(n: int, window: int, overlap: int) -> int:
    """Windows the wrapped schedule needs: the fewest that cover a circle of n frames."""
    return -(-n // (window - overlap))


@settings(max_examples=500, deadline=None)
@given(sizes=long_sizes, step=st.integers(0, 500), cyclic=st.booleans(), wrap=st.booleans())
def test_no_more_windows_than_the_wrapped_circle_needs(sizes, step, cyclic, wrap):
    """Clamped cyclic windows cost what wrapped ones cost. Where the inner windows of that
    count cannot move (for strides of 4 or more: videos of at most two strides or at most
    the window + 2 frames, and windows tiling the video with no overlap), the grid schedule
    takes one window more at some steps."""
    n, window, overlap = sizes
    count = len(context_windows(n, window, overlap, step=step, cyclic=cyclic, wrap=wrap))
    ring = ring_count(n, window, overlap)
    moving = _inner_range(n, window, overlap) is not None
    assert count <= (ring + 1 if cyclic and not wrap and not moving else ring)
    stride = window - overlap
    if stride >= 4:
        assert moving == (n > max(2 * stride, window + 2) and not (overlap == 0 and n % window == 0))


@settings(max_examples=100, deadline=None)
@given(sizes=long_sizes, step=st.integers(0, 500))
def test_wrapped_cyclic_step_is_previous_step_shifted_by_one(sizes, step):
    n, window, overlap = sizes
    now = context_windows(n, window, overlap, step=step, cyclic=True, wrap=True)
    nxt = context_windows(n, window, overlap, step=step + 1, cyclic=True, wrap=True)
    assert nxt == [[(i + 1) % n for i in w] for w in now]


def seams(windows: list[list[int]]) -> set[tuple[int, int]]:
    """Overlaps of consecutive windows as (first frame, end) of each."""
    spans = sorted((w[0], w[-1] + 1) for w in windows)
    return {(b[0], a[1]) for a, b in zip(spans, spans[1:])}


@settings(max_examples=300, deadline=None)
@given(sizes=long_sizes, step=st.integers(0, 500))
def test_clamped_cyclic_seams_all_move_at_every_step(sizes, step):
    """No seam stays where it was from one step to the next: the first and last windows stay
    at the video's ends, the inner ones, a stride apart, move one frame right (or, at the end
    of their range, back to its start); where the uniform windows are fewer, they take one
    step after the range's end. Where the inner windows cannot move, the grid schedule's
    inner starts move right by one frame per step, back to the start of the stride after
    `stride` steps."""
    n, window, overlap = sizes
    stride, last = window - overlap, n - window
    now = context_windows(n, window, overlap, step=step, cyclic=True)
    nxt = context_windows(n, window, overlap, step=step + 1, cyclic=True)
    found = _inner_range(n, window, overlap)
    if found is not None:
        count, places = found
        uniform = context_windows(n, window, overlap)
        assert (now[0][0], now[-1][0], nxt[0][0], nxt[-1][0]) == (0, last, 0, last)
        assert not seams(now) & seams(nxt)
        extra = len(uniform) < count  # the uniform windows take a step of the cycle
        for ws in (now, nxt):
            assert (extra and ws == uniform) or (len(ws) == count and ws[1][0] in places and all(
                b[0] - a[0] == stride for a, b in zip(ws[1:-1], ws[2:-1])))
        if now == uniform and extra:
            assert nxt[1][0] == places[0]
        elif now[1][0] < places[-1]:
            assert nxt[1][0] == now[1][0] + 1
        else:
            assert nxt == uniform if extra else nxt[1][0] == places[0]
    else:
        starts = [w[0] for w in now]
        inner = [s for s in starts if s not in (0, last)]
        assert all(s % stride == step % stride for s in inner)
        assert inner == [s for s in range(step % stride, last, stride) if s != 0]


def reachable_overlaps(n: int, window: int, overlap: int, count: int) -> set[int]:
    """Frames that some placement of `count` windows inside the video, the first at 0, the
    last at the end, consecutive ones at most a stride apart, puts in an overlap (brute force
    over pairs of neighbouring starts: start i can be anything a chain of steps in
    [1, stride] from 0 and to the end allows)."""
    stride, last = window - overlap, n - window
    lo = [max(i, last - (count - 1 - i) * stride) for i in range(count)]
    hi = [min(i * stride, last - (count - 1 - i)) for i in range(count)]
    frames = set()
    for i in range(1, count):
        for a in range(lo[i - 1], hi[i - 1] + 1):
            for b in range(max(lo[i], a + 1), min(hi[i], a + stride) + 1):
                frames |= set(range(b, a + window))
    return frames


@settings(max_examples=150, deadline=None)
@given(sizes=overlapping, wrap=st.booleans())
def test_frames_in_an_overlap_at_some_step(sizes, wrap):
    """What cyclic overlap is for: frames are not only ever averaged at the same seams.
    Wrapped and grid windows put every frame (clamped: every frame but the two end ones) in
    an overlap within a stride of steps. Clamped windows at the circle's count reach exactly
    the frames that any clamped placement of as many windows, overlapping by `overlap` at
    least, could put in an overlap: no schedule of that cost does better."""
    n, window, overlap = sizes

    def in_overlaps(steps: int) -> set[int]:
        seen = set()
        for step in range(steps):
            counts = coverage(context_windows(n, window, overlap, step=step, cyclic=True, wrap=wrap), n)
            seen |= set(torch.nonzero(counts > 1).flatten().tolist())
        return seen

    seen = in_overlaps(window - overlap)
    assert seen == in_overlaps(n)  # every schedule here repeats within n steps
    found = _inner_range(n, window, overlap)
    if wrap:
        assert seen == set(range(n))
    elif found is None:
        assert seen >= set(range(1, n - 1))
    else:
        assert seen == reachable_overlaps(n, window, overlap, found[0])


def test_papers_example_100_frames_window_24_overlap_4():
    """Known answers: the issue's example of wrapped windows, and the clamped default."""
    spans = lambda ws: [(w[0], w[-1]) for w in ws]
    wrapped = context_windows(100, 24, 4, step=0, cyclic=True, wrap=True)
    assert spans(wrapped) == [(0, 23), (20, 43), (40, 63), (60, 83), (80, 3)]
    assert wrapped[-1] == list(range(80, 100)) + [0, 1, 2, 3]
    assert spans(context_windows(100, 24, 4, step=1, cyclic=True, wrap=True)) == [
        (1, 24), (21, 44), (41, 64), (61, 84), (81, 4)]
    # Clamped (the default): the first and last windows stay at the ends, the three inner
    # ones move right by one frame per step through the 5 places the spare frames allow.
    assert spans(context_windows(100, 24, 4, step=0, cyclic=True)) == [(0, 23), (16, 39), (36, 59), (56, 79), (76, 99)]
    assert spans(context_windows(100, 24, 4, step=1, cyclic=True)) == [(0, 23), (17, 40), (37, 60), (57, 80), (76, 99)]
    assert spans(context_windows(100, 24, 4, step=4, cyclic=True)) == [(0, 23), (20, 43), (40, 63), (60, 83), (76, 99)]
    assert context_windows(100, 24, 4, step=5, cyclic=True) == context_windows(100, 24, 4, step=0, cyclic=True)
    # The configuration: 16 frames, window 8, overlap 2: three windows at every step,
    # as many as wrapped (the grid schedule took four at every other step).
    for step in range(6):
        assert len(context_windows(16, 8, 2, step=step, cyclic=True)) == 3 == len(context_windows(16, 8, 2, step, True, True))
    assert spans(context_windows(16, 8, 2, step=0, cyclic=True)) == [(0, 7), (2, 9), (8, 15)]
    assert spans(context_windows(16, 8, 2, step=1, cyclic=True)) == [(0, 7), (3, 10), (8, 15)]
    # The uniform windows are fewer than the circle's four: they take the cycle's third step.
    assert [[w[0] for w in context_windows(10, 4, 1, step=s, cyclic=True)] for s in range(4)] == [
        [0, 1, 4, 6], [0, 2, 5, 6], [0, 3, 6], [0, 1, 4, 6]]
    # Too short for an inner window to move (two strides or less): the grid schedule.
    assert [[w[0] for w in context_windows(12, 8, 2, step=s, cyclic=True)] for s in range(3)] == [[0, 4], [0, 1, 4], [0, 2, 4]]
    # Uniform windows ignore the step.
    assert spans(context_windows(100, 24, 4, step=7)) == [(0, 23), (20, 43), (40, 63), (60, 83), (76, 99)]


def test_uniform_schedule_keeps_the_same_seams():
    """What the cyclic schedule fixes: uniform windows leave most frames never in an overlap."""
    counts = [coverage(context_windows(100, 24, 4, step=s), 100) for s in range(25)]
    never = set(range(100)) - set().union(*(set(torch.nonzero(c > 1).flatten().tolist()) for c in counts))
    assert len(never) > 50


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, step=st.integers(0, 50), cyclic=st.booleans(), wrap=st.booleans(), seed=st.integers(0, 1000))
def test_overlaps_are_averaged_with_equal_weights(sizes, step, cyclic, wrap, seed):
    """Each window's frames carry their own values; every frame gets the plain mean of the
    values the windows holding it gave that frame."""
    n, window, overlap = sizes
    windows = context_windows(n, window, overlap, step=step, cyclic=cyclic, wrap=wrap)
    g = torch.Generator().manual_seed(seed)
    preds = [torch.rand(1, 2, len(w), 3, 3, generator=g) for w in windows]
    out = average_windows(preds, windows, n)
    assert out.shape == (1, 2, n, 3, 3)
    for f in range(n):
        held = [p[:, :, w.index(f)] for p, w in zip(preds, windows) if f in w]
        assert torch.allclose(out[:, :, f], torch.stack(held).mean(0), atol=1e-6)


def test_average_along_another_frame_axis_and_uncovered_frames_are_an_error():
    preds = [torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 6.0]])]  # (1, F): frames on dim 1
    assert torch.equal(average_windows(preds, [[0, 1], [1, 2]], 3, frame_dim=1), torch.tensor([[1.0, 3.0, 6.0]]))
    with pytest.raises(ValueError, match=r"frames \[3\] are in no window"):
        average_windows(preds, [[0, 1], [1, 2]], 4, frame_dim=1)


def test_short_videos_and_bad_arguments():
    assert context_windows(1, 24, 4) == [[0]]
    assert context_windows(1, 24, 4, step=7, cyclic=True) == [[0]]
    assert context_windows(10, 24, 4, cyclic=True) == [list(range(10))]
    assert context_windows(30, 24, 4) == [list(range(24)), list(range(6, 30))]
    with pytest.raises(ValueError, match="overlap"):
        context_windows(10, 4, 4)
    with pytest.raises(ValueError, match="window"):
        context_windows(10, 0, 0)
    with pytest.raises(ValueError, match="num_frames"):
        context_windows(0, 4, 1)
