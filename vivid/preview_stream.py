"""The preview engine with its stages overlapped in threads, for whole videos (the CLI).

Decoding (PyAV), face tracking (MediaPipe), warping (OpenCV/NumPy) and the caller's encoding
(PyAV/x264) each run in their own thread and hand frames on through bounded queues, so a
stage works on the next frame while the others finish theirs, and memory stays flat however
long the video is. The frames are exactly those of `PreviewAnimator.stream`, in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .background import ordered_map, run_ahead
from .face.template import MotionTemplate
from .media import checked_frames
from .preview import PreviewAnimator


@dataclass(frozen=True)
class StreamConfig:
    """How the stages are spread over threads."""

    depth: int = 8  # frames each queue holds at most (memory: a few frames per stage)
    warp_workers: int = 1  # threads warping frames (in order); 2 pays only with spare cores


def stream_in_threads(animator: PreviewAnimator, reference: np.ndarray,
                      driving_frames: "Iterable[np.ndarray] | MotionTemplate", fps: float = 25.0,
                      config: StreamConfig = StreamConfig()) -> Iterator[np.ndarray]:
    """`animator.stream(reference, driving_frames, fps)` with decoding, tracking and warping
    in background threads; the caller's loop (e.g. the encoder) is the last stage."""
    if not isinstance(driving_frames, MotionTemplate):
        driving_frames = run_ahead(checked_frames(driving_frames), config.depth, "decode")
    ref = animator.prepare(reference)
    goals = run_ahead(animator.targets(ref, driving_frames, fps), config.depth, "track")
    frames = ordered_map(lambda goal: None if goal is None else animator.render(ref, goal), goals,
                         config.warp_workers, config.depth, "warp")
    last: np.ndarray | None = None
    try:
        for frame in frames:
            # A frame without a face repeats the last animated frame (the reference at first).
            if frame is None:
                frame = animator.render(ref, None) if last is None else last.copy()
            last = frame
            yield frame
    finally:
        frames.close()
        goals.close()
