"""VividPortraits-mini's building blocks: the shipped TAEF2 autoencoder, latents encoded once
per clip for training, the mini preset's networks and settings, and the shipped model as the
default of `VividPipeline.from_pretrained`."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_file
from vivid.conditioning import decode_latents, encode_latents, from_model_range, to_model_range
from vivid.models.builders import TAEF2_DIR, MiniConfig, mini_parts
from vivid.models.tiny_autoencoder import TinyAutoencoder, from_taesd_state_dicts
from vivid.training import PreparedClip, TrainConfig, read_index
from vivid.training.config import ConfigError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def taef2() -> TinyAutoencoder:
    return TinyAutoencoder.from_pretrained(TAEF2_DIR).float().eval()


def roundtrip(vae, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return from_model_range(decode_latents(vae, encode_latents(vae, to_model_range(image[None]))))[0]


# -- the autoencoder ----------------------------------------------------------------------------
def test_shipped_autoencoder_reconstructs_real_faces(taef2, astronaut):
    portrait = cv2.resize(astronaut[:320, 80:400], (128, 128), interpolation=cv2.INTER_AREA)
    assert psnr(roundtrip(taef2, portrait), portrait) > 25  # a random autoencoder gives ~10 dB
    frame = next(iter(__import__("av").open(str(shared_file("driving", "d3.mp4"))).decode(video=0)))
    face = cv2.resize(frame.to_ndarray(format="rgb24"), (128, 128), interpolation=cv2.INTER_AREA)
    assert psnr(roundtrip(taef2, face), face) > 30


def test_latents_are_the_flux2_layout_with_unit_spread(taef2, astronaut):
    image = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        z = encode_latents(taef2, to_model_range(image[None]))
    assert z.shape == (1, 32, 16, 16)
    assert 0.6 < float(z.std()) < 1.5  # what lets the mini model use them unscaled


def test_shift_and_scale_are_applied_on_encode_and_undone_on_decode(taef2, astronaut):
    image = to_model_range(cv2.resize(astronaut, (64, 64))[None])
    with torch.no_grad():
        raw = taef2.encode(image).latents
        taef2.register_to_config(scaling_factor=0.5, shift_factor=0.25)
        try:
            z = encode_latents(taef2, image)
            assert torch.allclose(z, (raw - 0.25) * 0.5, atol=1e-6)
            assert torch.allclose(decode_latents(taef2, z), taef2.decode(raw).sample, atol=1e-5)
        finally:
            taef2.register_to_config(scaling_factor=1.0, shift_factor=0.0)


def test_save_and_load_round_trip_keeps_every_tensor(taef2, tmp_path):
    taef2.save_pretrained(tmp_path / "ae")
    again = TinyAutoencoder.from_pretrained(tmp_path / "ae")
    for (k, a), (_, b) in zip(taef2.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_checkpoint_of_another_layout_is_refused_not_half_loaded(taef2):
    encoder = {f"{i}": t for i, t in enumerate(taef2.encoder.state_dict().values())}
    decoder = {f"{i}": t for i, t in enumerate(taef2.decoder.state_dict().values())}
    rebuilt = from_taesd_state_dicts(encoder, decoder)  # positions match: accepted
    assert torch.equal(rebuilt.encoder[0].weight, taef2.encoder[0].weight.float())
    with pytest.raises(ValueError, match="does not fit"):
        from_taesd_state_dicts(encoder, decoder, {"latent_channels": 16})
    with pytest.raises(ValueError, match="holds"):
        from_taesd_state_dicts(dict(list(encoder.items())[:-1]), decoder)


# -- the mini networks --------------------------------------------------------------------------
def test_mini_parts_fit_the_latent_space_and_each_other():
    parts = mini_parts(seed=0)
    unet = parts.unet2d
    assert unet.config.in_channels == unet.config.out_channels == parts.vae.config.latent_channels == 32
    assert parts.pose_guider.config.out_channels == unet.config.block_out_channels[0]
    assert parts.image_encoder.config.projection_dim == unet.config.cross_attention_dim
    assert tuple(parts.adapter.config.block_out_channels) == tuple(unet.config.block_out_channels)
    millions = sum(p.numel() for p in unet.parameters()) / 1e6
    assert 5 < millions < 40  # narrow enough for two CPU cores (SD 1.5: 860)
    with torch.no_grad():  # a frame's worth of everything runs end to end
        pose = parts.pose_guider(torch.zeros(1, 3, 128, 128))
        out = unet(torch.randn(1, 32, 16, 16), 10, encoder_hidden_states=torch.randn(1, 1, 128)).sample
    assert pose.shape == (1, 64, 16, 16) and out.shape == (1, 32, 16, 16)


def test_mini_sizes_come_from_one_config():
    parts = mini_parts(seed=0, config=MiniConfig(block_out_channels=(32, 64, 128), attention_head_dim=16))
    assert tuple(parts.unet2d.config.block_out_channels) == (32, 64, 128)
    assert parts.pose_guider.config.out_channels == 32


def test_mini_settings_refuse_what_cannot_work(tmp_path):
    from conftest import ROOT

    config = TrainConfig.load(ROOT / "train" / "configs" / "mini-stage1.yaml")
    assert config.mini and config.cache_latents and config.resolution >= 128
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.load(ROOT / "train" / "configs" / "mini-stage1.yaml", augment=True)
    with pytest.raises(ConfigError, match="choose one"):
        TrainConfig.load(ROOT / "train" / "configs" / "mini-stage1.yaml", tiny=True)


# -- latents encoded once -----------------------------------------------------------------------
def test_cached_latents_are_the_frames_encoded_and_are_made_once(data, taef2, tmp_path):
    import shutil

    from vivid.training.latent_cache import cache_latents, latents_path, load_latents
    from vivid.training.samples import SampleSpec, make_sample

    folder = tmp_path / "clip"
    shutil.copytree(read_index(data)[0]["folder"], folder)
    clip = PreparedClip(folder)
    tag = cache_latents([clip], taef2, 64, progress=False)
    cached = load_latents(clip, tag)
    assert cached.shape == (len(clip), 32, 8, 8)
    with torch.no_grad():
        direct = encode_latents(taef2, to_model_range(clip.frames([0, len(clip) - 1])))
    assert np.allclose(cached[[0, -1]], direct.numpy(), atol=2e-2)  # stored as float16
    made = os.stat(latents_path(clip, tag)).st_mtime_ns
    assert cache_latents([clip], taef2, 64, progress=False) == tag
    assert os.stat(latents_path(clip, tag)).st_mtime_ns == made  # not encoded again
    assert cache_latents([clip], taef2, 128, progress=False) != tag  # another resolution: another file
    sample = make_sample(clip, int(clip.reference_frames[0]), [3, 4], SampleSpec(stage=2, frames=2, latent_tag=tag), None)
    assert np.array_equal(sample["target_latents"], np.asarray(cached[[3, 4]], np.float32))
    assert np.array_equal(sample["reference_latents"], np.asarray(cached[int(clip.reference_frames[0])], np.float32))


# -- the shipped model as the default -----------------------------------------------------------
def test_from_pretrained_without_a_path_loads_the_shipped_model(tmp_path, monkeypatch):
    from vivid import VividPipeline
    from vivid.models import shipped
    from vivid.models.builders import Parts, tiny_parts

    tiny = tiny_parts(0)
    vae = TinyAutoencoder(latent_channels=4, block_out_channels=(8, 8, 8, 8), encoder_blocks=(1, 1, 1, 1),
                          decoder_blocks=(1, 1, 1, 1))
    parts = Parts(tiny.unet2d, tiny.adapter, vae, tiny.image_encoder, tiny.feature_extractor, tiny.pose_guider)
    VividPipeline(**parts.components(), resolution=64, parser="mesh").save_pretrained(tmp_path / "mini")
    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", tmp_path / "mini")
    for name in (None, "mini"):
        pipe = VividPipeline.from_pretrained(name, device="cpu", dtype="fp32", disk_offload=False)
        assert isinstance(pipe.vae, TinyAutoencoder) and pipe.config.resolution == 64
    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ValueError, match="shipped model"):
        VividPipeline.from_pretrained()


def test_validation_swaps_the_whole_reference_including_cached_latents(data, taef2, tmp_path):
    """With cached latents, "other reference" must swap the reference latents too (else it only
    swaps what CLIP sees, which is the separate "other CLIP" check)."""
    import shutil

    from vivid.training.latent_cache import cache_latents
    from vivid.training.samples import SampleSpec
    from vivid.training.samples import FrameRange
    from vivid.training.validation import build_checks

    clips = []
    for entry in read_index(data):
        shutil.copytree(entry["folder"], tmp_path / entry["id"])
        clips.append(PreparedClip(tmp_path / entry["id"]))
    tag = cache_latents(clips, taef2, 64, progress=False)
    checks = build_checks(clips, [FrameRange(0, 0, len(clips[0]))], SampleSpec(latent_tag=tag), count=3, seed=0)
    for check in checks:
        right, other, only_clip = (check.variants[k] for k in ("right", "other_reference", "other_clip"))
        assert not np.array_equal(other["reference_latents"], right["reference_latents"])
        assert not np.array_equal(other["reference"], right["reference"])
        assert np.array_equal(only_clip["reference_latents"], right["reference_latents"])
        assert not np.array_equal(only_clip["clip"], right["clip"])
        assert np.array_equal(only_clip["target_latents"], right["target_latents"])


# -- the mini model's noise schedule ------------------------------------------------------------
def test_v_prediction_on_a_zero_terminal_snr_schedule_inverts_through_the_pipelines_ddim():
    """What the mini model trains on: its target (v) turned back by the pipeline's own DDIM
    step gives the clean latents at every timestep, the first one (pure noise) included."""
    from diffusers import DDIMScheduler

    from vivid.models.builders import scheduler_config
    from vivid.training.losses import denoising_target, training_scheduler

    config = scheduler_config("v_prediction", zero_terminal_snr=True)
    train, infer = training_scheduler(config), DDIMScheduler(**config)
    assert float(train.alphas_cumprod[-1]) == 0.0  # the last training timestep is noise alone
    infer.set_timesteps(10)
    assert int(infer.timesteps[0]) == 999  # and sampling starts there
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(3, 32, 4, 4, generator=g), torch.randn(3, 32, 4, 4, generator=g)
    for t in [int(infer.timesteps[0]), int(infer.timesteps[4]), int(infer.timesteps[-1])]:
        ts = torch.full((3,), t)
        noisy = train.add_noise(clean, noise, ts)
        target = denoising_target(train, clean, noise, ts)
        recovered = infer.step(target, t, noisy).pred_original_sample
        assert torch.allclose(recovered, clean, atol=1e-4), t


def test_zero_terminal_snr_needs_v_prediction_and_stage_2_keeps_stage_1s_schedule(tmp_path):
    from vivid.training.networks import InitError, build_networks

    with pytest.raises(ConfigError, match="needs prediction_type v_prediction"):
        TrainConfig.load(zero_terminal_snr=True)
    # A stage 1 model that predicts epsilon, continued by stage 2 settings that say v: refused.
    from vivid import VividPipeline

    pipe = VividPipeline.tiny()
    pipe.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "training.json").write_text('{"stage": 1}')
    config = TrainConfig.load(tiny=True, stage=2, prediction_type="v_prediction", zero_terminal_snr=True)
    with pytest.raises(InitError, match="prediction_type epsilon"):
        build_networks(config, tmp_path / "model")
