"""Where a diffusion model comes from and how a process holds it for its jobs.

`load_pipeline` is the one place a diffusion model is loaded: a folder written by
`VividPipeline.save_pretrained`, a Hugging Face hub id, "tiny" (random, for tests), "mini"
(the shipped VividPortraits-mini), or nothing, which means the shipped model when this copy
has one (`vivid.models.shipped.resolve_weights`). The model sets its own recommended
scheduler and sampling defaults (`VividPipeline.from_pretrained`, `check_inputs`).

`ModelHost` holds one model for every job a process runs (the app's visitors, the CLI's one
job, an evaluation's cases): loaded once on first use, in the number format and with the disk
offload asked for; its motion maps drawn with the model's own face parser unless a job names
another (`parser`), with the process's shared analyser for that parser; one job at a time
(`turn`); and, on Hugging Face Spaces with ZeroGPU, each job's denoising on a GPU borrowed for
that job (`stream`). The engines (`vivid.engines.make_engine`) use it; the app only wraps it.
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .errors import OptionError, WeightsError
from .events import FrameEvent, ProgressEvent
from .face.shared_analyzers import parsing_analyzer
from .models.saved import SamplingDefaults, SavedModel, inspect_model
from .models.shipped import is_shipped_name, resolve_weights
from .turns import TurnQueue

if TYPE_CHECKING:
    import numpy as np

    from .face.analyzer import FaceAnalyzer
    from .pipeline import VividPipeline

#: Seconds of GPU a ZeroGPU Space lends one job.
GPU_SECONDS = 300


def load_pipeline(weights: str | Path | None = None, *, dtype: str = "auto", disk_offload: bool | None = None,
                  resolution: int | None = None) -> "VividPipeline":
    """The diffusion model `weights` names (see `resolve_weights`), in `dtype`, with CLIP and
    the ReferenceNet streamed from disk when `disk_offload` (default: on a CPU); "tiny" is made
    at `resolution` (default 64)."""
    from .pipeline import VividPipeline
    from .terminal import quiet_loaded_libraries

    quiet_loaded_libraries()  # diffusers and transformers are loaded now
    source = resolve_weights(weights)
    if source == "tiny":
        return VividPipeline.tiny(resolution=resolution or 64, dtype=dtype)
    return VividPipeline.from_pretrained(source, dtype=dtype, disk_offload=disk_offload)


def _gpu_borrower() -> Callable[[Callable], Callable]:
    """ZeroGPU's decorator on Hugging Face Spaces (the `spaces` package lends a GPU to each call
    of the function it wraps); anywhere else, none."""
    try:
        import spaces
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=GPU_SECONDS)


#: Every living host by its id: the GPU worker reaches its model here (see `_stream_on_gpu`).
_HOSTS: "weakref.WeakValueDictionary[int, ModelHost]" = weakref.WeakValueDictionary()


@_gpu_borrower()  # decorated at import, as ZeroGPU asks
def _stream_on_gpu(host: int, reference: "np.ndarray", driving, **options) -> Iterator[ProgressEvent | FrameEvent]:
    """A hosted model's events. On Spaces with ZeroGPU this runs in a worker with a borrowed
    GPU, so the model is reached through the host's id, never passed (it would be copied)."""
    yield from _HOSTS[host].pipeline().stream(reference, driving, **options)


class ModelHost:
    """One diffusion model for the jobs of a process (see the module docstring). Nothing loads
    until `pipeline()` is first called; `parser` None means the model's own setting."""

    def __init__(self, weights: str | Path | None = None, *, dtype: str = "auto", disk_offload: bool | None = None,
                 parser: str | None = None, resolution: int | None = None):
        self.weights, self.dtype, self.disk_offload = weights, dtype, disk_offload
        self.asked_parser, self.resolution = parser, resolution
        self._pipe: VividPipeline | None = None
        self._folder_read: tuple[SavedModel | None] | None = None  # `_saved`, once read
        self._loading = threading.Lock()
        self._turns = TurnQueue()  # one job at a time, in arrival order
        _HOSTS[id(self)] = self

    @classmethod
    def holding(cls, pipe: "VividPipeline", parser: str | None = None) -> "ModelHost":
        """A host for a model already loaded (tests, notebooks, `VividPipeline.tiny()`); its face
        analyser is left as it is unless `parser` names one."""
        host = cls(parser=parser)
        if parser is not None:
            pipe.analyzer = parsing_analyzer(parser)
        host._pipe = pipe
        return host

    def pipeline(self) -> "VividPipeline":
        """The model, loaded on first use (once, whichever thread asks first)."""
        with self._loading:
            if self._pipe is None:
                self._pipe = self._drawn_with_its_parser(load_pipeline(
                    self.weights, dtype=self.dtype, disk_offload=self.disk_offload, resolution=self.resolution))
        return self._pipe

    @property
    def shipped(self) -> bool:
        """Whether the model is the one shipped with the project (no weights given, or "mini")."""
        return not self.weights or is_shipped_name(self.weights)

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory already."""
        return self._pipe is not None

    def _saved(self) -> SavedModel | None:
        """What the model's folder says, read once without loading it (None where there is
        nothing to read: a hub id not fetched yet, "tiny", no model, or a broken folder, which
        is refused when a job loads it)."""
        if self._folder_read is None:
            try:
                self._folder_read = (inspect_model(self.weights)[1],)
            except (OptionError, WeightsError):
                self._folder_read = (None,)
        return self._folder_read[0]

    @property
    def parser(self) -> str:
        """The face parser the jobs' motion maps are drawn with: the one asked for, else the
        model's setting (from its folder while it is not loaded; "auto" where that says nothing)."""
        if self.asked_parser is not None:
            return self.asked_parser
        if self._pipe is not None:
            return self._pipe.parser
        saved = self._saved()
        return saved.parser if saved is not None else "auto"

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """What the model recommends sampling with (from its folder while it is not loaded), e.g.
        for controls that start at the model's steps and guidance."""
        if self._pipe is not None:
            return self._pipe.sampling_defaults
        saved = self._saved()
        return saved.sampling if saved is not None else SamplingDefaults()

    def analyzer(self) -> "FaceAnalyzer":
        """The process's shared analyser for this host's parser (the one its model runs with)."""
        return parsing_analyzer(self.parser)

    def _drawn_with_its_parser(self, pipe: "VividPipeline") -> "VividPipeline":
        pipe.analyzer = parsing_analyzer(self.asked_parser or pipe.parser)
        return pipe

    @property
    def busy(self) -> bool:
        """Whether a job holds the model now."""
        return self._turns.busy

    def turn(self, waiting: Callable[[int], None] = lambda ahead: None, interval: float = 0.25):
        """The model for one job at a time, in arrival order: waits until the jobs before it are
        done, calling `waiting(jobs ahead)` every `interval` seconds meanwhile (it may raise to
        give up waiting)."""
        return self._turns.turn(waiting, interval)

    def stream(self, reference: "np.ndarray", driving, **options) -> Iterator[ProgressEvent | FrameEvent]:
        """`VividPipeline.stream` of the hosted model (keywords as there), on a borrowed GPU
        on ZeroGPU Spaces."""
        return _stream_on_gpu(id(self), reference, driving, **options)


__all__ = ["GPU_SECONDS", "ModelHost", "load_pipeline"]
