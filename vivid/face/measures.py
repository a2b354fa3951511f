"""Simple expression measures on a face mesh: how open the eyes and the mouth are.

Ratios of distances, so they do not depend on the face's size in pixels; used by tests,
benchmarks and evaluation to compare a driving face with an animated one.
"""
from __future__ import annotations

import numpy as np

# Eyelid mid-points (upper, lower) and eye corners (outer, inner) of each eye, and the mouth.
_EYES = (((159, 145), (33, 133)), ((386, 374), (263, 362)))
_MOUTH = ((13, 14), (61, 291))


def _ratio(points: np.ndarray, gap: tuple[int, int], width: tuple[int, int]) -> np.ndarray:
    p = np.asarray(points)
    num = np.linalg.norm(p[..., gap[0], :] - p[..., gap[1], :], axis=-1)
    den = np.linalg.norm(p[..., width[0], :] - p[..., width[1], :], axis=-1)
    return num / np.maximum(den, 1e-6)


def eye_openness(points: np.ndarray) -> np.ndarray:
    """Mean eyelid gap over eye width of both eyes (about 0.3 open, under 0.1 closed).
    `points`: (..., 478, 2) mesh landmarks."""
    return (_ratio(points, *_EYES[0]) + _ratio(points, *_EYES[1])) / 2


def mouth_openness(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over mouth width (0 closed, about 0.5 wide open)."""
    return _ratio(points, *_MOUTH)
