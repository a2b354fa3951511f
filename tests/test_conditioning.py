"""What inference and training both feed the networks (vivid.conditioning), checked against
known answers: pixel ranges, motion maps, CLIP foreground/background inputs, VAE scaling,
the unconditional branch, ReferenceNet at timestep 0 and per-frame context and pose."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vivid.conditioning import (
    ReferenceEmbeddings, ScalingConfig, clip_inputs, decode_latents, drop_image_conditioning, encode_images, encode_latents,
    from_model_range, motion_maps, predict_noise, reference_embeddings, reference_features,
    split_foreground_background, to_model_range, unconditional,
)
from vivid.face import random_scale, render_motion_map
from vivid.models import PoseInjector, ReferenceBank, install_reference_attention, tiny_components


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(0)


# -- pixels <-> model tensors ---------------------------------------------------------------
def test_model_range_maps_0_to_minus_1_and_255_to_plus_1_channels_first():
    images = np.zeros((2, 3, 5, 3), np.uint8)  # non-square, so a wrong permute shows
    images[1, 2, 4] = (0, 255, 51)
    images[0, 1, 3] = (255, 128, 0)
    t = to_model_range(images)
    assert t.shape == (2, 3, 3, 5) and t.dtype == torch.float32
    assert torch.allclose(t[1, :, 2, 4], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]), atol=1e-6)
    assert torch.allclose(t[0, :, 1, 3], torch.tensor([1.0, 128 / 127.5 - 1, -1.0]), atol=1e-6)
    assert (t[0, :, 0, 0] == -1).all()


def test_model_range_round_trip_is_exact_for_every_byte_value():
    values = np.arange(256, dtype=np.uint8)
    images = np.stack([values.reshape(16, 16)] * 3, axis=-1)[None]  # (1, 16, 16, 3)
    assert np.array_equal(from_model_range(to_model_range(images)), images)
    # Out-of-range model outputs are clipped, not wrapped around.
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.7]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert from_model_range(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


# -- motion maps ----------------------------------------------------------------------------
def test_training_scaling_defaults_are_the_papers():
    """Paper: every component by a factor in [0.8, 1.2], the spacing by one in [0.7, 1.3]."""
    assert ScalingConfig().part_range == (0.8, 1.2)
    assert ScalingConfig().face_range == (0.7, 1.3)


def test_motion_maps_are_the_rendered_analyses_and_a_clip_is_scaled_with_one_set_of_factors(big_face):
    a = big_face[1]
    b = a.replace(iris=a.iris + 3)  # a second, different frame
    plain = motion_maps([a, b])
    assert plain.shape == (2, 512, 512, 3) and plain.dtype == np.uint8
    assert np.array_equal(plain[0], render_motion_map(a)) and np.array_equal(plain[1], render_motion_map(b))
    scaled = motion_maps([a, b], scale_seed=7)
    assert np.array_equal(scaled[0], render_motion_map(random_scale(a, 7)))
    assert np.array_equal(scaled[1], render_motion_map(random_scale(b, 7)))  # one face shape per clip
    assert not np.array_equal(scaled[0], plain[0])
    # Unit ranges scale nothing: the configured ranges are the ones used.
    unit = ScalingConfig(part_range=(1.0, 1.0), face_range=(1.0, 1.0))
    assert np.array_equal(motion_maps([a], scale_seed=7, scaling=unit)[0], plain[0])


# -- CLIP foreground / background ------------------------------------------------------------
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A blue-green gradient scene with a red 'person' rectangle in the middle."""
    h = w = 128
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([np.full((h, w), 20), 60 + xx, 120 + yy // 2], axis=-1).astype(np.uint8)
    person = np.zeros((h, w), bool)
    person[32:112, 44:84] = True
    rgb[person] = (220, 30, 30)
    return rgb, person


def test_foreground_is_the_person_on_white_and_background_has_the_person_removed():
    rgb, person = scene()
    fg, bg = split_foreground_background(rgb, person, size=64)
    assert fg.shape == bg.shape == (64, 64, 3) and fg.dtype == bg.dtype == np.uint8
    inside = (slice(24, 48), slice(26, 38))  # well inside the person, at 64 px
    corners = [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(56, 64)), (slice(56, 64), slice(0, 8))]
    assert (np.abs(fg[inside].astype(int) - (220, 30, 30)) <= 2).all()
    for c in corners:
        assert (fg[c] == 255).all()  # the scene is gone from the foreground
        small = rgb[::2, ::2][c].astype(int)
        assert np.abs(bg[c].astype(int) - small).max() <= 2  # and kept in the background
    # No trace of the person in the background: the red is inpainted with scene colours.
    assert bg[inside][..., 0].max() < 60
    assert bg[inside][..., 2].min() > 100


def test_reference_net_gets_clip_of_the_foreground_and_the_unet_clip_of_the_background(tiny, astronaut):
    enc, fe = tiny["image_encoder"], tiny["feature_extractor"]
    rgb, person = scene()
    other = np.ascontiguousarray(astronaut[::4, ::4])
    other_person = np.zeros(other.shape[:2], bool)
    other_person[20:100, 30:90] = True
    emb = reference_embeddings(enc, fe, np.stack([rgb, other]), np.stack([person, other_person]))
    pairs = [split_foreground_background(rgb, person, 32), split_foreground_background(other, other_person, 32)]
    fg = encode_images(enc, fe, [p[0] for p in pairs])
    bg = encode_images(enc, fe, [p[1] for p in pairs])
    assert emb.reference_net.shape == emb.unet.shape == (2, 1, 32)
    assert not torch.allclose(fg, bg, atol=1e-3)  # otherwise this test could not tell them apart
    assert torch.allclose(emb.reference_net, fg, atol=1e-5)
    assert torch.allclose(emb.unet, bg, atol=1e-5)
    # One image (not a batch) is the first row of the batch result.
    single = reference_embeddings(enc, fe, rgb, person)
    assert torch.allclose(single.reference_net[0], fg[0], atol=1e-5) and torch.allclose(single.unet[0], bg[0], atol=1e-5)
    # Without separation both networks get CLIP of the whole image.
    whole = reference_embeddings(enc, fe, rgb, person, separate=False)
    assert torch.allclose(whole.reference_net, encode_images(enc, fe, list(clip_inputs(rgb, person, False, 32))), atol=1e-5)
    assert torch.allclose(whole.unet, whole.reference_net)


# -- the unconditional branch ---------------------------------------------------------------
def test_unconditional_embeddings_are_zeros_of_the_same_shape():
    emb = torch.randn(3, 1, 8, dtype=torch.float64)
    u = unconditional(emb)
    assert u.shape == emb.shape and u.dtype == emb.dtype and (u == 0).all()
    assert (emb != 0).any()  # the input is left alone


def test_training_dropout_gives_exactly_the_unconditional_embeddings_for_dropped_samples():
    emb = ReferenceEmbeddings(reference_net=torch.randn(4, 1, 8), unet=torch.randn(4, 1, 8))
    drop = torch.tensor([True, False, False, True])
    out = drop_image_conditioning(emb, drop)
    for i, dropped in enumerate(drop.tolist()):
        for name in ("reference_net", "unet"):  # both networks lose their condition together
            got, was = getattr(out, name)[i], getattr(emb, name)[i]
            assert torch.equal(got, unconditional(was) if dropped else was), (i, name)
    none = drop_image_conditioning(emb, torch.zeros(4, dtype=torch.bool))
    assert torch.equal(none.reference_net, emb.reference_net) and torch.equal(none.unet, emb.unet)


# -- VAE latents ----------------------------------------------------------------------------
class IdentityVAE(nn.Module):
    """A VAE stand-in whose encoder and decoder are the identity: only the scaling is left."""

    def __init__(self, scaling_factor: float):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device and dtype
        self.config = SimpleNamespace(scaling_factor=scaling_factor)

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x.clone(), sample=lambda generator=None: x + 1))

    def decode(self, z):
        return SimpleNamespace(sample=z.clone())


