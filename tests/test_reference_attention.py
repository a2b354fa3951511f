"""Reference attention (ReferenceNet writes, denoising UNet reads) against a hand-written
attention: every frame attends over its own tokens and its own sample's reference tokens,
layers are paired by name, and mismatches fail loudly."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from vivid.models import ReferenceBank, install_reference_attention, tiny_components
from vivid.models.reference_attention import ReferenceReadProcessor, ReferenceWriteProcessor


def attention(attn: Attention, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of `hidden` (B, T, C) over `context` (B, S, C), written out."""
    assert not attn.residual_connection and attn.rescale_output_factor == 1.0
    b, t, _ = hidden.shape
    heads = attn.heads
    q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
    d = q.shape[-1] // heads
    q, k, v = (x.view(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))  # (B, heads, T|S, d)
    weights = (q @ k.transpose(-1, -2) / d**0.5).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, t, heads * d)
    return attn.to_out[1](attn.to_out[0](out))


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()


@torch.no_grad()
def test_every_frame_attends_over_its_own_tokens_and_its_samples_reference(attn):
    bank = ReferenceBank()
    ref = torch.randn(2, 5, 16)  # (uncond, cond) reference tokens
    bank.features["block"] = ref
    frames = 3
    hidden = torch.randn(2 * frames, 7, 16)  # (B * F, T, C): uncond frames, then cond frames
    out = ReferenceReadProcessor(bank, "block")(attn, hidden)
    assert out.shape == hidden.shape
    for row in range(2 * frames):
        sample = row // frames  # the uncond half sees the uncond reference features
        h = hidden[row : row + 1]
        expected = attention(attn, h, torch.cat([h, ref[sample : sample + 1]], dim=1))
        assert torch.allclose(out[row : row + 1], expected, atol=1e-5), row
        other = attention(attn, h, torch.cat([h, ref[1 - sample : 2 - sample]], dim=1))
        assert not torch.allclose(other, expected, atol=1e-3)  # the reference matters here


@torch.no_grad()
def test_writer_stores_its_input_tokens_and_is_plain_self_attention(attn):
    bank = ReferenceBank()
    hidden = torch.randn(2, 7, 16)
    out = ReferenceWriteProcessor(bank, "block")(attn, hidden)
    assert torch.equal(bank.features["block"], hidden)
    assert torch.allclose(out, attention(attn, hidden, hidden), atol=1e-5)


@torch.no_grad()
def test_disabled_bank_and_cross_attention_ignore_the_reference(attn):
    bank = ReferenceBank()
    bank.features["block"] = torch.randn(1, 5, 16)
    reader = ReferenceReadProcessor(bank, "block")
    hidden, text = torch.randn(2, 7, 16), torch.randn(2, 3, 16)
    assert torch.allclose(reader(attn, hidden, encoder_hidden_states=text), attention(attn, hidden, text), atol=1e-5)
    bank.enabled = False
    assert torch.allclose(reader(attn, hidden), attention(attn, hidden, hidden), atol=1e-5)


@torch.no_grad()
def test_reader_without_reference_features_fails_naming_its_layer(attn):
    bank = ReferenceBank()
    with pytest.raises(RuntimeError, match="block"):
        ReferenceReadProcessor(bank, "block")(attn, torch.randn(2, 7, 16))
    bank.features["block"] = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="batch 3"):
        ReferenceReadProcessor(bank, "block")(attn, torch.randn(3, 7, 16))


@pytest.fixture(scope="module")
def nets():
    comps = tiny_components(0)
    bank = ReferenceBank()
    install_reference_attention(comps["reference_net"], comps["unet"], bank)
    return comps["reference_net"], comps["unet"], bank


def spatial_self_attention(model) -> list[str]:
    return [n.removesuffix(".processor") for n in model.attn_processors
            if n.endswith("attn1.processor") and "motion_modules" not in n]


def test_only_spatial_self_attention_reads_and_writes(nets):
    reference_net, unet, _ = nets
    for model, kind in ((reference_net, ReferenceWriteProcessor), (unet, ReferenceReadProcessor)):
        spatial = set(spatial_self_attention(model))
        assert len(spatial) == 4  # down, mid and two up transformer blocks of the tiny UNet
        for name, proc in model.attn_processors.items():
            is_ref = isinstance(proc, (ReferenceReadProcessor, ReferenceWriteProcessor))
            assert is_ref == (name.removesuffix(".processor") in spatial), name  # not temporal, not cross
            if is_ref:
                assert isinstance(proc, kind) and proc.name == name.removesuffix(".processor")


@torch.no_grad()
def test_each_unet_layer_reads_the_reference_net_layer_of_the_same_name(nets):
    reference_net, unet, bank = nets
    torch.manual_seed(1)
    written, read = {}, {}
    handles = []
    for name in spatial_self_attention(reference_net):
        module = reference_net.get_submodule(name)
        handles.append(module.register_forward_pre_hook(lambda m, args, name=name: written.__setitem__(name, args[0].clone())))
    for name in spatial_self_attention(unet):
        module = unet.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, args, out, name=name: read.__setitem__(name, (args[0].clone(), out.clone()))))
    try:
        bank.clear()
        reference_net(torch.randn(2, 4, 8, 8), torch.zeros(2, dtype=torch.long), encoder_hidden_states=torch.randn(2, 1, 32))
        assert set(bank.features) == set(written)
        for name, tokens in written.items():
            assert torch.equal(bank.features[name], tokens), name
        frames = 3
        unet(torch.randn(2, 4, frames, 8, 8), torch.tensor(500), encoder_hidden_states=torch.randn(2 * frames, 1, 32))
    finally:
        for h in handles:
            h.remove()
        bank.clear()
    assert set(read) == set(written)
    for name, (hidden, out) in read.items():
        attn = unet.get_submodule(name)
        ref = written[name].repeat_interleave(frames, dim=0)  # (2 * F, T_ref, C)
        expected = attention(attn, hidden, torch.cat([hidden, ref], dim=1))
        assert torch.allclose(out, expected, atol=1e-4), name
        # Several layers share a width and token count: only the same-named one fits.
        for other, tokens in written.items():
            if other != name and tokens.shape == written[name].shape:
                wrong = attention(attn, hidden, torch.cat([hidden, tokens.repeat_interleave(frames, 0)], dim=1))
                assert not torch.allclose(out, wrong, atol=1e-4), (name, other)


def test_reader_without_a_writer_of_the_same_name_is_an_error():
    comps = tiny_components(0)
    plain = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    with pytest.raises(ValueError, match="no ReferenceNet counterpart.*down_blocks.0.attentions.0"):
        install_reference_attention(plain, comps["unet"], ReferenceBank())
