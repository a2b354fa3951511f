"""The diffusion engine on tiny models, checked against known answers: the guidance formula,
the windows each step denoises (cyclic shift), averaging of overlaps, VAE scaling on both
sides, where each condition goes (CLIP fg/bg, reference latents and attention, pose
features), the unconditional branch, paste-back; plus determinism, streaming and weights.

Values are read off the components with hooks, and where a known function of the inputs is
needed the denoising UNet's forward is replaced by one (`KnownUNet`)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from test_reference_attention import attention
from vivid import VividPipeline
from vivid.conditioning import (
    ReferenceEmbeddings, drop_image_conditioning, encode_images, split_foreground_background, to_model_range,
)
from vivid.face import MotionTrack, paste_crop
from vivid.models import WeightsError
from vivid.pipeline import FrameEvent, ProgressEvent
from vivid.windows import context_windows, coverage

FAST = dict(window=4, overlap=1, steps=2)


@pytest.fixture(scope="module")
def pipe(analyzer):
    p = VividPipeline.tiny(seed=0)
    p.analyzer = analyzer
    return p


@pytest.fixture(scope="module")
def driving(astronaut):
    """A short driving clip: the astronaut moving right."""
    return [np.roll(astronaut, 8 * i, axis=1) for i in range(6)]


@pytest.fixture(scope="module")
def prepared(pipe, astronaut, driving):
    return pipe.prepare_reference(astronaut), pipe.prepare_driving(driving)


def run(pipe, prepared, **kw) -> np.ndarray:
    ref, motion = prepared
    args = {**FAST, **kw}
    return np.stack([e.frame for e in pipe.generate(ref, motion, **args) if e.kind == "frame"])


def longer(motion: MotionTrack, n: int) -> MotionTrack:
    """The same driving motion repeated to `n` frames."""
    points = [motion.points[i % len(motion)] for i in range(n)]
    return MotionTrack(points, motion.resolution, motion.square)


# -- a UNet with a known answer ---------------------------------------------------------------
UNCOND, COND = 1.0, 3.0


class KnownUNet:
    """Stands in for the denoising UNet's forward: for every sample and frame,
    noise = 0.5 * sample + (UNCOND where its CLIP context is the unconditional one (zeros),
    COND where it is the reference's) + offset(k), k counting the calls."""

    def __init__(self, log: list, offset=lambda k: 0.0):
        self.log, self.offset, self.calls = log, offset, 0

    def __call__(self, sample, timestep, encoder_hidden_states, **kwargs):
        b, _, f = sample.shape[:3]
        uncond = (encoder_hidden_states.reshape(b, f, -1) == 0).all(-1)  # (B, F)
        offset = float(self.offset(self.calls))
        self.calls += 1
        self.log.append(("unet", SimpleNamespace(sample=sample.clone(), t=timestep, uncond=uncond, offset=offset)))
        value = torch.where(uncond, UNCOND, COND) + offset
        return SimpleNamespace(sample=0.5 * sample + value[:, None, :, None, None])


def record_steps(monkeypatch, pipe, log: list) -> None:
    """Log every scheduler step: the (averaged, guided) noise, t, the latents in and out."""
    original = pipe.scheduler.step

    def step(noise, t, sample, **kwargs):
        out = original(noise, t, sample, **kwargs)
        log.append(("step", SimpleNamespace(noise=noise.clone(), t=t, sample=sample.clone(), prev=out.prev_sample.clone())))
        return out

    monkeypatch.setattr(pipe.scheduler, "step", step)


def known_unet(monkeypatch, pipe, offset=lambda k: 0.0) -> list:
    log: list = []
    monkeypatch.setattr(pipe.unet, "forward", KnownUNet(log, offset))
    record_steps(monkeypatch, pipe, log)
    return log


def per_step(log: list) -> list[tuple[SimpleNamespace, list]]:
    """[(scheduler step, the UNet calls that led to it)] in order."""
    out, calls = [], []
    for kind, rec in log:
        if kind == "step":
            out.append((rec, calls))
            calls = []
        else:
            calls.append(rec)
    return out


def frames_of(window: torch.Tensor, latents: torch.Tensor) -> list[int]:
    """Which frames of the video latents (1, C, N, h, w) a window (C, F, h, w) holds."""
    found = []
    for j in range(window.shape[1]):
        match = [f for f in range(latents.shape[2]) if torch.equal(window[:, j], latents[0, :, f])]
        assert len(match) == 1, f"window frame {j} matches video frames {match}"
        found.append(match[0])
    return found


# -- guidance ---------------------------------------------------------------------------------
@pytest.mark.parametrize("guidance", [3.5, 2.0])
def test_guided_noise_is_uncond_plus_guidance_times_cond_minus_uncond(pipe, prepared, monkeypatch, guidance):
    log = known_unet(monkeypatch, pipe)
    run(pipe, prepared, guidance=guidance)
    steps = per_step(log)
    assert len(steps) == FAST["steps"]
    for step, calls in steps:
        for call in calls:  # one unconditional and one conditional sample, each frame alike
            assert call.uncond.shape[0] == 2 and sorted(call.uncond[:, 0].tolist()) == [False, True]
            assert (call.uncond == call.uncond[:, :1]).all()
        expected = 0.5 * step.sample + UNCOND + guidance * (COND - UNCOND)
        assert torch.allclose(step.noise, expected, atol=1e-5), "guided noise is not uncond + g * (cond - uncond)"


def test_without_guidance_the_unet_sees_only_the_condition(pipe, prepared, monkeypatch):
    log = known_unet(monkeypatch, pipe)
    run(pipe, prepared, guidance=1.0)
    for step, calls in per_step(log):
        assert all(call.uncond.shape[0] == 1 and not call.uncond.any() for call in calls)
        assert torch.allclose(step.noise, 0.5 * step.sample + COND, atol=1e-5)


# -- windows, cyclic shift, averaging --------------------------------------------------------------
@pytest.mark.parametrize("wrap", [None, False, True])
def test_each_denoising_step_uses_the_cyclic_windows_of_that_step(pipe, prepared, monkeypatch, wrap):
    """The paper's cyclic overlap: the windows the UNet denoises move one frame per step
    (clamped at the video's ends unless `wrap`; clamped by default)."""
    ref, motion = prepared
    n, window, overlap, steps = 11, 4, 1, 4
    log = known_unet(monkeypatch, pipe)
    kw = {} if wrap is None else {"wrap": wrap}
    list(pipe.generate(ref, longer(motion, n), window=window, overlap=overlap, steps=steps, guidance=1.0, **kw))
    recorded = per_step(log)
    assert [s.t for s, _ in recorded] == list(pipe.scheduler.timesteps)
    in_overlap: set[int] = set()
    for i, (step, calls) in enumerate(recorded):
        seen = [frames_of(call.sample[0], step.sample) for call in calls]
        assert all(call.t == step.t for call in calls)  # the UNet is asked about this step's t
        expected = context_windows(n, window, overlap, step=i, cyclic=True, wrap=bool(wrap))
        assert sorted(seen) == sorted(expected), f"step {i}: UNet saw windows {seen}, cyclic schedule says {expected}"
        in_overlap |= set(torch.nonzero(coverage(seen, n) > 1).flatten().tolist())
    # What the shift is for: every frame (but the clamped ends) is in an overlap at some step.
    assert in_overlap >= (set(range(n)) if wrap else set(range(1, n - 1)))


def test_without_cyclic_every_step_uses_the_same_windows(pipe, prepared, monkeypatch):
    ref, motion = prepared
    log = known_unet(monkeypatch, pipe)
    list(pipe.generate(ref, longer(motion, 11), window=4, overlap=1, steps=3, guidance=1.0, cyclic=False))
    for step, calls in per_step(log):
        assert sorted(frames_of(c.sample[0], step.sample) for c in calls) == context_windows(11, 4, 1)


@pytest.mark.parametrize("guidance", [1.0, 3.5])
def test_overlapping_window_predictions_are_averaged_per_frame(pipe, prepared, monkeypatch, guidance):
    """Each window's prediction is offset by 10 x its call number; every frame must get the
    mean over the windows holding it (the peers summed overlaps when guidance <= 1)."""
    log = known_unet(monkeypatch, pipe, offset=lambda k: 10.0 * k)
    run(pipe, prepared, window=4, overlap=3, steps=2, guidance=guidance)
    guided = COND if guidance <= 1 else UNCOND + guidance * (COND - UNCOND)
    for step, calls in per_step(log):
        n = step.sample.shape[2]
        sums, counts = torch.zeros(n), torch.zeros(n)
        for call in calls:
            frames = frames_of(call.sample[0], step.sample)
            sums[frames] += call.offset
            counts[frames] += 1
        assert (counts >= 1).all() and counts.max() >= 2  # there are overlaps to average
        expected = 0.5 * step.sample + guided + (sums / counts).view(1, 1, n, 1, 1)
        assert torch.allclose(step.noise, expected, atol=1e-4), "overlaps are not averaged with equal weights"


# -- VAE scaling -----------------------------------------------------------------------------
def test_decoder_gets_the_final_latents_divided_by_the_vae_scaling_factor(pipe, prepared, monkeypatch):
    """With a scaling factor of 0.5 (not SD's 0.18215): latents are VAE space x 0.5, so the
    decoder must get latents / 0.5; and the reference latents are the VAE mean x 0.5."""
    ref, _ = prepared
    log: list = []
    record_steps(monkeypatch, pipe, log)
    decoded, reference = [], []
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z, *a, **k: (decoded.append(z.clone()), decode(z, *a, **k))[1])
    handle = pipe.reference_net.register_forward_pre_hook(lambda m, args: reference.append(args[0].clone()))
    old = pipe.vae.config.scaling_factor
    pipe.vae.register_to_config(scaling_factor=0.5)
    try:
        events = list(pipe.generate(ref, prepared[1], **FAST, decode_chunk=4))
    finally:
        pipe.vae.register_to_config(scaling_factor=old)
        handle.remove()
    final = per_step(log)[-1][0].prev  # (1, C, F, h, w)
    assert [z.shape[0] for z in decoded] == [4, 2]  # chunks of 4 frames, in order
    assert torch.allclose(torch.cat(decoded), final[0].permute(1, 0, 2, 3) / 0.5, atol=1e-6)
    assert len([e for e in events if e.kind == "frame"]) == 6
    with torch.no_grad():
        mean = pipe.vae.encode(to_model_range(ref.image[None])).latent_dist.mean
    assert torch.allclose(reference[0], torch.cat([mean, mean]) * 0.5, atol=1e-5)


