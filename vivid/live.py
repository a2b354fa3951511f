"""Live driving: the preview engine fed one webcam frame at a time.

Unlike `PreviewAnimator.stream`, nothing looks ahead (no smoothing window, no gap filling),
so each output answers the frame that was just captured. Motion is relative to the first
frame with a face, like the preview engine's default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face.mesh_backend import MeshRunner
from .face.mesh_parsing import analysis_from_mesh
from .face.motion_map import render_motion_map
from .face.motion_transfer import transfer_motion
from .media import to_rgb
from .preview import PreviewAnimator, PreviewConfig


@dataclass(frozen=True)
class LiveConfig:
    """Options of live driving (defaults are what the app uses)."""

    max_side: int = 512  # the reference is animated at most this large, to keep up with a camera
    smoothing: float = 0.5  # share of the previous frame's landmarks kept (0: raw; jitter vs lag)


class LiveAnimator:
    """Animates one reference with frames pushed one by one; keeps per-viewer tracking state."""

    def __init__(self, reference: np.ndarray, config: LiveConfig = LiveConfig(), preview: PreviewConfig = PreviewConfig()):
        rgb = to_rgb(reference, "reference").rgb
        scale = config.max_side / max(rgb.shape[:2])
        if scale < 1:
            import cv2

            rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        self.config = config
        self.animator = PreviewAnimator(preview)
        self.ref = self.animator.prepare(rgb)  # raises NoFaceError for a faceless reference
        self._runner = MeshRunner(tracking=True, max_faces=1)
        self._first: np.ndarray | None = None
        self._points: np.ndarray | None = None
        self._last = self.animator.compose_output(self.ref, self.ref.crop, np.zeros(self.ref.crop.shape[:2], bool))

    def reset(self) -> None:
        """Take the next face seen as the new neutral pose."""
        self._first = self._points = None

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(animated reference, motion map of the camera frame) for one camera frame; without
        a face in it, the last animated frame and a black map."""
        rgb = to_rgb(frame, "camera frame").rgb
        faces = self._runner.faces(rgb)
        if not faces:
            return self._last, np.zeros_like(rgb)
        points = faces[0].astype(np.float64)
        a = self.config.smoothing
        self._points = points if self._points is None else a * self._points + (1 - a) * points
        self._first = self._points if self._first is None else self._first
        crop, moved = self.animator.warp(self.ref, transfer_motion(self.ref.points, self._first, self._points))
        self._last = self.animator.compose_output(self.ref, crop, moved)
        return self._last, render_motion_map(analysis_from_mesh(self._points.astype(np.float32), rgb.shape[:2]))

    def close(self) -> None:
        self._runner.close()
