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
    box_margin: float = 0.15  # expression parts are searched this far outside the face box
    eye_landmarks: bool = True  # draw eyelids and irises (off: the paper's ablation without eye landmarks)


#: Lookup table label index -> RGB (OpenCV's layout); everything else stays black.
_LUT = np.zeros((256, 1, 3), np.uint8)
for _name in EXPRESSION_PARTS:
    _LUT[LABEL_INDEX[_name], 0] = MOTION_PALETTE[_name]


def eyelid_width_px(analysis: FaceAnalysis, style: MotionMapStyle = MotionMapStyle()) -> int:
    return max(1, int(round(analysis.face_size * style.eyelid_width)))


def render_motion_map(analysis: FaceAnalysis, style: MotionMapStyle = MotionMapStyle()) -> np.ndarray:
    """(H, W, 3) uint8 map of brows, eyes, nose, lips and inner mouth, with eyelids and irises.

    Skin, hair, face contour and background are black: they would tell the model the driving
    person's face shape. The iris is clipped to its eye, so a closed eye shows no eyeball.
    """
    labels = analysis.labels
    h, w = labels.shape
    # Expression parts lie inside the face box; colouring only that region keeps this cheap.
    x0, y0, x1, y1 = analysis.box
    pad = style.box_margin * analysis.face_size
    rx0, ry0 = max(int(x0 - pad), 0), max(int(y0 - pad), 0)
    rx1, ry1 = min(int(np.ceil(x1 + pad)), w), min(int(np.ceil(y1 + pad)), h)
    out = np.zeros((h, w, 3), np.uint8)
    if rx0 < rx1 and ry0 < ry1:
        roi = labels[ry0:ry1, rx0:rx1]
        out[ry0:ry1, rx0:rx1] = cv2.applyColorMap(roi, _LUT)  # a plain 256-entry lookup
    width = eyelid_width_px(analysis, style)
    for side, name in enumerate(("left_eye", "right_eye") if style.eye_landmarks else ()):
        contour = analysis.eye_contour(side)
        if len(contour) == 0:
            continue
        radius = float(analysis.iris_radius[side]) * style.iris_scale
        radius = max(1, int(round(max(radius, analysis.face_size * style.min_iris_radius))))
        # Work in a small window around the iris: the eyeball is the disk clipped to the eye.
        cx, cy = np.round(analysis.iris[side]).astype(int)
        x0, y0, x1, y1 = max(cx - radius, 0), max(cy - radius, 0), min(cx + radius + 1, w), min(cy + radius + 1, h)
        if x0 < x1 and y0 < y1:
            disk = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.circle(disk, (cx - x0, cy - y0), radius, 1, -1)
            eyeball = disk.astype(bool) & (labels[y0:y1, x0:x1] == LABEL_INDEX[name])
            out[y0:y1, x0:x1][eyeball] = IRIS_COLOR
        pts = np.round(contour).astype(np.int32)
        cv2.polylines(out, [pts], True, EYELID_COLOR, width, lineType=cv2.LINE_AA)
    return out
