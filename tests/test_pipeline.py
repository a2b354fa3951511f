"""The diffusion engine on tiny random models: determinism, wiring of every condition,
window handling, streaming, and weight round-trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vivid import VividPipeline
from vivid.models import WeightsError
from vivid.pipeline import FrameEvent, ProgressEvent

FAST = dict(window=4, overlap=1, steps=2)


@pytest.fixture(scope="module")
def pipe():
    return VividPipeline.tiny(seed=0)


@pytest.fixture(scope="module")
def driving(astronaut):
    """A short driving clip: the astronaut moving right."""
    return [np.roll(astronaut, 3 * i, axis=1) for i in range(6)]


@pytest.fixture(scope="module")
def prepared(pipe, astronaut, driving):
    return pipe.prepare_reference(astronaut), pipe.prepare_driving(driving)


def run(pipe, prepared, **kw):
    ref, motion = prepared
    args = {**FAST, **kw}
    return np.stack([e.frame for e in pipe.generate(ref, motion, **args) if e.kind == "frame"])


def test_output_count_shape_dtype_and_determinism(pipe, prepared, astronaut, driving):
    frames = pipe(astronaut, driving, **FAST)
    assert len(frames) == len(driving)
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    a, b, c = run(pipe, prepared, seed=1), run(pipe, prepared, seed=1), run(pipe, prepared, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_reference_changes_the_output_and_reference_attention_is_wired(pipe, prepared, grace_hopper):
    base = run(pipe, prepared)
    other = (pipe.prepare_reference(grace_hopper), prepared[1])
    assert not np.array_equal(base, run(pipe, other))
    pipe.bank.enabled = False
    try:
        assert not np.array_equal(base, run(pipe, prepared))
    finally:
        pipe.bank.enabled = True
    assert np.array_equal(base, run(pipe, prepared))


def test_zero_pose_guider_ignores_motion_until_trained(astronaut, driving):
    pipe = VividPipeline.tiny(seed=0)
    ref = pipe.prepare_reference(astronaut)
    moving = pipe.prepare_driving(driving)
    still = pipe.prepare_driving([driving[0]] * len(driving))
    assert np.array_equal(run(pipe, (ref, moving)), run(pipe, (ref, still)))
    with torch.no_grad():
        torch.manual_seed(0)
        pipe.pose_guider.conv_out.weight.normal_(std=0.5)
    assert not np.array_equal(run(pipe, (ref, moving)), run(pipe, (ref, still)))


def test_fg_and_bg_embeddings_reach_their_networks(pipe, prepared):
    from vivid.conditioning import reference_embeddings

    ref = prepared[0]
    seen = {}

    def grab(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, kwargs["encoder_hidden_states"].detach().clone())
        return hook

    handles = [pipe.reference_net.register_forward_pre_hook(grab("reference_net"), with_kwargs=True),
               pipe.unet.register_forward_pre_hook(grab("unet"), with_kwargs=True)]
    try:
        run(pipe, prepared, guidance=3.0)
    finally:
        for h in handles:
            h.remove()
    emb = reference_embeddings(pipe.image_encoder, pipe.feature_extractor, ref.image, ref.person)
    # Guided batches: unconditional (zeros) first, then the condition.
    assert torch.allclose(seen["reference_net"][1], emb.reference_net[0], atol=1e-5)
    assert torch.allclose(seen["reference_net"][0], torch.zeros_like(emb.reference_net[0]))
    frames = seen["unet"].shape[0] // 2
    assert torch.allclose(seen["unet"][frames:], emb.unet[0].expand(frames, -1, -1), atol=1e-5)
    assert not torch.allclose(emb.reference_net, emb.unet)  # person and scene differ
    whole = reference_embeddings(pipe.image_encoder, pipe.feature_extractor, ref.image, ref.person, separate=False)
    assert torch.allclose(whole.reference_net, whole.unet)


def test_reference_net_and_clip_run_once_per_video(pipe, prepared):
    calls = {"reference_net": 0, "image_encoder": 0, "unet": 0}
    handles = [getattr(pipe, n).register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls]
    try:
        run(pipe, prepared, steps=3, window=4, overlap=1, cyclic=True)
    finally:
        for h in handles:
            h.remove()
    assert calls["reference_net"] == 1 and calls["image_encoder"] == 1
    from vivid.windows import context_windows

    assert calls["unet"] == sum(len(context_windows(6, 4, 1, step=s, cyclic=True)) for s in range(3))


def test_overlaps_are_averaged_without_guidance(pipe, prepared, monkeypatch):
    """The peers' bug: with guidance <= 1 overlapping predictions were summed."""
    seen = []
    monkeypatch.setattr(pipe, "_predict_window", lambda latents, frames, *a: torch.ones_like(latents[:, :, frames]))
    step = pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda noise, t, x: (seen.append(noise), step(noise, t, x))[1])
    run(pipe, prepared, guidance=1.0, window=4, overlap=3, steps=2)
    assert seen and all(torch.allclose(n, torch.ones_like(n)) for n in seen)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_short_videos(pipe, astronaut, n):
    ref = pipe.prepare_reference(astronaut)
    motion = pipe.prepare_driving([astronaut] * n)
    frames = run(pipe, (ref, motion), window=4, overlap=2)
    assert len(frames) == n


