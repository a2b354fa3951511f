"""One source video -> prepared clips: track the face, choose the pieces worth keeping and
their crop squares, reject the rest with a reason, then write frames, landmarks and masks.

Two passes over the video keep memory small whatever its length: the first tracks the face
(landmarks only are kept), the second decodes again and writes the crops.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..face import CropConfig, FaceAnalyzer, SquareBox, TrackConfig, crop_image, video_square
from ..face.mesh_backend import MeshRunner
from .clips import ClipWriter, DataError, PreparedClip
from .shots import CutConfig, colour_change, colour_signature, face_pieces, shot_starts
from .video_frames import resample, source_fps, timed_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """How videos become training clips (defaults: the paper's 512 px, 25 fps, 24-frame runs)."""

    resolution: int = 512  # side of the square frames, px
    fps: float = 25.0  # clip frame rate: source frames dropped or repeated by timestamp; 0 keeps the source's
    min_frames: int = 24  # shorter pieces are rejected as "too short" (stage 2 trains on 24-frame runs)
    max_clip_frames: int = 750  # longer pieces are split evenly (30 s at 25 fps), each with its own tight crop
    # A face smaller than this x resolution (median box side, source px) is "face too small":
    # 0.25 = 128 px at 512, where the face, about half the crop side, is upscaled at most ~2x.
    min_face_ratio: float = 0.25
    reference_every: int = 8  # every Nth found frame may serve as reference and gets a person mask
    jpeg_quality: int = 95
    max_frames: int | None = None  # read only the first N source frames of each video (quick trials)
    check_every: int = 12  # frames between looks for other faces (MediaPipe, up to 4 faces)
    # Another face at least this x the tracked face's size, inside the crop, in at least half
    # of a piece's looks, rejects the piece as "several faces".
    other_face: float = 0.33
    max_gap: int = 12  # runs of frames with no detection up to this long are filled in; longer ones split
    cuts: CutConfig = CutConfig()
    crop: CropConfig = CropConfig()  # the crop the pipeline uses at inference

    def settings(self) -> dict:
        """The settings as JSON-able values (prepare.json)."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [json_ready(v) for v in value]
    return value


@dataclass
class Track:
    """Pass one over a video: per clip frame (at the clip's rate) what was found."""

    source_rate: float
    fps: float
    source_frames_read: int = 0
    source_size: tuple[int, int] = (0, 0)  # width, height
    source_index: list[int] = field(default_factory=list)  # source frame of each clip frame
    points: list[np.ndarray | None] = field(default_factory=list)  # (478, 2) source px, smoothed
    boxes: list[tuple[float, float, float, float] | None] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)  # detected in this very frame (not filled in)
    colour: list[float] = field(default_factory=list)  # colour change from the previous frame
    looks: dict[int, list[np.ndarray]] = field(default_factory=dict)  # frame -> every face's points

    def __len__(self) -> int:
        return len(self.source_index)

    @property
    def present(self) -> np.ndarray:
        return np.array([p is not None for p in self.points], bool)

    def point_array(self) -> np.ndarray:
        out = np.full((len(self), 478, 2), np.nan, np.float32)
        for k, p in enumerate(self.points):
            if p is not None:
                out[k] = p
        return out


@dataclass
class Plan:
    """A piece of the video to keep as one clip."""

    clip_id: str
    first: int
    end: int
    square: SquareBox
    reference: list[int]  # clip-relative frames


def _box(points: np.ndarray) -> np.ndarray:
    return np.r_[points.min(axis=0), points.max(axis=0)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = lambda x: float(np.prod(x[2:] - x[:2]))  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-6)


class ClipMaker:
    """Turns source videos into clip folders; holds the MediaPipe graphs of one process."""

    def __init__(self, config: PrepareConfig = PrepareConfig()):
        self.config = config
        self.analyzer = FaceAnalyzer("mesh", segment=False)
        self.looker = MeshRunner(tracking=False, max_faces=4)  # other faces; person masks

    def close(self) -> None:
        self.analyzer.close()
        self.looker.close()

    # -- pass one ------------------------------------------------------------------------
    def track(self, path: Path) -> Track:
        """Track the face through the video at the clip frame rate, look for other faces
        every `check_every` frames, and measure colour changes (scene cuts)."""
        c = self.config
        rate = source_fps(path)
        track = Track(source_rate=rate, fps=c.fps or rate)

        def counted() -> Iterator[tuple[float, np.ndarray]]:
            for item in timed_frames(path, c.max_frames):
                track.source_frames_read += 1
                yield item

        def frames() -> Iterator[np.ndarray]:
            previous = None
            for k, (j, rgb) in enumerate(resample(counted(), c.fps, rate)):
                track.source_index.append(j)
                track.source_size = (rgb.shape[1], rgb.shape[0])
                signature = colour_signature(rgb)
                track.colour.append(0.0 if previous is None else colour_change(previous, signature))
                previous = signature
                if k % c.check_every == 0:
                    track.looks[k] = self.looker.faces(rgb)
                yield rgb

        config = TrackConfig(fps=track.fps, max_gap=c.max_gap, max_missing=1.0)
        for a in self.analyzer.iter_track(frames(), config):  # keep the landmarks, drop the maps
            track.points.append(None if a is None else a.landmarks.astype(np.float32))
            track.boxes.append(None if a is None else a.box)
            track.found.append(a is not None and not a.interpolated)
        return track

    # -- choosing pieces -----------------------------------------------------------------
    def plan(self, track: Track, video_id: str, source: str) -> tuple[list[Plan], list[dict]]:
        """The pieces to keep, and rejections (source, reason, detail, frames) for the rest."""
        c = self.config
        present = track.present
        if not present.any():
            return [], [_reject(source, "no face", f"no face found in any of its {len(track)} frames")]
        points = track.point_array()
        starts = shot_starts(track.colour, points, present, c.cuts)
        plans, rejected = [], []
        for first, end in face_pieces(present, starts, c.cuts.margin, c.max_clip_frames):
            span = [first, end]
            n = end - first
            if n < c.min_frames:
                rejected.append(_reject(source, "too short", f"{n} frames with a face at {track.fps:g} fps, "
                                        f"fewer than --min-frames {c.min_frames}", span))
                continue
            found = [k for k in range(first, end) if track.found[k]]
            if not found:
                rejected.append(_reject(source, "no face", "no frame where the face was detected", span))
                continue
            square = video_square(track.boxes[first:end], c.crop)
            face = float(np.median([max(b[2] - b[0], b[3] - b[1]) for b in (track.boxes[k] for k in found)]))
            if face < c.min_face_ratio * c.resolution:
                rejected.append(_reject(source, "face too small", f"face {face:.0f} px in the source, below "
                                        f"{c.min_face_ratio:g} x {c.resolution} = {c.min_face_ratio * c.resolution:.0f} px",
                                        span))
                continue
            looks = [k for k in track.looks if first <= k < end]
            crowded = [k for k in looks if self._another_face(track, k, square, face)]
            if looks and 2 * len(crowded) >= len(looks):
                rejected.append(_reject(source, "several faces", f"another face inside the crop in "
                                        f"{len(crowded)} of {len(looks)} looked-at frames", span))
                continue
            reference = [k - first for k in found[:: c.reference_every]]
            plans.append(Plan(f"{video_id}-{len(plans):02d}", first, end, square, reference))
        return plans, rejected

    def _another_face(self, track: Track, k: int, square: SquareBox, face: float) -> bool:
        tracked = _box(track.points[k])
        half = square.size / 2
        crop = np.array([square.cx - half, square.cy - half, square.cx + half, square.cy + half])
        for points in track.looks[k]:
            box = _box(points)
            if _iou(box, tracked) > 0.3:  # the tracked face itself
                continue
            if max(box[2] - box[0], box[3] - box[1]) >= self.config.other_face * face and _iou(box, crop) > 0:
                return True
        return False

    # -- pass two ------------------------------------------------------------------------
    def write(self, path: Path, track: Track, plans: list[Plan], clips_dir: Path, source: str) -> None:
        """Decode the video again and write each planned clip (its folder appears complete
        or not at all)."""
        c = self.config
        todo = [p for p in plans if not _finished(clips_dir / p.clip_id, p.end - p.first)]
        if not todo:
            return
        for p in todo:  # a folder that does not hold this clip (an older run's, other settings)
            shutil.rmtree(clips_dir / p.clip_id, ignore_errors=True)
        points = track.point_array()
        writer: ClipWriter | None = None
        masks: list[np.ndarray] = []
        i = 0
        try:
            for k, (_, rgb) in enumerate(resample(timed_frames(path, c.max_frames), c.fps, track.source_rate)):
                plan = todo[i]
                if k < plan.first:
                    continue
                if writer is None:
                    writer, masks = ClipWriter(clips_dir / plan.clip_id, c.jpeg_quality), []
                crop = crop_image(rgb, plan.square, c.resolution)
                writer.add(crop)
                if k - plan.first in plan.reference:
                    masks.append(self.looker.person_mask(crop))
                if k == plan.end - 1:
                    m = plan.square.matrix(c.resolution)
                    writer.finish(
                        landmarks=points[plan.first : plan.end] @ m[:, :2].T + m[:, 2],
                        found=track.found[plan.first : plan.end],
                        reference_frames=plan.reference,
                        person_masks=np.stack(masks),
                        fps=track.fps,
                        square=(plan.square.cx, plan.square.cy, plan.square.size),
                        source_size=track.source_size,
                        source_frames=track.source_index[plan.first : plan.end],
                        source=source,
                    )
                    writer = None
                    i += 1
                    if i == len(todo):
                        return
            raise RuntimeError(f"{path.name} gave fewer frames on the second read than on the first")
        finally:
            if writer is not None:
                writer.abort()

    # -- the whole video -----------------------------------------------------------------
    def make(self, path: Path, source: str, video_id: str, clips_dir: Path) -> dict:
        """Prepare one video; returns its record: {"id", "source", "source_frames",
        "source_fps", "seconds", "clips": [index lines], "rejected": [rejection lines]}.
        An unreadable video is a record with one "unreadable" rejection."""
        from ..media import InputError

        record = {"id": video_id, "source": source, "source_frames": 0, "source_fps": 0.0, "seconds": 0.0}
        try:
            track = self.track(path)
        except InputError as exc:
            return {**record, "clips": [], "rejected": [_reject(source, "unreadable", str(exc))]}
        record.update(source_frames=track.source_frames_read, source_fps=track.source_rate,
                      seconds=track.source_frames_read / track.source_rate)
        plans, rejected = self.plan(track, video_id, source)
        self.write(path, track, plans, clips_dir, source)
        clips = [{
            "id": p.clip_id, "path": f"{clips_dir.name}/{p.clip_id}", "frames": p.end - p.first,
            "fps": track.fps, "resolution": self.config.resolution, "source": source,
            "start": track.source_index[p.first], "seconds": (p.end - p.first) / track.fps,
        } for p in plans]
        return {**record, "clips": clips, "rejected": rejected}


def _reject(source: str, reason: str, detail: str, frames: list[int] | None = None) -> dict:
    return {"source": source, "reason": reason, "detail": detail, "frames": frames}


def _finished(folder: Path, frames: int) -> bool:
    """A clip folder from an earlier (killed) run that already holds this clip."""
    if not folder.is_dir():
        return False
    try:
        return len(PreparedClip(folder)) == frames
    except DataError:
        return False
