"""Offline face measures for evaluation, from MediaPipe's 3-D face mesh (no downloads).

Per frame: the head pose (yaw, pitch, roll in degrees), expression features (eyes, brows
and mouth as ratios of face size, measured after rotating the mesh to face the camera, so
head pose does not count as expression) and an identity shape (the frontalised positions
of points that expression does not move), from which identity leakage is measured.

The head's rotation is read from the mesh itself (`vivid.face.head_pose`). Only differences
of poses are reported, so the face's own tilt in that frame does not matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..face.head_pose import head_rotation, pose_angles

#: Face size: 3-D distance between the outer eye corners (does not change with pose).
_EYE_CORNERS = (33, 263)
#: Points expression does not move: upper face outline, nose, eye corners.
IDENTITY_POINTS = (
    234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454,
    168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 33, 133, 263, 362,
)
#: Names of the expression features, in the order `expression_features` returns them.
EXPRESSION_FEATURES = (
    "right_eye_opening", "left_eye_opening", "right_brow_height", "left_brow_height",
    "mouth_opening", "mouth_width", "mouth_corner_lift",
)
_RIGHT_BROW, _LEFT_BROW = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)


@dataclass
class FaceGeometry:
    """One face's mesh in 3-D pixel units and what is derived from it."""

    points: np.ndarray  # (478, 3): x, y in pixels, z in the same scale

    @property
    def box(self) -> tuple[float, float, float, float]:
        lo, hi = self.points[:, :2].min(axis=0), self.points[:, :2].max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def rotation(self) -> np.ndarray:
        """3x3 head rotation: columns are the head's right, down and backward axes in
        camera coordinates (x right, y down, z away from the camera)."""
        return head_rotation(self.points)

    @property
    def pose(self) -> np.ndarray:
        """(yaw, pitch, roll) in degrees."""
        return pose_angles(self.rotation)

    def frontal(self) -> np.ndarray:
        """The mesh turned to face the camera, centred and scaled to face size 1."""
        p = self.points - self.points[list(IDENTITY_POINTS)].mean(axis=0)
        size = np.linalg.norm(self.points[_EYE_CORNERS[0]] - self.points[_EYE_CORNERS[1]])
        return (p @ self.rotation) / max(size, 1e-6)


def expression_features(face: FaceGeometry) -> np.ndarray:
    """Eye openings, brow heights, mouth opening, width and corner lift, in % of face size,
    measured on the frontalised mesh (so turning the head changes none of them)."""
    q = face.frontal()[:, :2]  # x right, y down, face size 1

    def gap(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    eye_r = q[[33, 133]].mean(axis=0)[1]
    eye_l = q[[263, 362]].mean(axis=0)[1]
    lips = q[[13, 14]].mean(axis=0)[1]
    corners = q[[61, 291]].mean(axis=0)[1]
    return 100 * np.array([
        gap(159, 145), gap(386, 374),
        eye_r - q[list(_RIGHT_BROW)].mean(axis=0)[1], eye_l - q[list(_LEFT_BROW)].mean(axis=0)[1],
        gap(13, 14), gap(61, 291), lips - corners,
    ])


#: Each eye as (outer corner, inner corner, iris centre) mesh points, subject's right eye first.
_GAZE_POINTS = ((33, 133, 468), (263, 362, 473))


def gaze_features(face: FaceGeometry) -> np.ndarray:
    """Where each iris sits in its eye, in % of that eye's width on the frontalised mesh:
    (right x, right y, left x, left y), x along the corner-to-corner line from its middle, y
    across it. What the eye landmarks of the motion maps carry (the paper's ablation)."""
    q = face.frontal()[:, :2]
    out = []
    for outer, inner, iris in _GAZE_POINTS:
        axis = q[inner] - q[outer]
        width = max(float(np.linalg.norm(axis)), 1e-6)
        along = axis / width
        across = np.array([-along[1], along[0]])
        offset = q[iris] - (q[outer] + q[inner]) / 2
        out += [offset @ along / width, offset @ across / width]
    return 100 * np.array(out)


def identity_shape(face: FaceGeometry) -> np.ndarray:
    """Frontalised, size-normalised positions of the points expression does not move, flat."""
    return face.frontal()[list(IDENTITY_POINTS)].ravel()


def identity_leakage(reference: np.ndarray, driver: np.ndarray, output: np.ndarray) -> float:
    """How far the output's face shape moved from the reference's toward the driver's:
    0 = kept the reference's shape, 1 = took the driver's. Arguments are identity shapes
    (`identity_shape`), each averaged over frames for videos."""
    towards = driver - reference
    return float((output - reference) @ towards / max(float(towards @ towards), 1e-12))


class MeshTracker:
    """The program's own face finding (`vivid.face.finding`) returning each frame's mesh with
    depth, or None when no human face is found. No gap filling and no smoothing: a frame
    without a face counts. `tracking=True` follows the face from frame to frame (faster, and
    it stays on one person); `False` finds it in every frame on its own, so identical frames
    always measure the same."""

    def __init__(self, tracking: bool = True):
        from ..face.finding import FaceFinder, FaceTracker

        self._finder = FaceFinder()
        self._tracker = FaceTracker(self._finder) if tracking else None

    def __call__(self, rgb: np.ndarray) -> FaceGeometry | None:
        rgb = np.ascontiguousarray(rgb)
        if self._tracker is not None:
            face = self._tracker.step(rgb)
        else:
            faces = self._finder.find(rgb)
            face = faces[0] if faces else None
        return None if face is None else FaceGeometry(face.points3d.astype(np.float64))

    def close(self) -> None:
        self._finder.close()

    def __enter__(self) -> "MeshTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track_faces(frames: Iterable[np.ndarray]) -> Iterator[FaceGeometry | None]:
    """The face of each frame of one video (None where there is none), tracked lazily."""
    with MeshTracker(tracking=True) as tracker:
        for frame in frames:
            yield tracker(frame)


def still_face(image: np.ndarray) -> FaceGeometry | None:
    """The face of a single image (detected from scratch), or None."""
    with MeshTracker(tracking=False) as tracker:
        return tracker(image)
