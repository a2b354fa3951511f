"""Prepared clips at the training resolution: frames and their landmarks resized together."""
from __future__ import annotations

import cv2
import numpy as np


def resize_landmarks(points: np.ndarray, source: int, target: int) -> np.ndarray:
    """Landmarks of a `source`-pixel crop in the same crop resized to `target` pixels."""
    return points * (target / source) + 0.5 * (target / source - 1)


def resize_frames(images: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(N, S, S, ...) images resized to `size` px: area-averaged when shrinking, linear when
    enlarging, nearest for masks."""
    if images.shape[-3] == size:
        return images
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if images.shape[-3] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=flags) for im in images])
