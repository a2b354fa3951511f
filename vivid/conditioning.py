"""What inference and training both feed the networks, in one copy (DESIGN.md): images and
motion maps as model tensors, the CLIP foreground/background inputs, reference latents and
ReferenceNet features, and the unconditional branch of classifier-free guidance.

"Unconditional" means: both CLIP image embeddings (ReferenceNet's foreground one and the
denoising UNet's background one) replaced by zeros. The reference latents, and therefore
ReferenceNet's attention features (computed under the zero embedding), and the motion maps
are kept: guidance then pushes the result towards what CLIP says about the person and the
scene, while appearance detail and motion always come through. Training drops to exactly
this (`drop_image_conditioning`) and the pipeline's guidance uses `unconditional`: one
function, so the two cannot drift apart (the AnimateAnyone family zeroes CLIP's input pixels
in training but the embedding at inference).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from .face import FaceAnalysis, MotionMapStyle, random_scale, render_motion_map
from .models.disk_streaming import run_device

#: Colour that replaces the background in the foreground image (CLIP sees a studio shot).
FOREGROUND_FILL = (255, 255, 255)
#: Radius (px at CLIP's input size) of the inpainting that removes the person from the background.
INPAINT_RADIUS = 5


# -- pixels <-> model tensors ---------------------------------------------------------------
def to_model_range(images: np.ndarray, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) in [-1, 1], the range the VAE and the
    PoseGuider take."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return t.to(device=device, dtype=dtype or torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 RGB."""
    images = ((x.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


# -- motion maps ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalingConfig:
    """The paper's random scaling of the driving map (training only): every component by a
    factor from `part_range`, the spacing between components by one from `face_range`."""

    part_range: tuple[float, float] = (0.8, 1.2)
    face_range: tuple[float, float] = (0.7, 1.3)


def motion_maps(analyses: Sequence[FaceAnalysis], scale_seed: int | None = None,
                scaling: ScalingConfig = ScalingConfig(), style: MotionMapStyle = MotionMapStyle()) -> np.ndarray:
    """(N, H, W, 3) uint8 motion maps of `analyses` (the frames of one clip). With
    `scale_seed`, randomly scaled as training does to keep identity out of the maps: the
    same factors for every frame, so a clip's face keeps one (altered) shape over time."""
    if scale_seed is not None:
        analyses = [random_scale(a, scale_seed, scaling.part_range, scaling.face_range) for a in analyses]
    return np.stack([render_motion_map(a, style) for a in analyses])


# -- CLIP foreground / background ------------------------------------------------------------
def split_foreground_background(rgb: np.ndarray, person: np.ndarray, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """(foreground image, background image) at `size` px: the person on white, and the
    scene with the person inpainted away so their silhouette does not leak into the UNet."""
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(person.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    fg = np.where(mask[..., None] > 0, small, np.array(FOREGROUND_FILL, np.uint8))
    grown = cv2.dilate(mask, np.ones((5, 5), np.uint8)) * 255
    bg = cv2.inpaint(small, grown, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return fg.astype(np.uint8), bg


@dataclass
class ReferenceEmbeddings:
    """CLIP image embeddings (N, 1, D) for each network."""

    reference_net: torch.Tensor  # foreground (or whole image without separation)
    unet: torch.Tensor  # background (or whole image without separation)


@torch.no_grad()
def encode_images(image_encoder, feature_extractor, images: list[np.ndarray]) -> torch.Tensor:
    """(N, 1, D) projected CLIP image embeddings of RGB uint8 images."""
    pixels = feature_extractor(images=images, return_tensors="pt").pixel_values
    pixels = pixels.to(run_device(image_encoder), image_encoder.dtype)
    return image_encoder(pixels).image_embeds[:, None, :]


def clip_size(feature_extractor) -> int:
    """The side of CLIP's input images."""
    return int(getattr(feature_extractor, "crop_size", {}).get("height", 224))


def clip_inputs(image: np.ndarray, person: np.ndarray, separate: bool = True, size: int = 224) -> np.ndarray:
    """What CLIP sees of one reference at `size` px: (2, size, size, 3) foreground then
    background, or (1, size, size, 3) the whole image without separation (the ablation)."""
    if separate:
        return np.stack(split_foreground_background(image, person, size))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[None]


def embed_clip_inputs(image_encoder, feature_extractor, inputs: np.ndarray) -> ReferenceEmbeddings:
    """Embeddings of a batch of `clip_inputs` (N, 2 or 1, S, S, 3), in one CLIP call: the
    first image of each item conditions ReferenceNet, the last the denoising UNet."""
    inputs = np.asarray(inputs)
    n, k = inputs.shape[:2]
    emb = encode_images(image_encoder, feature_extractor, list(inputs.reshape(n * k, *inputs.shape[2:])))
    emb = emb.view(n, k, *emb.shape[1:])  # (N, k, 1, D)
    return ReferenceEmbeddings(reference_net=emb[:, 0], unet=emb[:, -1])


def reference_embeddings(
    image_encoder, feature_extractor, images: np.ndarray, persons: np.ndarray, separate: bool = True
) -> ReferenceEmbeddings:
    """Embeddings of one reference (H, W, 3) or a batch (N, H, W, 3) with its person
    mask(s): foreground for ReferenceNet, background for the UNet."""
    images, persons = np.asarray(images), np.asarray(persons)
    if images.ndim == 3:
        images, persons = images[None], persons[None]
    size = clip_size(feature_extractor)
    inputs = np.stack([clip_inputs(img, person, separate, size) for img, person in zip(images, persons)])
    return embed_clip_inputs(image_encoder, feature_extractor, inputs)


def unconditional(embeddings: torch.Tensor) -> torch.Tensor:
    """The unconditional counterpart of CLIP embeddings (see the module docstring)."""
    return torch.zeros_like(embeddings)


def drop_image_conditioning(emb: ReferenceEmbeddings, drop: torch.Tensor) -> ReferenceEmbeddings:
    """Training's classifier-free dropout: samples where `drop` (N,) bool is set get the
    unconditional embeddings for both networks, exactly what the pipeline's guidance uses."""
    keep = (~drop).view(-1, 1, 1)
    return ReferenceEmbeddings(
        reference_net=torch.where(keep, emb.reference_net, unconditional(emb.reference_net)),
        unet=torch.where(keep, emb.unet, unconditional(emb.unet)),
    )


# -- latents and reference features ---------------------------------------------------------
def _latent_shift(vae) -> float:
    """The autoencoder's latent shift (FLUX-style VAEs and TAEF2 configs have one; SD's none)."""
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


def encode_latents(vae, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
    """Latents of images in [-1, 1], shifted and scaled by the autoencoder's own factors
    (diffusers' convention: (raw - shift_factor) * scaling_factor). For SD's `AutoencoderKL`
    the mean of the posterior (references) or a sample from it (`sample`); a tiny
    autoencoder (`TinyAutoencoder`, diffusers' `AutoencoderTiny`) has no posterior: its
    latents whatever `sample` says."""
    out = vae.encode(images.to(run_device(vae), vae.dtype))
    if hasattr(out, "latent_dist"):
        latents = out.latent_dist.sample(generator) if sample else out.latent_dist.mean
    else:
        latents = out.latents
    return (latents - _latent_shift(vae)) * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from latents shifted and scaled as `encode_latents` gives them."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + _latent_shift(vae)).sample


def reference_features(reference_net, bank, latents: torch.Tensor, context: torch.Tensor) -> None:
    """Run ReferenceNet once on the reference latents (at timestep 0: the reference is a
    clean image) so its self-attention writers fill `bank` for the denoising UNet."""
    bank.clear()
    t0 = torch.zeros(latents.shape[0], dtype=torch.long, device=latents.device)
    reference_net(latents.to(reference_net.dtype), t0, encoder_hidden_states=context.to(reference_net.dtype))


def predict_noise(unet, injector, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                  pose: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """The denoising UNet's noise prediction with the pose features added after its input
    conv. `sample` (B, C, H, W) for the image UNet or (B, C, F, H, W) for the motion UNet;
    `context` (B, 1, D) is repeated for every frame; `pose` (B*F, C', H, W), frames inner.
    `guide`, shaped like `sample`: the warped portrait's latents, which a warp-guided UNet
    sees as input channels beside the noisy ones (`vivid.warp_guidance`)."""
    frames = sample.shape[2] if sample.ndim == 5 else 1
    ctx = context.repeat_interleave(frames, dim=0).to(unet.dtype)
    if guide is not None:
        sample = torch.cat([sample, guide.to(sample.dtype)], dim=1)
    expected = getattr(getattr(unet, "config", None), "in_channels", sample.shape[1])
    if sample.shape[1] != expected:
        raise ValueError(f"the denoising UNet takes {expected} input channels, got {sample.shape[1]} "
                         f"({'with' if guide is not None else 'without'} warp guidance latents)")
    with injector.inject(pose):
        return unet(sample.to(unet.dtype), t, encoder_hidden_states=ctx).sample
