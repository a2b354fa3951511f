"""Fixed copies ("views") of every prepared clip against memorising few people: the clip
itself, mirrored with its colours changed, and with other colours. A view changes every frame
of a clip the same way, so a reference and its targets stay one consistent person, and it is
a pure function of (clip, view), so its latents can be encoded once and cached beside the
clip (`latent_cache`) like the frames' own.

Mirroring flips the mesh's x coordinates without renumbering its points: the motion maps
decide image-left from positions (`vivid.face.mesh_parsing`) and the warp and the motion
transfer pair points by index, so a mirrored clip reads like a mirrored person.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: Colour changes of views after the first: per-channel gain (white balance) and a brightness shift.
GAIN_RANGE = (0.8, 1.2)
BIAS_RANGE = (-20.0, 20.0)
#: Views a clip has at most: itself, mirrored with other colours, other colours.
MAX_VIEWS = 3


@dataclass(frozen=True)
class View:
    """One way of showing a clip: mirrored or not, colours scaled by `gain` and shifted by `bias`."""

    flip: bool = False
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bias: float = 0.0

    @property
    def identity(self) -> bool:
        return not self.flip and self.gain == (1.0, 1.0, 1.0) and self.bias == 0.0

    def images(self, rgb: np.ndarray) -> np.ndarray:
        """(..., R, R, 3) uint8 frames as this view shows them."""
        if self.identity:
            return rgb
        out = rgb[..., ::-1, :] if self.flip else rgb
        if self.gain != (1.0, 1.0, 1.0) or self.bias:
            out = np.clip(out.astype(np.float32) * np.array(self.gain, np.float32) + self.bias, 0, 255).round()
        return np.ascontiguousarray(out.astype(np.uint8))

    def masks(self, mask: np.ndarray) -> np.ndarray:
        """(..., R, R) masks as this view places them (mirrored, colours do not apply)."""
        return np.ascontiguousarray(mask[..., ::-1]) if self.flip else mask

    def points(self, points: np.ndarray, resolution: int) -> np.ndarray:
        """(..., N, 2) landmarks in crop pixels of an R = `resolution` crop, as this view places them."""
        if not self.flip:
            return points
        out = np.array(points, copy=True)
        out[..., 0] = resolution - 1 - out[..., 0]  # pixel centres at integer x
        return out


def clip_views(clip_id: str, count: int) -> list[View]:
    """The first `count` views of the clip named `clip_id` (1 to MAX_VIEWS): view 0 is the
    clip itself; the colour changes come from the clip's name, so every run and process sees
    the same views."""
    if not 1 <= count <= MAX_VIEWS:
        raise ValueError(f"a clip has 1 to {MAX_VIEWS} views, not {count}")
    views = [View()]
    for k in range(1, count):
        seed = int.from_bytes(hashlib.sha256(f"{clip_id}:view{k}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        gain = tuple(float(g) for g in rng.uniform(*GAIN_RANGE, 3))
        views.append(View(flip=k == 1, gain=gain, bias=float(rng.uniform(*BIAS_RANGE))))
    return views