def test_decode_turns_latents_into_frames_in_order(pipe, monkeypatch):
    """A VAE stand-in whose decoder is the identity (upsampled 8x): frame f of latents
    v_f * scaling_factor must come out as the colour (v_f + 1) * 127.5."""
    sf = pipe.vae.config.scaling_factor
    monkeypatch.setattr(pipe.vae, "decode", lambda z, *a, **k: SimpleNamespace(
        sample=z[:, :3].repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)))
    values = torch.tensor([-0.9, -0.5, -0.1, 0.2, 0.6, 0.95])
    latents = (values * sf).view(1, 1, 6, 1, 1).expand(1, 4, 6, 8, 8).contiguous()
    frames = list(pipe.decode(latents, chunk=4))
    assert len(frames) == 6
    for f, frame in enumerate(frames):
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        expected = int(torch.round((values[f] + 1) * 127.5))
        assert (frame == expected).all(), f"frame {f}: {np.unique(frame)} instead of {expected}"


# -- where every condition goes: one traced run of the real tiny model ------------------------
@pytest.fixture(scope="module")
def traced(pipe, prepared):
    """One guided run of the real tiny model (pose guider given random last-conv weights so
    its features are not zero), with everything the networks received recorded."""
    ref, motion = prepared
    rec = SimpleNamespace(ref_calls=[], ref_tokens={}, conv_in=[], attn={}, clip_calls=0, log=[])
    spatial = lambda model: [n.removesuffix(".processor") for n in model.attn_processors
                             if n.endswith("attn1.processor") and "motion_modules" not in n]
    handles = [
        pipe.reference_net.register_forward_pre_hook(
            lambda m, args, kw: rec.ref_calls.append((args[0].clone(), args[1].clone(), kw["encoder_hidden_states"].clone())),
            with_kwargs=True),
        pipe.unet.register_forward_pre_hook(
            lambda m, args, kw: rec.log.append(("unet", (args[0].clone(), kw["encoder_hidden_states"].clone()))),
            with_kwargs=True),
        pipe.unet.conv_in.register_forward_hook(lambda m, args, out: rec.conv_in.append((args[0].clone(), out.clone()))),
        pipe.image_encoder.register_forward_hook(lambda *a: setattr(rec, "clip_calls", rec.clip_calls + 1)),
    ]
    for name in spatial(pipe.reference_net):
        handles.append(pipe.reference_net.get_submodule(name).register_forward_pre_hook(
            lambda m, args, name=name: rec.ref_tokens.__setitem__(name, args[0].clone())))
    for name in spatial(pipe.unet):
        rec.attn[name] = []
        handles.append(pipe.unet.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: rec.attn[name].append((args[0].clone(), out.clone()))))
    saved = {k: v.clone() for k, v in pipe.pose_guider.state_dict().items()}
    with pytest.MonkeyPatch.context() as mp:
        record_steps(mp, pipe, rec.log)
        with torch.no_grad():
            torch.manual_seed(0)
            pipe.pose_guider.conv_out.weight.normal_(std=0.5)
            pipe.pose_guider.conv_out.bias.normal_(std=0.5)
        rec.pose_guider_state = {k: v.clone() for k, v in pipe.pose_guider.state_dict().items()}
        try:
            rec.frames = run(pipe, prepared, guidance=3.5, window=4, overlap=1, steps=2)
        finally:
            pipe.pose_guider.load_state_dict(saved)
            for h in handles:
                h.remove()
    rec.emb = ReferenceEmbeddings(*[
        encode_images(pipe.image_encoder, pipe.feature_extractor, [part])
        for part in split_foreground_background(ref.image, ref.person, 32)
    ])
    rec.steps = [s for kind, s in rec.log if kind == "step"]
    rec.unet_calls = [c for kind, c in rec.log if kind == "unet"]
    return rec


