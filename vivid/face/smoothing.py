"""Temporal smoothing of landmarks without lag: a centred window whose strength adapts to speed.

Still points (the jitter peers are criticised for) are averaged over neighbouring frames;
fast ones (a blink, a mouth opening, a head turn) keep their raw position, so nothing lags
or gets washed out. The window looks `radius` frames ahead, so a stream is delayed by that
many frames, never more.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class SmoothingConfig:
    """Speeds are in face sizes per second, so settings fit a face of any pixel size."""

    radius: int = 3  # frames on each side of the centre frame
    sigma: float = 1.5  # Gaussian width of the window, in frames
    still_speed: float = 0.25  # below about this speed a point is smoothed fully


def _gaussian_at(window: np.ndarray, i: int, config: SmoothingConfig) -> np.ndarray:
    """Gaussian average of the window's frames around frame i (at most `radius` away)."""
    offsets = np.arange(len(window)) - i
    w = np.exp(-0.5 * (offsets / config.sigma) ** 2) * (np.abs(offsets) <= config.radius)
    return np.tensordot(w / w.sum(), window, axes=1)


def smooth_window(window: np.ndarray, centre: int, fps: float, face_size: float, config: SmoothingConfig) -> np.ndarray:
    """Smoothed points of frame `centre` of `window` (F, N, 2), its neighbours around it."""
    smooth = _gaussian_at(window, centre, config)  # (N, 2)
    if len(window) < 3:
        return smooth.astype(np.float32)
    # Speed of the smoothed trajectory (so noise does not count as motion), face sizes / s.
    lo, hi = max(centre - 1, 0), min(centre + 1, len(window) - 1)
    velocity = (_gaussian_at(window, hi, config) - _gaussian_at(window, lo, config)) / (hi - lo)
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True) * fps / max(face_size, 1e-6)
    keep_smooth = 1.0 / (1.0 + (speed / config.still_speed) ** 2)
    return (keep_smooth * smooth + (1 - keep_smooth) * window[centre]).astype(np.float32)


def smooth_stream(
    items: Iterable[tuple[np.ndarray | None, T]], fps: float, config: SmoothingConfig
) -> Iterator[tuple[np.ndarray | None, T]]:
    """Smooth a stream of (points or None, tag) lazily; None breaks the trajectory
    (nothing is averaged across a gap). Tags pass through untouched."""
    buffer: deque[tuple[np.ndarray, T]] = deque()
    emitted = 0  # frames of the current run already emitted

    def emit(centre_index: int) -> tuple[np.ndarray, T]:
        lo = max(centre_index - config.radius, 0)
        hi = min(centre_index + config.radius + 1, len(buffer))
        window = np.stack([buffer[i][0] for i in range(lo, hi)])
        face = float(np.ptp(buffer[centre_index][0], axis=0).max())
        return smooth_window(window, centre_index - lo, fps, face, config), buffer[centre_index][1]

    for points, tag in items:
        if points is None:
            while emitted < len(buffer):
                yield emit(emitted)
                emitted += 1
            buffer.clear()
            emitted = 0
            yield None, tag
            continue
        buffer.append((np.asarray(points, np.float64), tag))
        if len(buffer) - emitted > config.radius:
            yield emit(emitted)
            emitted += 1
            if emitted > config.radius:  # the oldest frame is no longer anyone's neighbour
                buffer.popleft()
                emitted -= 1
    while emitted < len(buffer):
        yield emit(emitted)
        emitted += 1
