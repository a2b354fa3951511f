"""The model shipped with the project (VividPortraits-mini, `assets/mini/`): where it is, the
names that select it, and what a name given for weights means (`resolve_weights`), so every
front end finds the default diffusion model the same way."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import OptionError

#: Where the project keeps the shipped model (a VividPipeline folder, `VividPipeline.save_pretrained`).
PROJECT_MINI_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "mini"
#: An environment variable naming another folder to use as the shipped model (the tests point
#: it at an empty place, to run as a copy of the project without one).
MINI_MODEL_ENV = "VIVID_SHIPPED_MODEL"
#: The folder of the shipped model in this process.
MINI_MODEL_DIR = Path(os.environ[MINI_MODEL_ENV]) if os.environ.get(MINI_MODEL_ENV) else PROJECT_MINI_MODEL_DIR
#: Names that mean the shipped model wherever weights are asked for (`--weights mini`).
MINI_MODEL_NAMES = ("mini", "vividportraits-mini")
#: What the shipped model is, in a few words, wherever the engine is chosen (CLI help, app):
#: so nobody takes it for the paper's full-size model.
SHIPPED_MODEL_SUMMARY = ("VividPortraits-mini, a small model (25 M parameters, 128 px) trained on two CPU cores from "
                         "public clips of 53 people: it refines the preview's warp (mouth, eyes), it is not the "
                         "paper's full-size model")
#: Why the diffusion engine cannot run when no model was given and none is shipped. The CLI
#: spells the option as its flag (`vivid.errors.flag_message`): "needs --weights".
NO_MODEL = ("the diffusion engine needs weights (a saved model folder or a hub id) and the shipped model is not "
            "installed; use the preview engine to animate without downloaded weights")


def shipped_model() -> Path | None:
    """The shipped model's folder, or None when this copy of the project has none."""
    return MINI_MODEL_DIR if (MINI_MODEL_DIR / "model_index.json").is_file() else None


def is_shipped_name(weights: str | Path | None) -> bool:
    """Whether `weights` names the shipped model rather than a folder or a hub id."""
    return weights is not None and str(weights).lower() in MINI_MODEL_NAMES


def model_available(weights: str | Path | None) -> bool:
    """Whether the diffusion engine has a model to load: weights were given, or the shipped model is here."""
    return (bool(weights) and not is_shipped_name(weights)) or shipped_model() is not None


def resolve_weights(weights: str | Path | None) -> str:
    """What `weights` names: a folder, a hub id or "tiny" as given; None and "mini" name the
    shipped model's folder. OptionError when there is no such model."""
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


__all__ = [
    "MINI_MODEL_DIR", "MINI_MODEL_NAMES", "NO_MODEL", "PROJECT_MINI_MODEL_DIR", "is_shipped_name", "model_available",
    "resolve_weights", "shipped_model",
]