def test_reference_net_runs_once_on_the_scaled_vae_mean_of_the_reference_at_timestep_zero(pipe, prepared, traced):
    assert len(traced.ref_calls) == 1 and traced.clip_calls == 1  # once per video, not per step
    sample, t, _ = traced.ref_calls[0]
    with torch.no_grad():
        mean = pipe.vae.encode(to_model_range(prepared[0].image[None])).latent_dist.mean
    expected = mean * pipe.vae.config.scaling_factor
    assert sample.shape[0] == 2  # unconditional and conditional reference features
    assert torch.allclose(sample, expected.expand_as(sample), atol=1e-5)
    assert (t == 0).all()


def test_clip_foreground_conditions_reference_net_and_background_the_unet(traced):
    fg, bg = traced.emb.reference_net[0], traced.emb.unet[0]
    assert not torch.allclose(fg, bg, atol=1e-3)  # otherwise a swap could not be seen
    _, _, ref_context = traced.ref_calls[0]
    zero = [bool((c == 0).all()) for c in ref_context]
    assert sorted(zero) == [False, True]
    assert torch.allclose(ref_context[zero.index(False)], fg, atol=1e-5), "ReferenceNet is not given CLIP(foreground)"
    for sample, context in traced.unet_calls:
        frames = sample.shape[2]
        per_sample = context.view(2, frames, 1, -1)
        cond = [i for i in range(2) if not (per_sample[i] == 0).all()]
        assert len(cond) == 1
        assert torch.allclose(per_sample[cond[0]], bg.expand(frames, 1, -1), atol=1e-5), "UNet is not given CLIP(background)"


