"""The engines, behind one interface, and the one place a diffusion model is loaded.

Layers (DESIGN.md): face → conditioning/models → pipeline/preview → **engines** → animation
job (`vivid.animation`) → CLI / app / evaluate.

An `Engine` turns a reference portrait and driving frames (or a motion template) into a
stream of events (`vivid.events`): `ProgressEvent` for work done before the first frame
(the diffusion engine's denoising steps, with a preview picture) and `FrameEvent` for each
whole output frame, one per driving frame, in order. `animate` gives the frames alone.

- `StillEngine`: the portrait repeated, the floor every engine must beat (evaluation).
- `PreviewEngine(PreviewOptions)`: `vivid.preview` warping on the CPU, no weights; its
  decoding, tracking and warping overlap in threads (`vivid.preview_stream`).
- `DiffusionEngine(pipeline, DiffusionOptions)`: `VividPipeline.stream`.

`make_engine` builds the engine checked `AnimateOptions` ask for. `load_pipeline` is where
a diffusion model comes from: a folder written by `VividPipeline.save_pretrained`, a Hugging
Face hub id, "tiny" (random, for tests), "mini" (the shipped VividPortraits-mini,
`vivid.models.shipped`), or nothing, which means the shipped model when this copy has one.
A model may recommend its sampling steps, guidance and scheduler (`sampling_defaults` in its
model_index.json, `vivid.options.SamplingDefaults`); options left as None take them, and
values the user gives (flags, app controls) win. The engine choice "auto" is the diffusion
engine when a model is available, the preview engine otherwise (`choose_engine`).

Importing this module loads no torch: the preview engine and refusals stay quick.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Union

import numpy as np

from .events import FrameEvent, ProgressEvent
from .face import FaceAnalyzer, MotionTemplate
from .media import ALONGSIDE_OTHER_WORK, Encoding
from .models.shipped import MINI_MODEL_DIR, is_shipped_name, shipped_model
from .options import AnimateOptions, OptionError, SamplingDefaults

if TYPE_CHECKING:
    from .pipeline import VividPipeline

#: Engines by name, in the order evaluation tables list them.
ENGINE_NAMES = ("still", "preview", "diffusion")
#: Why the diffusion engine cannot run when no model was given and none is shipped. The CLI
#: spells the option as its flag (`vivid.options.flag_message`): "needs --weights".
NO_MODEL = ("the diffusion engine needs weights (a saved model folder or a hub id) and the shipped model is not "
            "installed; use the preview engine to animate without downloaded weights")

#: What engines take as the driving input: RGB frames, or a motion template.
DrivingInput = Union[Iterable[np.ndarray], MotionTemplate]


# -- which model -------------------------------------------------------------------------------
def model_available(weights: str | Path | None) -> bool:
    """Whether the diffusion engine has a model to load: weights were given, or the shipped model is here."""
    return (bool(weights) and not is_shipped_name(weights)) or shipped_model() is not None


def resolve_weights(weights: str | Path | None) -> str:
    """What `weights` names, as `load_pipeline` reads it: a folder, a hub id or "tiny"; None
    and "mini" name the shipped model's folder. OptionError when there is no such model."""
    if weights and not is_shipped_name(weights):
        return str(weights)
    shipped = shipped_model()
    if shipped is not None:
        return str(shipped)
    if weights:
        raise OptionError(f"weights: the shipped model ({weights}) is not installed in this copy (no "
                          f"{MINI_MODEL_DIR.name}/model_index.json in assets); give a saved model folder or a hub id",
                          "weights")
    raise OptionError(NO_MODEL, "weights")


def choose_engine(engine: str, weights: str | Path | None) -> str:
    """`engine`, with "auto" made concrete: diffusion when a model is available, else preview."""
    if engine != "auto":
        return engine
    return "diffusion" if model_available(weights) else "preview"


def sampling_defaults(weights: str | Path | None) -> SamplingDefaults:
    """What the model `weights` names recommends sampling with, read from its folder without
    loading it (a hub id not yet fetched, "tiny" or no model: the pipeline's own defaults)."""
    from .options import check_weights_folder, is_hub_id

    try:
        folder = resolve_weights(weights)
    except OptionError:
        return SamplingDefaults()
    if folder == "tiny" or is_hub_id(folder):
        return SamplingDefaults()
    return check_weights_folder(folder).sampling


