"""Source video frames with their timestamps, resampled to a clip's frame rate by timestamp."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..media import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")


def source_fps(path: str | Path) -> float:
    """The video's average frame rate (25 when the container does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{Path(path).name}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return float(rate) if rate else 25.0
    except av.error.FFmpegError as exc:
        raise InputError(f"{Path(path).name}: not a readable video ({exc})") from exc


def timed_frames(path: str | Path, max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (seconds, upright RGB uint8 frame) in display order. A decoding error after
    the first frame ends the video there (a truncated file keeps its good part, the same
    way on every read); before it, it is an InputError."""
    import av

    name = Path(path).name
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{name}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else count / rate
                rgb = frame.to_ndarray(format="rgb24")
                turns = int(round(-getattr(frame, "rotation", 0))) % 360 // 90  # phones' display rotation
                yield float(t), np.ascontiguousarray(np.rot90(rgb, k=-turns)) if turns else rgb
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
    except av.error.FFmpegError as exc:
        if count == 0:
            raise InputError(f"{name}: not a readable video ({exc})") from exc
        log.warning("%s: decoding stopped after %d frames (%s); using those", name, count, exc)
    if count == 0:
        raise InputError(f"{name}: the video has no frames")


def resample(timed: Iterable[tuple[float, T]], fps: float | None, source_rate: float) -> Iterator[tuple[int, T]]:
    """Yield (source index, item) at `fps` by timestamp: clip frame k shows the source frame
    nearest to time k / fps (from the first frame), so frames are dropped or repeated as the
    rates require. The video lasts until one source frame interval (1 / source_rate) after its last frame.
    `fps` None or 0 keeps every source frame. Holds one source item at a time."""
    if not fps:
        yield from ((j, item) for j, (_, item) in enumerate(timed))
        return
    k = 0
    prev: tuple[int, float, T] | None = None
    t0 = 0.0
    for j, (t, item) in enumerate(timed):
        if prev is None:
            t0 = t
        t = t - t0
        if prev is not None:
            t = max(t, prev[1] + 1e-9)  # out-of-order or repeated timestamps
            while k / fps < t:
                pick = prev if k / fps - prev[1] <= t - k / fps else (j, t, item)
                yield pick[0], pick[2]
                k += 1
        prev = (j, t, item)
    if prev is None:
        return
    end = prev[1] + 1.0 / source_rate
    while k / fps < end - 1e-6:
        yield prev[0], prev[2]
        k += 1


def resample_indices(times: Sequence[float], fps: float | None, source_rate: float) -> list[int]:
    """The source indices `resample` picks for these timestamps (for planning and tests)."""
    return [j for j, _ in resample(((t, None) for t in times), fps, source_rate)]
