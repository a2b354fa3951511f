"""Reference attention as diffusers attention processors.

ReferenceNet's spatial self-attention layers *write* their input tokens into a
`ReferenceBank`, keyed by layer name; the denoising UNet's spatial self-attention layers of
the same name *read* them and attend over their own tokens plus the reference tokens. The
bank is the one place the state lives; processors are installed with `set_attn_processor`.

The reference tokens' keys and values are the same at every denoising step, window and frame
of a video, so at inference the bank also keeps them once projected, per layer
(`ReferenceBank.cache_kv`): a reader then projects only its own tokens. The cache belongs to
the features it was made from and goes when they are rewritten or cleared; with gradients on
(training) nothing is cached, so the graph and gradient checkpointing see every projection.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.nn import functional as F


@dataclass
class ReferenceBank:
    """Reference tokens per layer name: (B_ref, tokens, channels); B_ref is 2 with guidance."""

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    enabled: bool = True  # False: readers ignore the bank (ablation / no-reference runs)
    cache_kv: bool = True  # readers project the reference tokens once per video (inference only)
    # layer name -> (features, attention layer) it was projected from, and (key, value)
    _kv: dict[str, tuple[torch.Tensor, Attention, torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def write(self, name: str, tokens: torch.Tensor) -> None:
        """Store a layer's reference tokens (dropping keys/values projected from older ones)."""
        self.features[name] = tokens
        self._kv.pop(name, None)

    def clear(self) -> None:
        self.features.clear()
        self._kv.clear()

    def keys_values(self, name: str, attn: Attention, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`attn`'s key and value projections of `tokens` (this layer's reference features,
        already in the attention's dtype), computed on the first call and reused after."""
        cached = self._kv.get(name)
        if cached is not None and cached[0] is self.features.get(name) and cached[1] is attn and cached[2].dtype == tokens.dtype:
            return cached[2], cached[3]
        key, value = attn.to_k(tokens), attn.to_v(tokens)
        self._kv[name] = (self.features[name], attn, key, value)
        return key, value


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
        self.bank.write(self.name, hidden_states)  # kept in the graph when training
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
        if self._cacheable(attn, hidden_states, attention_mask):
            return self._with_cached_reference(attn, hidden_states, ref)
        # (B_ref, T_ref, C) -> (B_ref * frames, T_ref, C): every frame of a sample sees its reference.
        ref = ref.repeat_interleave(batch // ref.shape[0], dim=0).to(hidden_states.dtype)
        context = torch.cat([hidden_states, ref], dim=1)
        return super().__call__(attn, hidden_states, context, attention_mask, temb)

    def _cacheable(self, attn: Attention, hidden_states: torch.Tensor, attention_mask) -> bool:
        """Plain token self-attention at inference: what SD-family UNets have. Anything else
        (norms on the inputs, masks, gradients) takes the uncached path."""
        return (self.bank.cache_kv and not torch.is_grad_enabled() and attention_mask is None
                and hidden_states.ndim == 3 and attn.spatial_norm is None and attn.group_norm is None
                and not attn.norm_cross and attn.norm_q is None and attn.norm_k is None)

    def _with_cached_reference(self, attn: Attention, hidden_states: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """AttnProcessor2_0's computation with the reference part of the keys/values taken
        from the bank: to_k/to_v of each token do not depend on the other tokens, so this is
        the same attention."""
        batch, _, _ = hidden_states.shape  # (B * F, T, C)
        ref_key, ref_value = self.bank.keys_values(self.name, attn, ref.to(hidden_states.dtype))  # (B_ref, T_ref, inner)
        repeat = batch // ref.shape[0]
        query = attn.to_q(hidden_states)
        key = torch.cat([attn.to_k(hidden_states), ref_key.repeat_interleave(repeat, dim=0)], dim=1)
        value = torch.cat([attn.to_v(hidden_states), ref_value.repeat_interleave(repeat, dim=0)], dim=1)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)  # (B*F, heads, T, d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


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
