"""A face the mesh found: its points, the mesh's confidence, and the detection it came from.

Below both the finder (`finding`) and the human check (`human_check`), which both work on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mediapipe_models import Detection
from .regions import box_side, landmark_box


@dataclass
class FoundFace:
    """One human face: the mesh's 478 points (x, y in pixels, z in the same scale), the
    mesh's face-presence score, and the detection it was found from (None: followed from
    the previous frame)."""

    points3d: np.ndarray  # (478, 3) float32
    presence: float
    detection: Detection | None = None

    @property
    def points(self) -> np.ndarray:
        """(478, 2) float32 pixel coordinates, in MediaPipe's order."""
        return self.points3d[:, :2]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return landmark_box(self.points3d)

    @property
    def size(self) -> float:
        return box_side(self.box)
