"""Context windows: coverage, averaging weights and the cyclic shift (property tests)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from vivid.windows import average_windows, context_windows, coverage

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
    # Windows are as few as the overlap allows (no wasted UNet evaluations): the minimum
    # for covering a circle of n frames, and at most one more when clamped to the video.
    if n > window:
        minimum = -(-n // (window - overlap))
        assert len(windows) <= minimum + (1 if cyclic and not wrap else 0)


@settings(max_examples=100, deadline=None)
@given(sizes=long_sizes, step=st.integers(0, 500))
def test_wrapped_cyclic_step_is_previous_step_shifted_by_one(sizes, step):
    n, window, overlap = sizes
    now = context_windows(n, window, overlap, step=step, cyclic=True, wrap=True)
    nxt = context_windows(n, window, overlap, step=step + 1, cyclic=True, wrap=True)
    assert nxt == [[(i + 1) % n for i in w] for w in now]


@settings(max_examples=100, deadline=None)
@given(sizes=long_sizes, step=st.integers(0, 500))
def test_clamped_cyclic_seams_move_one_frame_per_step(sizes, step):
    """Without wrapping, the inner window starts (the seams) sit on a grid that moves right
    by one frame per step, back to the start of the stride after `stride` steps."""
    n, window, overlap = sizes
    stride, last = window - overlap, n - window
    starts = [w[0] for w in context_windows(n, window, overlap, step=step, cyclic=True)]
    inner = [s for s in starts if s not in (0, last)]
    assert all(s % stride == step % stride for s in inner)
    assert all(b - a == stride for a, b in zip(inner, inner[1:]))
    # Every grid position strictly inside the video is a window start.
    assert inner == [s for s in range(step % stride, last, stride) if s != 0]


@settings(max_examples=100, deadline=None)
@given(sizes=overlapping, wrap=st.booleans())
def test_every_frame_sits_in_an_overlap_within_a_stride_of_steps(sizes, wrap):
    """What cyclic overlap is for: no frame stays on a seam at every step. Clamped windows
    have no seam at the video's own first and last frame."""
    n, window, overlap = sizes
    seen = set()
    for step in range(window - overlap):
        counts = coverage(context_windows(n, window, overlap, step=step, cyclic=True, wrap=wrap), n)
        seen |= set(torch.nonzero(counts > 1).flatten().tolist())
    assert seen >= (set(range(n)) if wrap else set(range(1, n - 1)))


def test_papers_example_100_frames_window_24_overlap_4():
    """Known answers: the issue's example of wrapped windows, and the clamped default."""
    spans = lambda ws: [(w[0], w[-1]) for w in ws]
    wrapped = context_windows(100, 24, 4, step=0, cyclic=True, wrap=True)
    assert spans(wrapped) == [(0, 23), (20, 43), (40, 63), (60, 83), (80, 3)]
    assert wrapped[-1] == list(range(80, 100)) + [0, 1, 2, 3]
    assert spans(context_windows(100, 24, 4, step=1, cyclic=True, wrap=True)) == [
        (1, 24), (21, 44), (41, 64), (61, 84), (81, 4)]
    # Clamped (the default): the end window stays at the end, a window covers the start.
    assert spans(context_windows(100, 24, 4, step=0, cyclic=True)) == [(0, 23), (20, 43), (40, 63), (60, 83), (76, 99)]
    assert spans(context_windows(100, 24, 4, step=1, cyclic=True)) == [
        (0, 23), (1, 24), (21, 44), (41, 64), (61, 84), (76, 99)]
    assert spans(context_windows(100, 24, 4, step=21, cyclic=True)) == spans(context_windows(100, 24, 4, step=1, cyclic=True))
    assert context_windows(100, 24, 4, step=5, cyclic=True) == context_windows(100, 24, 4, step=5, cyclic=True, wrap=False)
    # Uniform windows ignore the step.
    assert spans(context_windows(100, 24, 4, step=7)) == [(0, 23), (20, 43), (40, 63), (60, 83), (76, 99)]
    assert context_windows(10, 4, 1, step=1, cyclic=True) == [[0, 1, 2, 3], [1, 2, 3, 4], [4, 5, 6, 7], [6, 7, 8, 9]]


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
