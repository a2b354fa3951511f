"""Where to look for a face: pure geometry on boxes, squares and landmark sets (arrays in,
arrays out), shared by still images and video tracking.

- `MeshRegion`: the rotated square the face mesh is run on (MediaPipe's "ROI"), made from a
  detection (eyes + box) or from the previous frame's landmarks.
- `search_windows`: the square windows a detector looks through, so that faces from about
  5% of the image's shorter side up to the whole image each appear at a size it sees.
- `main_face` / `same_face`: which face to use when there are several, and which of a new
  frame's faces is the one being followed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import mesh_topology as mt
from .crop import SquareBox

Box = Sequence[float]  # (x0, y0, x1, y1) in pixels

#: The mesh region's side in sizes of the landmark box (MediaPipe's own tracking uses 1.5:
#: room for the head to move between two frames).
REGION_SCALE = 1.5
#: Per detector: a detection box (brows to chin) times the first number is the side of the
#: mesh's own box of the same face (forehead to chin); its centre sits the second number of
#: box sides higher. Medians over the sample portraits and clip frames (full range: 329
#: faces, 10-90% 0.97-1.10 and -0.02-0.03; short range: 335 faces, 1.05-1.21 and 0.01-0.11),
#: so the first mesh pass already looks where the following ones will.
DETECTION_TO_FACE = {"full": (1.03, 0.01), "short": (1.15, 0.07)}


@dataclass(frozen=True)
class MeshRegion:
    """A square of side `size` px centred on (cx, cy), turned clockwise by `angle` radians
    (image coordinates, y down) so that the face in it is upright."""

    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def corners(self) -> np.ndarray:
        """(4, 2) corners: top-left, top-right, bottom-right, bottom-left of the upright face."""
        half = self.size / 2
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
        return unit @ _rotation(self.angle).T + (self.cx, self.cy)

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned box around the turned square."""
        c = self.corners()
        (x0, y0), (x1, y1) = c.min(axis=0), c.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    def box(self) -> tuple[float, float, float, float]:
        """The face box this region was made for (its side / REGION_SCALE, not turned)."""
        half = self.size / REGION_SCALE / 2
        return self.cx - half, self.cy - half, self.cx + half, self.cy + half


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def eye_line_angle(image_left: np.ndarray, image_right: np.ndarray) -> float:
    """Clockwise angle of the line from one eye to the other (0 for an upright face)."""
    d = np.asarray(image_right, np.float64) - np.asarray(image_left, np.float64)
    return float(math.atan2(d[1], d[0]))


def region_from_landmarks(points: np.ndarray, scale: float = REGION_SCALE) -> MeshRegion:
    """The region to run the mesh on for a face whose (478 or 468, 2+) mesh points are known:
    upright along the outer eye corners, around the points' box in that upright frame."""
    p = np.asarray(points, np.float64)[:, :2]
    angle = eye_line_angle(p[mt.SUBJECT_RIGHT_EYE[0]], p[mt.SUBJECT_LEFT_EYE[0]])
    centre = p.mean(axis=0)
    upright = (p - centre) @ _rotation(angle)  # rows times R = rotate by -angle
    lo, hi = upright.min(axis=0), upright.max(axis=0)
    mid = centre + ((lo + hi) / 2) @ _rotation(angle).T
    return MeshRegion(float(mid[0]), float(mid[1]), float(scale * max(hi - lo)), angle)