def test_unconditional_half_is_exactly_trainings_dropped_conditioning(traced):
    """Both CLIP contexts are the training dropout's; reference latents and motion are kept."""
    dropped = drop_image_conditioning(traced.emb, torch.tensor([True]))
    sample, _, ref_context = traced.ref_calls[0]
    uncond = [i for i in range(2) if (ref_context[i] == 0).all()][0]
    assert torch.equal(ref_context[uncond], dropped.reference_net[0])
    assert torch.equal(sample[0], sample[1])  # the reference image is kept
    for unet_sample, context in traced.unet_calls:
        frames = unet_sample.shape[2]
        per_sample = context.view(2, frames, 1, -1)
        assert any(torch.equal(per_sample[i], dropped.unet[0].expand(frames, 1, -1)) for i in range(2))
        assert torch.equal(unet_sample[0], unet_sample[1])  # same noisy latents in both halves


def test_pose_features_are_added_once_after_conv_in_to_their_own_frames(pipe, prepared, traced):
    motion = prepared[1]
    guider = type(pipe.pose_guider).from_config(pipe.pose_guider.config)
    guider.load_state_dict(traced.pose_guider_state)  # the traced run's (non-zero) guider
    with torch.no_grad():
        features = guider(to_model_range(motion.motion_maps(range(len(motion)))))  # (N, C, h, w)
    # Frames have distinct features, so a frame mix-up would show.
    assert min((features[i] - features[j]).abs().max() for i in range(6) for j in range(i)) > 1e-3
    conv = pipe.unet.conv_in
    calls = [(step, call) for step, calls in per_step(traced.log) for call in calls]
    assert len(calls) == len(traced.conv_in)  # conv_in runs once per UNet call
    for k, ((step, (sample, _)), (x, y)) in enumerate(zip(calls, traced.conv_in)):
        frames = frames_of(sample[0], step.sample)
        with torch.no_grad():
            added = y - F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)
        expected = torch.cat([features[frames], features[frames]])  # both halves, frames inner
        assert torch.allclose(added, expected, atol=1e-4), \
            f"UNet call {k} (frames {frames}) did not get its frames' pose features once, in both halves"


