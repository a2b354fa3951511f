"""Temporal smoothing of landmarks: the One-Euro filter (Casiez et al., CHI 2012).

It follows fast motion (a blink, a mouth opening) with little lag and removes the small
frame-to-frame jitter of still parts, which a fixed low-pass filter cannot do both at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingConfig:
    """One-Euro parameters. Speeds are measured in face sizes per second, so the same
    settings fit a face of 100 px and of 1000 px."""

    min_cutoff: float = 1.5  # Hz: cutoff when a point is still (lower = steadier)
    beta: float = 0.8  # how fast the cutoff rises with speed (higher = less lag)
    d_cutoff: float = 1.0  # Hz: cutoff for the speed estimate


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a stream of point arrays of one fixed shape, one call per frame."""

    def __init__(self, fps: float, config: SmoothingConfig = SmoothingConfig()):
        self.dt = 1.0 / fps
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float) -> np.ndarray:
        """Smoothed copy of `x`; `scale` is the face size in the units of `x`."""
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        c = self.config
        dx = (x - self._x) / self.dt / max(scale, 1e-6)
        self._dx = self._dx + _alpha(c.d_cutoff, self.dt) * (dx - self._dx)
        cutoff = c.min_cutoff + c.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, self.dt) * (x - self._x)
        return self._x.astype(np.float32)
