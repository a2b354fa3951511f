"""Editing a still portrait: its face changed by `MotionEdits` (eyes, gaze, mouth, head), one
picture per change, with the preview engine's warp. The app's Edit tab and `python -m vivid
edit` use it; the face is analysed and triangulated once, so a change costs an edit of the
mesh, one warp and one motion map (bench/still_edit.py).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from .face import FaceAnalyzer
from .face.mesh_parsing import analysis_from_mesh
from .face.edit_rig import EditRig
from .face.motion_edits import MotionEdits
from .face.motion_map import render_motion_map
from .face.motion_transfer import Target
from .media import to_rgb
from .preview import PreparedReference, PreviewAnimator, PreviewConfig

#: Side of the motion map shown beside an edited still, px.
MAP_SIDE = 384


class StillEditor:
    """One portrait, ready to be edited many times (`render`, `motion_map`). `face` chooses
    the face of a picture with several (counted from the left; None: the main one)."""

    def __init__(self, portrait: np.ndarray, config: PreviewConfig = PreviewConfig(),
                 analyzer: FaceAnalyzer | None = None, face: int | None = None):
        config = replace(config, face=face if face is not None else config.face, edits=MotionEdits())
        self.animator = PreviewAnimator(config, analyzer)
        self.ref: PreparedReference = self.animator.prepare(to_rgb(portrait, "the portrait").rgb)
        self.rig = EditRig(self.ref.points)

    @property
    def levels(self) -> dict[str, float]:
        """The portrait's own value of each level edit (where its sliders start)."""
        own = self.rig.own
        return {"left_eye_open": float(own.eyes[0]), "right_eye_open": float(own.eyes[1]),
                "gaze_x": float(own.gaze[0]), "gaze_y": float(own.gaze[1]), "mouth_open": float(own.mouth)}

    def edits_from(self, values: Mapping[str, float], tolerance: float = 0.006) -> MotionEdits:
        """Edits from slider values, checked: a level left at the portrait's own value (within
        `tolerance`, a slider's rounding) is no edit, so untouched sliders give the portrait back."""
        levels = self.levels
        kept = {name: (None if name in levels and abs(float(value) - levels[name]) <= tolerance else float(value))
                for name, value in values.items()}
        return MotionEdits.from_values(kept)

    def target(self, edits: MotionEdits, amount: float = 1.0) -> Target:
        """The portrait's mesh with `edits` made (crop pixels), as the warp's target."""
        return self.rig.target(self.animator.still(self.ref), edits, amount)

    def render(self, edits: MotionEdits, amount: float = 1.0) -> np.ndarray:
        """The portrait with `edits` made: the whole picture (or the face crop with `crop_only`)."""
        if not edits:
            return self.animator.render(self.ref, None)
        return self.animator.render(self.ref, self.target(edits, amount))

    def motion_map(self, edits: MotionEdits, side: int = MAP_SIDE) -> np.ndarray:
        """(side, side, 3) the motion map of the edited face (what the diffusion model would be
        guided by), drawn from its crop."""
        points = self.target(edits).points * (side / self.ref.size)
        return render_motion_map(analysis_from_mesh(points.astype(np.float32), (side, side)))


__all__ = ["MAP_SIDE", "StillEditor"]
