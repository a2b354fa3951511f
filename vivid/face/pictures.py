"""Pictures of a face analysis for people to look at: the parsing map over the photo, the
person mask, and the eyes close up with the eyelid line and iris the motion map draws (the
app's Parsing tab shows them)."""
from __future__ import annotations

import cv2
import numpy as np

from .analysis import FaceAnalysis
from .labels import colorize


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The parsing map blended over the photo, background left as it is."""
    colour = colorize(labels).astype(np.float32)
    mix = rgb.astype(np.float32) * (1 - alpha) + colour * alpha
    out = np.where((labels > 0)[..., None], mix, rgb.astype(np.float32))
    return out.round().astype(np.uint8)


def mask_picture(rgb: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Foreground kept, background greyed out: what CLIP sees as the two halves."""
    grey = np.full_like(rgb, 128)
    return np.where(foreground[..., None], rgb, grey)


def eye_closeup(rgb: np.ndarray, analysis: FaceAnalysis, motion: np.ndarray, width: int = 900) -> np.ndarray:
    """Both eyes enlarged: the photo with the eyelid line and iris drawn, above the motion
    map, so the eye landmarks can be checked at page scale."""
    pts = analysis.eye_points
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    pad_x, pad_y = 0.25 * (x1 - x0), max(0.9 * (y1 - y0), 0.12 * (x1 - x0))
    h, w = rgb.shape[:2]
    ix0, iy0 = int(max(x0 - pad_x, 0)), int(max(y0 - pad_y, 0))
    ix1, iy1 = int(min(x1 + pad_x, w)), int(min(y1 + pad_y, h))
    scale = width / max(ix1 - ix0, 1)
    size = (width, max(1, int(round((iy1 - iy0) * scale))))
    photo = cv2.resize(rgb[iy0:iy1, ix0:ix1], size, interpolation=cv2.INTER_CUBIC)
    for side in (0, 1):
        contour = (analysis.eye_contour(side) - (ix0, iy0)) * scale
        cv2.polylines(photo, [np.round(contour * 4).astype(np.int32)], True, (255, 255, 255), 2, cv2.LINE_AA, 2)
        centre = (analysis.iris[side] - (ix0, iy0)) * scale
        radius = max(float(analysis.iris_radius[side]) * scale, 3.0)
        cv2.circle(photo, tuple(np.round(centre * 4).astype(int)), int(radius * 4), (255, 255, 0), 2, cv2.LINE_AA, 2)
    maps = cv2.resize(motion[iy0:iy1, ix0:ix1], size, interpolation=cv2.INTER_NEAREST)
    return np.concatenate([photo, np.full((6, width, 3), 255, np.uint8), maps])


__all__ = ["eye_closeup", "mask_picture", "overlay"]
