"""Training samples from prepared clips: frame pairs (stage 1) and frame runs (stage 2).

A sample is a pure function of (seed, index): the clip, the frames, the random scaling and
the augmentation all come from a generator seeded by both. A resumed run therefore sees
exactly the samples an uninterrupted one would, on any number of processes, whatever the
data loader's worker count.

What a sample holds (numpy, uint8 unless noted), at the training resolution R:
  reference (R, R, 3), clip (k, S, S, 3) the reference as CLIP sees it (foreground then
  background, `conditioning.clip_inputs`), target (F, R, R, 3) the frames to denoise,
  motion (F, R, R, 3) their motion maps (F = 1 in stage 1); with warp guidance warped
  (F, R, R, 3) the reference warped to each target's motion (`vivid.warp_guidance`, as
  inference warps the portrait); with cached latents (`SampleSpec.latent_tag`) also
  reference_latents (C, h, w) and target_latents (F, C, h, w) float32.

Each sample shows one view of its clip (`views`: the clip itself, or a mirrored or
colour-changed copy), drawn from its own (seed, index) stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..conditioning import ScalingConfig, clip_inputs, motion_maps
from ..face import MotionMapStyle
from ..face.mesh_parsing import analysis_from_mesh
from ..warp_guidance import training_targets, warp_reference
from .clips import PreparedClip
from .latent_cache import load_latents
from .resizing import resize_frames, resize_landmarks
from .views import clip_views


@dataclass(frozen=True)
class FrameRange:
    """The frames [start, stop) of a clip that a set of samples may use."""

    clip: int  # index into the clip list
    start: int
    stop: int

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


@dataclass(frozen=True)
class SampleSpec:
    """How samples are drawn and drawn on."""

    stage: int = 1
    resolution: int = 64
    frames: int = 1  # frames per sample (stage 2: the clip length)
    separate_fg_bg: bool = True
    clip_size: int = 224  # CLIP's input side
    random_scaling: bool = True
    scaling: ScalingConfig = ScalingConfig()
    augment: bool = False
    reference_gap: int = 0
    latent_tag: str | None = None  # cached autoencoder latents to include (`latent_cache`)
    warp_guidance: bool = False  # include the reference warped to each target (`warped`)
    eye_landmarks: bool = True  # eyelids and irises in the motion maps
    views: int = 1  # views of each clip samples are drawn from (`views.clip_views`)


def split_frames(clips: Sequence[PreparedClip], seen_share: float, min_frames: int) -> tuple[list[FrameRange], list[FrameRange]]:
    """(training ranges, held-back ranges) per clip: the last `seen_share` of each clip's
    frames (at least `min_frames` when the clip allows it) is never sampled in training, so
    it can check how the model does on frames of clips it has seen."""
    train, held = [], []
    for i, clip in enumerate(clips):
        n = len(clip)
        tail = int(round(seen_share * n))
        if tail:
            tail = max(tail, min(min_frames, n // 2))
        train.append(FrameRange(i, 0, n - tail))
        if tail:
            held.append(FrameRange(i, n - tail, n))
    return train, held


def _augment(images: list[np.ndarray], rng: np.random.Generator, masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One random colour change and one random similarity transform for all images (the
    reference, the targets and their maps move together, so their correspondence holds);
    motion maps keep their palette because only the photos get the colour change."""
    size = images[0].shape[0]
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.05, 0.05, 2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += shift
    gain = rng.uniform(0.8, 1.2, 3)  # per channel: white balance
    bias = rng.uniform(-20, 20)

    def geo(im: np.ndarray, nearest: bool) -> np.ndarray:
        flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        border = cv2.BORDER_CONSTANT if nearest else cv2.BORDER_REFLECT101
        return cv2.warpAffine(im, m, (size, size), flags=flags, borderMode=border)

    photos = [np.clip(geo(im, False).astype(np.float32) * gain + bias, 0, 255).astype(np.uint8) for im in images]
    return photos, [geo(mask, True) for mask in masks]


