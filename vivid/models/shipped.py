"""The model shipped with the project (VividPortraits-mini, `assets/mini/`): where it is and
the names that select it, so every front end finds the default diffusion model the same way."""
from __future__ import annotations

import os
from pathlib import Path

#: Where the project keeps the shipped model (a VividPipeline folder, `VividPipeline.save_pretrained`).
PROJECT_MINI_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "mini"
#: An environment variable naming another folder to use as the shipped model (the tests point
#: it at an empty place, to run as a copy of the project without one).
MINI_MODEL_ENV = "VIVID_SHIPPED_MODEL"
#: The folder of the shipped model in this process.
MINI_MODEL_DIR = Path(os.environ[MINI_MODEL_ENV]) if os.environ.get(MINI_MODEL_ENV) else PROJECT_MINI_MODEL_DIR
#: Names that mean the shipped model wherever weights are asked for (`--weights mini`).
MINI_MODEL_NAMES = ("mini", "vividportraits-mini")


def shipped_model() -> Path | None:
    """The shipped model's folder, or None when this copy of the project has none."""
    return MINI_MODEL_DIR if (MINI_MODEL_DIR / "model_index.json").is_file() else None


def is_shipped_name(weights: str | Path | None) -> bool:
    """Whether `weights` names the shipped model rather than a folder or a hub id."""
    return weights is not None and str(weights).lower() in MINI_MODEL_NAMES
