"""Checks during training: the denoising loss at fixed timesteps and fixed noise on frames
training never samples, with the right conditioning and with the motion or the reference
of another clip, and a sample video made by the pipeline itself.

`val_loss` < `val_loss_other_reference` on held-out clips says the model takes appearance
from the reference; `seen_loss` < `seen_loss_other_motion` on unseen frames of training
clips says it follows the driving map; `val_loss` < `val_loss_other_clip` (only the CLIP
embeddings from another clip) says the CLIP foreground/background embeddings add something.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .clips import PreparedClip
from .samples import FrameRange, SampleSpec, make_sample

#: The variants each item is scored in, and the suffix of their metric name.
VARIANTS = {"": "right", "_other_motion": "other_motion", "_other_reference": "other_reference",
            "_other_clip": "other_clip"}


@dataclass
class Check:
    """One scored item: a sample, its variants, a fixed timestep and a fixed noise seed."""

    variants: dict[str, dict[str, np.ndarray]]  # variant name -> sample
    timestep: int
    noise_seed: int


def _draw(clips: Sequence[PreparedClip], r: FrameRange, spec: SampleSpec, rng: np.random.Generator) -> tuple[int, list[int]]:
    """A reference frame (inside the range when it has one) and target frames in the range."""
    clip = clips[r.clip]
    refs = clip.reference_frames
    inside = refs[(refs >= r.start) & (refs < r.stop)]
    reference = int(rng.choice(inside if inside.size else refs))
    if spec.stage == 1:
        target = [int(rng.integers(r.start, r.stop))]
    else:
        start = int(rng.integers(r.start, max(r.stop - spec.frames, r.start) + 1))
        target = [min(f, len(clip) - 1) for f in range(start, start + spec.frames)]
    return reference, target


def build_checks(
    clips: Sequence[PreparedClip], ranges: Sequence[FrameRange], spec: SampleSpec, count: int, seed: int,
    num_train_timesteps: int = 1000,
) -> list[Check]:
    """`count` fixed checks on `ranges`; the "other" motion and reference come from a
    different clip (any of `clips`), so a model that ignores them scores the same."""
    spec = replace(spec, augment=False)
    rng = np.random.default_rng([seed, 7])
    usable = [r for r in ranges if len(r) >= 1]
    if not usable:
        return []
    timesteps = np.linspace(50, num_train_timesteps - 50, count).round().astype(int)
    checks = []
    for k in range(count):
        r = usable[k % len(usable)]
        others = [i for i in range(len(clips)) if i != r.clip]
        if not others:
            raise ValueError("validation needs at least two clips (the other motion and reference come from another clip)")
        reference, target = _draw(clips, r, spec, rng)
        clip = clips[r.clip]
        right = make_sample(clip, reference, target, spec, None)
        o = clips[int(rng.choice(others))]
        o_ref = int(rng.choice(o.reference_frames))
        o_start = int(rng.integers(0, max(len(o) - len(target), 0) + 1))
        o_frames = [min(o_start + i, len(o) - 1) for i in range(len(target))]
        other_motion = make_sample(clip, reference, target, spec, None, motion_clip=o, motion_frames=o_frames)
        donor = make_sample(o, o_ref, o_frames, spec, None)
        # The whole reference (picture, its cached latents, what CLIP sees) from another clip; and
        # only what CLIP sees, which says what the CLIP embeddings add to the reference latents.
        other_reference = {**right, **{k: donor[k] for k in ("reference", "clip", "reference_latents") if k in donor}}
        other_clip = {**right, "clip": donor["clip"]}
        variants = {"right": right, "other_motion": other_motion, "other_reference": other_reference,
                    "other_clip": other_clip}
        checks.append(Check(variants, int(timesteps[k]), seed * 1000 + k))
    return checks


def score_checks(checks: Sequence[Check], loss_of, prefix: str) -> dict[str, float]:
    """Mean loss of every variant: {prefix: right, prefix_other_motion: ..., ...}.
    `loss_of(sample, timestep, noise_seed)` is the training step's loss without dropout."""
    out = {}
    for suffix, name in VARIANTS.items():
        losses = [loss_of(c.variants[name], c.timestep, c.noise_seed) for c in checks]
        out[prefix + suffix] = float(np.mean(losses)) if losses else float("nan")
    return out


def write_sample_video(pipe, clip: PreparedClip, frames: int, steps: int, path: Path, seed: int = 0) -> int:
    """Self-reenactment by the pipeline: the clip's first reference frame animated with the
    clip's own motion; the video shows ground truth | motion map | result side by side."""
    from ..face import MotionTrack, SquareBox
    from ..media import write_video
    from ..pipeline import PreparedReference
    from .samples import resize_landmarks

    res = pipe.config.resolution
    count = min(frames, len(clip))
    reference = int(clip.reference_frames[0])
    scale = lambda p: resize_landmarks(p, clip.resolution, res)  # noqa: E731
    import cv2

    ref_image = cv2.resize(clip.frame(reference), (res, res), interpolation=cv2.INTER_AREA)
    person = cv2.resize(clip.person(reference).astype(np.uint8), (res, res), interpolation=cv2.INTER_NEAREST) > 0
    square = SquareBox(res / 2, res / 2, res)
    ref = PreparedReference(image=ref_image, person=person, points=scale(clip.landmarks[reference]), square=square)
    motion = MotionTrack([scale(clip.landmarks[i]) for i in range(count)], res, square)
    truth = clip.frames(range(count))
    window = min(count, pipe.unet.config.motion_max_seq_length, 24)
    events = pipe.generate(ref, motion, window=window, overlap=min(4, window - 1), steps=steps, seed=seed)
    generated = (e.frame for e in events if e.kind == "frame")

    def panels():
        for i, frame in enumerate(generated):
            gt = cv2.resize(truth[i], (res, res), interpolation=cv2.INTER_AREA)
            yield np.concatenate([gt, motion.motion_maps([i])[0], frame], axis=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, panels(), clip.fps)


@torch.no_grad()
def checksum(module: torch.nn.Module) -> str:
    """A short fingerprint of every parameter (to compare ranks or runs)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
