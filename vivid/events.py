"""What engines stream: progress while they work before their first frame, then the frames.

Shared by `VividPipeline.stream` and every engine of `vivid.engines` (torch-free, so the
preview engine does not load torch for them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class ProgressEvent:
    """Step `step` of `total` finished (a denoising step); `estimate` is a small RGB picture of
    the current estimate of the result (None: none at this point). `within` > 0: the next step
    is that share done (a long video's step runs many windows, and a stop request or a progress
    bar should not wait a whole step)."""

    step: int
    total: int
    estimate: np.ndarray | None
    kind: Literal["progress"] = "progress"
    within: float = 0.0

    @property
    def preview(self) -> np.ndarray | None:
        """`estimate` under its earlier name ("preview" now means the CPU engine only)."""
        return self.estimate


@dataclass
class FrameEvent:
    """Output frame `index` (RGB uint8), yielded as soon as it is made."""

    index: int
    frame: np.ndarray
    kind: Literal["frame"] = "frame"
