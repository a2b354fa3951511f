"""An average face in 3-D, MediaPipe's 478 mesh points, for what a 2-D mesh alone cannot say:
how its points move when the head turns (yaw, pitch) and how far a 2-D face is turned.

The mesh of every face the program moves is 2-D (x, y in pixels); the depth of each point is
taken from this average face, made from the 3-D meshes MediaPipe gives for eight roughly
frontal portraits (`measure`; `python -m vivid.face.mean_face IMAGE...` writes it again).
Coordinates: x from the subject's right outer eye corner (point 33) to the left one (263),
y down, z away from the camera, origin between those two corners, unit their distance.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from .head_pose import head_rotation

#: The stored average face, (478, 3) float32.
MEAN_FACE_FILE = Path(__file__).with_name("mean_face.npy")
#: Outer eye corners: the face's unit and its left-right axis.
EYE_CORNERS = (33, 263)


def frontal(points3d: np.ndarray) -> np.ndarray:
    """A (478, 3) mesh turned to face the camera, in the mean face's coordinates."""
    p = np.asarray(points3d, np.float64)
    centre = p[list(EYE_CORNERS)].mean(axis=0)
    unit = np.linalg.norm(p[EYE_CORNERS[1]] - p[EYE_CORNERS[0]])
    return (p - centre) @ head_rotation(p) / max(unit, 1e-9)


def measure(meshes3d: Iterable[np.ndarray]) -> np.ndarray:
    """The mean of several faces' frontal meshes, (478, 3) float32."""
    return np.mean([frontal(m) for m in meshes3d], axis=0).astype(np.float32)


@lru_cache(maxsize=1)
def mean_face() -> np.ndarray:
    """The stored average face, (478, 3), read once."""
    face = np.load(MEAN_FACE_FILE)
    face.setflags(write=False)
    return face


def fit_rotation(points: np.ndarray, indices: Iterable[int] | None = None) -> np.ndarray:
    """The head rotation (3x3, columns: the head's right, down and backward axes in camera
    coordinates) that best lays the mean face's points over a 2-D mesh `points` (478, 2) under a
    scaled orthographic camera: how far a face seen only in 2-D is turned."""
    idx = list(range(len(points))) if indices is None else list(indices)
    model = mean_face().astype(np.float64)[idx]
    seen = np.asarray(points, np.float64)[idx]
    m, s = model - model.mean(axis=0), seen - seen.mean(axis=0)
    affine = np.linalg.lstsq(m, s, rcond=None)[0].T  # (2, 3): model -> image, up to its scale
    # The nearest scaled rotation: two orthonormal rows, the third their cross product.
    u, _, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])
    return rotation if np.linalg.det(rotation) > 0 else rotation * np.array([[1], [1], [-1]])


def _write(images: list[str]) -> None:
    """Measure the mean face from the portraits named and store it beside this module."""
    from PIL import Image

    from .finding import FaceFinder

    with FaceFinder() as finder:
        meshes = []
        for path in images:
            faces = finder.find(np.asarray(Image.open(path).convert("RGB")))
            if faces:
                meshes.append(faces[0].points3d)
    np.save(MEAN_FACE_FILE, measure(meshes))
    print(f"wrote {MEAN_FACE_FILE} from {len(meshes)} faces")


if __name__ == "__main__":
    import sys

    _write(sys.argv[1:])


__all__ = ["EYE_CORNERS", "MEAN_FACE_FILE", "fit_rotation", "frontal", "mean_face", "measure"]
