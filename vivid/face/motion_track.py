"""A driving video's face motion, kept compact (landmarks per frame) and rendered into
motion maps at the model's resolution only for the frames being worked on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .analyzer import FaceAnalyzer, TrackConfig
from .analysis import NoFaceError
from .crop import CropConfig, SquareBox, face_square
from .mesh_parsing import analysis_from_mesh
from .motion_map import render_motion_map


@dataclass
class MotionTrack:
    """Mesh landmarks of every driving frame in crop coordinates (about 4 KB a frame, so a
    long video costs little memory), and the crop they refer to."""

    points: list[np.ndarray]  # (478, 2) per frame, crop pixels
    resolution: int
    square: SquareBox
    missing: list[int] = field(default_factory=list)  # frames with no face, held from a neighbour

    def __len__(self) -> int:
        return len(self.points)

    def motion_maps(self, frames: Sequence[int]) -> np.ndarray:
        """(len(frames), res, res, 3) uint8 motion maps."""
        shape = (self.resolution, self.resolution)
        return np.stack([render_motion_map(analysis_from_mesh(self.points[i], shape)) for i in frames])

    @classmethod
    def from_frames(
        cls,
        analyzer: FaceAnalyzer,
        frames: Iterable[np.ndarray],
        resolution: int,
        fps: float = 25.0,
        crop: CropConfig = CropConfig(),
    ) -> "MotionTrack":
        """Track the driving face and express it in one square crop around its median
        position and size, placed like the reference crop so the faces line up."""
        raw: list[np.ndarray | None] = []
        for a in analyzer.iter_track(frames, TrackConfig(fps=fps)):
            raw.append(None if a is None else a.landmarks)
        found = [i for i, p in enumerate(raw) if p is not None]
        if not found:
            raise NoFaceError("no face in the driving video")
        boxes = np.array([np.r_[raw[i].min(axis=0), raw[i].max(axis=0)] for i in found])
        square = face_square(np.median(boxes, axis=0), crop)
        m = square.matrix(resolution)
        points, missing = [], []
        for i, p in enumerate(raw):
            if p is None:  # hold the nearest frame that has a face
                missing.append(i)
                p = raw[min(found, key=lambda j: abs(j - i))]
            points.append((p @ m[:, :2].T + m[:, 2]).astype(np.float32))
        return cls(points, resolution, square, missing)