@pytest.mark.parametrize("factor", [0.18215, 0.5])
def test_latents_are_vae_output_times_its_scaling_factor_and_decoding_undoes_it(factor):
    vae = IdentityVAE(factor)
    x = torch.linspace(-1, 1, 2 * 4 * 3 * 3).view(2, 4, 3, 3)
    z = encode_latents(vae, x)
    assert torch.allclose(z, x * factor)  # SD convention: latents = posterior * scaling_factor
    assert torch.allclose(decode_latents(vae, z), x, atol=1e-6)  # decode(encode(x)) == x
    # Training targets are a sample of the posterior, scaled the same way.
    assert torch.allclose(encode_latents(vae, x, sample=True), (x + 1) * factor)


def test_reference_latents_are_the_posterior_mean(tiny):
    vae = tiny["vae"]
    x = to_model_range(np.full((1, 64, 64, 3), 90, np.uint8))
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        assert torch.allclose(encode_latents(vae, x), expected, atol=1e-6)
        assert torch.allclose(decode_latents(vae, expected), vae.decode(expected / vae.config.scaling_factor).sample, atol=1e-5)


# -- ReferenceNet and the denoising UNet's inputs ---------------------------------------------
def test_reference_features_run_reference_net_once_at_timestep_zero_and_refill_the_bank():
    comps = tiny_components(0)
    bank = ReferenceBank()
    install_reference_attention(comps["reference_net"], comps["unet"], bank)
    bank.features["stale"] = torch.zeros(1)
    seen = []
    comps["reference_net"].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0].clone(), args[1].clone(), kwargs["encoder_hidden_states"].clone())),
        with_kwargs=True,
    )
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 1, 32)
    with torch.no_grad():
        reference_features(comps["reference_net"], bank, latents, context)
    assert len(seen) == 1
    sample, t, ctx = seen[0]
    assert torch.equal(sample, latents) and torch.equal(ctx, context)
    assert (t == 0).all()  # the reference is a clean image
    spatial = {n.removesuffix(".processor") for n in comps["reference_net"].attn_processors if n.endswith("attn1.processor")}
    assert set(bank.features) == spatial  # stale entries gone, every layer written
    assert all(f.shape[0] == 2 for f in bank.features.values())


