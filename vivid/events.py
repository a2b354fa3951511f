"""What engines stream: progress while they work before their first frame, then the frames.

Shared by `VividPipeline.stream` and every engine of `vivid.engines` (torch-free, so the
preview engine does not load torch for them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class ProgressEvent:
    """Step `step` of `total` finished (a denoising step); `preview` is a small RGB of the estimate."""

    step: int
    total: int
    preview: np.ndarray | None
    kind: Literal["progress"] = "progress"


@dataclass
class FrameEvent:
    """Output frame `index` (RGB uint8), yielded as soon as it is made."""

    index: int
    frame: np.ndarray
    kind: Literal["frame"] = "frame"
