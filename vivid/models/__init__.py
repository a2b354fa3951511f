"""Torch modules and their builders: pose guider, reference attention, UNets, CLIP, VAE.

Names are imported on first use, so `vivid.models.shipped` (where the shipped model lives,
asked before any option is refused) does not load torch and diffusers."""
from __future__ import annotations

import importlib

#: Public names and the module each lives in.
_EXPORTS = {
    "BaseModels": "builders", "load_base_components": "builders", "tiny_components": "builders",
    "PoseGuider": "pose_guider", "PoseInjector": "pose_guider",
    "ReferenceBank": "reference_attention", "install_reference_attention": "reference_attention",
    "remove_reference_attention": "reference_attention",
    "WeightsError": "weights", "load_strict": "weights",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
