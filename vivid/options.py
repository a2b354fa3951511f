"""Every option of an animation in one place, checked before any heavy work.

The command line, the app and the Python API (`VividPipeline.stream`) check their options
here, so a bad value gets the same one-line message everywhere and is refused before a
model loads, a face is tracked or a frame is decoded. Nothing here imports torch: refusing a
bad option is instant.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from .media import BROWSER_MAX_SIDE, MAX_VIDEO_FRAMES, MIN_SIDE, InputError, same_file

#: Engines: "preview" warps the portrait on the CPU (no weights), "diffusion" runs the model,
#: "still" repeats the portrait (evaluation's floor), "auto" is diffusion when a model is
#: available (weights given, or the shipped one) and preview otherwise (`vivid.engines`).
ENGINES = ("preview", "diffusion", "still", "auto")
#: Floating-point types the networks may run in (`--dtype`; "auto": the hardware's best).
DTYPES = ("auto", "fp32", "bf16", "fp16")
#: Face parsers for the motion maps.
PARSERS = ("auto", "mesh", "farl")
#: Most denoising steps: the scheduler's training timesteps.
MAX_STEPS = 1000
#: Largest guidance scale accepted; useful values are about 2-5, beyond ~10 images burn.
MAX_GUIDANCE = 30.0
#: Largest seed torch's generators take.
MAX_SEED = 2**64 - 1
#: Frames the temporal layers attend over at most, when the model does not say (AnimateDiff).
DEFAULT_MAX_WINDOW = 32
#: Largest face crop side (`size`), px.
MAX_SIZE = 2048
#: Components a saved VividPipeline folder holds; the networks among them carry weights.
COMPONENTS = ("vae", "image_encoder", "feature_extractor", "reference_net", "unet", "pose_guider", "scheduler")
NETWORKS = ("vae", "image_encoder", "reference_net", "unet", "pose_guider")
#: Libraries a saved folder may name for its components (diffusers imports them to build it).
TRUSTED_LIBRARIES = ("diffusers", "transformers", "vivid.models.pose_guider", "vivid.models.tiny_autoencoder")


class OptionError(ValueError):
    """An option value (or combination) the program cannot use; the message names it and says
    what to do. `option` is the option's field name (the CLI shows it as its --flag)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


def flag_message(exc: BaseException) -> str:
    """The message of `exc` with the option it names spelt as a command-line flag where it is
    first mentioned ("overlap must be ..." -> "--overlap must be ...", "needs weights" ->
    "needs --weights"): the command line's wording of the same refusal."""
    message, option = str(exc), getattr(exc, "option", None)
    if not option:
        return message
    return re.sub(rf"(?<![\w-]){re.escape(option)}\b", "--" + option.replace("_", "-"), message, count=1)


class GpuMemoryError(MemoryError):
    """The GPU ran out of memory; the message says which settings need less of it."""


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the network it is meant for.
    (Defined here, without torch, so a broken folder is refused at once; also importable
    as `vivid.models.weights.WeightsError`.)"""


def _whole(name: str, value, low: int, high: int | None = None, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) \
                and float(value).is_integer():
            value = int(value)  # 24.0 from a slider is 24
        else:
            raise OptionError(f"{name} must be a whole number{unit}, got {value!r}", name)
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OptionError(f"{name} must be {bound}{unit}, got {value}", name)
    return value


def _real(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a number, got {value!r}", name)
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise OptionError(f"{name} must be between {low:g} and {high:g}, got {value:g}", name)
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, type(None))) and type(value).__name__ != "bool_":
        raise OptionError(f"{name} must be True or False, got {value!r}", name)
    return bool(value)


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}", name)
    return value


def check_denoising(window, overlap, cyclic, wrap, steps, guidance, seed, max_window: int = DEFAULT_MAX_WINDOW) -> None:
    """The diffusion engine's sampling options (see `AnimateOptions`); `max_window` is the
    model's temporal length."""
    window = _whole("window", window, 1, max_window, " frames")
    overlap = _whole("overlap", overlap, 0, None, " frames")
    if not overlap < window:
        raise OptionError(f"overlap must be smaller than the window ({window} frames), got {overlap}", "overlap")
    if _flag("wrap", wrap) and not _flag("cyclic", cyclic):
        raise OptionError("wrap only applies to cyclic windows; turn cyclic on or wrap off", "wrap")
    _whole("steps", steps, 1, MAX_STEPS)
    _real("guidance", guidance, 0.0, MAX_GUIDANCE)
    _whole("seed", seed, 0, MAX_SEED)


