"""Read and validate images and videos; write mp4 with the driving sound.

Everything that enters the program as pixels goes through `load_image` / `to_rgb`,
`read_video` or `checked_frames`, so the rest of the code can assume (H, W, 3) uint8 RGB of
a sane size. Videos are written through `vivid.paths.atomic_output` (complete or absent).
"""
from __future__ import annotations

import dataclasses
import functools

import logging
import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .paths import atomic_output, existing_file, same_file, scratch_prefix

log = logging.getLogger(__name__)

#: Smallest image side we accept: below this no face is big enough to analyse.
MIN_SIDE = 64
#: Largest image we accept, in pixels (about 8000 x 6000).
MAX_PIXELS = 50_000_000
#: Longest driving video we accept (10 minutes at 30 fps) and its largest frame side.
MAX_VIDEO_FRAMES = 18_000
MAX_VIDEO_SIDE = 4096
#: A damaged or cut-short video is refused when fewer than this share of the frames it
#: declares can be used; with more, what can be decoded is used and a warning says how much.
MIN_USABLE_SHARE = 0.5
#: Longest side of an animation unless the user lifts the cap: H.264 of this size stays
#: within level 5.1 (4096x2304 luma samples per frame), which every browser plays.
BROWSER_MAX_SIDE = 2048


@dataclass(frozen=True)
class MediaLimits:
    """How large an input may be. The defaults suit a local run; a public server (app.py)
    passes stricter ones, so a request too large is refused before any decoding."""

    max_image_pixels: int = MAX_PIXELS  # width x height of an image, read from its header
    max_video_side: int = MAX_VIDEO_SIDE  # largest frame side of a video, px
    max_video_frames: int = MAX_VIDEO_FRAMES  # frames of a video (as declared, then as decoded)
    max_video_seconds: float | None = None  # duration of a video; None: only max_video_frames counts