def load_pipeline(weights: str | Path | None = None, *, dtype: str = "auto", disk_offload: bool | None = None,
                  resolution: int | None = None) -> "VividPipeline":
    """The diffusion model `weights` names (see `resolve_weights`), in `dtype`, with CLIP and
    the ReferenceNet streamed from disk when `disk_offload` (default: on a CPU); "tiny" is
    made at `resolution` (default 64). A scheduler the model recommends replaces the saved one."""
    from .pipeline import VividPipeline
    from .terminal import quiet_loaded_libraries

    quiet_loaded_libraries()  # diffusers and transformers are loaded now
    source = resolve_weights(weights)
    if source == "tiny":
        pipe = VividPipeline.tiny(resolution=resolution or 64, dtype=dtype)
    else:
        pipe = VividPipeline.from_pretrained(source, dtype=dtype, disk_offload=disk_offload)
    scheduler = model_defaults(pipe).scheduler
    if scheduler is not None and type(pipe.scheduler).__name__ != scheduler:
        import diffusers

        kind = getattr(diffusers, scheduler, None)
        if not (isinstance(kind, type) and issubclass(kind, diffusers.SchedulerMixin)):
            raise OptionError(f"{source}: sampling_defaults names the scheduler {scheduler}, which diffusers does not have")
        pipe.scheduler = kind.from_config(pipe.scheduler.config)
    return pipe


def model_defaults(pipe: "VividPipeline") -> SamplingDefaults:
    """What a loaded model recommends sampling with (its config's `sampling_defaults`)."""
    return SamplingDefaults.from_config(pipe.config.get("sampling_defaults"), "the model's model_index.json")


# -- the engines -------------------------------------------------------------------------------
class Engine:
    """Animates a reference with driving frames: `stream` yields progress and frame events."""

    name: str = "engine"
    #: H.264 settings for its videos (an engine whose own threads keep the cores busy takes cheaper ones).
    encoding: Encoding = Encoding()
    #: Runs one job at a time in a process that serves several (its model is shared).
    exclusive: bool = False
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


class StillEngine(Engine):
    """The reference repeated, once per driving frame: the floor every engine must beat."""

    name = "still"

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[FrameEvent]:
        frames = range(len(driving)) if isinstance(driving, MotionTemplate) else driving
        for index, _ in enumerate(frames):
            yield FrameEvent(index, reference)


@dataclass(frozen=True)
class PreviewOptions:
    """The preview engine's options (`vivid.preview.PreviewConfig` holds its finer settings)."""

    size: int | None = None  # side of the animated face crop in px (None: the portrait's own scale)
    crop_only: bool = False  # output the animated face crop, not the whole portrait
    relative: bool = True  # move the portrait's own face with the driver's motion (False: copy the driver's shape)


_mesh: FaceAnalyzer | None = None
_mesh_lock = threading.Lock()


def mesh_analyzer() -> FaceAnalyzer:
    """One face-mesh analyser (no person segmentation) for the process: the preview engine's
    tracking and the animation job's fail-fast face checks share it and its MediaPipe models."""
    global _mesh
    with _mesh_lock:
        if _mesh is None:
            _mesh = FaceAnalyzer("mesh", segment=False)
    return _mesh


class PreviewEngine(Engine):
    """The CPU preview engine (`vivid.preview`), its stages overlapped in threads."""

    name = "preview"
    encoding = ALONGSIDE_OTHER_WORK  # its own threads keep the cores busy: the encoder takes the cheaper settings

    def __init__(self, options: PreviewOptions = PreviewOptions(), analyzer: FaceAnalyzer | None = None,
                 whole_process: bool = False):
        from .preview import PreviewAnimator, PreviewConfig

        self.options = options
        self.animator = PreviewAnimator(PreviewConfig(size=options.size, crop_only=options.crop_only,
                                                      relative=options.relative), analyzer or mesh_analyzer())
        if whole_process:
            dedicate_process_to_preview()

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[FrameEvent]:
        from . import preview_stream  # looked up per call: bench/preview_engine.py swaps stream_in_threads

        frames = preview_stream.stream_in_threads(self.animator, reference, driving, fps)
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


