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
from .motion_transfer import transfer_motion


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
        reference: tuple[np.ndarray, SquareBox] | None = None,
        relative: bool = True,
    ) -> "MotionTrack":
        """Track the driving face. With `reference` (its mesh in its crop, and that crop) the
        driving motion is moved onto the reference face (`motion_transfer`), so the maps
        show the reference's face shape making the driver's motion; without it, the driving
        face is shown as it is, in a crop around its median position and size."""
        raw: list[np.ndarray | None] = []
        for a in analyzer.iter_track(frames, TrackConfig(fps=fps)):
            raw.append(None if a is None else a.landmarks)
        found = [i for i, p in enumerate(raw) if p is not None]
        if not found:
            raise NoFaceError("no face in the driving video")
        missing = [i for i, p in enumerate(raw) if p is None]
        held = [p if p is not None else raw[min(found, key=lambda j: abs(j - i))] for i, p in enumerate(raw)]
        if reference is not None:
            ref_points, square = reference
            first = held[found[0]].astype(np.float64)
            points = [transfer_motion(ref_points, first, p.astype(np.float64), relative).points.astype(np.float32)
                      for p in held]
            return cls(points, resolution, square, missing)
        boxes = np.array([np.r_[raw[i].min(axis=0), raw[i].max(axis=0)] for i in found])
        square = face_square(np.median(boxes, axis=0), crop)
        m = square.matrix(resolution)
        return cls([(p @ m[:, :2].T + m[:, 2]).astype(np.float32) for p in held], resolution, square, missing)
