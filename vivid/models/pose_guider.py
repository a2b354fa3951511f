"""PoseGuider: encodes motion maps into features added after the denoising UNet's input conv."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


#: He-style gain for SiLU: 1 / sqrt(E[silu(z)^2]) for z ~ N(0, 1). ReLU's sqrt(2) is too small
#: for SiLU: over the guider's seven convs the features shrink to a std of ~0.02-0.3.
SILU_GAIN = 1.678


class PoseGuider(ModelMixin, ConfigMixin):
    """Small conv encoder (AnimateAnyone-style): RGB motion map at image resolution ->
    features at latent resolution (three stride-2 stages = 1/8) with the UNet's first width.

    Convs start Gaussian with He-style scaling for SiLU (`SILU_GAIN`), so features keep a
    standard deviation of order 1 through the SiLU stack; the last conv starts at zero, so an
    untrained guider adds nothing and training begins from the unconditioned UNet, yet its
    gradient is alive from the first step. (A fixed small std such as 0.02 shrinks the features by ~1e-6 over five
    convs, which leaves the zero conv without gradient: the maps would never start to matter.)
    """

    @register_to_config
    def __init__(
        self,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        out_channels: int = 320,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        blocks = []
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            blocks += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1)
        for conv in [self.conv_in, *self.blocks]:
            nn.init.normal_(conv.weight, std=SILU_GAIN / conv.weight[0].numel() ** 0.5)  # fan-in scaling
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, motion_maps: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, out_channels, H/8, W/8)."""
        x = F.silu(self.conv_in(motion_maps))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


class PoseInjector:
    """Adds pose features to the output of the UNet's input conv, the only change the
    PoseGuider needs inside the UNet. A forward hook (no change to the UNet's weights or
    code); the features are present only inside an `inject` block, for one UNet call."""

    def __init__(self, unet: nn.Module):
        self._pose: torch.Tensor | None = None
        self._handle = unet.conv_in.register_forward_hook(self._add)

    def _add(self, module: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
        if self._pose is None:
            return out
        if self._pose.shape != out.shape:
            raise ValueError(f"pose features {tuple(self._pose.shape)} do not match UNet features {tuple(out.shape)}")
        return out + self._pose.to(out.dtype)

    @contextmanager
    def inject(self, pose: torch.Tensor | None) -> Iterator[None]:
        """Add `pose` (B*F, C, h, w), the frames of each sample consecutive, inside the block."""
        self._pose = pose
        try:
            yield
        finally:
            self._pose = None

    def remove(self) -> None:
        self._handle.remove()
