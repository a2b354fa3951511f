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


def _gaussian_weights(length: int, centres: np.ndarray, config: SmoothingConfig) -> np.ndarray:
    """(len(centres), length) Gaussian weights around each centre frame (at most `radius`
    frames away), each row summing to 1."""
    offsets = np.arange(length)[None, :] - centres[:, None]
    w = np.exp(-0.5 * (offsets / config.sigma) ** 2) * (np.abs(offsets) <= config.radius)
    return w / w.sum(axis=1, keepdims=True)


def smooth_window(window: np.ndarray, centre: int, fps: float, face_size: float, config: SmoothingConfig) -> np.ndarray:
    """Smoothed points of frame `centre` of `window` (F, N, 2), its neighbours around it."""
    if len(window) < 3:
        weights = _gaussian_weights(len(window), np.array([centre]), config)
        return np.tensordot(weights[0], window, axes=1).astype(np.float32)
    # The centre frame and its two neighbours in one product: the neighbours give the speed.
    lo, hi = max(centre - 1, 0), min(centre + 1, len(window) - 1)
    weights = _gaussian_weights(len(window), np.array([centre, lo, hi]), config)
    smooth, before, after = np.tensordot(weights, window, axes=1)
    # Speed of the smoothed trajectory (so noise does not count as motion), face sizes / s.
    velocity = (after - before) / (hi - lo)
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