DEFAULT_LIMITS = MediaLimits()


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
    if isinstance(image, (str, Path)):
        raise InputError(f"{name} is a file name ({Path(image).name}); pass the pixels, "
                         "e.g. vivid.media.load_image(path).rgb")
    try:
        arr = np.asarray(image)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} is not an image array ({exc})") from None
    if arr.dtype == object:
        raise InputError(f"{name} is not an image array (it holds {type(image).__name__} of Python objects)")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise InputError(f"{name} has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
        notes.append("16-bit image reduced to 8 bits")
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        _check_float_range(arr, name)
        arr = (arr * 255.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(f"{name} has {arr.dtype} values from {arr.min()} to {arr.max()}; "
                             "integer images must be in 0-255 (uint8), or floats in [0, 1]")
        arr = arr.astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise InputError(f"{name} has dtype {arr.dtype}; give uint8 values 0-255 or floats in [0, 1]")
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


def _check_float_range(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise InputError(f"{name} has float values from {low:g} to {high:g}; float images must be in [0, 1] "
                         "(divide 0-255 values by 255, or pass them as uint8)")


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


def _check_size(w: int, h: int, name: str, max_pixels: int = MAX_PIXELS) -> None:
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{name} is only {w}x{h} px; use an image at least {MIN_SIDE} px on each side")
    if w * h > max_pixels:
        raise InputError(
            f"{name} is {w}x{h} px ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP, "
            "please downscale it"
        )


#: File name endings of pictures (anything else given as a portrait or driver is taken for a video).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def is_image_file(path: str | Path) -> bool:
    """Whether `path` names a picture by its ending (a portrait photo, a driving photo)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_image(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(width, height) of an image file from its header alone, with the errors of `load_image`
    for a file that is missing, not an image, or too large: cheap enough to run on every request."""
    return _read_image(path, limits, decode=False)


def load_image(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> Loaded:
    """Read an image file upright (EXIF applied) as RGB uint8, with a clear error if it cannot
    be. Its size is checked from the header before any pixel is decoded (decompression bombs)."""
    return _read_image(path, limits, decode=True)


def _read_image(path: str | Path, limits: MediaLimits, decode: bool):
    path = existing_file(path, "an image file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            _check_size(w, h, path.name, limits.max_image_pixels)
            if not decode:
                return w, h
            img.load()
            return _from_pil(img, path.name)
    except Image.DecompressionBombError as exc:  # PIL's own guard fired while reading the header
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} MP)" if pixels else ""
        raise InputError(f"{path.name} is far too large{size}; the limit is "
                         f"{limits.max_image_pixels / 1e6:.0f} MP, please downscale it") from None
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path.name}: not a readable image (not a picture format we know)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:  # damaged or cut-short files
        raise InputError(f"{path.name}: not a readable image, it is damaged or cut short ({exc})") from None


def fit_within(rgb: np.ndarray, max_side: int | None, name: str = "the portrait") -> tuple[np.ndarray, str | None]:
    """`rgb` scaled down (area filter) so its longest side is at most `max_side`, and a note
    saying so; unchanged (and no note) when it already fits or `max_side` is None."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb, None
    import cv2

    scale = max(max_side / max(h, w), min(1.0, MIN_SIDE / min(h, w)))  # a very thin picture keeps MIN_SIDE
    size = (round(w * scale), round(h * scale))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return small, f"{name} is {w}x{h} px; animating it at {size[0]}x{size[1]} so the video plays in browsers"


@dataclass
class VideoInfo:
    """What we need to know about a video before reading its frames."""

    fps: float
    frames: int  # as stored in the container; may be 0 when the container does not say
    width: int
    height: int
    rotation: int  # degrees clockwise to display upright
    has_audio: bool
    present: int | None = None  # frames whose data is in the file (`check_video` counts them)

    @property
    def duration(self) -> float | None:
        """Length in seconds, from the declared frame count (None when not declared)."""
        return self.frames / self.fps if self.frames and self.fps else None


def probe_video(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Frame rate, displayed size, rotation and audio presence of a video file, with a
    clear error for anything unreadable or beyond the limits."""
    path = existing_file(path, "a video file")
    stat = path.stat()
    # A job probes its driving clip for its checks, its decoding and its sound: read the file's
    # header once per version of the file (the decoder's first frame is ~12 ms a look).
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    info = dataclasses.replace(_probed(str(path.resolve()), version))  # the caller's own copy
    if not (0 < info.fps < 1000):
        raise InputError(f"{path.name} declares {info.fps:g} frames per second; it is damaged or not a video")
    if max(info.width, info.height) > limits.max_video_side:
        raise InputError(f"{path.name} is {info.width}x{info.height}; the limit is {limits.max_video_side} px, please downscale it")
    if info.frames > limits.max_video_frames:
        raise InputError(f"{path.name} has {info.frames} frames; the limit is {limits.max_video_frames}, please trim it")
    if limits.max_video_seconds is not None and info.duration and info.duration > limits.max_video_seconds:
        raise InputError(f"{path.name} lasts {info.duration:.0f} s; the limit is {limits.max_video_seconds:g} s, please trim it")
    return info


@functools.lru_cache(maxsize=16)
def _probed(path: str, version: tuple) -> VideoInfo:
    """What `probe_video` reads from the file at `path` as it was (`version`: its inode, size
    and times)."""
    import av

    name = Path(path).name
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise InputError(f"{name}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            rotation = _first_frame_rotation(container, stream)
            w, h = stream.codec_context.width, stream.codec_context.height
            return VideoInfo(
                fps=float(rate),
                frames=int(stream.frames or 0),
                width=h if rotation in (90, 270) else w,  # as displayed
                height=w if rotation in (90, 270) else h,
                rotation=rotation,
                has_audio=bool(container.streams.audio),
            )
    except av.error.FFmpegError as exc:
        hint = "; it is damaged, cut short or not a video" if isinstance(exc, av.error.InvalidDataError) else ""
        raise InputError(f"{name}: not a readable video ({_ffmpeg_reason(exc)}){hint}") from None


def check_video(path: str | Path, max_frames: int | None = None, limits: MediaLimits = DEFAULT_LIMITS,
                min_usable: float = MIN_USABLE_SHARE) -> VideoInfo:
    """`probe_video`, plus a count of the frames whose data is actually in the file (demuxing
    only: fast). A file cut short or damaged so that fewer than `min_usable` of the frames it
    declares (or of the first `max_frames`) are there is refused before any decoding."""
    import av

    info = probe_video(path, limits)
    path = Path(path)
    present = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                present += bool(packet.size)
                if max_frames is not None and present >= max_frames:
                    break
    except av.error.FFmpegError:
        pass  # what could be demuxed before the damage is what is there
    info.present = present
    wanted = min(info.frames, max_frames) if max_frames else info.frames
    if present == 0:
        raise InputError(f"{path.name}: the video has no frames (the file is empty or damaged)")
    if wanted and present < min_usable * wanted:
        raise InputError(
            f"{path.name} is cut short or damaged: only {present} of the {wanted} frames it declares are in the "
            f"file; use a complete copy (or rewrite what is there with `ffmpeg -i {path.name} -c copy fixed.mp4`)"
        )
    return info


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's reason without the errno and the (server) path it quotes."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).split(";")[0].strip()


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


def read_video(path: str | Path, max_frames: int | None = None, limits: MediaLimits = DEFAULT_LIMITS,
               min_usable: float = MIN_USABLE_SHARE) -> Iterator[np.ndarray]:
    """Yield the frames of a video as RGB uint8 one at a time, so long videos never sit in memory.

    A damaged or cut-short file is decoded as far as it can be (damaged packets are
    skipped); at the end a warning says how many frames were usable of how many the file
    declares, or an InputError refuses it when fewer than `min_usable` of them were."""
    import av
    from av.video.reformatter import VideoReformatter

    path = Path(path)
    info = probe_video(path, limits)
    count = damaged = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # Slice threads: frame threading silently drops the frames in flight next to damage.
            stream.thread_type = "SLICE"
            # One converter for the whole video: a frame's own `to_ndarray(format=...)` sets up
            # FFmpeg's scaler afresh each time (0.3 ms of a 512x512 frame's 1.5 ms).
            to_rgb24 = VideoReformatter()
            for packet in container.demux(stream):  # the last, empty packet flushes the decoder
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    damaged += 1
                    continue
                for frame in frames:
                    rgb = _upright(to_rgb24.reformat(frame, format="rgb24").to_ndarray(), info.rotation)
                    if count == 0:
                        _check_size(rgb.shape[1], rgb.shape[0], path.name)
                    yield rgb
                    count += 1
                    if max_frames is not None and count >= max_frames:
                        return
                    if count >= limits.max_video_frames:
                        raise InputError(f"{path.name} is longer than {limits.max_video_frames} frames, please trim it")
    except av.error.FFmpegError as exc:  # the container itself broke off
        damaged += 1
        log.debug("%s: demuxing stopped after %d frames: %s", path.name, count, exc)
    wanted = min(info.frames, max_frames) if max_frames else info.frames
    if count == 0:
        raise InputError(f"{path.name}: no frame of the video could be decoded (the file is damaged or cut short)")
    if wanted and count < wanted:
        if count < min_usable * wanted:
            raise InputError(f"{path.name} is damaged or cut short: only {count} of the {wanted} frames it declares "
                             "could be decoded; use a complete copy")
        log.warning("%s is damaged or cut short: %d of the %d frames it declares were usable; using those",
                    path.name, count, wanted)
    elif damaged:
        log.warning("%s: %d damaged packet(s) skipped while decoding", path.name, damaged)


def checked_frames(frames: Iterable[np.ndarray], name: str = "driving frame") -> Iterator[np.ndarray]:
    """Driving frames given as arrays (the Python API), as RGB uint8 (see `to_rgb`). Refuses
    an empty sequence and frames whose size differs from the first one; a list or array is
    checked whole before the first frame is yielded, so the refusal comes before any work."""
    if isinstance(frames, (np.ndarray, Image.Image)) and np.ndim(frames) != 4:
        raise InputError(f"the driving frames are one image of shape {np.shape(frames)}; pass a list of frames "
                         "or an (F, H, W, 3) array ([image] for a single still frame)")
    if isinstance(frames, np.ndarray):
        frames = list(frames)
    if isinstance(frames, (str, Path)):
        raise InputError(f"the driving frames are a file name ({Path(frames).name}); pass the frames, "
                         "e.g. vivid.media.read_video(path)")
    if isinstance(frames, Sequence):
        if len(frames) == 0:
            raise InputError("the driving video has no frames (an empty frame list was given)")
        first = None
        for i, frame in enumerate(frames):
            shape = _frame_shape(frame, f"{name} {i}")
            first = first or shape
            if shape != first:
                raise _size_mismatch(name, i, shape, first)
            arr = np.asarray(frame)
            if np.issubdtype(arr.dtype, np.floating):
                _check_float_range(arr, f"{name} {i}")
    yield from _each_checked(iter(frames), name)


def _frame_shape(frame, name: str) -> tuple[int, int]:
    shape = getattr(frame, "shape", None)
    if isinstance(frame, Image.Image):
        return frame.height, frame.width
    if shape is None or len(shape) not in (2, 3):
        raise InputError(f"{name} has shape {shape}; expected (H, W, 3) RGB")
    return int(shape[0]), int(shape[1])


def _size_mismatch(name: str, i: int, shape: tuple[int, int], first: tuple[int, int]) -> InputError:
    return InputError(f"{name} {i} is {shape[1]}x{shape[0]} px but the first is {first[1]}x{first[0]}; all driving "
                      "frames must have the same size (resize them to one size first)")


def _each_checked(frames: Iterator, name: str) -> Iterator[np.ndarray]:
    first = None
    i = -1
    for i, frame in enumerate(frames):
        rgb = to_rgb(frame, f"{name} {i}").rgb
        shape = rgb.shape[:2]
        first = first or shape
        if shape != first:
            raise _size_mismatch(name, i, shape, first)
        yield rgb
    if i < 0:
        raise InputError("the driving video has no frames (an empty frame list was given)")


@dataclass(frozen=True)
class Encoding:
    """H.264 settings of the videos we write (same CRF, visually lossless, whatever the speed)."""

    crf: int = 18
    preset: str = "veryfast"  # x264 speed/size trade-off: slower presets give smaller files
    threads: int = 0  # x264 threads; 0: one per core


#: For frames made in other threads that already keep the cores busy (the preview CLI): one
#: encoder thread and a faster preset cost 3.0 instead of 6.7 CPU ms a 512x512 frame, for
#: files about 1.6x larger at the same CRF (bench/RESULTS.md).
ALONGSIDE_OTHER_WORK = Encoding(preset="superfast", threads=1)


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, audio_from: str | Path | None = None,
    encoding: Encoding = Encoding(),
) -> int:
    """Write RGB frames as an H.264 mp4 that browsers play, frame by frame; with
    `audio_from`, carry that file's audio over (cut to the video's length). Returns the
    frame count. `audio_from` may be a video or a sound file (a motion template's). The file
    appears at `path` only when complete (`atomic_output`): a failure or an interrupt leaves
    no partial file, and an existing file at `path` untouched."""
    path = Path(path)
    if audio_from is not None and same_file(audio_from, path):
        raise InputError(f"the output {path.name} is the video it takes its sound from; choose another output name")
    with atomic_output(path) as tmp:
        if audio_from is None or not has_sound(audio_from):
            return _encode(tmp, frames, fps, encoding)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=scratch_prefix(path)) as folder:
            silent = Path(folder) / "video.mp4"
            count = _encode(silent, frames, fps, encoding)
            mux_audio(silent, audio_from, tmp)
        return count


def has_sound(path: str | Path) -> bool:
    """Whether a video or sound file has an audio stream."""
    import av

    path = existing_file(path, "a video or sound file")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path.name}: not a readable video or sound file ({_ffmpeg_reason(exc)})") from None