class FramesUNet(nn.Module):
    """Stands in for the denoising UNet with the layout diffusers' UNetMotionModel uses:
    (B, C, F, h, w) -> (B*F, C, h, w) frames inner -> conv_in -> + mean of the context."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            self.conv_in.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
            self.conv_in.bias.zero_()
        self.seen_context = None

    dtype = property(lambda self: self.conv_in.weight.dtype)

    def forward(self, sample, t, encoder_hidden_states):
        b, c, f, h, w = sample.shape
        self.seen_context = encoder_hidden_states
        x = self.conv_in(sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        x = x + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=x.view(b, f, c, h, w).permute(0, 2, 1, 3, 4))


def test_each_frame_gets_its_own_samples_context_and_its_own_pose_features():
    unet = FramesUNet()
    injector = PoseInjector(unet)
    b, f = 2, 3
    sample = torch.randn(b, 4, f, 5, 5)
    context = torch.stack([torch.full((1, 6), 10.0), torch.full((1, 6), 20.0)])  # (B, 1, D)
    pose = torch.randn(b * f, 4, 5, 5)
    noise = predict_noise(unet, injector, sample, torch.tensor(5), context, pose)
    assert unet.seen_context.shape == (b * f, 1, 6)
    for i in range(b):
        for j in range(f):
            assert torch.equal(unet.seen_context[i * f + j], context[i])
            expected = sample[i, :, j] + pose[i * f + j] + context[i].mean()
            assert torch.allclose(noise[i, :, j], expected, atol=1e-5), (i, j)
    # The pose is added only during that call.
    again = unet(sample, torch.tensor(5), encoder_hidden_states=context.repeat_interleave(f, 0)).sample
    assert torch.allclose(again, noise - pose.view(b, f, 4, 5, 5).permute(0, 2, 1, 3, 4), atol=1e-5)