def region_from_detection(box: Box, eyes: np.ndarray, detector: str = "full",
                          scale: float = REGION_SCALE) -> MeshRegion:
    """The region for a detector's face box and its two eye key points (the one that is
    image-left on an upright face first, as MediaPipe's detectors give them): the box turned
    with the eye line, resized and lifted to the face's mesh box (`DETECTION_TO_FACE`), then
    enlarged so that the whole head fits."""
    eyes = np.asarray(eyes, np.float64)
    angle = eye_line_angle(eyes[0], eyes[1])
    size_factor, lift = DETECTION_TO_FACE[detector]
    side = box_side(box)
    up = np.array([math.sin(angle), -math.cos(angle)])  # the face's "up" in the image
    cx, cy = box_centre(box) + lift * side * up
    return MeshRegion(float(cx), float(cy), float(scale * size_factor * side), angle)


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned box of a landmark set (not clipped to the image)."""
    p = np.asarray(points)[:, :2]
    (x0, y0), (x1, y1) = p.min(axis=0), p.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def box_side(box: Box) -> float:
    x0, y0, x1, y1 = box
    return float(max(x1 - x0, y1 - y0))


def box_centre(box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float64)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# -- where a detector looks --------------------------------------------------------------------
#: A face from this fraction to about 3x it of a window's side is what the full-range detector
#: finds reliably (measured: found at 7-45% of its window, often missed under 5%).
WINDOW_FACE = 0.125


def whole_image_window(width: int, height: int, zoom_out: float = 1.0) -> SquareBox:
    """The square that holds the whole image (the longer side), `zoom_out` times larger."""
    return SquareBox(width / 2, height / 2, zoom_out * max(width, height))


def tile_windows(width: int, height: int, smallest_face: float) -> list[SquareBox]:
    """Overlapping square tiles, each `smallest_face / WINDOW_FACE` px wide, stepped by half a
    tile: any face up to a quarter of a tile lies wholly inside one of them."""
    side = min(smallest_face / WINDOW_FACE, max(width, height))
    step = side / 2

    def starts(length: int) -> np.ndarray:
        if length <= side:
            return np.array([(length - side) / 2])
        n = int(math.ceil((length - side) / step)) + 1
        return np.linspace(0, length - side, n)

    return [SquareBox(x + side / 2, y + side / 2, side) for y in starts(height) for x in starts(width)]


def window_around(box: Box, face_fraction: float = 0.25) -> SquareBox:
    """A window where the face in `box` fills `face_fraction` of the side (the detectors' sweet
    spot), centred on it: a cheap check on one face, whatever its size in the image."""
    c = box_centre(box)
    return SquareBox(float(c[0]), float(c[1]), box_side(box) / face_fraction)


# -- which face --------------------------------------------------------------------------------
#: A face at an image corner counts as this much smaller than the same face in the centre.
CORNER_PENALTY = 0.5


def face_weight(box: Box, width: int, height: int) -> float:
    """How strongly a face asks to be the one used: its size, less up to `CORNER_PENALTY` of it
    the farther it is from the image centre."""
    off = float(np.linalg.norm(box_centre(box) - (width / 2, height / 2))) / (math.hypot(width, height) / 2)
    return box_side(box) * (1 - CORNER_PENALTY * min(off, 1.0))


def main_face(boxes: Sequence[Box], width: int, height: int) -> int:
    """Index of the face to use among several: the largest, favouring the most central
    (`face_weight`)."""
    if not len(boxes):
        raise ValueError("no faces to choose from")
    return max(range(len(boxes)), key=lambda i: face_weight(boxes[i], width, height))


def faces_from_left(boxes: Sequence[Box]) -> list[int]:
    """Indices of `boxes` ordered from the image's left to its right (by centre): how a user
    counts the faces of a picture when choosing one (face 1 is the leftmost)."""
    return sorted(range(len(boxes)), key=lambda i: (float(box_centre(boxes[i])[0]), float(box_centre(boxes[i])[1])))


#: A face is "the same one" in a later frame if its centre moved less than this many face sizes
#: and its size changed by less than this factor.
MAX_SHIFT = 1.0
MAX_SIZE_CHANGE = 1.6


def same_face(previous: Box, boxes: Sequence[Box], max_shift: float = MAX_SHIFT,
              max_size_change: float = MAX_SIZE_CHANGE) -> int | None:
    """Index of the box that continues `previous` (nearest centre, in face sizes, plus how far
    the size changed), or None when none is close enough in both position and size."""
    side = box_side(previous)
    best, best_cost = None, math.inf
    for i, box in enumerate(boxes):
        shift = float(np.linalg.norm(box_centre(box) - box_centre(previous))) / max(side, 1e-6)
        change = abs(math.log(max(box_side(box), 1e-6) / max(side, 1e-6)))
        if shift > max_shift or change > math.log(max_size_change):
            continue
        cost = shift + change
        if cost < best_cost:
            best, best_cost = i, cost
    return best
