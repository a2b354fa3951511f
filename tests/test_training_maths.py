"""The training maths pinned to the scheduler the pipeline samples with, in seconds, on tiny
networks: a one-line slip in the target, the noising, the timesteps, the weighting, the
latent scale, the conditioning dropout or the frozen/trainable split fails here, not after
hours of training. The reference for "right" is always the inference side: the DDIM
scheduler of `scheduler_config()` and the pipeline's own decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from vivid.conditioning import (
    ReferenceEmbeddings, ScalingConfig, decode_latents, drop_image_conditioning, encode_latents, from_model_range,
    predict_noise, reference_features, to_model_range, unconditional,
)
from vivid.models.builders import scheduler_config
from vivid.training.config import TrainConfig
from vivid.training.denoiser import freeze_unused
from vivid.training.losses import add_noise, denoising_loss, denoising_target, training_scheduler
from vivid.training.loop import make_optimizer, probe_inputs, step_inputs, step_loss
from vivid.training.networks import build_networks, calibrate_latent_scale, check_init, export_model, pipeline_of
from vivid.training.samples import resize_landmarks

PREDICTIONS = ("epsilon", "v_prediction")
STEPS = 25  # inference steps: any number; the inversion holds at every timestep
SIDE = 16  # training images of the batch tests (2x2 latents: the maths does not care about size)


def schedulers(kind: str) -> tuple:
    """(training scheduler, the pipeline's DDIM) for one prediction type."""
    config = {**scheduler_config(), "prediction_type": kind}
    inference = DDIMScheduler(**config)
    inference.set_timesteps(STEPS)
    return training_scheduler(config), inference


def clean_from(inference: DDIMScheduler, prediction: torch.Tensor, t: torch.Tensor,
               noisy: torch.Tensor) -> torch.Tensor:
    """What the pipeline's scheduler step takes the clean latents to be, sample by sample."""
    return torch.stack([inference.step(p[None], int(ti), x[None]).pred_original_sample[0]
                        for p, ti, x in zip(prediction, t, noisy)])


def inverting_prediction(inference: DDIMScheduler, clean: torch.Tensor, t: torch.Tensor,
                         noisy: torch.Tensor) -> torch.Tensor:
    """The network output from which the pipeline's step recovers `clean` exactly. The
    step's clean estimate is affine in the output (for every prediction type), so two steps
    give its offset and slope: no formula of the test's own stands in for the scheduler."""
    at_zero = clean_from(inference, torch.zeros_like(noisy), t, noisy)
    slope = clean_from(inference, torch.ones_like(noisy), t, noisy) - at_zero
    return (clean - at_zero) / slope


def known_snr(t: torch.Tensor) -> np.ndarray:
    """SNR(t) = alpha_bar / (1 - alpha_bar) from the config's own numbers (SD's
    scaled-linear betas), in float64, computed without the scheduler."""
    c = scheduler_config()
    assert c["beta_schedule"] == "scaled_linear"
    betas = np.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, c["num_train_timesteps"], dtype=np.float64) ** 2
    alpha_bar = np.cumprod(1 - betas)
    return (alpha_bar / (1 - alpha_bar))[t.numpy()]


def min_snr_weight(snr: np.ndarray, gamma: float, kind: str) -> np.ndarray:
    """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for noise prediction,
    min(SNR, gamma) / (SNR + 1) for v-prediction."""
    return np.minimum(snr, gamma) / (snr + 1 if kind == "v_prediction" else snr)


# -- the target and the loss ------------------------------------------------------------------
@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("shape", [(64, 4, 8, 8), (8, 4, 3, 8, 8)], ids=["stage1", "stage2"])
@pytest.mark.parametrize("noise_offset", [0.0, 0.1])
def test_the_target_is_what_the_pipelines_scheduler_step_inverts(kind, shape, noise_offset):
    """A prediction equal to the target takes the noisy latents back to the clean ones
    through the pipeline's DDIM step (so the trained network denoises at inference)."""
    train, inference = schedulers(kind)
    generator = torch.Generator().manual_seed(1)
    clean = torch.randn(shape, generator=generator)
    noisy, noise, t = add_noise(train, clean, generator, noise_offset)
    assert not torch.allclose(noisy, clean, atol=0.1)
    target = denoising_target(train, clean, noise, t)
    torch.testing.assert_close(clean_from(inference, target, t, noisy), clean, atol=1e-4, rtol=1e-4)


