"""Head pose from a face mesh's own 3-D points (no camera model): rotation and angles.

MediaPipe gives each of its 478 points a depth (z, in about the same scale as x); the head's
left-right axis comes from three symmetric point pairs, its down axis from forehead to nose.
Used by evaluation (pose errors) and by the human-face check (an animal's muzzle makes the
mesh read a strongly tilted head).
"""
from __future__ import annotations

import numpy as np

#: Symmetric (subject-right, subject-left) pairs that define the head's left-right axis:
#: outer and inner eye corners, and the face outline at the temples.
PAIRS = ((33, 263), (133, 362), (234, 454))
#: Forehead top and nose bottom: the head's down axis (neither moves with expression).
FOREHEAD, NOSE_BOTTOM = 10, 2


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def head_rotation(points: np.ndarray) -> np.ndarray:
    """Head rotation (3x3, proper) of a (478, 3) mesh: columns are the head's right, down and
    backward axes in camera coordinates (x right, y down, z away from the camera)."""
    p = np.asarray(points, np.float64)
    right = unit(sum(unit(p[left] - p[r]) for r, left in PAIRS))
    down = p[NOSE_BOTTOM] - p[FOREHEAD]
    down = unit(down - (down @ right) * right)
    return np.stack([right, down, np.cross(right, down)], axis=1)


def pose_angles(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of a head rotation: yaw about the vertical axis, then
    pitch about the left-right axis, then roll in the image plane (R = Ry Rx Rz; scipy's
    intrinsic "YXZ" Euler angles, without importing scipy on the tracking path)."""
    r = np.asarray(rotation, np.float64)
    pitch = np.arcsin(np.clip(-r[1, 2], -1.0, 1.0))
    yaw = np.arctan2(r[0, 2], r[2, 2])
    roll = np.arctan2(r[1, 0], r[1, 1])
    return np.degrees(np.array([yaw, pitch, roll]))
