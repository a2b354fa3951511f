"""A portrait video as the source: each of its frames moved by the driver's motion, so the
source keeps its own motion (its head, its blinks, its speech) and the driver's is added on
top. The preview engine's warp does it frame by frame; the diffusion model animates one
portrait image and refuses a source video (`vivid.animation` says so before any work).

The two videos are paired by time at the source's frame rate (the driver's frame nearest in
time to each source frame), and the result is as long as the shorter of the two. Every
source frame must show the face: a frame without one is an error (`NoFaceError`), raised when
it is reached, so nothing is written (the job's output appears only when complete).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .background import run_ahead
from .face import NoFaceError, TrackConfig
from .face.mesh_parsing import face_box
from .face.edit_rig import EditRig
from .face.motion_transfer import transfer_motion
from .face.template import MotionTemplate
from .media import DEFAULT_LIMITS, MediaLimits, VideoInfo, check_video, fit_within, read_video
from .preview import PreviewAnimator


@dataclass
class SourceVideo:
    """A portrait video, checked (`open`) but not decoded."""

    path: Path
    info: VideoInfo
    max_frames: int | None = None  # only the first N frames are used (None: all)
    limits: MediaLimits = DEFAULT_LIMITS
    max_side: int | None = None  # larger frames are animated scaled down to this longest side (None: as they are)

    @classmethod
    def open(cls, path: str | Path, limits: MediaLimits = DEFAULT_LIMITS, max_frames: int | None = None,
             max_side: int | None = None) -> "SourceVideo":
        """Check a source video's header, limits and frames' presence (`vivid.media.check_video`)."""
        return cls(Path(path), check_video(path, max_frames, limits), max_frames, limits, max_side)

    @property
    def scaled_down(self) -> bool:
        """Whether its frames are animated scaled down (`max_side`)."""
        return self.max_side is not None and max(self.info.width, self.info.height) > self.max_side

    @property
    def fps(self) -> float:
        return self.info.fps

    @property
    def has_audio(self) -> bool:
        return self.info.has_audio

    @property
    def total(self) -> int | None:
        """Frames that will be read (None: the file does not say)."""
        frames = self.info.present or self.info.frames
        return (min(frames, self.max_frames) if self.max_frames else frames) or None

    def frames(self, check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """The source's frames, decoded one at a time; `check` runs before each (it may raise)."""
        for frame in read_video(self.path, max_frames=self.max_frames, limits=self.limits):
            if check is not None:
                check()
            yield fit_within(frame, self.max_side)[0]

    def first_frame(self) -> np.ndarray:
        return fit_within(next(read_video(self.path, max_frames=1, limits=self.limits)), self.max_side)[0]


def paired_length(source_frames: int | None, source_fps: float, driving_frames: int | None,
                  driving_fps: float) -> int | None:
    """How many frames the result has: the shorter of the two videos, at the source's rate."""
    if source_frames is None or driving_frames is None:
        return None
    return min(source_frames, int(np.floor(driving_frames * source_fps / driving_fps + 1e-6)))


def at_times(items: Iterable, rate: float, out_rate: float) -> Iterator:
    """`items` (one per 1/`rate` s) resampled to `out_rate`: for each output time, the item
    nearest to it; ends when the items do."""
    source = iter(items)
    index, current = -1, None
    out = 0
    while True:
        wanted = int(round(out * rate / out_rate))
        while index < wanted:
            try:
                current = next(source)
            except StopIteration:
                return
            index += 1
        yield current
        out += 1


def animate_source(animator: PreviewAnimator, source: Iterable[np.ndarray], source_fps: float,
                   driving: "Iterable[np.ndarray] | MotionTemplate", driving_fps: float,
                   face: int | None = None) -> Iterator[np.ndarray]:
    """Result frames: each source frame moved by the driver's motion since its first frame
    (or its template's rest), with the animator's edits; tracking of both videos runs ahead
    in threads. `face` chooses the source's face in its first frame, counted from the left."""
    config = animator.config
    analyzer = animator.analyzer
    buffered: deque[np.ndarray] = deque()

    def fed() -> Iterator[np.ndarray]:
        for frame in source:
            buffered.append(frame)
            yield frame

    def source_meshes() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for mesh in analyzer.iter_landmarks(fed(), TrackConfig(fps=source_fps, parse=False, face=face)):
            yield buffered.popleft(), mesh

    if isinstance(driving, MotionTemplate):
        rest = driving.rest
        driver: Iterable = driving.landmarks()
    else:
        rest = None
        driver = analyzer.iter_landmarks(driving, TrackConfig(fps=driving_fps, parse=False))
    tracked = run_ahead(source_meshes(), 8, "track source")
    drivers = run_ahead(at_times(driver, driving_fps, source_fps), 8, "track driver")
    first = None if rest is None else np.asarray(rest, np.float64)
    last_driver: np.ndarray | None = None
    where = own = None
    try:
        for index, ((frame, mesh), driver_mesh) in enumerate(zip(tracked, drivers)):
            if mesh is None:
                raise NoFaceError(f"no face in frame {index + 1} ({index / source_fps:.1f} s) of the source video: "
                                  "every frame of a source video must show the face; cut the video to the part "
                                  "that does")
            if where is None:  # one crop for the whole video, around the face in its first frame
                where = animator.crop_square(frame.shape[:2], face_box(mesh, frame.shape[:2]))
            ref = animator.prepare_known(frame, mesh, where)
            if driver_mesh is not None:
                last_driver = np.asarray(driver_mesh, np.float32).astype(np.float64)
                first = last_driver if first is None else first
            if last_driver is None:  # the driver shows no face yet: the source frame as it is
                yield animator.render(ref, None)
                continue
            goal = transfer_motion(ref.points, first, last_driver, config.relative)
            if config.edits:
                rig = EditRig(ref.points, own)
                own = own or rig.own  # level edits start from the source's first frame
                goal = rig.target(goal, config.edits)
            yield animator.render(ref, goal)
    finally:
        tracked.close()
        drivers.close()


__all__ = ["SourceVideo", "animate_source", "at_times", "paired_length"]