def test_a_prediction_type_training_has_no_target_for_is_refused():
    with pytest.raises(ValueError, match="'sample'"):
        training_scheduler({**scheduler_config(), "prediction_type": "sample"})


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_the_loss_is_zero_at_the_target_and_the_mean_squared_error_elsewhere(kind, gamma):
    train, _ = schedulers(kind)
    generator = torch.Generator().manual_seed(2)
    clean = torch.randn(6, 4, 8, 8, generator=generator)
    _, noise, t = add_noise(train, clean, generator)
    target = denoising_target(train, clean, noise, t)
    assert float(denoising_loss(target, target, train, t, gamma)) == 0.0
    error = torch.randn(target.shape, generator=generator)
    per_sample = error.pow(2).flatten(1).mean(1).numpy()
    weights = min_snr_weight(known_snr(t), gamma, kind) if gamma else np.ones(len(t))
    assert float(denoising_loss(target + error, target, train, t, gamma)) == pytest.approx(
        float(np.mean(per_sample * weights)), rel=1e-4)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_min_snr_weighting_matches_its_formula_on_known_snrs(kind):
    train, _ = schedulers(kind)
    gamma = 5.0
    t = torch.tensor([0, 50, 200, 400, 600, 999])
    snr = known_snr(t)
    assert snr[0] > gamma > snr[-1]  # both sides of the clamp are checked
    target = torch.zeros(len(t), 4, 8, 8)
    for i in range(len(t)):  # one sample at a time: each loss is that sample's weight (unit error)
        loss = denoising_loss(target[i : i + 1] + 1, target[i : i + 1], train, t[i : i + 1], gamma)
        assert float(loss) == pytest.approx(min_snr_weight(snr[i : i + 1], gamma, kind)[0], rel=1e-4), int(t[i])


def test_timesteps_are_drawn_uniformly_over_the_whole_schedule():
    train, _ = schedulers("epsilon")
    n = train.config.num_train_timesteps
    _, _, t = add_noise(train, torch.zeros(20_000, 1, 1, 1), torch.Generator().manual_seed(3))
    assert t.shape == (20_000,) and t.dtype == torch.long
    assert int(t.min()) == 0 and int(t.max()) == n - 1
    shares = np.histogram(t.numpy(), bins=10, range=(0, n))[0] / len(t)
    assert np.all(np.abs(shares - 0.1) < 0.015), shares


@pytest.mark.parametrize("shape", [(8, 4, 16, 16), (8, 4, 3, 16, 16)], ids=["stage1", "stage2"])
def test_the_noise_offset_is_one_constant_per_sample_and_channel(shape):
    """Constant over space (and frames), different between samples and between channels."""
    train, _ = schedulers("epsilon")
    offset = 10.0
    _, noise, _ = add_noise(train, torch.zeros(shape), torch.Generator().manual_seed(4), offset)
    means = noise.flatten(2).mean(2)  # (B, C)
    residual = noise - means.view(*means.shape, *(1,) * (noise.ndim - 2))
    assert 0.8 < float(residual.std()) < 1.2  # the plain unit noise: the offset does not vary inside a channel
    # Shared offsets would leave the means spread like the plain noise's (std 1/sqrt(pixels)).
    assert float(means.std(dim=0).min()) > offset / 10  # differs between samples, in every channel
    assert float(means.std(dim=1).min()) > offset / 10  # differs between channels, in every sample
    _, plain, _ = add_noise(train, torch.zeros(shape), torch.Generator().manual_seed(4))
    assert float(plain.flatten(2).mean(2).abs().max()) < 1  # no offset unless asked for


# -- the latent scale -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets():
    """Stage 1 tiny networks, as `train.py --tiny` builds them."""
    return build_networks(TrainConfig.load(None, tiny=True), None)


