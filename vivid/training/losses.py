"""The denoising loss on one noise schedule shared with inference."""
from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from ..models.builders import scheduler_config

#: The prediction types training has a target for (`denoising_target`).
PREDICTION_TYPES = ("epsilon", "v_prediction")


def training_scheduler(inference_config: dict | None = None) -> DDPMScheduler:
    """The forward-noising schedule for training: the inference scheduler's own config
    (betas, prediction type, offset, zero-SNR), so training and sampling cannot disagree.
    A prediction type training has no target for is refused here, before any step."""
    scheduler = DDPMScheduler.from_config(dict(inference_config or scheduler_config()))
    kind = scheduler.config.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"training supports prediction types {', '.join(PREDICTION_TYPES)}, not {kind!r}")
    return scheduler


def add_noise(scheduler: DDPMScheduler, latents: torch.Tensor, generator: torch.Generator, noise_offset: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, noise, timesteps): timesteps uniform over the schedule, one per
    sample; `noise_offset` adds per-channel constant noise (peers' brightness fix)."""
    b, c = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    if noise_offset:
        shape = (b, c) + (1,) * (latents.ndim - 2)
        noise = noise + noise_offset * torch.randn(shape, generator=generator).to(latents.device, latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(latents.device)
    return scheduler.add_noise(latents, noise, t), noise, t


def denoising_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network must predict under the schedule's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported prediction type {kind!r}")


def snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(t.device)[t]
    return alphas / (1 - alphas)


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor, scheduler: DDPMScheduler | None = None,
                   t: torch.Tensor | None = None, min_snr_gamma: float = 0.0) -> torch.Tensor:
    """Mean squared error per sample, averaged; with `min_snr_gamma` > 0 each sample is
    weighted by min(SNR, gamma) / SNR (or / (SNR + 1) for v-prediction)."""
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if min_snr_gamma > 0:
        s = snr(scheduler, t)
        weight = torch.clamp(s, max=min_snr_gamma) / (s + 1 if scheduler.config.prediction_type == "v_prediction" else s)
        per_sample = per_sample * weight
    return per_sample.mean()
