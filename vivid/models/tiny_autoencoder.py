"""A tiny convolutional autoencoder (the TAESD family's layout) for the mini model's latent space.

VividPortraits-mini works in the latent space of TAEF2, a tiny autoencoder distilled from the
FLUX.2 VAE (32 latent channels at 1/8 of the image side; `assets/taef2/README.md` says where its
weights come from). No Stable Diffusion VAE can be downloaded on the machines the mini model is
trained on, and a random VAE turns every picture into noise; this one is pretrained, 1.3 M
parameters each way, and fast enough on a CPU to encode training data and decode every frame.

The layout: plain 3x3 convolutions and ReLU blocks with a residual skip, stride-2 convolutions
down and nearest-neighbour upsampling up, and in the levels next to the latent a branch that
mixes each block's input through a GroupNorm (which sees the whole image, so the distilled
encoder can match a VAE whose latents depend on global statistics). Images go in and come out
in [-1, 1], like `AutoencoderKL`; the interface (`encode(x).latents`, `decode(z).sample`,
`config.scaling_factor` / `shift_factor`) is diffusers' `AutoencoderTiny`'s, so
`vivid.conditioning` serves both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

#: Weights of the TAESD family are trained for images in [0, 1]; ours take [-1, 1].
_HALF = 0.5


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """relu(convs(x) + x), three 3x3 convs with ReLU between; with `global_branch`, the input
    first gets x + mix(x), a 1x1 expansion through a GroupNorm and back."""

    def __init__(self, channels: int, global_branch: bool = False, groups: int = 4, expansion: int = 4):
        super().__init__()
        self.convs = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                   _conv(channels, channels))
        self.mix = None
        if global_branch:
            wide = channels * expansion
            self.mix = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.GroupNorm(groups, wide), nn.ReLU(),
                                     nn.Conv2d(wide, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix is not None:
            x = x + self.mix(x)
        return torch.relu(self.convs(x) + x)


class SoftClamp(nn.Module):
    """limit * tanh(x / limit): latents far outside the trained range are squashed, not cut."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.limit) * self.limit


def _blocks(count: int, channels: int, global_branch: bool) -> list[nn.Module]:
    return [ResidualBlock(channels, global_branch) for _ in range(count)]


@dataclass
class TinyAutoencoderOutput(BaseOutput):
    """What `encode` returns: the latents (deterministic; there is no posterior to sample)."""

    latents: torch.Tensor


class TinyAutoencoder(ModelMixin, ConfigMixin):
    """Encoder and decoder of one tiny autoencoder. Levels run from the image (level 0) to the
    latent (the last); `block_out_channels` gives each level's width, so the latent side is the
    image side / 2**(levels - 1), as for `AutoencoderKL`."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        block_out_channels: tuple[int, ...] = (64, 64, 64, 64),
        encoder_blocks: tuple[int, ...] = (1, 3, 3, 3),  # per level, image side first
        decoder_blocks: tuple[int, ...] = (1, 3, 3, 3),  # per level, image side first
        global_branch_levels: tuple[int, ...] = (3,),  # levels whose blocks have the GroupNorm branch
        latent_clamp: float = 3.0,  # the decoder's soft clamp of its input
        scaling_factor: float = 1.0,  # latents are (raw - shift_factor) * scaling_factor
        shift_factor: float = 0.0,
    ):
        super().__init__()
        widths = list(block_out_channels)
        levels = len(widths)
        if not len(encoder_blocks) == len(decoder_blocks) == levels:
            raise ValueError(f"encoder_blocks {encoder_blocks} and decoder_blocks {decoder_blocks} need one count per "
                             f"level of block_out_channels {block_out_channels}")
        glob = set(global_branch_levels)

        enc: list[nn.Module] = [_conv(3, widths[0])]
        for level in range(levels):
            if level:
                enc.append(_conv(widths[level - 1], widths[level], stride=2, bias=False))
            enc += _blocks(encoder_blocks[level], widths[level], level in glob)
        enc.append(_conv(widths[-1], latent_channels))
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [SoftClamp(latent_clamp), _conv(latent_channels, widths[-1]), nn.ReLU()]
        for level in reversed(range(levels)):
            dec += _blocks(decoder_blocks[level], widths[level], level in glob)
            if level:
                dec += [nn.Upsample(scale_factor=2), _conv(widths[level], widths[level - 1], bias=False)]
        dec.append(_conv(widths[0], 3))
        self.decoder = nn.Sequential(*dec)

    def encode(self, images: torch.Tensor, return_dict: bool = True) -> TinyAutoencoderOutput | tuple[torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] -> raw latents (N, C, H/8, W/8) (unscaled, like AutoencoderKL's)."""
        latents = self.encoder(images * _HALF + _HALF)
        return TinyAutoencoderOutput(latents=latents) if return_dict else (latents,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Raw latents -> (N, 3, H, W) images in [-1, 1] (clamped)."""
        images = (self.decoder(latents) - _HALF) / _HALF
        images = images.clamp(-1, 1)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images).latents).sample


def from_taesd_state_dicts(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor],
                           config: dict | None = None) -> TinyAutoencoder:
    """A TinyAutoencoder holding the weights of a TAESD-family checkpoint (the `nn.Sequential`
    state dicts of `taesd.py`'s Encoder/Decoder, e.g. `taef2_encoder.pth`). Both lay out the
    same tensors in the same order, under other names: they are matched by position, and every
    shape must agree (a checkpoint of another variant is refused, not half-loaded)."""
    model = TinyAutoencoder(**(config or {}))
    for name, ours, theirs in (("encoder", model.encoder, encoder), ("decoder", model.decoder, decoder)):
        target = ours.state_dict()
        if len(target) != len(theirs):
            raise ValueError(f"the {name} checkpoint holds {len(theirs)} tensors; this layout has {len(target)}")
        mapped = {}
        for (key, value), (their_key, tensor) in zip(target.items(), theirs.items()):
            if value.shape != tensor.shape:
                raise ValueError(f"{name} tensor {their_key} {tuple(tensor.shape)} does not fit {key} {tuple(value.shape)}")
            mapped[key] = tensor.float()
        ours.load_state_dict(mapped, strict=True)
    return model
