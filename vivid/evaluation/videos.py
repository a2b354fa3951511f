"""The videos an evaluation saves: lossless crops (what was scored) and side-by-side views."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from ..media import read_video


class LosslessWriter:
    """Writes RGB frames to an mp4 with lossless H.264 in RGB (libx264rgb, crf 0), so the
    saved frames decode to exactly the pixels that were scored."""

    def __init__(self, path: Path, fps: float):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._container = av.open(str(path), mode="w")
        self._rate = Fraction(fps).limit_denominator(1001)
        self._stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if self._stream is None:
            self._stream = self._container.add_stream("libx264rgb", rate=self._rate)
            self._stream.height, self._stream.width = frame.shape[:2]
            self._stream.pix_fmt = "rgb24"
            self._stream.options = {"crf": "0", "preset": "veryfast"}
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "LosslessWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The RGB frames of a saved evaluation video."""
    return read_video(path)


def labelled(frame: np.ndarray, label: str, size: int) -> np.ndarray:
    """`frame` resized to size x size with `label` written in its top-left corner."""
    out = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR)
    scale = max(size / 512, 0.35)
    thick = max(1, int(round(2 * scale)))
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def side_by_side(reference: np.ndarray, columns: Sequence[tuple[str, Iterable[np.ndarray]]], size: int) -> Iterator[np.ndarray]:
    """Frames of reference | column 1 | column 2 ..., each labelled, `size` px tall."""
    ref = labelled(reference, "reference", size)
    iters = [(name, iter(frames)) for name, frames in columns]
    while True:
        row = [ref]
        for name, frames in iters:
            frame = next(frames, None)
            if frame is None:
                return
            row.append(labelled(frame, name, size))
        yield np.concatenate(row, axis=1)
