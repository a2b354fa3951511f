"""One interface over the three ways of animating a portrait.

Layers (README "What is here"): face → conditioning/models → pipeline/preview → **engines**
→ animation job → CLI / app / evaluate.

An `Engine` turns a reference portrait and driving frames (or a motion template) into a
stream of events (`vivid.events`): `ProgressEvent` for work done before the first frame
(the diffusion engine's denoising steps, with a picture of the estimate) and `FrameEvent`
for each whole output frame, one per driving frame, in order. `animate` gives the frames alone.

- `StillEngine`: the portrait repeated, the floor every engine must beat (evaluation).
- `PreviewEngine(PreviewConfig)`: `vivid.preview` warping on the CPU, no weights; its
  decoding, tracking and warping overlap in threads (`vivid.preview_stream`).
- `DiffusionEngine(model, Sampling)`: `VividPipeline.stream` of a hosted model
  (`vivid.model_host.ModelHost`: loaded once, its own parser, one job at a time).

`make_engine` builds the engine checked `AnimateOptions` ask for. The engines decide nothing
the options or the model decide: the engine choice is `vivid.options.choose_engine`, the
model and its parser are the host's, and unset steps and guidance are filled by the model
itself (`VividPipeline.check_inputs`).

Importing this module loads no torch: the preview engine and refusals stay quick.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Iterator, Union

import numpy as np

from .errors import OptionError
from .job_memory import MemoryNeed, diffusion_need, preview_need
from .events import FrameEvent, ProgressEvent
from .face import FaceAnalyzer, MotionTemplate
from .face.motion_edits import MotionEdits
from .face.shared_analyzers import mesh_analyzer
from .media import ALONGSIDE_OTHER_WORK, Encoding
from .model_host import ModelHost
from .options import AnimateOptions, choose_engine
from .sampling import Sampling

if TYPE_CHECKING:
    from .pipeline import VividPipeline
    from .preview import PreviewConfig
    from .source_video import SourceVideo

#: Engines by name, in the order evaluation tables list them.
ENGINE_NAMES = ("still", "preview", "diffusion")

#: What engines take as the driving input: RGB frames, or a motion template.
DrivingInput = Union[Iterable[np.ndarray], MotionTemplate]


class Engine:
    """Animates a reference with driving frames: `stream` yields progress and frame events."""

    name: str = "engine"
    #: H.264 settings for its videos (an engine whose own threads keep the cores busy takes cheaper ones).
    encoding: Encoding = Encoding()
    #: A line saying how it runs, for a log or terminal ("" when there is nothing to say).
    description: str = ""
    #: A word for status lines while it works before its first frame (e.g. its number format).
    note: str = ""

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[ProgressEvent | FrameEvent]:
        """Events: progress while working, then each whole output frame (RGB uint8), in order."""
        raise NotImplementedError

    def animate(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[np.ndarray]:
        """The output frames alone."""
        for event in self.stream(reference, driving, fps):
            if event.kind == "frame":
                yield event.frame

    def turn(self, waiting: Callable[[int], None]) -> ContextManager[None]:
        """Held while a job runs on this engine: at once, unless the engine serves one job at
        a time (a shared model, in arrival order); then `waiting(jobs ahead)` is called while
        others hold it or are before it in the queue."""
        return nullcontext()

    def memory_need(self, frames: int, output_pixels: int, driving_pixels: int) -> MemoryNeed | None:
        """What a job of `frames` frames takes beyond the loaded models (`vivid.job_memory`);
        None when it is too little to matter."""
        return None

    def stream_source(self, source: "SourceVideo", driving: DrivingInput, fps: float,
                      check: Callable[[], None] | None = None) -> Iterator[FrameEvent]:
        """Events for a portrait video as the source (`vivid.source_video`): each of its frames
        moved by the driver's motion. Only the preview engine does it."""
        raise OptionError(f"engine {self.name} cannot animate a portrait video (a source video): it animates one "
                          "portrait image; use the preview engine, or give a photo", "engine")


class StillEngine(Engine):
    """The reference repeated, once per driving frame: the floor every engine must beat."""

    name = "still"

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[FrameEvent]:
        frames = range(len(driving)) if isinstance(driving, MotionTemplate) else driving
        for index, _ in enumerate(frames):
            yield FrameEvent(index, reference)


