"""Context windows: coverage, averaging weights and the cyclic shift (property tests)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from vivid.windows import average_windows, context_windows, coverage

sizes = st.integers(1, 24).flatmap(
    lambda window: st.tuples(st.integers(1, 120), st.just(window), st.integers(0, window - 1))
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
@given(sizes=sizes, step=st.integers(0, 500))
def test_wrapped_cyclic_step_is_previous_step_shifted_by_one(sizes, step):
    n, window, overlap = sizes
    now = context_windows(n, window, overlap, step=step, cyclic=True, wrap=True)
    nxt = context_windows(n, window, overlap, step=step + 1, cyclic=True, wrap=True)
    if n <= window:
        assert now == nxt == [list(range(n))]
    else:
        assert nxt == [[(i + 1) % n for i in w] for w in now]


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, step=st.integers(0, 500))
def test_clamped_cyclic_seams_move_one_frame_per_step(sizes, step):
    """Without wrapping, the inner window starts (the seams) sit on a grid that moves right
    by one frame per step, back to the start of the stride after `stride` steps."""
    n, window, overlap = sizes
    if n <= window:
        return
    stride, last = window - overlap, n - window
    starts = [w[0] for w in context_windows(n, window, overlap, step=step, cyclic=True)]
    inner = [s for s in starts if s not in (0, last)]
    assert all(s % stride == step % stride for s in inner)
    assert all(b - a == stride for a, b in zip(inner, inner[1:]))


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, wrap=st.booleans())
def test_every_frame_sits_in_an_overlap_within_a_stride_of_steps(sizes, wrap):
    """What cyclic overlap is for: no frame stays on a seam at every step. Clamped windows
    have no seam at the video's own first and last frame."""
    n, window, overlap = sizes
    if n <= window or overlap == 0:
        return
    seen = set()
    for step in range(window - overlap):
        counts = coverage(context_windows(n, window, overlap, step=step, cyclic=True, wrap=wrap), n)
        seen |= set(torch.nonzero(counts > 1).flatten().tolist())
    assert seen >= (set(range(n)) if wrap else set(range(1, n - 1)))


def test_uniform_schedule_keeps_the_same_seams():
    """What the cyclic schedule fixes: uniform windows leave most frames never in an overlap."""
    counts = [coverage(context_windows(100, 24, 4, step=s), 100) for s in range(25)]
    never = set(range(100)) - set().union(*(set(torch.nonzero(c > 1).flatten().tolist()) for c in counts))
    assert len(never) > 50


@settings(max_examples=100, deadline=None)
@given(sizes=sizes, step=st.integers(0, 50), cyclic=st.booleans(), seed=st.integers(0, 1000))
def test_overlaps_are_averaged_with_equal_weights(sizes, step, cyclic, seed):
    n, window, overlap = sizes
    windows = context_windows(n, window, overlap, step=step, cyclic=cyclic)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(len(windows), generator=g)
    preds = [torch.full((1, 2, len(w), 3, 3), float(v)) for w, v in zip(windows, values)]
    out = average_windows(preds, windows, n)
    for f in range(n):
        expected = torch.stack([values[i] for i, w in enumerate(windows) if f in w]).mean()
        assert torch.allclose(out[:, :, f], expected.expand(1, 2, 3, 3), atol=1e-6)


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
