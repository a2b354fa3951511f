"""Where a network of a base model lives on disk: a local folder, or its config and
safetensors files fetched into the Hugging Face cache. With the files at hand the network is
read tensor by tensor (`weights.load_network`) or streamed (`disk_streaming`) instead of
through the libraries' own loaders, which hold the whole fp32 file next to the converted
network: 5.8 GB at the peak for SD 1.5's UNet read as bf16, against 2.6 GB this way."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import WeightsError


def hub_snapshot(repo_id: str, patterns: list[str], **options) -> Path:
    """The local folder of `repo_id`'s files that match `patterns` (downloaded, or found in
    the cache); any failure (unknown id, no network, no access) as one line."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, **options))
    except Exception as exc:
        reason = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
        raise WeightsError(f"{repo_id}: no such weights folder, and it could not be fetched from the "
                           f"Hugging Face hub ({reason})") from exc


def pickled_weights_name(cls: type[nn.Module]) -> str:
    """The name a library gives a network's weights file in torch's (pickle) format."""
    from diffusers import ModelMixin

    if issubclass(cls, ModelMixin):
        from diffusers.utils import WEIGHTS_NAME as name
    else:
        from transformers.utils import WEIGHTS_NAME as name
    return name


def pickled_weights_file(source: str, subfolder: str | None, cls: type[nn.Module]) -> Path:
    """The config folder and torch-format weights file of the `cls` network in `source`, for a
    repository without safetensors files (fetched from the hub when `source` is an id)."""
    name, prefix = pickled_weights_name(cls), f"{subfolder}/" if subfolder else ""
    folder = Path(source, subfolder or "") if Path(source).is_dir() else \
        hub_snapshot(source, [f"{prefix}config.json", f"{prefix}{name}"]) / (subfolder or "")
    if not (folder / name).is_file():
        raise WeightsError(f"{source}: no weights for its {cls.__name__} ({subfolder or 'top'} folder holds neither "
                           f"{weights_stem(cls)}.safetensors nor {name})")
    return folder / name


def weights_stem(cls: type[nn.Module]) -> str:
    """The name a library gives a network's weights file, without `.safetensors`."""
    from diffusers import ModelMixin

    if issubclass(cls, ModelMixin):
        from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as name
    else:
        from transformers.utils import SAFE_WEIGHTS_NAME as name
    return name.removesuffix(".safetensors")


def config_folder(source: str, subfolder: str | None) -> Path:
    """The folder with the configs of `source` (a local folder or a hub id) under `subfolder`,
    e.g. an image processor's."""
    if Path(source).is_dir():
        return Path(source, subfolder or "")
    return hub_snapshot(source, [f"{subfolder}/*.json" if subfolder else "*.json"]) / (subfolder or "")


def network_folder(source: str, subfolder: str | None, cls: type[nn.Module]) -> Path:
    """The folder with the config and weights of the `cls` network in `source` (a local
    folder or a hub id) under `subfolder`. From the hub only the config and the plain
    safetensors weights (or their shards) are fetched, not the variants beside them (fp16,
    non-EMA, .bin), which are most of a Stable Diffusion repository."""
    if Path(source).is_dir():
        return Path(source, subfolder or "")
    prefix = f"{subfolder}/" if subfolder else ""
    stem = weights_stem(cls)
    patterns = [f"{prefix}config.json", f"{prefix}{stem}.safetensors", f"{prefix}{stem}-*-of-*.safetensors",
                f"{prefix}{stem}.safetensors.index.json"]
    return hub_snapshot(source, patterns) / (subfolder or "")
