"""The engines an evaluation compares, behind one small interface.

Every engine takes the reference image and the driving frames and yields whole frames the
size of the reference (the preview engine with `crop_only=False`, the diffusion engine with
`paste_back=True`), so the harness can cut the same fixed crop out of every engine's output
and out of the real video.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

#: Engines `python -m vivid evaluate --engines` knows, in table order.
ENGINE_NAMES = ("still", "preview", "diffusion")


class Engine(Protocol):
    """Something that animates a reference with driving frames."""

    name: str

    def animate(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
        """Whole output frames (RGB uint8, the reference's size), one per driving frame."""
        ...


class StillEngine:
    """The reference repeated: the floor every engine must beat."""

    name = "still"

    def animate(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
        for _ in driving:
            yield reference


class PreviewEngine:
    """The CPU preview engine (`vivid.preview`), whole frames."""

    name = "preview"

    def __init__(self) -> None:
        from ..preview import PreviewAnimator, PreviewConfig

        self._animator = PreviewAnimator(PreviewConfig(crop_only=False))

    def animate(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
        return self._animator.stream(reference, driving, fps)


@dataclass
class DiffusionOptions:
    """Sampling options of the diffusion engine during evaluation (pipeline defaults)."""

    steps: int = 25  # denoising steps
    guidance: float = 3.5  # classifier-free guidance scale
    window: int = 24  # frames per context window
    overlap: int = 4  # frames shared by neighbouring windows
    seed: int = 0


class DiffusionEngine:
    """`VividPipeline` (a saved folder, or the tiny random model), pasted back into the
    whole reference so its output is cropped like every other engine's."""

    name = "diffusion"

    def __init__(self, weights: str, options: DiffusionOptions = DiffusionOptions()):
        from ..pipeline import VividPipeline

        if weights == "tiny":
            self.pipe = VividPipeline.tiny()
        else:
            self.pipe = VividPipeline.from_pretrained(weights)
        self.weights = weights
        self.options = options

    def animate(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
        o = self.options
        for event in self.pipe.stream(reference, driving, window=o.window, overlap=o.overlap, steps=o.steps,
                                      guidance=o.guidance, seed=o.seed, fps=fps, paste_back=True):
            if event.kind == "frame":
                yield event.frame


@dataclass
class FunctionEngine:
    """An engine made from a function (for tests and experiments from Python)."""

    name: str
    function: Callable[[np.ndarray, Iterable[np.ndarray], float], Iterable[np.ndarray]]

    def animate(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[np.ndarray]:
        yield from self.function(reference, driving, fps)


@dataclass
class Timed:
    """Wall time spent inside an engine's iterator (not in whoever consumes its frames)."""

    seconds: float = 0.0
    frames: int = 0

    def wrap(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        it = iter(frames)
        while True:
            start = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            self.frames += 1
            yield frame

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def weights_folder_problem(weights: str | None) -> str | None:
    """Why the diffusion engine cannot run with `weights` (None: it can)."""
    if not weights:
        return ("skipped: the diffusion engine needs --weights FOLDER (saved by VividPipeline.save_pretrained; "
                "`tiny` runs the random tiny test model)")
    if weights != "tiny" and not (Path(weights) / "model_index.json").is_file():
        return f"skipped: {weights} is not a saved VividPipeline folder (no model_index.json)"
    return None
