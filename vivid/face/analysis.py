"""What a face backend returns for one image: parsing map, eye landmarks, box, person mask."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


class NoFaceError(ValueError):
    """There is no usable face in the image or video."""


@dataclass
class FaceAnalysis:
    """One face in one image, in that image's pixel coordinates.

    `eye_points` holds the eyelid contour of the image-left eye, then of the image-right eye
    (`eye_points_per_eye` points each); `iris` holds the two eyeball centres in the same order.
    """

    labels: np.ndarray  # (H, W) uint8 indices into LABELS
    iris: np.ndarray  # (2, 2) float (x, y), image-left eye first
    eye_points: np.ndarray  # (2 * eye_points_per_eye, 2) float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) face box in pixels
    foreground: np.ndarray  # (H, W) bool, person vs background
    iris_radius: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # (2,) px
    # (478, 2) MediaPipe face-mesh points: every backend finds and aligns faces with the mesh,
    # so motion transfer and the preview engine work the same whatever parses the face.
    landmarks: np.ndarray | None = None
    backend_points: np.ndarray | None = None  # the parser's own landmarks (FaRL: 98 WFLW points)
    backend: str = ""
    notes: list[str] = field(default_factory=list)  # things the user should know
    # Boxes (x0, y0, x1, y1) of the other faces in the image, when there were several: this
    # analysis is of the largest, most central one.
    other_faces: list[tuple[float, float, float, float]] = field(default_factory=list)
    interpolated: bool = False  # filled in from neighbouring frames (no face detected here)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    @property
    def eye_points_per_eye(self) -> int:
        return len(self.eye_points) // 2

    def eye_contour(self, side: int) -> np.ndarray:
        """Eyelid contour of the image-left (0) or image-right (1) eye."""
        n = self.eye_points_per_eye
        return self.eye_points[side * n : (side + 1) * n]

    @property
    def faces_found(self) -> int:
        """How many faces the image showed (this one included)."""
        return 1 + len(self.other_faces)

    @property
    def face_size(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    def replace(self, **changes) -> "FaceAnalysis":
        return dataclasses.replace(self, **changes)