def test_every_unet_self_attention_attends_to_this_references_features_of_the_same_layer(pipe, traced):
    assert set(traced.attn) == set(traced.ref_tokens)
    for name, calls in traced.attn.items():
        attn = pipe.unet.get_submodule(name)
        assert calls, name
        for hidden, out in calls:
            frames = hidden.shape[0] // 2
            ref = traced.ref_tokens[name].repeat_interleave(frames, dim=0)  # uncond frames see uncond features
            with torch.no_grad():
                expected = attention(attn, hidden, torch.cat([hidden, ref], dim=1))
            assert torch.allclose(out, expected, atol=1e-4), name


def test_unet_runs_once_per_window_and_step(traced):
    expected = sum(len(context_windows(6, 4, 1, step=s, cyclic=True)) for s in range(2))
    assert len(traced.unet_calls) == expected and len(traced.steps) == 2


# -- output ---------------------------------------------------------------------------------
def test_paste_back_puts_each_generated_crop_where_the_face_was(pipe, prepared, monkeypatch):
    known_unet(monkeypatch, pipe)
    ref = prepared[0]
    crops = run(pipe, prepared, steps=1)
    pasted = run(pipe, prepared, steps=1, paste_back=True)
    assert pasted.shape == (len(crops),) + ref.source.shape
    for crop, frame in zip(crops, pasted):
        assert np.array_equal(frame, paste_crop(ref.source, crop, ref.square, pipe.crop))


def test_paste_back_gives_reference_sized_frames(pipe, astronaut, driving):
    frames = pipe(astronaut[:400, :300], driving[:2], window=4, overlap=1, steps=1, paste_back=True)
    assert all(f.shape == (400, 300, 3) for f in frames)
    # Far from the face the portrait is untouched.
    assert np.array_equal(frames[0][-20:, :20], astronaut[380:400, :20])


def test_output_count_shape_dtype_and_determinism(pipe, prepared, astronaut, driving):
    frames = pipe(astronaut, driving, **FAST)
    assert len(frames) == len(driving)
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    a, b, c = run(pipe, prepared, seed=1), run(pipe, prepared, seed=1), run(pipe, prepared, seed=2)
    assert np.array_equal(a, b)
    assert np.array_equal(np.stack(frames), run(pipe, prepared))  # __call__ is generate on prepared inputs
    assert not np.array_equal(a, c)


def test_untrained_pose_guider_leaves_the_output_independent_of_the_motion(pipe, prepared, driving):
    ref, moving = prepared
    still = pipe.prepare_driving([driving[0]] * len(driving))
    assert np.array_equal(run(pipe, (ref, moving)), run(pipe, (ref, still)))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_videos_no_longer_than_a_window_are_one_window(pipe, prepared, monkeypatch, n):
    ref, motion = prepared
    log = known_unet(monkeypatch, pipe)
    events = list(pipe.generate(ref, longer(motion, n), window=4, overlap=2, steps=2))
    assert [e.index for e in events if e.kind == "frame"] == list(range(n))
    for step, calls in per_step(log):
        assert [frames_of(c.sample[0], step.sample) for c in calls] == [list(range(n))]


def test_stream_events_and_early_close(pipe, prepared):
    ref, motion = prepared
    events = pipe.generate(ref, motion, **FAST)
    # A long video's step runs several windows: each but the last reports its share of the step.
    windows = len(context_windows(len(motion), FAST["window"], FAST["overlap"], step=0, cyclic=True))
    assert windows > 1
    within = [next(events) for _ in range(windows - 1)]
    assert all(e.kind == "progress" and e.step == 0 and e.preview is None for e in within)
    assert [e.within for e in within] == pytest.approx([k / windows for k in range(1, windows)])
    first = next(events)
    assert isinstance(first, ProgressEvent) and first.step == 1 and first.total == 2 and first.within == 0
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


def test_save_and_load_round_trip(pipe, prepared, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    assert list((tmp_path / "model" / "unet").glob("*.safetensors"))
    loaded = VividPipeline.from_pretrained(tmp_path / "model", torch_dtype=torch.float32)  # the saved precision
    assert loaded.config.resolution == 64 and loaded.config.parser == "mesh"
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


def test_saved_folder_with_a_missing_tensor_is_refused(pipe, tmp_path):
    from safetensors.torch import load_file, save_file

    pipe.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "pose_guider" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["conv_out.bias"]
    save_file(state, weights)
    with pytest.raises(WeightsError, match="pose_guider.*missing.*conv_out.bias"):
        VividPipeline.from_pretrained(tmp_path / "model")
