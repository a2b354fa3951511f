"""Read and validate images and videos; write mp4.

Everything that enters the program as pixels goes through `load_image` / `to_rgb` or
`read_video`, so the rest of the code can assume (H, W, 3) uint8 RGB of a sane size.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

#: Smallest image side we accept: below this no face is big enough to analyse.
MIN_SIDE = 64
#: Largest image we accept, in pixels (about 8000 x 6000).
MAX_PIXELS = 50_000_000
#: Longest driving video we accept (10 minutes at 30 fps) and its largest frame side.
MAX_VIDEO_FRAMES = 18_000
MAX_VIDEO_SIDE = 4096


class InputError(ValueError):
    """An input file or array that the program cannot use; the message says why."""


@dataclass
class Loaded:
    """An RGB image and what was done to make it one."""

    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)


def to_rgb(image: np.ndarray | Image.Image, name: str = "image") -> Loaded:
    """(H, W, 3) uint8 RGB from any common image form: grayscale, RGBA, 16-bit, float, palette."""
    notes: list[str] = []
    if isinstance(image, Image.Image):
        return _from_pil(image, name)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise InputError(f"{name} has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
        notes.append("16-bit image reduced to 8 bits")
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    channels = arr.shape[2]
    if channels in (2, 4):  # gray+alpha or RGBA: composite over white, like a viewer shows it
        alpha = arr[..., -1:].astype(np.float32) / 255.0
        colour = arr[..., :-1].astype(np.float32)
        arr = (colour * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
        notes.append("transparency flattened onto white")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
        notes.append("grayscale image converted to RGB")
    _check_size(arr.shape[1], arr.shape[0], name)
    return Loaded(np.ascontiguousarray(arr), notes)


def _from_pil(img: Image.Image, name: str) -> Loaded:
    notes: list[str] = []
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        notes.append(f"rotated upright from EXIF orientation {orientation}")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.int64)
        peak = 65535 if arr.max(initial=0) > 255 else 255
        loaded = to_rgb((np.clip(arr, 0, peak) * (255.0 / peak)).astype(np.uint8), name)
        loaded.notes[:0] = notes + ["16-bit image reduced to 8 bits"]
        return loaded
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1", "F"):
        img = img.convert("RGB" if img.mode != "F" else "L")
    loaded = to_rgb(np.asarray(img), name)
    loaded.notes[:0] = notes
    return loaded


def _check_size(w: int, h: int, name: str) -> None:
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{name} is only {w}x{h} px; use an image at least {MIN_SIDE} px on each side")
    if w * h > MAX_PIXELS:
        raise InputError(
            f"{name} is {w}x{h} px ({w * h / 1e6:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP, "
            "please downscale it"
        )


def load_image(path: str | Path) -> Loaded:
    """Read an image file upright (EXIF applied) as RGB uint8, with a clear error if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return _from_pil(img, path.name)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path.name}: not a readable image ({exc})") from exc


@dataclass
class VideoInfo:
    """What we need to know about a video before reading its frames."""

    fps: float
    frames: int  # as stored in the container; may be 0 when the container does not say
    width: int
    height: int
    rotation: int  # degrees clockwise to display upright
    has_audio: bool


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, displayed size, rotation and audio presence of a video file, with a
    clear error for anything unreadable or beyond the limits."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path.name}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            rotation = _first_frame_rotation(container, stream)
            w, h = stream.codec_context.width, stream.codec_context.height
            info = VideoInfo(
                fps=float(rate),
                frames=int(stream.frames or 0),
                width=h if rotation in (90, 270) else w,  # as displayed
                height=w if rotation in (90, 270) else h,
                rotation=rotation,
                has_audio=bool(container.streams.audio),
            )
    except av.error.FFmpegError as exc:
        raise InputError(f"{path.name}: not a readable video ({exc})") from exc
    if max(info.width, info.height) > MAX_VIDEO_SIDE:
        raise InputError(f"{path.name} is {info.width}x{info.height}; the limit is {MAX_VIDEO_SIDE} px, please downscale it")
    if info.frames > MAX_VIDEO_FRAMES:
        raise InputError(f"{path.name} has {info.frames} frames; the limit is {MAX_VIDEO_FRAMES}, please trim it")
    return info


def _first_frame_rotation(container, stream) -> int:
    """Display rotation (degrees clockwise) that phones record in the stream's side data."""
    import av

    try:
        frame = next(container.decode(stream))
    except (StopIteration, av.error.FFmpegError):  # an undecodable stream is reported by read_video
        return 0
    return int(round(-getattr(frame, "rotation", 0))) % 360


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90))) if rotation % 360 else rgb


def read_video(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video as RGB uint8 one at a time, so long videos never sit in memory."""
    import av

    path = Path(path)
    info = probe_video(path)
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                rgb = _upright(frame.to_ndarray(format="rgb24"), info.rotation)
                if count == 0:
                    _check_size(rgb.shape[1], rgb.shape[0], path.name)
                yield rgb
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
                if count >= MAX_VIDEO_FRAMES:
                    raise InputError(f"{path.name} is longer than {MAX_VIDEO_FRAMES} frames, please trim it")
    except av.error.FFmpegError as exc:
        raise InputError(f"{path.name}: video could not be decoded after {count} frames ({exc})") from exc
    if count == 0:
        raise InputError(f"{path.name}: the video has no frames")


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, audio_from: str | Path | None = None
) -> int:
    """Write RGB frames as an H.264 mp4 that browsers play, frame by frame; with
    `audio_from`, carry that file's audio over (cut to the video's length). Returns the
    frame count. Nothing is left behind if writing fails."""
    path = Path(path)
    if audio_from is None or not probe_video(audio_from).has_audio:
        try:
            return _encode(path, frames, fps)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".vivid-") as tmp:
        silent = Path(tmp) / "video.mp4"
        count = _encode(silent, frames, fps)
        try:
            mux_audio(silent, audio_from, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return count


def _encode(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    import av

    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sides
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            img = np.ascontiguousarray(frame[: stream.height, : stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise InputError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return count


def mux_audio(video: str | Path, audio_from: str | Path, out: str | Path) -> None:
    """`video`'s stream (not re-encoded) plus the first audio stream of `audio_from`, cut to
    the video's duration; AAC/MP3 audio is copied, anything else re-encoded to AAC."""
    import av

    with av.open(str(video)) as vin, av.open(str(audio_from)) as ain, av.open(str(out), "w") as dst:
        vs = vin.streams.video[0]
        ov = dst.add_stream_from_template(vs)
        src_audio = ain.streams.audio[0]
        copy = src_audio.codec_context.name in ("aac", "mp3")
        oa = dst.add_stream_from_template(src_audio) if copy else dst.add_stream("aac", rate=src_audio.rate or 44100)
        duration = float(vs.duration * vs.time_base) if vs.duration else None
        for packet in vin.demux(vs):
            if packet.dts is None:
                continue
            packet.stream = ov
            dst.mux(packet)
        for packet in ain.demux(src_audio):
            if packet.dts is None:
                continue
            if duration is not None and packet.pts is not None and packet.pts * packet.time_base > duration:
                break
            if copy:
                packet.stream = oa
                dst.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    for p in oa.encode(frame):
                        dst.mux(p)
        if not copy:
            for p in oa.encode():
                dst.mux(p)
