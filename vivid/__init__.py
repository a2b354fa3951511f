"""VividPortraits: animate a portrait with the head motion and expressions of a driving video."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["VividPipeline", "PoseGuider"]


def __getattr__(name: str):
    # Lazy, so `import vivid.face` does not pull in torch and diffusers. diffusers finds
    # custom pipeline components by `getattr(vivid, class_name)` when loading a folder.
    if name == "VividPipeline":
        from .pipeline import VividPipeline

        return VividPipeline
    if name == "PoseGuider":
        from .models.pose_guider import PoseGuider

        return PoseGuider
    raise AttributeError(name)
