"""Torch modules and their builders: pose guider, reference attention, UNets, CLIP, VAE."""
from .builders import BaseModels, load_base_components, tiny_components
from .pose_guider import PoseGuider, PoseInjector
from .reference_attention import ReferenceBank, install_reference_attention, remove_reference_attention
from .weights import WeightsError, load_strict

__all__ = [
    "BaseModels", "load_base_components", "tiny_components", "PoseGuider", "PoseInjector", "ReferenceBank", "install_reference_attention",
    "remove_reference_attention", "WeightsError", "load_strict",
]
