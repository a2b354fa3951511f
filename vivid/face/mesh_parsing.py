"""Rasterise a MediaPipe face mesh into a parsing map with eye landmarks."""
from __future__ import annotations

import cv2
import numpy as np

from . import mesh_topology as mt
from .analysis import FaceAnalysis
from .labels import LABEL_INDEX
from .person import split_hair_and_body


def _fill(labels: np.ndarray, polygon: np.ndarray, name: str) -> None:
    cv2.fillPoly(labels, [np.round(polygon).astype(np.int32)], LABEL_INDEX[name], lineType=cv2.LINE_8)


def _iris(points: np.ndarray, ids: tuple[int, ...]) -> tuple[np.ndarray, float]:
    centre = points[ids[0]]
    radius = float(np.mean(np.linalg.norm(points[list(ids[1:])] - centre, axis=1)))
    return centre, radius


def face_box(points: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Box of the face outline, clipped to the image."""
    oval = points[list(mt.FACE_OVAL)]
    (x0, y0), (x1, y1) = oval.min(axis=0), oval.max(axis=0)
    h, w = shape
    return float(max(x0, 0)), float(max(y0, 0)), float(min(x1, w)), float(min(y1, h))


def analysis_from_mesh(
    points: np.ndarray, shape: tuple[int, int], person: np.ndarray | None = None
) -> FaceAnalysis:
    """Parsing map, eye landmarks and box of one face from its 478 mesh points (pixels).

    `person` is a selfie-segmentation mask; with it, hair and body are labelled and the
    foreground is the person, without it the foreground is the face outline only.
    """
    h, w = shape
    labels = np.zeros((h, w), np.uint8)
    oval = points[list(mt.FACE_OVAL)]
    _fill(labels, oval, "skin")
    _fill(labels, cv2.convexHull(points[list(mt.NOSE)].astype(np.float32))[:, 0], "nose")
    _fill(labels, points[list(mt.OUTER_UPPER_LIP + mt.INNER_UPPER_LIP[::-1])], "upper_lip")
    _fill(labels, points[list(mt.OUTER_LOWER_LIP + mt.INNER_LOWER_LIP[::-1])], "lower_lip")
    _fill(labels, points[list(mt.INNER_UPPER_LIP + mt.INNER_LOWER_LIP[-2:0:-1])], "inner_mouth")

    eyes = [points[list(mt.SUBJECT_RIGHT_EYE)], points[list(mt.SUBJECT_LEFT_EYE)]]
    irises = [_iris(points, mt.SUBJECT_RIGHT_IRIS), _iris(points, mt.SUBJECT_LEFT_IRIS)]
    brows = [points[list(mt.SUBJECT_RIGHT_BROW)], points[list(mt.SUBJECT_LEFT_BROW)]]
    # Image-left is decided by position, so mirrored or flipped input still gets it right.
    if eyes[0][:, 0].mean() > eyes[1][:, 0].mean():
        eyes, irises, brows = eyes[::-1], irises[::-1], brows[::-1]
    for side, name in enumerate(("left", "right")):
        _fill(labels, eyes[side], f"{name}_eye")
        _fill(labels, brows[side], f"{name}_brow")

    box = face_box(points, shape)
    face = labels > 0
    if person is not None:
        up = points[mt.FOREHEAD_TOP] - points[mt.CHIN]
        mouth = points[list(mt.MOUTH_CORNERS)].mean(axis=0)
        hair, body = split_hair_and_body(person & ~face, mouth, up, box)
        labels[hair] = LABEL_INDEX["hair"]
        labels[body] = LABEL_INDEX["body"]
        foreground = person | face
    else:
        foreground = face
    return FaceAnalysis(
        labels=labels,
        iris=np.array([irises[0][0], irises[1][0]], np.float32),
        iris_radius=np.array([irises[0][1], irises[1][1]], np.float32),
        eye_points=np.concatenate(eyes).astype(np.float32),
        box=box,
        foreground=foreground,
        landmarks=points.astype(np.float32),
        backend="mesh",
    )
