"""The motion map that guides the model: expression parts in fixed colours plus eye landmarks."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .analysis import FaceAnalysis
from .labels import EXPRESSION_PARTS, EYELID_COLOR, IRIS_COLOR, LABEL_INDEX, MOTION_PALETTE


@dataclass(frozen=True)
class MotionMapStyle:
    """How eye landmarks are drawn, relative to the face size so maps look alike at any scale."""

    eyelid_width: float = 1 / 160  # eyelid line width, in face sizes
    iris_scale: float = 0.8  # drawn iris radius relative to the measured iris radius
    min_iris_radius: float = 1 / 80  # in face sizes, when the backend gives no radius


#: Lookup table label index -> RGB; everything that is not an expression part stays black.
_LUT = np.zeros((256, 3), np.uint8)
for _name in EXPRESSION_PARTS:
    _LUT[LABEL_INDEX[_name]] = MOTION_PALETTE[_name]


def eyelid_width_px(analysis: FaceAnalysis, style: MotionMapStyle = MotionMapStyle()) -> int:
    return max(1, int(round(analysis.face_size * style.eyelid_width)))


def render_motion_map(analysis: FaceAnalysis, style: MotionMapStyle = MotionMapStyle()) -> np.ndarray:
    """(H, W, 3) uint8 map of brows, eyes, nose, lips and inner mouth, with eyelids and irises.

    Skin, hair, face contour and background are black: they would tell the model the driving
    person's face shape. The iris is clipped to its eye, so a closed eye shows no eyeball.
    """
    out = _LUT[analysis.labels]
    width = eyelid_width_px(analysis, style)
    for side, name in enumerate(("left_eye", "right_eye")):
        contour = analysis.eye_contour(side)
        if len(contour) == 0:
            continue
        eye = (analysis.labels == LABEL_INDEX[name]).astype(np.uint8)
        radius = float(analysis.iris_radius[side]) * style.iris_scale
        radius = max(radius, analysis.face_size * style.min_iris_radius)
        disk = np.zeros_like(eye)
        cx, cy = analysis.iris[side]
        cv2.circle(disk, (int(round(cx)), int(round(cy))), max(1, int(round(radius))), 1, -1)
        out[(disk & eye).astype(bool)] = IRIS_COLOR
        pts = np.round(contour).astype(np.int32)
        cv2.polylines(out, [pts], True, EYELID_COLOR, width, lineType=cv2.LINE_AA)
    return out
