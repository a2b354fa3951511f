"""Read and validate images and videos; write mp4.

Everything that enters the program as pixels goes through `load_image` / `to_rgb` or
`read_video`, so the rest of the code can assume (H, W, 3) uint8 RGB of a sane size.
"""
from __future__ import annotations

import logging
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
    """Frame rate, size, rotation and audio presence of a video file."""
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
            return VideoInfo(
                fps=float(rate),
                frames=int(stream.frames or 0),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                rotation=_first_frame_rotation(container, stream),
                has_audio=bool(container.streams.audio),
            )
    except av.error.FFmpegError as exc:
        raise InputError(f"{path.name}: not a readable video ({exc})") from exc


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
    except av.error.FFmpegError as exc:
        raise InputError(f"{path.name}: video could not be decoded after {count} frames ({exc})") from exc
    if count == 0:
        raise InputError(f"{path.name}: the video has no frames")


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write RGB frames as an H.264 mp4 that browsers play; returns the frame count."""
    import av

    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w - w % 2, h - h % 2
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
