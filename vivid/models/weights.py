"""Loading trained weights strictly and without pickle."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit the network it is meant for."""


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


def load_strict(module: nn.Module, path: str | Path, what: str) -> None:
    """Load `path` into `module`; every key must be present with the right shape."""
    state = read_state_dict(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, expected {tuple(own[k].shape)})")
    if problems:
        raise WeightsError(f"{path} does not fit the {what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
