"""The driving input of an animation: a video file, a motion template (`.npz`, see
`vivid.face.MotionTemplate`) or a photo (a short clip to its expression, `from_photo`), behind
one small class, so every place that takes a driving video (the animation job, `parse`, the
app's Parsing tab) takes a template the same way: checked before any work, its frames or its
tracked motion, its motion maps, and results written at its frame rate with its sound."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .face import FaceAnalysis, FaceAnalyzer, MotionTemplate, NoFaceError, TrackConfig, render_motion_map
from .face.motion_edits import MotionEdits
from .face.photo_motion import photo_template
from .face.template import is_template_file
from .media import (
    DEFAULT_LIMITS, Encoding, InputError, MediaLimits, VideoInfo, check_video, load_image, read_video, write_video,
)
from .paths import scratch_prefix

#: The first seconds of a driving clip must show a face, checked before any other work.
FIRST_SECONDS = 3.0


@dataclass
class Driving:
    """A driving video or motion template, checked (`open`), with what an animation needs of it."""

    path: Path
    fps: float
    total: int | None  # frames that will be used (None: the video does not say)
    has_audio: bool
    template: MotionTemplate | None = None  # the motion template, or None for a video
    info: VideoInfo | None = None  # the video's header and frame count (None for a template)
    max_frames: int | None = None  # only the first N frames are used (None: all)
    limits: MediaLimits = DEFAULT_LIMITS
    photo: np.ndarray | None = None  # a driving photo (its clip is `template`)
    photo_edits: MotionEdits | None = None  # the photo's expression and pose, as edits of the portrait

    @classmethod
    def open(cls, path: str | Path, limits: MediaLimits = DEFAULT_LIMITS, max_frames: int | None = None) -> "Driving":
        """Check a driving input without decoding it: a template (`.npz`) is loaded and held to
        the limits' duration; a video's header, limits and frames' presence are checked
        (`vivid.media.check_video`). Raises InputError or TemplateError saying what is wrong."""
        path = Path(path)
        if not is_template_file(path):
            info = check_video(path, max_frames, limits)
            total = min(info.frames or 0, max_frames or info.frames or 0) or None
            return cls(path, info.fps, total, info.has_audio, info=info, max_frames=max_frames, limits=limits)
        template = MotionTemplate.load(path)
        if limits.max_video_seconds is not None and template.duration > limits.max_video_seconds:
            raise InputError(f"This motion template lasts {template.duration:.0f} s; the limit here is "
                             f"{limits.max_video_seconds:g} s.")
        if max_frames:
            template = replace(template, points=template.points[:max_frames],
                               interpolated=template.interpolated[:max_frames])
        return cls(path, template.fps, len(template), template.has_audio, template=template, max_frames=max_frames,
                   limits=limits)

    @classmethod
    def from_photo(cls, path: str | Path, portrait: np.ndarray, analyzer: FaceAnalyzer, seconds: float = 1.5,
                   face: int | None = None, limits: MediaLimits = DEFAULT_LIMITS,
                   max_frames: int | None = None) -> "Driving":
        """A driving photo: a clip of `seconds` from the portrait's own face (`face`, counted from
        the left) to the photo's expression and head pose (`vivid.face.photo_motion`), silent.
        Raises NoFaceError when either picture shows no face."""
        path = Path(path)
        photo = load_image(path, limits).rgb
        own = analyzer.analyze(portrait, "the portrait", face)
        seen = analyzer.analyze(photo, "the driving photo")
        template, edits = photo_template(own.landmarks, seen.landmarks, portrait.shape[:2], seconds)
        if max_frames:
            template = replace(template, points=template.points[:max_frames],
                               interpolated=template.interpolated[:max_frames])
        return cls(path, template.fps, len(template), False, template=template, max_frames=max_frames, limits=limits,
                   photo=photo, photo_edits=edits)

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the driving frames, upright."""
        return self.template.frame_size if self.template is not None else (self.info.height, self.info.width)

    def frames(self, check: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """A video's frames, decoded one at a time; `check` runs before each (it may raise to stop)."""
        for frame in read_video(self.path, max_frames=self.max_frames, limits=self.limits):
            if check is not None:
                check()
            yield frame

    def source(self, check: Callable[[], None] | None = None) -> "Iterable[np.ndarray] | MotionTemplate":
        """What engines take: the template itself, or the video's frames (see `frames`)."""
        return self.template if self.template is not None else self.frames(check)

    def pictures(self) -> Iterator[np.ndarray]:
        """What the driver looks like, frame by frame: the video's frames, or a template's motion maps."""
        if self.photo is not None:
            return (self.photo for _ in range(len(self.template)))
        return self.template.motion_maps() if self.template is not None else self.frames()

    def analyses(self, analyzer: FaceAnalyzer) -> Iterator[FaceAnalysis | None]:
        """The face of every frame (None: none found): a template's own track, or the video tracked by `analyzer`."""
        if self.template is not None:
            return self.template.analyses()
        return analyzer.iter_track(self.frames(), TrackConfig(fps=self.fps))

    def check_first_seconds(self, analyzer: FaceAnalyzer, seconds: float = FIRST_SECONDS) -> None:
        """Fail fast (NoFaceError): some frame of the first `seconds` must show a face. A video is
        looked at four times a second with `analyzer`, a template's track is read."""
        if self.template is not None:
            if not self.template.found[: max(1, int(seconds * self.fps))].any():
                raise NoFaceError(f"No face in the first {seconds:.0f} s of this motion template.")
            return
        step = max(1, int(round(self.fps / 4)))
        seen = 0
        for i, frame in enumerate(read_video(self.path, max_frames=max(1, int(seconds * self.fps)), limits=self.limits)):
            seen = i + 1
            if i % step:
                continue
            if analyzer.finds_face(frame, "the driving video"):
                return
        raise NoFaceError(f"No face in the first {min(seen / self.fps, seconds):.0f} s of the driving video: use a "
                          "clip that shows one face, roughly frontal, from its start.")

    def write(self, out: str | Path, frames: Iterable[np.ndarray], encoding: Encoding = Encoding(),
              fps: float | None = None) -> int:
        """`frames` as an mp4 at the driving frame rate (or `fps`) with the driving sound (cut to
        the video's length), complete or not at all (`vivid.media.write_video`). Returns the
        frame count."""
        out, fps = Path(out), fps or self.fps
        if self.template is None:
            return write_video(out, frames, fps, audio_from=self.path, encoding=encoding)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=scratch_prefix(out)) as folder:
            return write_video(out, frames, fps, audio_from=self.template.write_audio(folder), encoding=encoding)