def _encode(path: Path, frames: Iterable[np.ndarray], fps: float, encoding: Encoding) -> int:
    import av

    from av.video.reformatter import VideoReformatter

    count = 0
    to_yuv = VideoReformatter()  # one scaler for every frame (the same conversion the encoder makes)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sides
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(encoding.crf), "preset": encoding.preset,
                                  **({"threads": str(encoding.threads)} if encoding.threads else {})}
            img = np.ascontiguousarray(frame[: stream.height, : stream.width])
            picture = to_yuv.reformat(av.VideoFrame.from_ndarray(img, format="rgb24"), format="yuv420p")
            for packet in stream.encode(picture):
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
        audio = AudioCarrier(ain, dst, copy_codecs=("aac", "mp3"))  # both streams exist before muxing starts
        duration = float(vs.duration * vs.time_base) if vs.duration else None
        for packet in vin.demux(vs):
            if packet.dts is None:
                continue
            packet.stream = ov
            dst.mux(packet)
        audio.carry(until=duration)


class AudioCarrier:
    """The first audio stream of the open container `src`, carried into `dst`: packets copied
    when its codec is one of `copy_codecs` (no quality loss), re-encoded to AAC otherwise.
    The output stream is added on construction, since a container takes no new stream
    once muxing has begun."""

    def __init__(self, src, dst, copy_codecs: tuple[str, ...] = ("aac",)):
        self.src, self.dst = src, dst
        self.stream = src.streams.audio[0]
        self.copy = self.stream.codec_context.name in copy_codecs
        self.out = (dst.add_stream_from_template(self.stream) if self.copy
                    else dst.add_stream("aac", rate=self.stream.rate or 44100))

    def carry(self, until: float | None = None) -> None:
        """Mux every packet (those starting after `until` seconds dropped), then flush."""
        for packet in self.src.demux(self.stream):
            if packet.dts is None:
                continue
            if until is not None and packet.pts is not None and packet.pts * packet.time_base > until:
                break
            if self.copy:
                packet.stream = self.out
                self.dst.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    for p in self.out.encode(frame):
                        self.dst.mux(p)
        if not self.copy:
            for p in self.out.encode():
                self.dst.mux(p)
