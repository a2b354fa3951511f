"""Move a parsed face's expression parts to where another face mesh puts them.

A parser's map (FaRL's, say) is drawn on one frame's face; motion transfer and landmark
smoothing give a different target mesh for that frame. Each component (brows, eyes, nose,
mouth) is moved by the affine map that best takes its own mesh points to the target's, so
the parser's part shapes are kept and their positions, sizes and openings follow the mesh.
Used for every parser but the mesh's own (which is simply re-drawn from the target mesh).
"""
from __future__ import annotations

import cv2
import numpy as np

from . import mesh_topology as mt
from .analysis import FaceAnalysis
from .labels import COMPONENTS, LABEL_INDEX, PAINT_ORDER
from .mesh_parsing import face_box

#: Mesh points of each component, by the subject's side (image sides are decided per face).
_SUBJECT_POINTS: dict[str, tuple[int, ...]] = {
    "right_brow": mt.SUBJECT_RIGHT_BROW,
    "left_brow": mt.SUBJECT_LEFT_BROW,
    "right_eye": mt.SUBJECT_RIGHT_EYE + mt.SUBJECT_RIGHT_IRIS,
    "left_eye": mt.SUBJECT_LEFT_EYE + mt.SUBJECT_LEFT_IRIS,
    "nose": mt.NOSE,
    "mouth": mt.OUTER_UPPER_LIP + mt.OUTER_LOWER_LIP + mt.INNER_UPPER_LIP + mt.INNER_LOWER_LIP,
}


def component_points(mesh: np.ndarray) -> dict[str, np.ndarray]:
    """Mesh points of every component, keyed by image side ("left" = image-left)."""
    subject_right_is_image_left = mesh[list(mt.SUBJECT_RIGHT_EYE), 0].mean() <= mesh[list(mt.SUBJECT_LEFT_EYE), 0].mean()
    out = {}
    for name, ids in _SUBJECT_POINTS.items():
        if name.startswith(("left_", "right_")):
            side, part = name.split("_")
            image_left = (side == "right") == subject_right_is_image_left
            name = f"{'left' if image_left else 'right'}_{part}"
        out[name] = mesh[list(ids)]
    return out


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 affine map taking points `src` (N, 2) to `dst` (N, 2)."""
    a = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    m, *_ = np.linalg.lstsq(a, dst, rcond=None)  # (3, 2)
    return m.T


def _move(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def warp_parts(analysis: FaceAnalysis, src_mesh: np.ndarray, dst_mesh: np.ndarray, shape: tuple[int, int]) -> FaceAnalysis:
    """`analysis` (whose face mesh is `src_mesh`, in its pixels) with every expression part
    moved to `dst_mesh`, in an image of `shape` (h, w). The face outside the parts becomes
    plain skin inside `dst_mesh`'s outline; eye contours and irises move with their eye."""
    src_parts, dst_parts = component_points(src_mesh), component_points(dst_mesh)
    h, w = shape
    labels = np.zeros((h, w), np.uint8)
    cv2.fillPoly(labels, [np.round(dst_mesh[list(mt.FACE_OVAL)]).astype(np.int32)], LABEL_INDEX["skin"])
    affines = {c: fit_affine(src_parts[c], dst_parts[c]) for c in COMPONENTS}
    for comp in PAINT_ORDER:
        part_ids = [LABEL_INDEX[p] for p in COMPONENTS[comp]]
        only = np.where(np.isin(analysis.labels, part_ids), analysis.labels, 0).astype(np.uint8)
        if not only.any():
            continue
        moved = cv2.warpAffine(only, affines[comp], (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        labels[moved > 0] = moved[moved > 0]
    eye_points = analysis.eye_points.copy()
    iris = analysis.iris.copy()
    radius = analysis.iris_radius.copy()
    n = analysis.eye_points_per_eye
    for side, comp in enumerate(("left_eye", "right_eye")):
        m = affines[comp]
        eye_points[side * n : (side + 1) * n] = _move(m, analysis.eye_contour(side))
        iris[side] = _move(m, analysis.iris[side : side + 1])[0]
        radius[side] *= np.sqrt(abs(np.linalg.det(m[:, :2])))
    return analysis.replace(
        labels=labels, eye_points=eye_points, iris=iris, iris_radius=radius.astype(np.float32),
        box=face_box(dst_mesh, shape), foreground=labels > 0, landmarks=dst_mesh.astype(np.float32),
        backend_points=None, notes=list(analysis.notes),
    )