def test_stream_events_and_early_close(pipe, prepared):
    ref, motion = prepared
    events = pipe.generate(ref, motion, **FAST)
    first = next(events)
    assert isinstance(first, ProgressEvent) and first.step == 1 and first.total == 2
    assert first.preview is not None and first.preview.dtype == np.uint8 and first.preview.ndim == 3
    rest = list(events)
    frames = [e for e in rest if isinstance(e, FrameEvent)]
    assert [e.index for e in frames] == list(range(len(motion)))
    # Closing the generator stops the work and leaves no reference features behind.
    events = pipe.generate(ref, motion, **FAST)
    next(events)
    events.close()
    assert not pipe.bank.features


def test_bad_arguments(pipe, astronaut, driving):
    with pytest.raises(ValueError, match="overlap"):
        pipe(astronaut, driving, window=4, overlap=4)
    with pytest.raises(ValueError, match="steps"):
        pipe(astronaut, driving, steps=0)
    with pytest.raises(TypeError):
        pipe(astronaut, driving, windw=8)  # misspelt options are not swallowed
    from vivid.face import NoFaceError

    with pytest.raises(NoFaceError):
        pipe(np.full((128, 128, 3), 80, np.uint8), driving, **FAST)


def test_vae_scaling_factor_comes_from_the_vae(prepared):
    pipe = VividPipeline.tiny(seed=0)
    base = run(pipe, prepared)
    pipe.vae.register_to_config(scaling_factor=1.0)
    assert not np.array_equal(base, run(pipe, prepared))


def test_save_and_load_round_trip(pipe, prepared, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    assert list((tmp_path / "model" / "unet").glob("*.safetensors"))
    loaded = VividPipeline.from_pretrained(tmp_path / "model")
    assert loaded.config.resolution == 64 and loaded.config.face_backend == "mesh"
    assert np.array_equal(run(pipe, prepared), run(loaded, prepared))


def test_trained_weights_load_strictly(pipe, tmp_path):
    from safetensors.torch import save_file

    from vivid.pipeline import TRAINED_FILES

    for name, filename in TRAINED_FILES.items():
        save_file({k: v.contiguous() for k, v in getattr(pipe, name).state_dict().items()}, tmp_path / filename)
    fresh = VividPipeline.tiny(seed=1)
    fresh.load_trained(tmp_path)
    assert torch.equal(fresh.pose_guider.conv_in.weight, pipe.pose_guider.conv_in.weight)
    state = {k: v.contiguous() for k, v in pipe.pose_guider.state_dict().items()}
    del state["conv_out.bias"]
    save_file(state, tmp_path / TRAINED_FILES["pose_guider"])
    with pytest.raises(WeightsError, match="pose_guider.safetensors.*missing.*conv_out.bias"):
        fresh.load_trained(tmp_path)
    (tmp_path / TRAINED_FILES["unet"]).unlink()
    with pytest.raises(WeightsError, match="denoising_unet.safetensors.*not found"):
        fresh.load_trained(tmp_path)


def test_motion_maps_carry_the_reference_face_shape(pipe, astronaut, grace_hopper):
    """Driving motion moved onto the reference: with a still driver the maps show the
    reference's own parts where they are; without transfer they show the driver's face."""
    ref = pipe.prepare_reference(astronaut)
    moved = pipe.prepare_driving([grace_hopper] * 3, reference=ref)
    assert np.abs(moved.points[0] - ref.points).max() < 0.5
    assert np.abs(moved.points[2] - ref.points).mean() < 0.5  # tracking noise only
    own_shape = pipe.prepare_driving([grace_hopper] * 3, reference=ref, relative=False)
    assert np.abs(own_shape.points[0] - ref.points).mean() > 3 * np.abs(moved.points[0] - ref.points).mean() + 0.1
    # Head motion of the driver moves the reference's parts by the same relative amount.
    shifted = [np.roll(grace_hopper, 6 * i, axis=1) for i in range(3)]
    track = pipe.prepare_driving(shifted, reference=ref)
    step = (track.points[2] - track.points[0]).mean(axis=0)
    assert step[0] > 0.5 and abs(step[1]) < 0.5 * step[0]


def test_any_scheduler_and_seeded_stochastic_sampling(prepared):
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = VividPipeline.tiny(seed=0)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    a, b = run(pipe, prepared, seed=3), run(pipe, prepared, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, run(pipe, prepared, seed=4))


def test_paste_back_gives_reference_sized_frames(pipe, astronaut, driving):
    frames = pipe(astronaut[:400, :300], driving[:2], window=4, overlap=1, steps=1, paste_back=True)
    assert all(f.shape == (400, 300, 3) for f in frames)
    # Far from the face the portrait is untouched.
    assert np.array_equal(frames[0][-20:, :20], astronaut[380:400, :20])


def test_saved_folder_with_a_missing_tensor_is_refused(pipe, tmp_path):
    from safetensors.torch import load_file, save_file

    pipe.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "pose_guider" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["conv_out.bias"]
    save_file(state, weights)
    with pytest.raises(WeightsError, match="pose_guider.*missing.*conv_out.bias"):
        VividPipeline.from_pretrained(tmp_path / "model")
