"""Context-window schedules for long videos, and averaging of overlapping window outputs.

The denoising UNet sees `window` frames at a time. Windows overlap by `overlap` frames and
their noise predictions are averaged where they overlap. With `cyclic=True` (the paper's
cyclic overlap) every window start moves one frame to the right after each denoising step,
so the seams move and every frame is inside an overlap at some step instead of the same
frames always sitting on a seam.

At the end of the video the paper's windows "keep within the proper range" in one of two
ways. `wrap=True`: indices wrap around, so a window may hold the last frames followed by
the first ones (right for a looping clip). `wrap=False` (the default): windows are clamped
inside the video and an extra window covers its start, so the temporal layers never see
the end of the video next to its beginning; `bench/cyclic_wrap.py` measures how much the
wrap lets the end of a clip change its first frames.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def _check(num_frames: int, window: int, overlap: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")


def context_windows(
    num_frames: int, window: int, overlap: int, step: int = 0, cyclic: bool = False, wrap: bool = False
) -> list[list[int]]:
    """Frame indices of each window for denoising step `step`.

    Uniform: windows from frame 0 every `window - overlap` frames, the last one aligned to
    the end. Cyclic with `wrap`: windows every `window - overlap` frames around the circle
    of frames, all shifted by `step`. Cyclic without `wrap`: the same grid shifted by
    `step` modulo the stride, clamped inside the video, plus a window at frame 0 when the
    shift leaves the start uncovered. A video no longer than the window is one window.
    """
    _check(num_frames, window, overlap)
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    last = num_frames - window
    if not cyclic:
        starts = list(range(0, last, stride)) + [last]
    elif wrap:
        count = math.ceil(num_frames / stride)
        shift = step % num_frames
        return [[(j * stride + shift + k) % num_frames for k in range(window)] for j in range(count)]
    else:
        offset = step % stride
        starts = ([0] if offset else []) + list(range(offset, last, stride)) + [last]
    return [list(range(s, s + window)) for s in starts]


def coverage(windows: Sequence[Sequence[int]], num_frames: int) -> torch.Tensor:
    """How many windows contain each frame (the divisor of the average)."""
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
