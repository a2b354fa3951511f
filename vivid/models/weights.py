"""Loading trained weights strictly and without pickle."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..options import WeightsError  # defined next to the folder checks, importable without torch


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch file loaded with weights_only=True (never arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is the same problem for the user
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _problems(own: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What keeps a state dict with these tensor shapes from fitting `own` exactly."""
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = sorted(k for k in set(own) & set(shapes) if tuple(own[k].shape) != tuple(shapes[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: file {tuple(shapes[k])}, expected {tuple(own[k].shape)})")
    return problems


def load_strict(module: nn.Module, path: str | Path, what: str) -> None:
    """Load `path` into `module`; every key must be present with the right shape."""
    state = read_state_dict(path)
    problems = _problems(module.state_dict(), {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise WeightsError(f"{path} does not fit the {what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def check_saved(module: nn.Module, folder: str | Path, what: str) -> None:
    """The safetensors files in `folder` hold exactly `module`'s tensors (names and shapes);
    reads only the headers. diffusers would otherwise fill gaps with random values."""
    from safetensors import safe_open

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"{folder}: no .safetensors weights for the {what}")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                shapes[key] = tuple(st.get_slice(key).get_shape())
    problems = _problems(module.state_dict(), shapes)
    if problems:
        raise WeightsError(f"{files[0] if len(files) == 1 else folder} does not fit the {what}: " + "; ".join(problems))
