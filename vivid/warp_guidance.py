"""Warp guidance (DESIGN.md, "Two model sizes"): the portrait warped to each driving frame by
the preview engine's warp, the picture a warp-guided denoising UNet sees beside its noisy
latents. One function, `warp_reference`, makes it for inference (the pipeline, from the
driving motion moved onto the portrait) and for training (a clip's reference frame warped to a
target frame's mesh, `training_targets`), so the model is trained on the pictures it gets.

The warp keeps the portrait's own pixels where the driver's motion puts them; what it cannot
draw (the inside of an opening mouth, closing eyelids, folds) it paints coarsely, and the
model learns to draw those from the real target frames. A residual model (`warp_residual`,
the mini model's setting) denoises the frame's difference from the warp's latents, so where
the warp is right it has nothing to learn; the pipeline adds the warp's latents back.

Coming back (`WarpPaste`), the model's picture is not pasted as it is: the model works at its
own small resolution, so the frame is the portrait warped at the portrait's own resolution
plus what the model changed, the difference between its picture and the autoencoder's copy
of the warp it was given, enlarged and laid on inside a soft head mask. Where the model
agrees with the warp the portrait's fine detail stays; where it does not (an opening mouth,
closing lids) its picture shows. Outside the head the portrait's pixels stay untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .face import mesh_topology as mt
from .face.crop import SquareBox, crop_image
from .face.motion_transfer import EYES, Target, eye_opening, transfer_motion
from .preview import PreparedReference, PreviewAnimator, PreviewConfig, prepare_crop

#: The warp's settings: the preview engine's own, so guidance looks like what the preview shows.
WARP_CONFIG = PreviewConfig()


class ReferenceWarp:
    """One face crop with its mesh, ready to be warped to many target meshes (the
    triangulation is made once). `image` and `square`: where the crop was cut from, for
    pasting results back (default: the crop is its own image)."""

    def __init__(self, crop: np.ndarray, points: np.ndarray, config: PreviewConfig = WARP_CONFIG,
                 image: np.ndarray | None = None, square: SquareBox | None = None):
        size = crop.shape[0]
        if image is None or square is None:
            image, square = crop, SquareBox(size / 2, size / 2, float(size))
        self.prepared: PreparedReference = prepare_crop(image, square, crop, points, config)
        self.animator = PreviewAnimator(config)
        self.openings = np.array([max(eye_opening(self.prepared.points, eye), 1e-3) for eye in EYES])

    def target(self, points: np.ndarray) -> Target:
        """`points` (478, 2), the crop's face moved, as the warp's target: each eye's opening
        relative to the crop's own (what decides how far the painted lids close)."""
        points = np.asarray(points, np.float64)
        ratios = np.array([eye_opening(points, eye) for eye in EYES]) / self.openings
        return Target(points, np.eye(2, 3), ratios)

    def warp(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(warped crop, mask of the pixels that changed) for one target mesh."""
        return self.animator.warp(self.prepared, self.target(points))


def warp_reference(crop: np.ndarray, points: np.ndarray, targets: Sequence[np.ndarray],
                   config: PreviewConfig = WARP_CONFIG) -> np.ndarray:
    """(N, n, n, 3) uint8: the face crop `crop` (n, n, 3), whose mesh is `points` (478, 2) in
    crop pixels, warped so its mesh lies on each of `targets` ((478, 2) crop pixels)."""
    warp = ReferenceWarp(crop, points, config)
    return np.stack([warp.warp(t)[0] for t in targets]) if len(targets) else np.zeros((0, *crop.shape), np.uint8)


def training_targets(reference: np.ndarray, targets: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Where training warps a clip's reference frame to: each target frame's motion moved
    onto the reference mesh as inference moves a driver's (`transfer_motion`, relative), with
    the reference frame as the driver's first frame, as in self-reenactment."""
    first = np.asarray(reference, np.float64)
    return [transfer_motion(first, first, np.asarray(t, np.float64)).points for t in targets]


@dataclass(frozen=True)
class PasteConfig:
    """How a warp-guided model's picture returns to the portrait."""

    max_size: int = 1024  # the portrait is warped at its own resolution, up to this side (px)
    head_ring: float = 1.3  # the model's changes count inside this ring (face radii about the face centre)
    softness: float = 0.04  # blur of the head mask's edge, in crop sides
    # Changes the model makes smaller than `agree_below` (grey levels, a pixel's colour distance,
    # smoothed over a few pixels) count as agreement: the 2-step sample's own noise would
    # otherwise blur the portrait's detail where the warp was right. From `agree_below` to
    # `change_above` the change fades in; larger changes (an opening mouth) pass whole.
    agree_below: float = 6.0
    change_above: float = 16.0


def head_mask(meshes: Sequence[np.ndarray], size: int, config: PasteConfig = PasteConfig()) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the soft region of a crop where the head is in any of
    `meshes` ((478, 2) crop pixels): each face outline widened to `head_ring` (hair, ears)."""
    mask = np.zeros((size, size), np.uint8)
    for points in meshes:
        oval = np.asarray(points, np.float64)[list(mt.FACE_OVAL)]
        centre = oval.mean(axis=0)
        ring = centre + config.head_ring * (oval - centre)
        cv2.fillPoly(mask, [np.round(ring * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(mask, (0, 0), max(config.softness * size, 0.5)).astype(np.float32) / 255


class WarpPaste:
    """A warp-guided model's pictures back into the portrait (see the module docstring).
    `crop`, `points`: the model's crop of the portrait and its mesh at the model's resolution;
    `image`, `square`: the whole portrait and where the crop lies in it (None: the crop is all
    there is, e.g. in training's sample videos)."""

    def __init__(self, crop: np.ndarray, points: np.ndarray, image: np.ndarray | None = None,
                 square: SquareBox | None = None, config: PasteConfig = PasteConfig()):
        self.config, self.resolution = config, crop.shape[0]
        self.reference_points = np.asarray(points, np.float64)
        if image is None or square is None:
            self.size, self.scale = self.resolution, 1.0
            self.warp = ReferenceWarp(crop, points)
        else:
            size = int(np.clip(round(square.size), self.resolution, config.max_size))
            self.size = size + size % 2
            self.scale = self.size / self.resolution
            self.warp = ReferenceWarp(crop_image(image, square, self.size), self._enlarged(points), image=image,
                                      square=square)

    def _enlarged(self, points: np.ndarray) -> np.ndarray:
        """Model-crop pixels -> pixels of the crop at the portrait's resolution (both cut by `square.matrix`)."""
        half = self.resolution / 2
        return (np.asarray(points, np.float64) - half) * self.scale + self.size / 2

    def crop(self, target: np.ndarray, picture: np.ndarray, warp_copy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the animated crop at the portrait's resolution, its changed pixels) for one frame:
        the portrait warped to `target` ((478, 2) model-crop pixels) plus what the model's
        `picture` changed against `warp_copy` (the autoencoder's copy of the warp it was
        given; both (R, R, 3) uint8), inside the head mask."""
        warped, moved = self.warp.warp(self._enlarged(target))
        change = picture.astype(np.float32) - warp_copy.astype(np.float32)
        mask = head_mask([target, self.reference_points], self.resolution, self.config)
        change *= (mask * self._disagreement(change))[..., None]
        if self.size != self.resolution:
            change = cv2.resize(change, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        out = np.clip(warped.astype(np.float32) + change, 0, 255).round().astype(np.uint8)
        return out, moved | (mask > 0.02)

    def _disagreement(self, change: np.ndarray) -> np.ndarray:
        """(R, R) in [0, 1]: how much of the model's `change` at each pixel is a real correction
        rather than sampling noise (`PasteConfig.agree_below`, `change_above`)."""
        c = self.config
        distance = cv2.GaussianBlur(np.linalg.norm(change, axis=-1), (0, 0), 1.0)
        return np.clip((distance - c.agree_below) / max(c.change_above - c.agree_below, 1e-6), 0, 1)

    def frame(self, target: np.ndarray, picture: np.ndarray, warp_copy: np.ndarray, whole: bool = True) -> np.ndarray:
        """One output frame: the whole portrait with the animated crop blended in (`whole`), or the crop."""
        crop, moved = self.crop(target, picture, warp_copy)
        if not whole:
            return crop
        return self.warp.animator.compose_output(self.warp.prepared, crop, moved)
