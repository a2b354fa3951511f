"""The paper's augmentation against identity leakage: rescale face parts and their spacing.

Each component (brows, eyes, nose, mouth) is scaled about its own centre, then moved so the
spacing between components scales about the face centre. The face stays where it is and the
eye landmarks move with their eye. With fixed factors the same code retargets a driving face
onto a face of another shape.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from .analysis import FaceAnalysis
from .labels import COMPONENTS, LABEL_INDEX, PAINT_ORDER


def _component_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    masks = {}
    for comp, parts in COMPONENTS.items():
        mask = np.isin(labels, [LABEL_INDEX[p] for p in parts])
        if mask.any():
            masks[comp] = mask
    return masks


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def component_centres(analysis: FaceAnalysis) -> dict[str, np.ndarray]:
    """Pixel centroid (x, y) of every component present in the parsing map."""
    return {c: _centroid(m) for c, m in _component_masks(analysis.labels).items()}


def scale_components(
    analysis: FaceAnalysis, part_scales: Mapping[str, float] | float, face_scale: float
) -> FaceAnalysis:
    """Scale each component by its factor about its centroid, and the spacing by `face_scale`
    about the mean of the component centroids (which therefore stays put)."""
    labels = analysis.labels
    masks = _component_masks(labels)
    if not masks:
        return analysis.replace()
    centres = {c: _centroid(m) for c, m in masks.items()}
    face_centre = np.mean(list(centres.values()), axis=0)
    out = labels.copy()
    filler = LABEL_INDEX["skin"]
    for mask in masks.values():
        out[mask] = filler
    h, w = labels.shape
    affines: dict[str, np.ndarray] = {}
    for comp in PAINT_ORDER:
        if comp not in masks:
            continue
        s = part_scales if isinstance(part_scales, (int, float)) else part_scales.get(comp, 1.0)
        c = centres[comp]
        new_c = face_centre + face_scale * (c - face_centre)
        # x' = s * (x - c) + new_c
        m = np.array([[s, 0, new_c[0] - s * c[0]], [0, s, new_c[1] - s * c[1]]], np.float64)
        affines[comp] = m
        # Move the component's own label values so e.g. lips keep upper/inner/lower.
        part_only = np.where(masks[comp], labels, 0).astype(np.uint8)
        moved = cv2.warpAffine(part_only, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        out[moved > 0] = moved[moved > 0]

    def move(points: np.ndarray, comp: str) -> np.ndarray:
        if comp not in affines or len(points) == 0:
            return points.copy()
        m = affines[comp]
        return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)

    eye_points = analysis.eye_points.copy()
    iris = analysis.iris.copy()
    radius = analysis.iris_radius.copy()
    n = analysis.eye_points_per_eye
    for side, comp in enumerate(("left_eye", "right_eye")):
        eye_points[side * n : (side + 1) * n] = move(analysis.eye_contour(side), comp)
        iris[side] = move(analysis.iris[side : side + 1], comp)[0]
        if comp in affines:
            radius[side] *= affines[comp][0, 0]
    return analysis.replace(
        labels=out, eye_points=eye_points, iris=iris, iris_radius=radius, landmarks=None, notes=list(analysis.notes)
    )


def random_scale(
    analysis: FaceAnalysis,
    seed: int,
    part_range: tuple[float, float] = (0.8, 1.2),
    face_range: tuple[float, float] = (0.7, 1.3),
) -> FaceAnalysis:
    """The training augmentation: every component gets its own factor from `part_range`,
    the spacing one factor from `face_range`; the same seed always gives the same result."""
    rng = np.random.default_rng(seed)
    part_scales = {comp: float(rng.uniform(*part_range)) for comp in COMPONENTS}
    face_scale = float(rng.uniform(*face_range))
    return scale_components(analysis, part_scales, face_scale)
