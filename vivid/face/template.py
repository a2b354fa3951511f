"""Motion templates: a driving clip's smoothed face-mesh track, frame rate and (optionally)
sound, with no pixels of the driver, so motion can be shared without the driver's face.

A template replays exactly what `FaceAnalyzer.iter_track` yields for its video, so every
engine can take a template wherever it takes driving frames.
"""
from __future__ import annotations

import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import mesh_topology as mt
from .analysis import FaceAnalysis
from .analyzer import FaceAnalyzer, TrackConfig
from .mesh_parsing import analysis_from_mesh
from .motion_map import render_motion_map

log = logging.getLogger(__name__)

#: Written into every template file, so a stray .npz is recognised as "not a template".
FORMAT = "vivid-motion-template"
#: Bumped when the file layout changes; older versions stay readable.
VERSION = 1
#: Largest template accepted, unpacked: ten minutes of landmarks at 30 fps (69 MB) and sound.
MAX_UNPACKED_BYTES = 128_000_000


class TemplateError(ValueError):
    """A file that is not a (readable) motion template; the message says why."""


@dataclass
class MotionTemplate:
    """A driving clip's motion: mesh landmarks per frame in the clip's pixel coordinates."""

    points: np.ndarray  # (F, 478, 2) float32 smoothed mesh landmarks; NaN rows: no face
    frame_size: tuple[int, int]  # (h, w) of the driving frames, upright
    fps: float
    interpolated: np.ndarray | None = None  # (F,) bool: filled in from neighbouring frames
    audio: bytes | None = None  # the clip's sound as a small file (see audio_format)
    audio_format: str | None = None  # file suffix of `audio`, e.g. "m4a"
    #: (478, 2) the face at rest that motion is measured from (None: the first frame with a
    #: face, as for a tracked clip); a driving photo's clip rests on the portrait's own face.
    rest: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, np.float32)
        if self.points.ndim != 3 or self.points.shape[1:] != (mt.NUM_POINTS, 2):
            raise TemplateError(f"template points must have shape (frames, {mt.NUM_POINTS}, 2), got {self.points.shape}")
        h, w = (int(v) for v in self.frame_size)
        self.frame_size = (h, w)
        if h < 1 or w < 1:
            raise TemplateError(f"template frame size must be positive, got {self.frame_size}")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise TemplateError(f"template fps must be positive, got {self.fps}")
        self.fps = float(self.fps)
        if self.interpolated is None:
            self.interpolated = np.zeros(len(self.points), bool)
        self.interpolated = np.asarray(self.interpolated, bool)
        if self.interpolated.shape != (len(self.points),):
            raise TemplateError(f"template has {len(self.points)} frames but {self.interpolated.shape} interpolation flags")
        if (self.audio is None) != (self.audio_format is None):
            raise TemplateError("template audio and its format must be given together")
        if self.rest is not None:
            self.rest = np.asarray(self.rest, np.float32)
            if self.rest.shape != (mt.NUM_POINTS, 2) or not np.isfinite(self.rest).all():
                raise TemplateError(f"a template's rest mesh must be ({mt.NUM_POINTS}, 2) finite points")

    def __len__(self) -> int:
        return len(self.points)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self) / self.fps

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def found(self) -> np.ndarray:
        """(F,) bool: frames that have a face (detected or filled in)."""
        return ~np.isnan(self.points).any(axis=(1, 2))

    # -- making one -----------------------------------------------------------------------
    @classmethod
    def from_video(
        cls,
        video: str | Path | Iterable[np.ndarray],
        analyzer: FaceAnalyzer | None = None,
        fps: float | None = None,
        *,
        audio: bool = True,
        max_frames: int | None = None,
    ) -> "MotionTemplate":
        """Track a driving video (a file, or RGB frames with their `fps`) into a template.
        From a file, its sound is kept unless `audio=False`. Raises `NoFaceError` like
        `FaceAnalyzer.iter_track` when too few frames show a face."""
        from ..media import probe_video, read_video

        sound = None
        if isinstance(video, (str, Path)):
            info = probe_video(video)
            fps = fps or info.fps
            frames: Iterable[np.ndarray] = read_video(video, max_frames=max_frames)
            if audio and info.has_audio:
                sound = extract_audio(video)
        else:
            if fps is None:
                raise TemplateError("give the frame rate (fps) of driving frames that are not a file")
            frames = video if max_frames is None else (f for i, f in zip(range(max_frames), video))
        analyzer = analyzer or FaceAnalyzer("mesh", segment=False)
        shapes: list[tuple[int, int]] = []

        def measured() -> Iterator[np.ndarray]:
            for frame in frames:
                shapes.append(frame.shape[:2])
                yield frame

        points, filled = [], []
        for a in analyzer.iter_track(measured(), TrackConfig(fps=fps)):
            points.append(np.full((mt.NUM_POINTS, 2), np.nan, np.float32) if a is None else a.landmarks)
            filled.append(bool(a is not None and a.interpolated))
        if len(set(shapes)) > 1:
            raise TemplateError(f"driving frames change size mid-clip ({sorted(set(shapes))[:2]} ...)")
        return cls(np.stack(points), shapes[0], float(fps), np.array(filled),
                   *(sound if sound is not None else (None, None)))

    # -- replaying it ---------------------------------------------------------------------
    def analyses(self) -> Iterator[FaceAnalysis | None]:
        """One mesh analysis per frame (None: no face), as `FaceAnalyzer.iter_track` yields them."""
        for points, filled in zip(self.landmarks(), self.interpolated):
            if points is None:
                yield None
                continue
            analysis = analysis_from_mesh(points, self.frame_size)
            analysis.interpolated = bool(filled)
            yield analysis

    def landmarks(self) -> Iterator[np.ndarray | None]:
        """The (478, 2) mesh of every frame (None: no face): `analyses()` without drawing maps."""
        for points in self.points:
            yield None if np.isnan(points).any() else points

    def motion_maps(self) -> Iterator[np.ndarray]:
        """(h, w, 3) uint8 motion map of every frame (black where there is no face): what a
        template shows where a driving video would play."""
        blank = np.zeros((*self.frame_size, 3), np.uint8)
        for analysis in self.analyses():
            yield blank if analysis is None else render_motion_map(analysis)

    def write_audio(self, folder: str | Path) -> Path | None:
        """The sound as a file in `folder` (for muxing into a result), or None without sound."""
        if self.audio is None:
            return None
        path = Path(folder) / f"template_audio.{self.audio_format}"
        path.write_bytes(self.audio)
        return path

    def write_video(self, path: str | Path, frames: Iterable[np.ndarray]) -> int:
        """Write animated `frames` as an mp4 at the template's fps, with its sound when it has
        one (cut to the video's length). Returns the frame count; nothing is left on failure."""
        from ..media import mux_audio, write_video
        from ..paths import atomic_output, scratch_prefix

        path = Path(path)
        if self.audio is None:
            return write_video(path, frames, self.fps)
        with atomic_output(path) as out, tempfile.TemporaryDirectory(dir=path.parent, prefix=scratch_prefix(path)) as tmp:
            silent = Path(tmp) / "video.mp4"
            count = write_video(silent, frames, self.fps)
            mux_audio(silent, self.write_audio(tmp), out)
        return count

    # -- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the template as a compressed .npz (no pickled objects)."""
        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise TemplateError(f"a motion template is saved as .npz, got {path.name}")
        arrays = dict(
            format=np.array(FORMAT), version=np.array(VERSION, np.int32), points=self.points,
            frame_size=np.array(self.frame_size, np.int32), fps=np.array(self.fps, np.float64),
            interpolated=self.interpolated,
        )
        if self.audio is not None:
            arrays.update(audio=np.frombuffer(self.audio, np.uint8), audio_format=np.array(self.audio_format))
        if self.rest is not None:
            arrays.update(rest=self.rest)
        from ..paths import atomic_output

        with atomic_output(path) as tmp, open(tmp, "wb") as f:  # complete, or not there at all
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MotionTemplate":
        """Read a template written by `save`, with a clear error for anything else."""
        path = Path(path)
        if path.is_dir():
            raise TemplateError(f"{path} is a folder, not a motion template file")
        if not path.is_file():
            raise TemplateError(f"{path.name}: no such motion template file")
        try:
            with zipfile.ZipFile(path) as archive:  # a zip bomb is refused before anything is unpacked
                unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_UNPACKED_BYTES:
                raise TemplateError(f"{path.name} unpacks to {unpacked / 1e6:.0f} MB; a motion template is at most "
                                    f"{MAX_UNPACKED_BYTES / 1e6:.0f} MB")
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files") or "format" not in data.files or str(data["format"]) != FORMAT:
                    raise TemplateError(f"{path.name} is not a motion template (made by `python -m vivid parse VIDEO --template OUT.npz`)")
                version = int(data["version"])
                if version > VERSION:
                    raise TemplateError(f"{path.name} is a version {version} motion template; this program reads up to version {VERSION}, please update it")
                audio = bytes(data["audio"].tobytes()) if "audio" in data.files else None
                return cls(
                    points=data["points"], frame_size=tuple(int(v) for v in data["frame_size"]), fps=float(data["fps"]),
                    interpolated=data["interpolated"], audio=audio,
                    audio_format=str(data["audio_format"]) if audio is not None else None,
                    rest=data["rest"] if "rest" in data.files else None,
                )
        except TemplateError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise TemplateError(f"{path.name} is not a readable motion template ({exc})") from None


def is_template_file(path: str | Path) -> bool:
    """Whether `path` names a motion template by its suffix (.npz)."""
    return Path(path).suffix.lower() == ".npz"


def extract_audio(video: str | Path) -> tuple[bytes, str] | None:
    """The first audio stream of `video` as (m4a bytes, "m4a"): AAC copied, anything else
    re-encoded to AAC. None when the file has no sound."""
    import av

    from ..media import AudioCarrier

    with av.open(str(video)) as src:
        if not src.streams.audio:
            return None
        with tempfile.TemporaryDirectory(prefix="vivid-audio-") as tmp:
            out_path = Path(tmp) / "audio.m4a"
            with av.open(str(out_path), "w") as dst:
                AudioCarrier(src, dst).carry()
            return out_path.read_bytes(), "m4a"


__all__ = ["FORMAT", "VERSION", "MotionTemplate", "TemplateError", "extract_audio", "is_template_file"]
