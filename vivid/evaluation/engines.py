"""The engines an evaluation compares: `vivid.engines`' still, preview and diffusion engines
(the same ones `animate` and the app run), built from an EvaluationConfig, plus engines made
from a function (tests, experiments) and the timing of an engine's frames.

Every engine yields whole frames the size of the reference (preview and diffusion with their
crop pasted back), so the harness can cut the same fixed crop out of every engine's output
and out of the real video.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ..engines import ENGINE_NAMES, DiffusionEngine, Engine, PreviewEngine, StillEngine
from ..errors import OptionError, WeightsError, flag_message
from ..events import FrameEvent
from ..model_host import load_pipeline
from ..models.saved import inspect_model
from ..sampling import Sampling

__all__ = ["ENGINE_NAMES", "Engine", "FunctionEngine", "Sampling", "Timed", "build_engines", "diffusion_problem"]


class FunctionEngine(Engine):
    """An engine made from a function (reference, driving frames, fps) -> frames."""

    def __init__(self, name: str, function: Callable[[np.ndarray, Iterable[np.ndarray], float], Iterable[np.ndarray]]):
        self.name, self.function = name, function

    def stream(self, reference: np.ndarray, driving: Iterable[np.ndarray], fps: float) -> Iterator[FrameEvent]:
        for index, frame in enumerate(self.function(reference, driving, fps)):
            yield FrameEvent(index, frame)


def diffusion_problem(weights: str | None) -> str | None:
    """Why the diffusion engine cannot run with `weights` (None: it can), as a command-line
    user reads it: no model given and none shipped, or a folder that is not a saved model."""
    try:
        inspect_model(weights)
    except (OptionError, WeightsError) as exc:
        return flag_message(exc)
    return None


def build_engines(names: Iterable[str], weights: str | None, options: Sampling,
                  skipped: dict[str, str]) -> list[Engine]:
    """The named engines, in order; a diffusion engine that cannot run goes into `skipped`
    with the reason (its table row says so) instead."""
    engines: list[Engine] = []
    for name in names:
        if name == "still":
            engines.append(StillEngine())
        elif name == "preview":
            engines.append(PreviewEngine())
        elif (problem := diffusion_problem(weights)) is not None:
            skipped[name] = f"skipped: {problem}"
        else:
            engines.append(DiffusionEngine(load_pipeline(weights), options))
    return engines


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
