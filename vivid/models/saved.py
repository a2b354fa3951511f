"""A saved model's files, read without loading it: the folder `VividPipeline.save_pretrained`
writes (model_index.json, each component's config, safetensors weights), its headers, and what
the model says about itself (resolution, temporal length, recommended sampling, face parser).

`inspect_model` is the one way to go from what a user names (`--weights`, `VIVID_WEIGHTS`,
`from_pretrained`'s argument) to a checked folder: the name resolved
(`vivid.models.shipped.resolve_weights`), then the folder checked (`check_weights_folder`).
Torch-free, so a broken folder is refused at once and before any model loads.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import OptionError, WeightsError
from ..face.analyzer import PARSERS
from ..sampling import DEFAULT_MAX_WINDOW, check_guidance, check_steps
from .shipped import resolve_weights

#: Components a saved VividPipeline folder holds; the networks among them carry weights.
COMPONENTS = ("vae", "image_encoder", "feature_extractor", "reference_net", "unet", "pose_guider", "scheduler")
NETWORKS = ("vae", "image_encoder", "reference_net", "unet", "pose_guider")
#: Libraries a saved folder may name for its components (diffusers imports them to build it).
TRUSTED_LIBRARIES = ("diffusers", "transformers", "vivid.models.pose_guider", "vivid.models.tiny_autoencoder")
#: The face parser setting's key in model_index.json, and its name in folders saved before it had one name.
PARSER_KEY, OLD_PARSER_KEY = "parser", "face_backend"


def parser_setting(config: Mapping, where: str | Path = "model_index.json") -> str:
    """The face parser a model's motion maps are drawn with ("auto", "mesh" or "farl"), from its
    config (`parser`, or `face_backend` in folders saved before); "auto" when it does not say."""
    parser = config.get(PARSER_KEY) or config.get(OLD_PARSER_KEY) or "auto"
    if parser not in PARSERS:
        raise WeightsError(f"{where}: parser must be one of {', '.join(PARSERS)}, got {parser!r}")
    return parser


@dataclass(frozen=True)
class SamplingDefaults:
    """What a model recommends sampling with when the user does not say: the `sampling_defaults`
    entry of its model_index.json (`{"steps": 8, "guidance": 2.0, "scheduler": "DDIMScheduler"}`,
    each key optional), over the defaults below for a model that says nothing. The pipeline
    fills steps and guidance the user leaves unset from it (`VividPipeline.check_inputs`), and
    `VividPipeline.from_pretrained` installs the scheduler in place of the saved one."""

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
            return cls(steps=check_steps(entry.get("steps", cls.steps)),
                       guidance=check_guidance(entry.get("guidance", cls.guidance)), scheduler=scheduler)
        except OptionError as exc:
            raise WeightsError(f"{where}: sampling_defaults {exc}") from None


@dataclass(frozen=True)
class SavedModel:
    """What a saved pipeline folder says about itself, read from its small JSON files."""

    folder: Path
    resolution: int
    max_window: int
    sampling: SamplingDefaults = SamplingDefaults()  # what the model recommends sampling with
    parser: str = "auto"  # the face parser its motion maps were drawn with (`parser_setting`)


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
    return SavedModel(folder, resolution, max_window, sampling, parser_setting(index, folder / "model_index.json"))


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


def vae_class_name(folder: str | Path) -> str | None:
    """The VAE class a saved pipeline folder's model_index.json names."""
    entry = _json(Path(folder) / "model_index.json", WeightsError).get("vae")
    return entry[1] if isinstance(entry, list) and len(entry) == 2 else None


def inspect_model(weights: str | Path | None) -> tuple[str, SavedModel | None]:
    """The model `weights` names, as (source, what its folder says): `weights` resolved
    (`resolve_weights`: None and "mini" are the shipped model's folder) and, for a folder, the
    folder checked (`check_weights_folder`). None for what has no folder to read before it
    loads: a hub id not fetched yet (no network here) and "tiny". OptionError when there is no
    such model, WeightsError naming the file for a broken folder."""
    source = resolve_weights(weights)
    if source == "tiny" or is_hub_id(source):
        return source, None
    return source, check_weights_folder(source)


__all__ = [
    "COMPONENTS", "NETWORKS", "PARSER_KEY", "OLD_PARSER_KEY", "SamplingDefaults", "SavedModel", "TRUSTED_LIBRARIES",
    "check_weights_folder", "inspect_model", "is_hub_id", "load_failure", "parser_setting", "safetensors_header",
    "tensor_shapes", "vae_class_name",
]
