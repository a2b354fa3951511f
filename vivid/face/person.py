"""Person (foreground) masks: selfie segmentation, and splitting the non-face part into hair/body."""
from __future__ import annotations

import numpy as np

#: How far to the side of the face centre hair may reach, in face widths.
HAIR_REACH = 1.0


def split_hair_and_body(
    rest: np.ndarray, mouth: np.ndarray, up: np.ndarray, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Split person pixels outside the face into hair (above the mouth line, beside the face)
    and body (neck, shoulders, clothes), in the face's own up direction so a tilted head works."""
    ys, xs = np.nonzero(rest)
    hair = np.zeros_like(rest)
    body = np.zeros_like(rest)
    if len(xs) == 0:
        return hair, body
    up = up / (np.linalg.norm(up) + 1e-6)
    right = np.array([-up[1], up[0]])
    rel = np.stack([xs, ys], axis=1) - mouth
    height = rel @ up
    x0, y0, x1, y1 = box
    centre_offset = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - mouth
    side = np.abs((rel - centre_offset) @ right)
    is_hair = (height > 0) & (side < HAIR_REACH * (x1 - x0))
    hair[ys[is_hair], xs[is_hair]] = True
    body[ys[~is_hair], xs[~is_hair]] = True
    return hair, body