class TrainingSamples(Dataset):
    """Deterministic samples: item i of a given seed is always the same sample."""

    def __init__(self, clips: Sequence[PreparedClip], ranges: Sequence[FrameRange], spec: SampleSpec, seed: int, length: int):
        usable = [r for r in ranges if len(r) >= spec.frames and self._references(clips[r.clip], r).size]
        if not usable:
            raise ValueError(f"no clip has {spec.frames} usable frames and a reference frame to train on")
        self.clips, self.ranges, self.spec, self.seed, self.length = list(clips), usable, spec, seed, length
        sizes = np.array([len(r) for r in usable], np.float64)
        self.weights = sizes / sizes.sum()  # every frame equally likely, whatever its clip

    @staticmethod
    def _references(clip: PreparedClip, r: FrameRange) -> np.ndarray:
        refs = clip.reference_frames
        return refs[(refs >= r.start) & (refs < r.stop)]

    def __len__(self) -> int:
        return self.length

    def choose(self, index: int) -> tuple[int, int, list[int], int]:
        """(clip index, reference frame, target frames, scaling seed) of item `index`."""
        rng = np.random.default_rng([self.seed, index])
        r = self.ranges[rng.choice(len(self.ranges), p=self.weights)]
        clip = self.clips[r.clip]
        refs = self._references(clip, r)
        reference = int(rng.choice(refs))
        if self.spec.stage == 1:
            far = [f for f in range(r.start, r.stop) if abs(f - reference) >= max(self.spec.reference_gap, 1) and clip.found[f]]
            target = [int(rng.choice(far))] if far else [reference]
        else:
            start = int(rng.integers(r.start, r.stop - self.spec.frames + 1))
            target = list(range(start, start + self.spec.frames))
        return r.clip, reference, target, int(rng.integers(2**31))

    def view(self, index: int) -> int:
        """Which view of its clip item `index` shows (its own stream: `choose` is unchanged by views)."""
        return int(np.random.default_rng([self.seed, index, 2]).integers(self.spec.views))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        clip_index, reference, target, seed = self.choose(index)
        return make_sample(self.clips[clip_index], reference, target, self.spec, seed if self.spec.random_scaling else None,
                           np.random.default_rng([self.seed, index, 1]) if self.spec.augment else None,
                           view=self.view(index))


def make_sample(
    clip: PreparedClip, reference: int, target: Sequence[int], spec: SampleSpec, scale_seed: int | None,
    augment: np.random.Generator | None = None, motion_clip: PreparedClip | None = None,
    motion_frames: Sequence[int] | None = None, view: int = 0,
) -> dict[str, np.ndarray]:
    """One sample from explicit frames of view `view` of `clip`. `motion_clip`/`motion_frames`
    take the motion maps (and the warp's targets) from other frames (validation with the wrong
    motion); by default they are the targets'."""
    res = spec.resolution
    shown = clip_views(clip.path.name, spec.views)[view]
    ref_image = shown.images(resize_frames(clip.frame(reference)[None], res))[0]
    person = shown.masks(resize_frames(clip.person(reference)[None].astype(np.uint8), res, nearest=True)[0])
    targets = shown.images(resize_frames(clip.frames(target), res))
    source = motion_clip or clip
    points = [shown.points(resize_landmarks(source.landmarks[f], source.resolution, res), res)
              for f in (motion_frames or target)]
    maps = motion_maps([analysis_from_mesh(p, (res, res)) for p in points], scale_seed, spec.scaling,
                       MotionMapStyle(eye_landmarks=spec.eye_landmarks))
    warped = None
    if spec.warp_guidance:
        ref_points = shown.points(resize_landmarks(clip.landmarks[reference], clip.resolution, res), res)
        warped = warp_reference(ref_image, ref_points, training_targets(ref_points, points))
    if augment is not None:
        extra = [] if warped is None else list(warped)
        photos, masks = _augment([ref_image, *targets, *extra], augment, [person, *maps])
        ref_image, targets = photos[0], np.stack(photos[1 : 1 + len(targets)])
        warped = None if warped is None else np.stack(photos[1 + len(targets):])
        person, maps = masks[0], np.stack(masks[1:])
    sample = {
        "reference": ref_image,
        "clip": clip_inputs(ref_image, person > 0, spec.separate_fg_bg, spec.clip_size),
        "target": targets,
        "motion": maps,
    }
    if warped is not None:
        sample["warped"] = warped
    if spec.latent_tag is not None:
        if augment is not None:
            raise ValueError("cached latents are of the unaugmented frames: augmentation cannot use them")
        latents = load_latents(clip, spec.latent_tag, view)
        sample["reference_latents"] = np.array(latents[reference], np.float32)  # (C, h, w)
        sample["target_latents"] = np.array(latents[list(target)], np.float32)  # (F, C, h, w)
    return sample