class PreviewEngine(Engine):
    """The CPU preview engine (`vivid.preview`), its stages overlapped in threads."""

    name = "preview"
    encoding = ALONGSIDE_OTHER_WORK  # its own threads keep the cores busy: the encoder takes the cheaper settings

    def __init__(self, config: "PreviewConfig | None" = None, analyzer: FaceAnalyzer | None = None,
                 whole_process: bool = False):
        from .preview import PreviewAnimator, PreviewConfig

        self.animator = PreviewAnimator(config or PreviewConfig(), analyzer or mesh_analyzer())
        if whole_process:
            dedicate_process_to_preview()

    def memory_need(self, frames: int, output_pixels: int, driving_pixels: int) -> MemoryNeed:
        return preview_need(frames, output_pixels, driving_pixels)

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[FrameEvent]:
        from . import preview_stream  # looked up per call: bench/preview_engine.py swaps stream_in_threads

        frames = preview_stream.stream_in_threads(self.animator, reference, driving, fps)
        try:
            for index, frame in enumerate(frames):
                yield FrameEvent(index, frame)
        finally:
            frames.close()

    def stream_source(self, source: "SourceVideo", driving: DrivingInput, fps: float,
                      check: Callable[[], None] | None = None) -> Iterator[FrameEvent]:
        from .source_video import animate_source

        frames = animate_source(self.animator, source.frames(check), source.fps, driving, fps,
                                self.animator.config.face)
        try:
            for index, frame in enumerate(frames):
                yield FrameEvent(index, frame)
        finally:
            frames.close()


def dedicate_process_to_preview() -> None:
    """Settings of the whole process for one preview job (the CLI's): its stages already keep
    both cores busy, so OpenCV's own thread pool would only add hand-overs (1.1 ms less CPU a
    frame, +3.5% frames/s on d3), and the warp thread, which hands the GIL over at each of its
    ~1100 triangle fills a frame, gets it back sooner with a shorter switch interval (+3%)."""
    import cv2

    cv2.setNumThreads(1)
    sys.setswitchinterval(0.001)


class DiffusionEngine(Engine):
    """A hosted diffusion model (`ModelHost`, or a loaded `VividPipeline`) sampling with
    `sampling`; whole frames unless `crop_only`. Steps and guidance left as None in `sampling`
    are the model's own recommendation."""

    name = "diffusion"

    def __init__(self, model: "ModelHost | VividPipeline", sampling: Sampling = Sampling(), *,
                 crop_only: bool = False, relative: bool = True, edits: MotionEdits = MotionEdits(),
                 face: int | None = None):
        self.host = model if isinstance(model, ModelHost) else ModelHost.holding(model)
        self.sampling, self.crop_only, self.relative = sampling, crop_only, relative
        self.edits, self.face = edits, face
        self.pipeline = self.host.pipeline()  # loaded now: after every check, before the job starts
        streamed = self.pipeline.streamed_networks
        self.description = f"diffusion engine in {self.pipeline.precision}" + (
            f"; {' and '.join(streamed)} read from disk when used" if streamed else "")
        self.note = self.pipeline.precision.name

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[ProgressEvent | FrameEvent]:
        return self.host.stream(reference, driving, fps=fps, relative=self.relative, paste_back=not self.crop_only,
                                edits=self.edits, face=self.face, **self.sampling.keywords())

    def turn(self, waiting: Callable[[int], None]) -> ContextManager[None]:
        return self.host.turn(waiting)

    def memory_need(self, frames: int, output_pixels: int, driving_pixels: int) -> MemoryNeed:
        pipe, sampling = self.pipeline, self.sampling
        guidance = pipe.sampling_defaults.guidance if sampling.guidance is None else sampling.guidance
        side = pipe.config.resolution // pipe.vae_scale_factor
        return diffusion_need(frames, driving_pixels, output_pixels, latent_pixels=side * side,
                              latent_channels=pipe.unet.config.out_channels,
                              unet_width=pipe.unet.config.block_out_channels[0], window=min(sampling.window, frames or 1),
                              guided=guidance > 1.0, dtype_bytes=pipe.precision.dtype.itemsize,
                              warp_guidance=bool(pipe.config.warp_guidance))


def make_engine(options: AnimateOptions, *, host: ModelHost | None = None, analyzer: FaceAnalyzer | None = None,
                whole_process: bool = False) -> Engine:
    """The engine checked `options` ask for (`AnimateOptions.check()` first). The preview
    engine tracks with `analyzer` (default: the process's mesh analyser) and, with
    `whole_process`, tunes the process for itself (`dedicate_process_to_preview`). The
    diffusion engine's model is `host`'s (default: a host of the options' weights, number
    format, disk offload, parser and size; a given host's model runs with the host's parser),
    loaded now if it is not yet."""
    engine = choose_engine(options.engine, options.weights)
    if engine == "still":
        return StillEngine()
    if engine == "preview":
        from .preview import PreviewConfig

        config = PreviewConfig(size=options.size, crop_only=options.crop_only, relative=options.relative,
                               edits=options.edits, face=options.face)
        return PreviewEngine(config, analyzer, whole_process)
    host = host or ModelHost(options.weights, dtype=options.dtype, disk_offload=options.disk_offload,
                             parser=options.parser, resolution=options.size)
    return DiffusionEngine(host, Sampling(**options.keywords()), crop_only=options.crop_only, relative=options.relative,
                           edits=options.edits, face=options.face)


__all__ = [
    "ENGINE_NAMES", "DiffusionEngine", "DrivingInput", "Engine", "PreviewEngine", "StillEngine",
    "dedicate_process_to_preview", "make_engine",
]
