"""Where a video's usable clips lie: runs of frames with a face, cut at scene cuts, split
when long. Pure functions on per-frame measurements, so they are easy to test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class CutConfig:
    """When two consecutive frames belong to different shots."""

    colour_change: float = 0.35  # hue-saturation histogram change (0..1); within a shot <0.1 on the samples, across cuts >0.6
    face_jump: float = 0.5  # the face centre moving this many face sizes in one frame
    face_resize: float = 1.3  # the face size changing by this factor in one frame
    margin: int = 2  # frames left out on each side of a cut, while the tracker settles


def colour_signature(rgb: np.ndarray) -> np.ndarray:
    """A frame's hue-saturation histogram (sums to 1), cheap enough for every frame."""
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def colour_change(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two colour signatures: 0 same colours, 1 disjoint."""
    return 0.5 * float(np.abs(a - b).sum())


def shot_starts(
    colour: Sequence[float], points: np.ndarray, present: Sequence[bool], config: CutConfig = CutConfig()
) -> list[int]:
    """Frames that begin a new shot: a large colour change from the previous frame, or the
    tracked face jumping or changing size between two frames that both have it.
    `colour[k]` is the change from frame k-1 to k; `points` (F, N, 2), NaN where no face."""
    starts = []
    for k in range(1, len(colour)):
        cut = colour[k] > config.colour_change
        if not cut and present[k] and present[k - 1]:
            a, b = points[k - 1], points[k]
            size_a = float(np.ptp(a, axis=0).max())
            size_b = float(np.ptp(b, axis=0).max())
            jump = float(np.linalg.norm(b.mean(axis=0) - a.mean(axis=0))) / max(size_a, 1e-6)
            resize = max(size_a, size_b) / max(min(size_a, size_b), 1e-6)
            cut = jump > config.face_jump or resize > config.face_resize
        if cut:
            starts.append(k)
    return starts


def face_pieces(present: Sequence[bool], starts: Sequence[int], margin: int, max_len: int) -> list[tuple[int, int]]:
    """[first, end) runs of frames with a face, broken at each shot start (leaving out
    `margin` frames on both sides), runs longer than `max_len` split into equal parts."""
    breaks = np.zeros(len(present), bool)
    for k in starts:
        breaks[max(k - margin, 0) : k + margin] = True
    usable = np.asarray(present, bool) & ~breaks
    new_shot = set(starts)
    runs, first = [], None
    for k, ok in enumerate(usable):
        if ok and first is None:
            first = k
        # a new shot starting right here ends the previous run even without a gap (margin 0)
        if first is not None and (not ok or (k in new_shot and k > first)):
            runs.append((first, k))
            first = k if ok else None
    if first is not None:
        runs.append((first, len(usable)))
    return [piece for run in runs for piece in split_evenly(*run, max_len)]


def split_evenly(first: int, end: int, max_len: int) -> list[tuple[int, int]]:
    """[first, end) as the fewest equal parts of at most `max_len` frames."""
    n = end - first
    if max_len <= 0 or n <= max_len:
        return [(first, end)]
    parts = -(-n // max_len)
    edges = [first + round(i * n / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))