@dataclass(frozen=True)
class SamplingDefaults:
    """What a model recommends sampling with when the user does not say: the `sampling_defaults`
    entry of its model_index.json (`{"steps": 8, "guidance": 2.0, "scheduler": "DDIMScheduler"}`,
    each key optional), over the pipeline's own defaults. Steps and guidance given by the user
    (CLI flags, app controls, `AnimateOptions`) win; the scheduler replaces the saved one."""

    steps: int = 25  # denoising steps
    guidance: float = 3.5  # classifier-free guidance scale
    scheduler: str | None = None  # a diffusers scheduler class name; None: the one saved with the model

    @classmethod
    def from_config(cls, entry, where: str | Path = "model_index.json") -> "SamplingDefaults":
        """The defaults an entry states, checked (WeightsError naming `where` for a bad one)."""
        if not entry:
            return cls()
        if not isinstance(entry, dict) or set(entry) - {"steps", "guidance", "scheduler"}:
            raise WeightsError(f"{where}: sampling_defaults must be an object with steps, guidance and/or scheduler, "
                               f"got {entry!r}")
        scheduler = entry.get("scheduler")
        if scheduler is not None and not (isinstance(scheduler, str) and re.fullmatch(r"[A-Za-z]\w*Scheduler", scheduler)):
            raise WeightsError(f"{where}: sampling_defaults scheduler must name a diffusers scheduler class, got {scheduler!r}")
        try:
            return cls(steps=_whole("steps", entry.get("steps", cls.steps), 1, MAX_STEPS),
                       guidance=_real("guidance", entry.get("guidance", cls.guidance), 0.0, MAX_GUIDANCE),
                       scheduler=scheduler)
        except OptionError as exc:
            raise WeightsError(f"{where}: sampling_defaults {exc}") from None


@dataclass(frozen=True)
class AnimateOptions:
    """Every option of `animate` with its default (the CLI's flags, the app's widgets and the
    Python API's keywords mean the same). `check()` refuses bad values with an OptionError."""

    engine: str = "preview"  # "preview": warping on the CPU, no weights; "diffusion": the model; "still"; "auto"
    size: int | None = None  # side of the animated face crop, px (None: the engine's own choice)
    max_frames: int | None = None  # use only the first N driving frames (None: all)
    max_side: int | None = BROWSER_MAX_SIDE  # larger portraits are scaled down so the video plays in browsers (None: full size)
    crop_only: bool = False  # output the animated face crop, not the whole portrait
    relative: bool = True  # move the portrait's own face with the driver's motion (False: copy the driver's shape)
    weights: str | None = None  # diffusion: a saved folder, a hub id, "tiny", "mini" (None: the shipped model)
    window: int = 24  # diffusion: frames per context window
    overlap: int = 4  # diffusion: frames shared by neighbouring windows
    cyclic: bool = True  # diffusion: windows move one frame per step (the paper's cyclic overlap)
    wrap: bool = False  # diffusion: cyclic windows run past the last frame into the first (looping clips)
    steps: int | None = None  # diffusion: denoising steps (None: the model's default, 25 unless it says)
    guidance: float | None = None  # diffusion: classifier-free guidance scale (None: the model's, 3.5 unless it says)
    seed: int = 0  # diffusion: random seed
    dtype: str = "auto"  # diffusion: auto, fp32, bf16 or fp16
    parser: str | None = None  # diffusion: face parser for the motion maps (None: the model's setting)
    disk_offload: bool | None = None  # diffusion: CLIP and ReferenceNet read from disk per video (None: on a CPU)

    def check(self) -> "AnimateOptions":
        """Refuse any bad value or contradictory pair (OptionError; a broken weights folder:
        WeightsError). Reads only small files: call it before any heavy work. Returns the
        options with the engine chosen ("auto" resolved) and, for the diffusion engine, the
        weights named as `vivid.engines.load_pipeline` takes them (the shipped model's folder
        for None or "mini")."""
        from .engines import choose_engine, resolve_weights

        _choice("engine", self.engine, ENGINES)
        if self.max_frames is not None:
            _whole("max_frames", self.max_frames, 1, MAX_VIDEO_FRAMES, " frames")
        if self.max_side is not None:
            _whole("max_side", self.max_side, MIN_SIDE, None, " px")
        _flag("crop_only", self.crop_only)
        _flag("relative", self.relative)
        if self.size is not None:
            _whole("size", self.size, MIN_SIDE, MAX_SIZE, " px")
            if self.max_side is not None and self.crop_only and self.size > self.max_side:
                raise OptionError(f"size {self.size} px is larger than max_side {self.max_side} px; "
                                  "lower the size or lift the cap", "size")
        engine = choose_engine(self.engine, self.weights)
        if engine != "diffusion":
            return self._whole_numbers(("size", "max_frames", "max_side"), engine=engine)
        _choice("dtype", self.dtype, DTYPES)
        if self.parser is not None:
            _choice("parser", self.parser, PARSERS)
        weights = resolve_weights(self.weights)
        max_window, defaults = DEFAULT_MAX_WINDOW, SamplingDefaults()
        if is_hub_id(weights):
            pass  # checked once fetched (VividPipeline.from_pretrained): no network here
        elif weights != "tiny":
            saved = check_weights_folder(weights)
            max_window, defaults = saved.max_window, saved.sampling
            if self.size is not None and self.size != saved.resolution:
                raise OptionError(f"size: this model works at {saved.resolution} px; leave size out (got {self.size})",
                                  "size")
        elif self.size is not None and self.size % 8:
            raise OptionError(f"size must be a multiple of 8 for the diffusion engine, got {self.size}", "size")
        check_denoising(self.window, self.overlap, self.cyclic, self.wrap,
                        defaults.steps if self.steps is None else self.steps,
                        defaults.guidance if self.guidance is None else self.guidance, self.seed, max_window)
        if self.disk_offload is not None:
            _flag("disk_offload", self.disk_offload)
        return self._whole_numbers(("size", "max_frames", "max_side", "window", "overlap", "steps", "seed"),
                                   engine=engine, weights=weights,
                                   guidance=None if self.guidance is None else float(self.guidance))

    def _whole_numbers(self, names: tuple[str, ...], **changes) -> "AnimateOptions":
        """A copy with `changes` and the checked whole-number options as ints (24.0 from a slider is 24)."""
        whole = {name: int(getattr(self, name)) for name in names if getattr(self, name) is not None}
        return replace(self, **whole, **changes)


