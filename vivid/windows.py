"""Context-window schedules for long videos, and averaging of overlapping window outputs.

The denoising UNet sees `window` frames at a time. Windows overlap by `overlap` frames and
their noise predictions are averaged where they overlap. With `cyclic=True` (the paper's
cyclic overlap) frame indices wrap around the end of the video and every window start moves
one frame to the right after each denoising step, so the seams move and every frame is
inside an overlap at some step instead of the same frames always sitting on a seam.
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
    num_frames: int, window: int, overlap: int, step: int = 0, cyclic: bool = False
) -> list[list[int]]:
    """Frame indices of each window for denoising step `step`.

    Uniform: windows from frame 0 every `window - overlap` frames, the last one aligned to
    the end. Cyclic: windows every `window - overlap` frames around the circle of frames,
    all shifted by `step`. A video no longer than the window is one window either way.
    """
    _check(num_frames, window, overlap)
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    if not cyclic:
        starts = list(range(0, num_frames - window, stride)) + [num_frames - window]
        return [list(range(s, s + window)) for s in starts]
    count = math.ceil(num_frames / stride)
    shift = step % num_frames
    return [[(j * stride + shift + k) % num_frames for k in range(window)] for j in range(count)]


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