@dataclass
class MotionMapVideo:
    """The motion maps of a driving input, frame by frame (black where there is no face), and
    which frames had no face of their own: `missing` (none found) and `filled` (filled in
    from neighbouring frames)."""

    missing: list[int]
    filled: list[int]

    @classmethod
    def of(cls, analyses: Iterable[FaceAnalysis | None], size: tuple[int, int]) -> tuple["MotionMapVideo", Iterator[np.ndarray]]:
        """The record (filled in as the frames are drawn) and the maps of `analyses`; `size` is (h, w)."""
        record = cls([], [])

        def maps() -> Iterator[np.ndarray]:
            blank = np.zeros((*size, 3), np.uint8)
            for i, analysis in enumerate(analyses):
                if analysis is None:
                    record.missing.append(i)
                    yield blank
                    continue
                if analysis.interpolated:
                    record.filled.append(i)
                yield render_motion_map(analysis)

        return record, maps()

    @property
    def without_face(self) -> list[int]:
        """Every frame whose face was not found in it (missing or filled in), in order."""
        return sorted(self.missing + self.filled)


def template_motion_video(path: str | Path, folder: str | Path) -> Path:
    """A motion template's motion maps as a video with its sound (what a template shows where a
    driving video would play), written once per template file into `folder` and reused."""
    path, folder = Path(path), Path(folder)
    stat = path.stat()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}.mp4"
    if not out.is_file():
        template = MotionTemplate.load(path)
        template.write_video(out, template.motion_maps())  # complete or absent (`vivid.paths.atomic_output`)
    return out