@dataclass(frozen=True)
class SavedModel:
    """What a saved pipeline folder says about itself, read from its small JSON files."""

    folder: Path
    resolution: int
    max_window: int
    sampling: SamplingDefaults = SamplingDefaults()  # what the model recommends sampling with


def is_hub_id(weights: str | Path | None) -> bool:
    """Whether `weights` names a Hugging Face hub model ("owner/name") rather than a folder:
    nothing of that name on disk, and the shape of a hub id."""
    text = str(weights or "")
    return (not Path(text).exists() and not text.startswith((".", "/", "~"))
            and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None)


def check_weights_folder(folder: str | Path) -> SavedModel:
    """The layout of a folder saved by `VividPipeline.save_pretrained`, checked without
    loading it: model_index.json, each component's config, and every weights file complete
    (safetensors headers only; pickle-based .bin weights are refused). Raises WeightsError
    naming the file and what is wrong with it."""
    folder = Path(folder)
    if not folder.exists():
        raise WeightsError(f"{folder}: no such weights folder")
    if not folder.is_dir():
        raise WeightsError(f"{folder} is a file; the weights are a folder saved by VividPipeline.save_pretrained")
    index = _json(folder / "model_index.json", WeightsError,
                  missing=f"{folder} is not a saved VividPipeline folder (no model_index.json)")
    name = index.get("_class_name")
    if name != "VividPipeline":
        raise WeightsError(f"{folder / 'model_index.json'} describes a {name or 'unknown'} pipeline, not a VividPipeline")
    for component in COMPONENTS:
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            raise WeightsError(f"{folder / 'model_index.json'} does not list the {component} component")
        if entry[0] not in TRUSTED_LIBRARIES:
            raise WeightsError(f"{folder / 'model_index.json'} builds the {component} from {entry[0]!r}, "
                               f"which is not one of {', '.join(TRUSTED_LIBRARIES)}")
        sub = folder / component
        if not sub.is_dir():
            raise WeightsError(f"{sub}: missing (every component has its own subfolder)")
        configs = [p for p in sub.glob("*.json") if not p.name.endswith(".index.json")]
        if not configs:
            raise WeightsError(f"{sub}: no config .json file")
        for config in configs:
            _json(config, WeightsError)
        if component in NETWORKS:
            _check_weight_files(sub, component, WeightsError)
    unet = _json(folder / "unet" / "config.json", WeightsError)
    resolution = index.get("resolution", 512)
    max_window = unet.get("motion_max_seq_length", DEFAULT_MAX_WINDOW)
    if not isinstance(resolution, int) or not isinstance(max_window, int):
        raise WeightsError(f"{folder / 'model_index.json'}: resolution {resolution!r} or the unet's "
                           f"motion_max_seq_length {max_window!r} is not a whole number")
    sampling = SamplingDefaults.from_config(index.get("sampling_defaults"), folder / "model_index.json")
    return SavedModel(folder, resolution, max_window, sampling)


