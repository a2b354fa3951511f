"""Every option of an animation in one place, checked before any heavy work.

`AnimateOptions` is the one list of what a user can choose: each field has its default, a
one-line help and its group in the field's metadata, and the command line's `animate` flags
are made from them (`vivid.cli`), the app's controls start at them, and the Python API takes
them as keywords. The diffusion engine's sampling settings are `vivid.sampling.Sampling`'s
fields, inherited. `check()` refuses a bad value with the same one-line message everywhere,
before a model loads, a face is tracked or a frame is decoded; it reads only small files (a
saved model's JSON and safetensors headers) and imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .checks import choice, flag, real, whole
from .errors import OptionError
from .face.analyzer import PARSERS
from .face.motion_edits import MotionEdits
from .face.photo_motion import MAX_PHOTO_SECONDS
from .media import BROWSER_MAX_SIDE, MAX_VIDEO_FRAMES, MIN_SIDE
from .models.saved import inspect_model
from .models.shipped import SHIPPED_MODEL_SUMMARY, model_available
from .sampling import DIFFUSION, Sampling, option

#: Engines: "preview" warps the portrait on the CPU (no weights), "diffusion" runs the model,
#: "still" repeats the portrait (evaluation's floor), "auto" is diffusion when a model is
#: available (weights given, or the shipped one) and preview otherwise (`choose_engine`).
ENGINES = ("preview", "diffusion", "still", "auto")
#: Floating-point types the networks may run in (`--dtype`; "auto": the hardware's best).
DTYPES = ("auto", "fp32", "bf16", "fp16")
#: Largest face crop side (`size`), px.
MAX_SIZE = 2048
#: The group of the options every engine takes.
ANIMATE = "animate"
#: Where the result's sound comes from: the driving clip (or template), the source video (a
#: portrait video), or nowhere.
SOUNDS = ("driving", "source", "none")


def choose_engine(engine: str, weights: str | Path | None) -> str:
    """`engine`, with "auto" made concrete: diffusion when a model is available (`weights`
    given, or the shipped model here), else preview."""
    if engine != "auto":
        return engine
    return "diffusion" if model_available(weights) else "preview"


@dataclass(frozen=True)
class AnimateOptions(Sampling):
    """Every option of `animate` with its default (the CLI's flags, the app's controls and the
    Python API's keywords mean the same): the diffusion engine's sampling settings (`Sampling`)
    and the fields below. `check()` refuses bad values with an OptionError."""

    engine: str = option("preview", "preview: fast warping, no weights; diffusion: the model (without --weights the "
                                    f"shipped {SHIPPED_MODEL_SUMMARY}); still: the portrait unchanged; auto: "
                                    "diffusion when a model is available (weights given or the shipped one), else "
                                    "preview", ANIMATE, choices=ENGINES)
    size: int | None = option(None, "side of the animated face crop in px", ANIMATE, metavar="PX",
                              default_text="the portrait's own scale for the preview engine, the model's for the "
                                           "diffusion engine")
    max_frames: int | None = option(None, "use only the first N driving frames", ANIMATE, metavar="N",
                                    default_text="all")
    max_side: int | None = option(BROWSER_MAX_SIDE, "a larger portrait is animated scaled down to this longest side "
                                                    "in px, so the video plays in every browser; no cap (0 on the "
                                                    "command line, None in Python) keeps its full size, which browsers "
                                                    "may not play", ANIMATE, metavar="PX", none_as=0)
    crop_only: bool = option(False, "output the animated face crop, not the whole portrait", ANIMATE)
    relative: bool = option(True, "move the portrait's own face with the driver's motion", ANIMATE,
                            flag="--absolute", flag_help="copy the driving face's shape, not only its motion")
    weights: str | None = option(None, "a folder saved by VividPipeline.save_pretrained, a Hugging Face hub id "
                                       "(owner/name, fetched once into the hub cache), 'mini' (the shipped "
                                       "VividPortraits-mini) or 'tiny' (random, for testing)",
                                 metavar="FOLDER|ID", default_text="the shipped model when this copy has one")
    dtype: str = option("auto", "number format the networks run in (auto: bf16 on CPUs and GPUs that compute it "
                                "natively, fp16 on other GPUs, fp32 on other CPUs)", choices=DTYPES)
    parser: str | None = option(None, "face parser for the motion maps: mesh (MediaPipe, offline), farl (the paper's "
                                      "FaRL), auto (farl when its weights are on disk and a GPU runs it)",
                                choices=PARSERS, default_text="the model's setting")
    face: int | None = option(None, "which face of the portrait to animate when it shows several, counted from the "
                                    "left (1 = the leftmost)", ANIMATE, metavar="N",
                              default_text="the largest, most central one")
    sound: str = option("driving", "the result's sound: the driving clip's, the source video's (when the portrait is "
                                   "a video) or none", ANIMATE, choices=SOUNDS)
    photo_seconds: float = option(1.5, "a driving photo makes a clip this long, from the portrait's own face to the "
                                       "photo's expression and head pose (0: one frame with the photo's)", ANIMATE,
                                  metavar="SECONDS")
    #: Changes of the motion on every frame (`vivid.face.motion_edits`); the CLI's `--edit NAME=VALUE`.
    edits: MotionEdits = field(default=MotionEdits(), metadata={"group": ANIMATE})
    disk_offload: bool | None = option(None, "read CLIP and the ReferenceNet, which run once per video, from the "
                                             "weights files layer by layer instead of holding them in memory (at "
                                             "bf16 about 2.3 GB less for the SD1.5-sized model, for a re-read of "
                                             "those weights per video)", default_text="on when running on a CPU")

    def check(self) -> "AnimateOptions":
        """Refuse any bad value or contradictory pair (OptionError; a broken weights folder:
        WeightsError). Returns the options with the engine chosen ("auto" made concrete),
        whole numbers as ints and, for the diffusion engine, the weights named as
        `vivid.model_host.load_pipeline` takes them (the shipped model's folder for None or "mini")."""
        choice("engine", self.engine, ENGINES)
        if not isinstance(self.edits, MotionEdits):
            raise OptionError(f"edits must be MotionEdits, got {type(self.edits).__name__}", "edits")
        edits = self.edits.check()
        if self.face is not None:
            whole("face", self.face, 1, 100)
        choice("sound", self.sound, SOUNDS)
        real("photo_seconds", self.photo_seconds, 0.0, MAX_PHOTO_SECONDS)
        if self.max_frames is not None:
            whole("max_frames", self.max_frames, 1, MAX_VIDEO_FRAMES, " frames")
        if self.max_side is not None:
            whole("max_side", self.max_side, MIN_SIDE, None, " px")
        flag("crop_only", self.crop_only)
        flag("relative", self.relative)
        if self.size is not None:
            whole("size", self.size, MIN_SIDE, MAX_SIZE, " px")
            if self.max_side is not None and self.crop_only and self.size > self.max_side:
                raise OptionError(f"size {self.size} px is larger than max_side {self.max_side} px; "
                                  "lower the size or lift the cap", "size")
        engine = choose_engine(self.engine, self.weights)
        if engine != "diffusion":
            return self._whole_numbers(("size", "max_frames", "max_side", "face"), engine=engine, edits=edits,
                                       photo_seconds=float(self.photo_seconds))
        choice("dtype", self.dtype, DTYPES)
        if self.parser is not None:
            choice("parser", self.parser, PARSERS)
        if self.disk_offload is not None:
            flag("disk_offload", self.disk_offload)
        checked = self.checked()  # the settings alone first: no file read yet
        source, saved = inspect_model(self.weights)  # a hub id is checked once fetched: no network here
        if saved is not None:
            if self.size is not None and self.size != saved.resolution:
                raise OptionError(f"size: this model works at {saved.resolution} px; leave size out (got {self.size})",
                                  "size")
            checked = checked.checked(saved.max_window)  # the window against the model's temporal length
        elif source == "tiny" and self.size is not None and self.size % 8:
            raise OptionError(f"size must be a multiple of 8 for the diffusion engine, got {self.size}", "size")
        return checked._whole_numbers(("size", "max_frames", "max_side", "face"), engine=engine, weights=source,
                                      edits=edits, photo_seconds=float(self.photo_seconds))

    def _whole_numbers(self, names: tuple[str, ...], **changes) -> "AnimateOptions":
        """A copy with `changes` and the checked whole-number options as ints (24.0 from a slider is 24)."""
        whole_numbers = {name: int(getattr(self, name)) for name in names if getattr(self, name) is not None}
        return replace(self, **whole_numbers, **changes)


def option_names(group: str) -> tuple[str, ...]:
    """The options of a group: `ANIMATE` (every engine's) or `vivid.sampling.DIFFUSION` (the
    diffusion engine's alone), in the fields' order."""
    return tuple(f.name for f in fields(AnimateOptions) if f.metadata.get("group") == group)


__all__ = ["ANIMATE", "AnimateOptions", "DIFFUSION", "DTYPES", "ENGINES", "MAX_SIZE", "SOUNDS", "choose_engine",
           "option_names"]
