"""A driving video's face motion, kept compact (landmarks per frame, and the parser's map
as a small PNG when the parser is not the mesh) and rendered into motion maps at the
model's resolution only for the frames being worked on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np

from .analysis import FaceAnalysis, NoFaceError
from .analyzer import FaceAnalyzer, TrackConfig
from .crop import CropConfig, SquareBox, crop_analysis, face_square
from .mesh_parsing import analysis_from_mesh
from .edit_rig import EditRig
from .motion_edits import MotionEdits
from .motion_map import MotionMapStyle, render_motion_map
from .motion_transfer import transfer_motion
from .part_warp import warp_parts

#: The square a parsed frame is kept in: the face with a small margin.
PARSE_CROP = CropConfig(scale=1.4, lift=0.0)


@dataclass
class ParsedFrame:
    """One frame's parsing map from a parser other than the mesh (FaRL), in a face crop:
    labels as PNG bytes, eye landmarks and the face mesh the map was drawn on."""

    labels_png: bytes
    size: int
    eye_points: np.ndarray
    iris: np.ndarray
    iris_radius: np.ndarray
    mesh: np.ndarray  # (478, 2) crop pixels

    @classmethod
    def from_analysis(cls, analysis: FaceAnalysis, size: int) -> "ParsedFrame":
        cropped = crop_analysis(analysis, face_square(analysis.box, PARSE_CROP), size)
        ok, png = cv2.imencode(".png", cropped.labels)
        assert ok, "PNG encoding of a label map cannot fail"
        return cls(png.tobytes(), size, cropped.eye_points, cropped.iris, cropped.iris_radius, cropped.landmarks)

    def analysis(self) -> FaceAnalysis:
        labels = cv2.imdecode(np.frombuffer(self.labels_png, np.uint8), cv2.IMREAD_UNCHANGED)
        x0, y0 = self.mesh.min(axis=0)
        x1, y1 = self.mesh.max(axis=0)
        return FaceAnalysis(
            labels=labels, iris=self.iris, eye_points=self.eye_points, box=(x0, y0, x1, y1), foreground=labels > 0,
            iris_radius=self.iris_radius, landmarks=self.mesh, backend="farl",
        )


@dataclass
class MotionTrack:
    """Mesh landmarks of every driving frame in crop coordinates (about 4 KB a frame, so a
    long video costs little memory), the crop they refer to and, for parsers other than
    the mesh, each frame's parsing map. Where the maps are drawn from the mesh, the mesh
    is the target; otherwise the parsed parts are moved onto it (`part_warp`)."""

    points: list[np.ndarray]  # (478, 2) per frame, crop pixels
    resolution: int
    square: SquareBox
    missing: list[int] = field(default_factory=list)  # frames with no face, held from a neighbour
    parses: list[ParsedFrame] | None = None  # per frame, when the parser is not the mesh

    def __len__(self) -> int:
        return len(self.points)

    @property
    def parser(self) -> str:
        return "mesh" if self.parses is None else "farl"

    def analysis(self, index: int) -> FaceAnalysis:
        """Frame `index` as a face analysis at the model's resolution."""
        shape = (self.resolution, self.resolution)
        if self.parses is None:
            return analysis_from_mesh(self.points[index], shape)
        parsed = self.parses[index]
        return warp_parts(parsed.analysis(), parsed.mesh, self.points[index], shape)

    def motion_maps(self, frames: Sequence[int], style: MotionMapStyle = MotionMapStyle()) -> np.ndarray:
        """(len(frames), res, res, 3) uint8 motion maps."""
        return np.stack([render_motion_map(self.analysis(i), style) for i in frames])

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
        edits: MotionEdits = MotionEdits(),
    ) -> "MotionTrack":
        """Track the driving face in `frames` with `analyzer` (see `from_analyses`). With the mesh
        as the parser nothing is drawn per frame: the maps are drawn from the mesh in the crop,
        at the model's resolution, when they are needed (a 1080p wide shot costs what a
        close-up does); another parser's maps are parsed per frame and kept in a face crop."""
        if analyzer.backend == "mesh":
            meshes = analyzer.iter_landmarks(frames, TrackConfig(fps=fps, parse=False))
            raw = [None if p is None else np.asarray(p, np.float32) for p in meshes]  # the precision analyses keep
            return cls._from_meshes(raw, [None] * len(raw), resolution, crop, reference, relative, edits)
        return cls.from_analyses(analyzer.iter_track(frames, TrackConfig(fps=fps)), resolution, crop, reference, relative,
                                 edits)

    @classmethod
    def from_analyses(
        cls,
        analyses: Iterable[FaceAnalysis | None],
        resolution: int,
        crop: CropConfig = CropConfig(),
        reference: tuple[np.ndarray, SquareBox] | None = None,
        relative: bool = True,
        edits: MotionEdits = MotionEdits(),
        rest: np.ndarray | None = None,
    ) -> "MotionTrack":
        """From tracked analyses (one per frame, None: no face). With `reference` (its mesh
        in its crop, and that crop) the driving motion is moved onto the reference face
        (`motion_transfer`), so the maps show the reference's face shape making the driver's
        motion; without it, the driving face is shown as it is, in a crop around its median
        position and size. Motion is measured from `rest` (the driver's face at rest, in its
        frames' pixels; default: its first frame with a face). `edits` are made on every
        frame's mesh (`vivid.face.edit_rig`), before any map is drawn from it."""
        raw: list[np.ndarray | None] = []
        parses: list[ParsedFrame | None] = []
        for a in analyses:
            raw.append(None if a is None else a.landmarks)
            keep = a is not None and a.backend not in ("", "mesh")
            parses.append(ParsedFrame.from_analysis(a, resolution) if keep else None)
        return cls._from_meshes(raw, parses, resolution, crop, reference, relative, edits, rest)

    @classmethod
    def _from_meshes(cls, raw: list[np.ndarray | None], parses: list["ParsedFrame | None"], resolution: int,
                     crop: CropConfig, reference: tuple[np.ndarray, SquareBox] | None, relative: bool,
                     edits: MotionEdits, rest: np.ndarray | None = None) -> "MotionTrack":
        """`from_analyses` from each frame's mesh in frame pixels (None: no face) and parse."""
        found = [i for i, p in enumerate(raw) if p is not None]
        if not found:
            raise NoFaceError("no face in the driving video")
        missing = [i for i, p in enumerate(raw) if p is None]
        nearest = [i if raw[i] is not None else min(found, key=lambda j: abs(j - i)) for i in range(len(raw))]
        held = [raw[j] for j in nearest]
        held_parses = None if all(p is None for p in parses) else [parses[j] for j in nearest]
        if reference is not None:
            ref_points, square = reference
            first = (held[found[0]] if rest is None else rest).astype(np.float64)
            points = [transfer_motion(ref_points, first, p.astype(np.float64), relative).points for p in held]
            return cls(_edited(points, ref_points, edits), resolution, square, missing, held_parses)
        boxes = np.array([np.r_[raw[i].min(axis=0), raw[i].max(axis=0)] for i in found])
        square = face_square(np.median(boxes, axis=0), crop)
        m = square.matrix(resolution)
        points = [p @ m[:, :2].T + m[:, 2] for p in held]
        neutral = points[found[0]] if rest is None else rest @ m[:, :2].T + m[:, 2]
        return cls(_edited(points, neutral, edits), resolution, square, missing, held_parses)


def _edited(points: list[np.ndarray], neutral: np.ndarray, edits: MotionEdits) -> list[np.ndarray]:
    """Each frame's mesh with `edits` made (the face at rest being `neutral`), as float32."""
    if edits:
        rig = EditRig(neutral)
        points = [rig.apply(p, edits) for p in points]
    return [np.asarray(p, np.float32) for p in points]
