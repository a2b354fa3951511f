"""Context-window schedules for long videos, and averaging of overlapping window outputs.

The denoising UNet sees `window` frames at a time. Windows overlap by `overlap` frames and
their noise predictions are averaged where they overlap. With `cyclic=True` (the paper's
cyclic overlap) every window start moves one frame to the right after each denoising step,
so the seams move and every frame is inside an overlap at some step instead of the same
frames always sitting on a seam.

At the end of the video the paper's windows "keep within the proper range" in one of two
ways. `wrap=True`: indices wrap around, so a window may hold the last frames followed by
the first ones (right for a looping clip). `wrap=False` (the default): windows are clamped
inside the video, so the temporal layers never see the end of the video next to its
beginning (`bench/cyclic_wrap.py` measures how much the wrap lets the end of a clip change
its first frames). Clamped cyclic windows cost what the wrapped ones cost: the first window
stays at frame 0, the last at the end, and the windows between them, `window - overlap`
apart, move one frame to the right per step while the two edge windows' overlaps take up the
difference, back to the start of their range when they reach its end. Every overlap stays at
least `overlap` frames and every seam moves each step. Which frames ever sit in an overlap is
then limited by the spare frames the count leaves: no clamped placement of as many windows
with overlaps of at least `overlap` reaches more (tests/test_windows.py checks it).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from .checks import flag, whole
from .errors import OptionError

if TYPE_CHECKING:
    import torch


def check_windows(window, overlap, cyclic: bool = False, wrap: bool = False, max_window: int | None = None
                  ) -> tuple[int, int]:
    """The one rule of the window options, wherever they come from (the CLI, the app, the
    Python API, the pipeline): a window of 1 to `max_window` frames (the temporal layers'
    length), an overlap of 0 or more frames smaller than the window, and `wrap` only with
    `cyclic`. Returns (window, overlap) as ints; an OptionError quoting the bad value."""
    window = whole("window", window, 1, max_window, " frames")
    overlap = whole("overlap", overlap, 0, None, " frames")
    if not overlap < window:
        raise OptionError(f"overlap must be smaller than the window ({window} frames), got {overlap}", "overlap")
    wrap, cyclic = flag("wrap", wrap), flag("cyclic", cyclic)
    if wrap and not cyclic:
        raise OptionError("wrap only applies to cyclic windows; turn cyclic on or wrap off", "wrap")
    return window, overlap


def _check(num_frames: int, window: int, overlap: int) -> None:
    """A schedule's arguments (`wrap` without `cyclic` is simply not used by a schedule)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    check_windows(window, overlap)


def context_windows(
    num_frames: int, window: int, overlap: int, step: int = 0, cyclic: bool = False, wrap: bool = False
) -> list[list[int]]:
    """Frame indices of each window for denoising step `step`.

    Uniform: windows from frame 0 every `window - overlap` frames, the last one aligned to
    the end. Cyclic with `wrap`: windows every `window - overlap` frames around the circle
    of frames, all shifted by `step`. Cyclic without `wrap`: as many windows as the circle
    needs, the first and last at the video's ends and the inner ones moving (`_moving_starts`);
    where they cannot move, the grid of the wrapped windows shifted by `step` modulo the
    stride, clamped inside the video (`grid_windows`). A video no longer than the window is one
    window.
    """
    _check(num_frames, window, overlap)
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    last = num_frames - window
    if not cyclic:
        starts = _uniform_starts(num_frames, window, overlap)
    elif wrap:
        count = math.ceil(num_frames / stride)
        shift = step % num_frames
        return [[(j * stride + shift + k) % num_frames for k in range(window)] for j in range(count)]
    else:
        starts = _moving_starts(num_frames, window, overlap, step)
        if starts is None:
            return grid_windows(num_frames, window, overlap, step)
    return [list(range(s, s + window)) for s in starts]


def _uniform_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """Windows from frame 0 every stride, the last one aligned to the end."""
    stride, last = window - overlap, num_frames - window
    return list(range(0, last, stride)) + [last]


def _inner_range(num_frames: int, window: int, overlap: int) -> tuple[int, range] | None:
    """How many clamped cyclic windows to use, and where the first inner one may start.

    With `count` windows the first starts at 0, the last at `last`, and the `count - 2`
    inner ones sit a stride apart (overlapping by exactly `overlap`); the two edge gaps share
    the `spare` frames left, each gap at most a stride (overlap at least `overlap`) and at
    least 1 (no window twice). The most windows up to the wrapped circle's count whose inner
    windows have two or more places; None when no count has (a video shorter than two strides,
    windows overlapping by more than about half, windows tiling the video with no overlap).
    """
    stride, last = window - overlap, num_frames - window
    for count in range(math.ceil(num_frames / stride), 2, -1):
        spare = last - (count - 3) * stride
        if spare > 2 * stride - 1:  # fewer windows leave gaps over a stride: none fits
            return None
        places = range(max(1, spare - stride), min(stride, spare - 1) + 1)
        if len(places) >= 2:
            return count, places
    return None


def _moving_starts(num_frames: int, window: int, overlap: int, step: int) -> list[int] | None:
    """Clamped cyclic window starts at the wrapped circle's count: the inner windows move one
    frame right per step through their places, then start over. When the uniform windows are
    fewer, they take one step of the cycle too (after the last place): their seams are the
    ones the places cannot reach. None where the inner windows cannot move."""
    found = _inner_range(num_frames, window, overlap)
    if found is None:
        return None
    count, places = found
    stride, last = window - overlap, num_frames - window
    uniform = _uniform_starts(num_frames, window, overlap)
    phase = step % (len(places) + (len(uniform) < count))
    if phase == len(places):
        return uniform
    return [0] + [places[phase] + i * stride for i in range(count - 2)] + [last]


def grid_windows(num_frames: int, window: int, overlap: int, step: int) -> list[list[int]]:
    """Clamped cyclic windows as they were before issue 22, and where the inner windows cannot
    move: the wrapped windows' grid shifted by `step` modulo the stride and clamped inside the
    video, plus a window at frame 0 when the shift leaves the start uncovered (one window more
    than the circle needs at most steps)."""
    _check(num_frames, window, overlap)
    if num_frames <= window:
        return [list(range(num_frames))]
    stride, last = window - overlap, num_frames - window
    offset = step % stride
    starts = ([0] if offset else []) + list(range(offset, last, stride)) + [last]
    return [list(range(s, s + window)) for s in starts]


def coverage(windows: Sequence[Sequence[int]], num_frames: int) -> torch.Tensor:
    """How many windows contain each frame (the divisor of the average)."""
    import torch

    counts = torch.zeros(num_frames)
    for w in windows:
        counts[list(w)] += 1
    return counts


def average_windows(
    predictions: Sequence[torch.Tensor], windows: Sequence[Sequence[int]], num_frames: int, frame_dim: int = 2
) -> torch.Tensor:
    """Per-frame mean of the window predictions that cover each frame.

    `predictions[i]` holds window i's frames along `frame_dim`; the result holds all
    `num_frames` frames. Every frame must be covered by at least one window.
    """
    import torch

    first = predictions[0]
    shape = list(first.shape)
    shape[frame_dim] = num_frames
    total = torch.zeros(shape, dtype=first.dtype, device=first.device)
    for pred, w in zip(predictions, windows, strict=True):
        total.index_add_(frame_dim, torch.as_tensor(list(w), device=first.device), pred)
    counts = coverage(windows, num_frames).to(first.device, first.dtype)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"frames {missing[:10]} are in no window")
    view = [1] * len(shape)
    view[frame_dim] = num_frames
    return total / counts.view(view)
