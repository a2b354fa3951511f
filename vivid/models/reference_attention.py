"""Reference attention as diffusers attention processors.

ReferenceNet's spatial self-attention layers *write* their input tokens into a
`ReferenceBank`, keyed by layer name; the denoising UNet's spatial self-attention layers of
the same name *read* them and attend over their own tokens plus the reference tokens. The
bank is the one place the state lives; processors are installed with `set_attn_processor`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


@dataclass
class ReferenceBank:
    """Reference tokens per layer name: (B_ref, tokens, channels); B_ref is 2 with guidance."""

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    enabled: bool = True  # False: readers ignore the bank (ablation / no-reference runs)

    def clear(self) -> None:
        self.features.clear()


def _layer_name(processor_name: str) -> str:
    return processor_name.removesuffix(".processor")


def is_spatial_self_attention(processor_name: str) -> bool:
    """attn1 of the image transformer blocks (not the temporal motion modules, not cross-attention)."""
    return processor_name.endswith("attn1.processor") and "motion_modules" not in processor_name


class ReferenceWriteProcessor(AttnProcessor2_0):
    """Plain self-attention that also stores its input tokens in the bank."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        self.bank.features[self.name] = hidden_states  # kept in the graph when training
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReadProcessor(AttnProcessor2_0):
    """Self-attention whose keys/values are its own tokens followed by the reference tokens."""

    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if not self.bank.enabled or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ref = self.bank.features.get(self.name)
        if ref is None:
            raise RuntimeError(f"no reference features for {self.name}: run the ReferenceNet first")
        batch = hidden_states.shape[0]
        if batch % ref.shape[0]:
            raise ValueError(f"{self.name}: batch {batch} is not a multiple of the reference batch {ref.shape[0]}")
        # (B_ref, T_ref, C) -> (B_ref * frames, T_ref, C): every frame of a sample sees its reference.
        ref = ref.repeat_interleave(batch // ref.shape[0], dim=0).to(hidden_states.dtype)
        context = torch.cat([hidden_states, ref], dim=1)
        return super().__call__(attn, hidden_states, context, attention_mask, temb)


def install_reference_attention(reference_net: nn.Module, unet: nn.Module, bank: ReferenceBank) -> None:
    """Writers on ReferenceNet's spatial self-attention, readers on the UNet's; fails loudly
    when a reader has no writer of the same name (mismatched architectures)."""
    writers = {
        name: ReferenceWriteProcessor(bank, _layer_name(name)) if is_spatial_self_attention(name) else AttnProcessor2_0()
        for name in reference_net.attn_processors
    }
    readers = {
        name: ReferenceReadProcessor(bank, _layer_name(name)) if is_spatial_self_attention(name) else AttnProcessor2_0()
        for name in unet.attn_processors
    }
    unmatched = sorted(
        n for n in readers if is_spatial_self_attention(n) and n not in writers
    )
    if unmatched:
        raise ValueError(f"UNet self-attention layers with no ReferenceNet counterpart: {unmatched[:5]}")
    reference_net.set_attn_processor(writers)
    unet.set_attn_processor(readers)


def remove_reference_attention(reference_net: nn.Module, unet: nn.Module) -> None:
    """Back to plain attention everywhere."""
    reference_net.set_attn_processor(AttnProcessor2_0())
    unet.set_attn_processor(AttnProcessor2_0())
