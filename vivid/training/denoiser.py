"""What training optimises: ReferenceNet, the denoising UNet and the PoseGuider, wired the
way the pipeline wires them (reference attention processors, pose features after conv_in),
as one module so accelerate can place, wrap and checkpoint it."""
from __future__ import annotations

import torch
from torch import nn

from ..conditioning import predict_noise, reference_features
from ..models.pose_guider import PoseGuider, PoseInjector
from ..models.reference_attention import ReferenceBank, install_reference_attention


class Denoiser(nn.Module):
    """Noise prediction for noisy latents, given the reference latents, the two CLIP
    embeddings and the motion maps. `unet` is the image UNet (stage 1) or the motion UNet
    (stage 2); the same forward serves both."""

    def __init__(self, reference_net: nn.Module, unet: nn.Module, pose_guider: PoseGuider):
        super().__init__()
        self.reference_net, self.unet, self.pose_guider = reference_net, unet, pose_guider
        self.bank = ReferenceBank()
        install_reference_attention(reference_net, unet, self.bank)
        self.injector = PoseInjector(unet)

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, reference_latents: torch.Tensor,
        reference_context: torch.Tensor, unet_context: torch.Tensor, motion: torch.Tensor,
        guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """noisy (B, C, h, w) or (B, C, F, h, w); reference_latents (B, C, h, w); contexts
        (B, 1, D); motion (B*F, 3, H, W) in [-1, 1], frames inner; guide, shaped like noisy:
        the warped reference's latents (warp-guided UNets only). The bank keeps the
        reference features until the next call: gradient checkpointing reads them again
        in the backward pass."""
        reference_features(self.reference_net, self.bank, reference_latents, reference_context)
        pose = self.pose_guider(motion.to(self.pose_guider.dtype))
        return predict_noise(self.unet, self.injector, noisy, timesteps, unet_context, pose, guide)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def temporal_parameter_names(unet: nn.Module) -> set[str]:
    """Names of the motion UNet's temporal-layer parameters (the only ones stage 2 trains)."""
    return {name for name, _ in unet.named_parameters() if ".motion_modules." in f".{name}"}


def freeze_for_stage(denoiser: Denoiser, stage: int) -> None:
    """Stage 1: everything trains. Stage 2: only the UNet's temporal layers."""
    if stage == 1:
        denoiser.requires_grad_(True)
        return
    denoiser.requires_grad_(False)
    temporal = temporal_parameter_names(denoiser.unet)
    if not temporal:
        raise ValueError("stage 2 needs a UNet with temporal layers (a stage 1 model exported as a pipeline)")
    for name, p in denoiser.unet.named_parameters():
        p.requires_grad_(name in temporal)


def cast_frozen(module: nn.Module, dtype: torch.dtype) -> None:
    """Parameters of `module` that do not train, cast to `dtype` in place (stage 2's spatial
    UNet: the trainable temporal layers stay fp32 master weights)."""
    for p in module.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)


def checkpoint_temporal_layers(unet: nn.Module) -> int:
    """Recompute the motion UNet's temporal layers in the backward pass. diffusers'
    gradient checkpointing covers only the resnets and spatial transformers of the motion
    blocks, yet the temporal layers are what stage 2 trains: they kept 1.27 GiB of
    activations per frame at 512 px, 0.44 GiB with this (bench/training.py). torch's
    checkpoint wrapper keeps parameter names (state dicts are unchanged). Returns how many
    layers were wrapped."""
    from functools import partial

    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper,
    )

    layers = [m for m in unet.modules() if isinstance(m, AnimateDiffTransformer3D)]
    apply_activation_checkpointing(
        unet, checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, AnimateDiffTransformer3D),
    )
    return len(layers)


def freeze_unused(denoiser: Denoiser, probe: dict[str, torch.Tensor]) -> list[str]:
    """Freeze trainable parameters that cannot change the loss (ReferenceNet's layers after
    its last self-attention, for instance), found with one forward/backward on `probe`
    (keyword arguments of `Denoiser.forward`). Distributed training needs every trainable
    parameter to get a gradient; frozen ones also cost no optimiser memory."""
    denoiser.zero_grad(set_to_none=True)
    denoiser(**probe).float().square().mean().backward()
    unused = [n for n, p in denoiser.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in denoiser.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    denoiser.bank.clear()
    return unused
