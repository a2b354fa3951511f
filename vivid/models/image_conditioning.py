"""CLIP image conditioning with the reference split into foreground and background.

The person (foreground) conditions ReferenceNet's cross-attention, the background
conditions the denoising UNet's, so the UNet learns the scene apart from the person. With
separation off both get the whole image (the paper's ablation).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

#: Colour that replaces the background in the foreground image (CLIP sees a studio shot).
FOREGROUND_FILL = (255, 255, 255)
#: Radius (px at CLIP's input size) of the inpainting that removes the person from the background.
INPAINT_RADIUS = 5


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
    """CLIP image embeddings (1, 1, D) for each network."""

    reference_net: torch.Tensor  # foreground (or whole image without separation)
    unet: torch.Tensor  # background (or whole image without separation)


@torch.no_grad()
def encode_images(image_encoder, feature_extractor, images: list[np.ndarray]) -> torch.Tensor:
    """(N, 1, D) projected CLIP image embeddings of RGB uint8 images."""
    pixels = feature_extractor(images=images, return_tensors="pt").pixel_values
    pixels = pixels.to(image_encoder.device, image_encoder.dtype)
    return image_encoder(pixels).image_embeds[:, None, :]


def reference_embeddings(
    image_encoder, feature_extractor, rgb: np.ndarray, person: np.ndarray, separate: bool = True
) -> ReferenceEmbeddings:
    """Both embeddings in one CLIP call."""
    size = int(getattr(feature_extractor, "crop_size", {}).get("height", 224))
    if separate:
        fg, bg = split_foreground_background(rgb, person, size)
        emb = encode_images(image_encoder, feature_extractor, [fg, bg])
        return ReferenceEmbeddings(reference_net=emb[:1], unet=emb[1:])
    emb = encode_images(image_encoder, feature_extractor, [rgb])
    return ReferenceEmbeddings(reference_net=emb, unet=emb)
