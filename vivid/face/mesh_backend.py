"""The offline backend: MediaPipe face mesh (478 points with irises) and selfie segmentation,
found through `finding` (detector, then the mesh on a square around each face).

Every model ships inside the mediapipe 0.10.14 wheel, so this works with no download.
"""
from __future__ import annotations

import numpy as np

from .finding import FaceFinder, FaceTracker, FinderConfig
from .mediapipe_models import PERSON_THRESHOLD, PersonSegmenter, mp  # noqa: F401  (mp: for benchmarks)


class MeshRunner:
    """Every human face's mesh points in RGB frames, and person masks.

    `tracking=True` follows one face from frame to frame (`FaceTracker`): faster and steadier
    than finding it from scratch in every frame, and it stays on the same person.
    """

    def __init__(self, *, tracking: bool = False, max_faces: int = 4, min_confidence: float = 0.5):
        self.tracking = tracking
        self._finder = FaceFinder(FinderConfig(max_faces=max_faces, min_detection=min_confidence))
        self._tracker = FaceTracker(self._finder) if tracking else None
        self._segmenter: PersonSegmenter | None = None

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(478, 2) float32 pixel coordinates of each face found, in MediaPipe's order (the
        largest, most central face first; when tracking, the followed face alone)."""
        if self._tracker is not None:
            face = self._tracker.step(rgb)
            return [] if face is None else [face.points]
        return [face.points for face in self._finder.find(rgb)]

    def person_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Boolean mask of the person (face, hair, neck, body) from selfie segmentation."""
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        return self._segmenter.mask(rgb)

    def close(self) -> None:
        self._finder.close()
        if self._segmenter is not None:
            self._segmenter.close()

    def __enter__(self) -> "MeshRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