def load_failure(folder: str | Path, exc: BaseException) -> WeightsError:
    """The one line for a saved folder that passed `check_weights_folder` but did not load:
    for a tensor whose shape differs from the component's config, the file that holds it."""
    folder = Path(folder)
    text = " ".join(str(exc).split()) or type(exc).__name__
    found = re.search(r"(\S+) expected shape torch\.Size\(\[([\d, ]*)\]\), but got torch\.Size\(\[([\d, ]*)\]\)", text)
    if found:
        key, expected, got = found.groups()
        for component in NETWORKS:
            for path in sorted((folder / component).glob("*.safetensors")):
                try:
                    shapes = tensor_shapes(path)
                except (OSError, ValueError):
                    continue
                if key in shapes:
                    return WeightsError(
                        f"{path} does not fit its config: {key} is ({got}) in the file but ({expected}) in "
                        f"{component}/config.json; the weights and the config come from different models")
    return WeightsError(f"{folder}: the saved model could not be loaded ({text.split('. ')[0]})")


def safetensors_header(path: str | Path) -> tuple[int, dict]:
    """A safetensors file's header length and its tensor entries (dtype, shape, data offsets),
    read without loading any tensor."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    return length, {k: v for k, v in header.items() if k != "__metadata__"}


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (no tensor is read)."""
    return {k: tuple(v["shape"]) for k, v in safetensors_header(path)[1].items()}


def _json(path: Path, error: type[ValueError], missing: str | None = None) -> dict:
    if not path.is_file():
        raise error(missing or f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable JSON file, it is damaged or cut short ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a config file (a JSON object was expected)")
    return data


def _check_weight_files(sub: Path, component: str, error: type[ValueError]) -> None:
    """Every weights file of a component is a complete safetensors file (headers only)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(sub.glob("*.safetensors"))
    for index_file in sub.glob("*.safetensors.index.json"):  # sharded weights: every shard must be there
        shards = set(_json(index_file, error).get("weight_map", {}).values())
        for shard in sorted(shards):
            if not (sub / shard).is_file():
                raise error(f"{sub / shard}: missing (listed in {index_file.name})")
    if not files:
        pickled = sorted(p.name for p in sub.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickled:
            raise error(f"{sub}: only pickle-based weights ({', '.join(pickled)}), which are never loaded; "
                        "save the model again with VividPipeline.save_pretrained (safetensors)")
        raise error(f"{sub}: no .safetensors weights for the {component}")
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as f:
                if not list(f.keys()):
                    raise error(f"{path}: holds no tensors")
        except SafetensorError as exc:
            reason = str(exc).replace("Error while deserializing header: ", "")
            raise error(f"{path}: not a complete safetensors file ({reason}); it is damaged or cut short, "
                        "copy it again") from None
        except OSError as exc:
            raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None


def check_output(output: str | Path, inputs: Iterable[str | Path | None], suffix: str | None = ".mp4") -> Path:
    """An output file the program may write: the right suffix, in an existing writable
    folder, not a folder itself, and not one of the inputs (which the run would destroy)."""
    out = Path(output)
    if suffix is not None and out.suffix.lower() != suffix:
        raise OptionError(f"the output must be a {suffix} file, got {out.name}")
    if out.is_dir():
        raise OptionError(f"the output {out} is a folder; give a file name such as {out / ('result' + (suffix or ''))}")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise OptionError(f"the output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write to the output folder {folder} (permission denied)")
    if out.exists() and not out.is_file():
        raise OptionError(f"the output {out} exists and is not a regular file")
    for given in inputs:
        if given is not None and same_file(given, out):
            raise OptionError(f"the output {out.name} is one of the inputs; writing it would destroy that input, "
                              "choose another output name")
    return out


def check_output_folder(output: str | Path, inputs: Iterable[str | Path | None]) -> Path:
    """An output folder: a folder (or a name to create one with), not an existing file, and
    not holding any input (an input must not be overwritten or swept away with it)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OptionError(f"the output {out} is a file; give a folder for the results (a new or existing folder)")
    parent = out.resolve().parent
    if not out.exists() and not parent.is_dir():
        raise OptionError(f"the folder {parent} does not exist")
    target = out if out.exists() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write to {target} (permission denied)")
    for given in inputs:
        if given is not None and same_file(given, out):
            raise OptionError(f"the output folder {out} is one of the inputs; choose another folder")
    return out


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies inside `folder` (after resolving links)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


__all__ = [
    "AnimateOptions", "OptionError", "SamplingDefaults", "SavedModel", "flag_message", "check_denoising", "check_output",
    "check_output_folder", "check_weights_folder", "is_hub_id", "is_inside", "WeightsError", "ENGINES", "DTYPES", "PARSERS", "InputError",
]
