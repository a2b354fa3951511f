"""Moving the driving face's motion onto the reference face (mesh to mesh).

The head's motion (a similarity transform of points that expression does not move) and the
expression (what the mesh does once the head motion is taken out) are measured relative to
the first driving frame, then applied to the reference mesh, normalised for face size and
in-plane rotation: the reference keeps its own face shape, so a wide driving face does not
widen it. Both engines use this: the preview engine warps the image to the result, the
diffusion engine draws its motion maps from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import mesh_topology as mt

#: Points that move with the head but not with expression: the upper face outline (temples
#: and forehead; the jaw moves when talking), the nose bridge and the eye corners.
_UPPER_OVAL = (234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454)
STABLE_POINTS = tuple(sorted(set(_UPPER_OVAL) | {168, 6, 197, 195, 33, 133, 263, 362}))
#: Each eye: eyelid contour (outer corner first, inner corner at index 8) and its iris points.
EYES = ((mt.SUBJECT_RIGHT_EYE, mt.SUBJECT_RIGHT_IRIS), (mt.SUBJECT_LEFT_EYE, mt.SUBJECT_LEFT_IRIS))
#: An eye may open at most this much wider than in the reference.
MAX_EYE_OPENING = 1.6


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity (rotation, uniform scale, translation) mapping src to dst."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    scale = (sigma * np.diag(fix)).sum() / max((s**2).sum() / len(src), 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * (u @ fix @ vt)
    m[:, 2] = md - m[:, :2] @ ms
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 2x3 transform."""
    return pts @ m[:, :2].T + m[:, 2]


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 transform of applying b, then a."""
    out = np.zeros((2, 3))
    out[:, :2] = a[:, :2] @ b[:, :2]
    out[:, 2] = a[:, :2] @ b[:, 2] + a[:, 2]
    return out


def polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(abs(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]) / 2)


def eye_opening(points: np.ndarray, eye: tuple) -> float:
    """Area of the eyelid contour over the squared eye width: 0 when closed."""
    contour = points[list(eye[0])]
    width = np.linalg.norm(contour[0] - contour[8])
    return polygon_area(contour) / max(width**2, 1e-6)


@dataclass
class Target:
    """Where the reference mesh should be in one output frame."""

    points: np.ndarray  # (478, 2)
    head: np.ndarray  # 2x3 head motion since the first driving frame, in reference pixels
    eye_opening: np.ndarray  # (2,) each eye's opening relative to the first driving frame
    # (478,) how far each point is from the camera (any unit; None: not known), so a warp can
    # draw the nearer of two overlapping parts last (a turned head's cheek over its far side)
    depth: np.ndarray | None = None
    # (2, 2) the part of each iris's motion (px; subject's right eye first) that is the eyeball
    # turning under the lids (a gaze edit): a warp slides the eye's inside by it instead of
    # bending the iris through the lids; None: none
    iris_shift: np.ndarray | None = None


def _retarget_eyelids(moved: np.ndarray, ref: np.ndarray, eye: tuple, ratio: float) -> None:
    """Set the eyelids' opening to `ratio` times the reference's, in place: eyes blink as
    fully as the driver's whatever the two faces' eye sizes (adding the driver's lid motion
    would close a large eye only part of the way)."""
    ratio = float(np.clip(ratio, 0.0, MAX_EYE_OPENING))
    contour, iris = list(eye[0]), list(eye[1])
    a, b = moved[contour[0]], moved[contour[8]]
    axis = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    normal = np.array([-axis[1], axis[0]])
    ra, rb = ref[contour[0]], ref[contour[8]]
    r_axis = (rb - ra) / max(np.linalg.norm(rb - ra), 1e-6)
    r_normal = np.array([-r_axis[1], r_axis[0]])
    across = (moved[contour] - a) @ normal
    wanted = ratio * ((ref[contour] - ra) @ r_normal)
    # The eyeball stays where it is unless the lids would close over it.
    iris_across = (moved[iris] - a) @ normal
    iris_wanted = iris_across if ratio >= 1 else iris_across * max(ratio, 0.3)
    moved[contour] += (wanted - across)[:, None] * normal
    moved[iris] += (iris_wanted - iris_across)[:, None] * normal


def transfer_motion(reference: np.ndarray, first: np.ndarray, current: np.ndarray, relative: bool = True) -> Target:
    """The reference mesh (478, 2) moved like the driving mesh moved from `first` to
    `current`. `relative=False` places the driving mesh itself on the reference face (the
    driver's face shape comes along)."""
    stable = list(STABLE_POINTS)
    to_ref = similarity(first[stable], reference[stable])  # driving frame 0 -> reference
    head_drv = similarity(first[stable], current[stable])  # head motion in the driving video
    head = compose(to_ref, compose(head_drv, cv2.invertAffineTransform(to_ref)))  # same motion on the reference
    eyes = np.array([eye_opening(current, e) / max(eye_opening(first, e), 1e-3) for e in EYES])
    if not relative:
        return Target(apply(to_ref, current), head, eyes)
    expression = apply(cv2.invertAffineTransform(head_drv), current) - first  # driving frame-0 coordinates
    moved = reference + expression @ to_ref[:, :2].T  # rotated and scaled onto the reference face
    for eye, ratio in zip(EYES, eyes):
        _retarget_eyelids(moved, reference, eye, ratio)
    return Target(apply(head, moved), head, eyes)