def _images(n: int, side: int = SIDE, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def own_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The autoencoder's own, unscaled latents: a VAE's posterior mean, or a plain autoencoder's."""
    out = vae.encode(images)
    return out.latent_dist.mean if hasattr(out, "latent_dist") else out.latents


@pytest.fixture
def vae(nets):
    scale = nets.vae.config.scaling_factor
    yield nets.vae
    nets.vae.register_to_config(scaling_factor=scale)


def test_latents_are_the_vaes_scaled_by_its_own_factor_and_decoded_divided_by_it(vae):
    images = to_model_range(_images(2, 64))
    vae.register_to_config(scaling_factor=1.0)
    with torch.no_grad():
        raw = encode_latents(vae, images)
        torch.testing.assert_close(raw, own_latents(vae, images))
        for scale in (0.25, 3.0):  # neither SD's 0.18215 nor 1
            vae.register_to_config(scaling_factor=scale)
            latents = encode_latents(vae, images)
            torch.testing.assert_close(latents, raw * scale)
            torch.testing.assert_close(decode_latents(vae, latents), vae.decode(raw).sample)


def _batch(n: int, frames: int = 1, same: bool = True, seed: int = 6) -> dict[str, torch.Tensor]:
    """A collated batch of `samples.py` items; with `same`, every target frame is the reference."""
    reference = _images(n, seed=seed)
    target = np.repeat(reference[:, None], frames, axis=1) if same else _images(n * frames, seed=seed + 1).reshape(
        n, frames, SIDE, SIDE, 3)
    batch = dict(reference=reference, target=target, motion=_images(n * frames, seed=seed + 2).reshape(target.shape),
                 clip=_images(2 * n, 32, seed + 3).reshape(n, 2, 32, 32, 3))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


@pytest.mark.parametrize("stage", [1, 2])
def test_training_latents_are_the_pipelines_in_layout_and_scale(nets, vae, stage):
    """The pipeline's decoding turns the latents training denoises back into what the VAE
    makes of the target frames; frames and motion maps keep their order."""
    vae.register_to_config(scaling_factor=0.5)
    frames = 1 if stage == 1 else 3
    batch = _batch(2, frames, same=False)
    config = TrainConfig.load(None, tiny=True, stage=stage, clip_frames=max(frames, 2), uncond_prob=0.0)
    inputs = step_inputs(batch, nets, config, torch.Generator().manual_seed(0), drop=True)
    latents = inputs.latents if stage == 2 else inputs.latents[:, :, None]  # (B, C, F, h, w)
    pipe = pipeline_of(nets, SIDE)
    for key, value in scheduler_config().items():  # the pipeline training exports samples as training noised
        assert pipe.scheduler.config[key] == value, key
    for b in range(2):
        decoded = np.stack(list(pipe.decode(latents[b : b + 1])))
        with torch.no_grad():
            own = vae.decode(own_latents(vae, to_model_range(batch["target"][b].numpy()))).sample
        assert np.abs(decoded.astype(int) - from_model_range(own).astype(int)).max() <= 1, b
        for f in range(frames):
            expected = to_model_range(batch["motion"][b, f, None].numpy())[0]
            torch.testing.assert_close(inputs.motion[b * frames + f], expected)


def test_the_tiny_models_latent_scale_gives_unit_variance(vae):
    images = _images(8, 64)
    vae.register_to_config(scaling_factor=calibrate_latent_scale(vae, images))
    with torch.no_grad():
        assert float(encode_latents(vae, to_model_range(images)).std()) == pytest.approx(1.0, rel=1e-3)


# -- the loop's step, end to end --------------------------------------------------------------
class Oracle(torch.nn.Module):
    """A denoiser that knows the clean latents (the reference's: every batch target here is
    the reference frame) and answers what the pipeline's scheduler inverts to them, plus
    `error`. It records the timesteps it was asked about."""

    def __init__(self, inference: DDIMScheduler, error: float = 0.0):
        super().__init__()
        self.inference, self.error, self.timesteps = inference, error, []

    def forward(self, noisy, t, reference_latents, reference_context, unet_context, motion, guide=None):
        self.timesteps.append(t.clone())
        clean = reference_latents.float()
        if noisy.ndim == 5:
            clean = clean[:, :, None].expand_as(noisy)
        return inverting_prediction(self.inference, clean, t, noisy) + self.error


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("stage", [1, 2])
def test_a_step_of_training_scores_the_prediction_the_pipeline_inverts_at_zero(nets, vae, kind, stage):
    """Through the loop's own batch -> latents -> noise -> loss path: zero loss for the
    prediction the pipeline's scheduler turns into the target frames; for that prediction
    plus a known error, the min-SNR weighted mean of that error at the step's timesteps."""
    vae.register_to_config(scaling_factor=0.5)
    train, inference = schedulers(kind)
    frames = 1 if stage == 1 else 3
    config = TrainConfig.load(None, tiny=True, stage=stage, clip_frames=max(frames, 2), noise_offset=0.1,
                              min_snr_gamma=5.0)
    inputs = step_inputs(_batch(32, frames), nets, config, torch.Generator().manual_seed(0), drop=True)
    exact = Oracle(inference)
    assert float(step_loss(exact, train, inputs, torch.Generator().manual_seed(7), config)) < 1e-8
    t = exact.timesteps[-1]
    assert int(t.min()) < 200 and int(t.max()) > 800  # drawn over the schedule, one per sample
    for timestep in (0, 999):  # validation's fixed timesteps
        assert float(step_loss(exact, train, inputs, torch.Generator().manual_seed(7), config, timestep)) < 1e-8
        assert torch.equal(exact.timesteps[-1], torch.full_like(t, timestep))
    off = Oracle(inference, error=0.5)
    loss = float(step_loss(off, train, inputs, torch.Generator().manual_seed(7), config))
    assert torch.equal(off.timesteps[-1], t)  # the same draws for the same generator
    assert loss == pytest.approx(0.25 * float(np.mean(min_snr_weight(known_snr(t), 5.0, kind))), rel=1e-3)


def test_the_trained_denoiser_predicts_as_the_pipeline_does(nets):
    """Training's wiring of ReferenceNet, PoseGuider and UNet is the pipeline's: the same
    weights give the same prediction (the exported UNet's temporal layers start at identity)."""
    pipe = pipeline_of(nets, 64)
    g = torch.Generator().manual_seed(10)
    dim = nets.denoiser.unet.config.cross_attention_dim
    noisy, reference = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    reference_context, unet_context = torch.randn(2, 1, dim, generator=g), torch.randn(2, 1, dim, generator=g)
    motion = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    t = torch.tensor([100, 700])
    with torch.no_grad():
        mine = nets.denoiser(noisy, t, reference, reference_context, unet_context, motion)
        reference_features(pipe.reference_net, pipe.bank, reference, reference_context)
        theirs = predict_noise(pipe.unet, pipe.pose_injector, noisy[:, :, None], t, unet_context,
                               pipe.pose_guider(motion))[:, :, 0]
    pipe.bank.clear()
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


# -- classifier-free dropout ------------------------------------------------------------------
def test_dropout_replaces_both_embeddings_by_exactly_the_unconditional_ones():
    generator = torch.Generator().manual_seed(8)
    emb = ReferenceEmbeddings(torch.randn(4, 1, 8, generator=generator), torch.randn(4, 1, 8, generator=generator))
    drop = torch.tensor([True, False, True, False])
    out = drop_image_conditioning(emb, drop)
    for i, dropped in enumerate(drop.tolist()):
        for mine, theirs in ((out.reference_net, emb.reference_net), (out.unet, emb.unet)):
            assert torch.equal(mine[i], unconditional(theirs)[i] if dropped else theirs[i]), (i, dropped)


def test_training_drops_the_conditioning_of_its_share_of_samples_and_only_in_training(nets):
    n, share = 128, 0.3
    config = TrainConfig.load(None, tiny=True, uncond_prob=share)
    batch = _batch(n)
    kept = step_inputs(batch, nets, config, torch.Generator().manual_seed(9), drop=False).embeddings  # validation
    for e in (kept.reference_net, kept.unet):
        assert not any(torch.equal(e[i], unconditional(e)[i]) for i in range(n))
    emb = step_inputs(batch, nets, config, torch.Generator().manual_seed(9), drop=True).embeddings
    dropped = []
    for i in range(n):
        both = [torch.equal(e[i], unconditional(e)[i]) for e in (emb.reference_net, emb.unet)]
        assert both[0] == both[1], i  # both networks' embeddings, or neither
        if not both[0]:
            assert torch.equal(emb.reference_net[i], kept.reference_net[i]) and torch.equal(emb.unet[i], kept.unet[i])
        dropped.append(both[0])
    assert abs(np.mean(dropped) - share) < 0.12, np.mean(dropped)


# -- samples and settings -------------------------------------------------------------------
def test_landmarks_follow_their_pixels_when_a_crop_is_resized():
    """Pixel edges map to pixel edges (centres at integer coordinates): -0.5 and 255.5 in a
    256 px crop are -0.5 and 63.5 at 64 px, and the middle stays the middle."""
    points = np.array([[-0.5, 255.5], [127.5, 127.5]])
    np.testing.assert_allclose(resize_landmarks(points, 256, 64), [[-0.5, 63.5], [31.5, 31.5]])


def test_scaling_ranges_and_optimiser_settings_reach_what_they_name():
    config = TrainConfig.load(None, part_scale=(0.9, 1.1), face_scale=(0.6, 1.4), optimizer="adamw",
                              learning_rate=3e-4, adam_betas=(0.8, 0.95), adam_eps=1e-6, weight_decay=0.05)
    assert config.scaling == ScalingConfig(part_range=(0.9, 1.1), face_range=(0.6, 1.4))
    group = make_optimizer([torch.nn.Parameter(torch.zeros(2))], config).param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"]) == (3e-4, (0.8, 0.95), 1e-6, 0.05)


# -- what each stage trains -------------------------------------------------------------------
def _trainable(module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_stage1_trains_referencenet_unet_and_pose_guider_and_freezes_vae_and_clip(nets):
    d = nets.denoiser
    for network in (d.reference_net, d.unet, d.pose_guider):
        assert all(p.requires_grad for p in network.parameters()), type(network).__name__
    for network in (nets.vae, nets.image_encoder):
        assert not any(p.requires_grad for p in network.parameters()), type(network).__name__
    assert {id(p) for p in d.trainable()} == {id(p) for p in d.parameters()}  # what the optimiser gets


def test_stage2_trains_only_the_temporal_layers(nets, tmp_path):
    config = TrainConfig.load(None, tiny=True)
    export_model(nets, tmp_path / "model", stage=1, step=0, config=config)
    two = build_networks(TrainConfig.load(None, tiny=True, stage=2), check_init(tmp_path / "model", 2))
    unet = two.denoiser.unet
    temporal = {f"{prefix}.{name}" for prefix, m in unet.named_modules() if isinstance(m, AnimateDiffTransformer3D)
                for name, _ in m.named_parameters()}
    assert temporal and _trainable(unet) == temporal
    for network in (two.denoiser.reference_net, two.denoiser.pose_guider, two.vae, two.image_encoder):
        assert not _trainable(network), type(network).__name__
    assert {id(p) for p in two.denoiser.trainable()} == {id(p) for n, p in unet.named_parameters() if n in temporal}


def test_stage1_freezes_only_what_cannot_change_the_loss():
    """The parameters frozen as unused get no gradient; the UNet and the PoseGuider train
    whole, and so does ReferenceNet up to its last self-attention."""
    nets = build_networks(TrainConfig.load(None, tiny=True), None)
    d = nets.denoiser
    probe = probe_inputs(nets)
    unused = set(freeze_unused(d, probe))
    assert unused and all(name.startswith("reference_net.") for name in unused)
    assert _trainable(d.unet) == {n for n, _ in d.unet.named_parameters()}
    assert _trainable(d.pose_guider) == {n for n, _ in d.pose_guider.named_parameters()}
    assert any("attn1" in name for name in _trainable(d.reference_net))
    d.requires_grad_(True)
    d(**probe).square().mean().backward()
    assert {n for n, p in d.named_parameters() if p.grad is None or not p.grad.any()} >= unused
