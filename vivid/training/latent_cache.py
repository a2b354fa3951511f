"""Autoencoder latents of every frame of a prepared clip, computed once and kept beside it.

Encoding is the largest cost of a small model's training step: the mini model's autoencoder
takes about as long to encode a batch's reference and target frames as ReferenceNet and the
UNet take to train on them. Frames never change between steps (random scaling acts on the
motion maps only), so each clip's latents are encoded once, at the training resolution, and
stored as `CLIP/latents/<tag>.npy` (frames, C, h, w) float16, where the tag names the
autoencoder (its class, config and weights), its dtype and the resolution: another
autoencoder or resolution gets its own file, never a stale one.

Fixed copies of the clips (`views`: mirrored, colour-changed) are cached the same way, one
file per view (`<tag>-view<k>.npy`), so they cost no encoding during training. Augmentation
that changes pixels at random (`augment`) cannot use the cache; the config refuses both.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..conditioning import encode_latents, to_model_range
from .clips import PreparedClip
from .resizing import resize_frames
from .views import View, clip_views

log = logging.getLogger(__name__)

LATENTS_DIR = "latents"
#: Frames encoded per call: as fast per frame as larger batches on a CPU, little memory.
ENCODE_BATCH = 16


def autoencoder_tag(vae: torch.nn.Module, resolution: int) -> str:
    """A name for latents made by `vae` (class, config, weights, dtype) at `resolution`."""
    digest = hashlib.sha256(repr(sorted(dict(vae.config).items())).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    dtype = str(next(vae.parameters()).dtype).removeprefix("torch.")
    return f"{type(vae).__name__}-{resolution}px-{dtype}-{digest.hexdigest()[:12]}"


def latents_path(clip: PreparedClip, tag: str, view: int = 0) -> Path:
    """Where the latents of `view` (0: the clip itself) of `clip` are kept."""
    return clip.path / LATENTS_DIR / (f"{tag}.npy" if view == 0 else f"{tag}-view{view}.npy")


@torch.no_grad()
def encode_clip(vae: torch.nn.Module, clip: PreparedClip, resolution: int, view: View = View()) -> np.ndarray:
    """(frames, C, h, w) float16 latents of every frame of `clip` at `resolution`, as `view` shows it."""
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    parts = []
    for start in range(0, len(clip), ENCODE_BATCH):
        frames = resize_frames(clip.frames(range(start, min(start + ENCODE_BATCH, len(clip)))), resolution)
        parts.append(encode_latents(vae, to_model_range(view.images(frames), device, dtype)).float().cpu().numpy())
    return np.concatenate(parts).astype(np.float16)


def cache_latents(clips: Sequence[PreparedClip], vae: torch.nn.Module, resolution: int, progress: bool = True,
                  views: int = 1) -> str:
    """Encode the clips' first `views` views that have no latents for this autoencoder yet
    (written under a temporary name and renamed, so a stopped run leaves no half file);
    returns the tag."""
    from tqdm import tqdm

    tag = autoencoder_tag(vae, resolution)
    missing = [(c, k, v) for c in clips for k, v in enumerate(clip_views(c.path.name, views))
               if not latents_path(c, tag, k).is_file()]
    if missing:
        vae.encoder.to(memory_format=torch.channels_last)  # 15-25% faster on a CPU, same values
        frames = sum(len(c) for c, _, _ in missing)
        log.info("encoding %d frames of %d clip views once (latents %s)", frames, len(missing), tag)
        with tqdm(total=frames, desc="latents", unit="frame", disable=not progress) as bar:
            for clip, k, view in missing:
                path = latents_path(clip, tag, k)
                if path.is_file():  # another process (another rank, or a helper run) made it meanwhile
                    bar.update(len(clip))
                    continue
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
                np.save(tmp, encode_clip(vae, clip, resolution, view))
                tmp.replace(path)
                bar.update(len(clip))
    return tag


def load_latents(clip: PreparedClip, tag: str, view: int = 0) -> np.ndarray:
    """The cached latents of a view of the clip, memory-mapped (frames are read as samples ask for them)."""
    path = latents_path(clip, tag, view)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cached latents; the trainer encodes them before training")
    return np.load(path, mmap_mode="r")