@dataclass(frozen=True)
class DiffusionOptions:
    """The diffusion engine's sampling options; steps and guidance left as None take what the
    model recommends (`vivid.options.SamplingDefaults`: 25 and 3.5 unless it says)."""

    steps: int | None = None  # denoising steps
    guidance: float | None = None  # classifier-free guidance scale (1 or less: none)
    window: int = 24  # frames per context window
    overlap: int = 4  # frames shared by neighbouring windows
    cyclic: bool = True  # windows move one frame per step (the paper's cyclic overlap)
    wrap: bool = False  # cyclic windows run past the last frame into the first (looping clips)
    seed: int = 0
    crop_only: bool = False  # output the face crop the model paints, not the whole portrait
    relative: bool = True  # move the portrait's own face with the driver's motion


class DiffusionEngine(Engine):
    """`VividPipeline` with its sampling options, whole frames unless `crop_only`. `run` stands
    in for `pipeline.stream` (same arguments), e.g. to run it on a borrowed GPU (ZeroGPU)."""

    name = "diffusion"
    exclusive = True

    def __init__(self, pipeline: "VividPipeline", options: DiffusionOptions = DiffusionOptions(),
                 run: Callable[..., Iterator[ProgressEvent | FrameEvent]] | None = None):
        defaults = model_defaults(pipeline)
        self.pipeline, self.options, self.run = pipeline, options, run or pipeline.stream
        self.steps = defaults.steps if options.steps is None else options.steps
        self.guidance = defaults.guidance if options.guidance is None else options.guidance
        o = options
        pipeline.check_inputs(o.window, o.overlap, self.steps, self.guidance, o.cyclic, o.wrap, o.seed)  # its own window
        streamed = pipeline.streamed_networks
        self.description = f"diffusion engine in {pipeline.precision}" + (
            f"; {' and '.join(streamed)} read from disk when used" if streamed else "")
        self.note = pipeline.precision.name

    def stream(self, reference: np.ndarray, driving: DrivingInput, fps: float) -> Iterator[ProgressEvent | FrameEvent]:
        o = self.options
        return self.run(reference, driving, fps=fps, window=o.window, overlap=o.overlap, cyclic=o.cyclic, wrap=o.wrap,
                        steps=self.steps, guidance=self.guidance, seed=o.seed, relative=o.relative,
                        paste_back=not o.crop_only)


def make_engine(options: AnimateOptions, *, analyzer: FaceAnalyzer | None = None,
                load: Callable[[], "VividPipeline"] | None = None,
                run: Callable[..., Iterator[ProgressEvent | FrameEvent]] | None = None,
                whole_process: bool = False) -> Engine:
    """The engine checked `options` ask for (`AnimateOptions.check()` first). The preview
    engine tracks with `analyzer` (default: `mesh_analyzer()`) and, with `whole_process`,
    tunes the process for itself (`dedicate_process_to_preview`). The diffusion engine's
    model comes from `load` (default: `load_pipeline` with the options' weights, dtype,
    disk offload and size), parsed with `options.parser` when given; `run`: see DiffusionEngine."""
    engine = choose_engine(options.engine, options.weights)
    if engine == "still":
        return StillEngine()
    if engine == "preview":
        return PreviewEngine(PreviewOptions(options.size, options.crop_only, options.relative), analyzer, whole_process)
    pipe = load() if load is not None else load_pipeline(options.weights, dtype=options.dtype,
                                                          disk_offload=options.disk_offload, resolution=options.size)
    if options.parser:
        pipe.analyzer = FaceAnalyzer(options.parser)
    sampling = DiffusionOptions(steps=options.steps, guidance=options.guidance, window=options.window,
                                overlap=options.overlap, cyclic=options.cyclic, wrap=options.wrap, seed=options.seed,
                                crop_only=options.crop_only, relative=options.relative)
    return DiffusionEngine(pipe, sampling, run)


__all__ = [
    "ENGINE_NAMES", "NO_MODEL", "DiffusionEngine", "DiffusionOptions", "Engine", "PreviewEngine", "PreviewOptions",
    "StillEngine", "choose_engine", "dedicate_process_to_preview", "load_pipeline", "make_engine", "mesh_analyzer",
    "model_available", "model_defaults", "resolve_weights", "sampling_defaults",
]
