"""Training: settings, samples, one noise schedule, one-line refusals, and tiny runs of both
stages (export, stage 2 freezing, resume after a kill, two processes)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, talking as _talking
from vivid.media import write_video
from vivid.training import PreparedClip, TrainConfig, read_index
from vivid.training.config import ConfigError
from vivid.training.samples import FrameRange, SampleSpec, TrainingSamples, split_frames

TRAIN = [sys.executable, str(ROOT / "train" / "train.py")]
#: A few quick steps on the CPU: every step logged, no loader processes.
QUICK = ["--tiny", "--batch-size", "2", "--set", "num_workers=0", "--set", "val_samples=2",
         "--set", "sample_frames=4", "--set", "sample_steps=1", "--set", "log_every=1"]


def train(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- settings and samples ----------------------------------------------------------------------
def test_stage_configs_hold_the_papers_settings():
    one = TrainConfig.load(ROOT / "train" / "configs" / "stage1.yaml")
    two = TrainConfig.load(ROOT / "train" / "configs" / "stage2.yaml")
    for c in (one, two):
        assert (c.learning_rate, c.batch_size, c.resolution) == (1e-5, 1, 512)
        assert c.part_scale == (0.8, 1.2) and c.face_scale == (0.7, 1.3) and c.random_scaling
        assert c.weight_decay == 0 and c.noise_offset == 0 and c.min_snr_gamma == 0 and c.max_grad_norm == 0
    assert (one.stage, one.max_steps, one.optimizer) == (1, 120_000, "adam8bit")  # Adam, 8-bit state: fits 24 GB
    assert (two.stage, two.max_steps, two.clip_frames, two.optimizer) == (2, 30_000, 24, "adam8bit")


def test_unknown_or_impossible_settings_are_refused():
    with pytest.raises(ConfigError, match="learnig_rate"):
        TrainConfig.load(None, learnig_rate=1e-4)
    with pytest.raises(ConfigError, match="part_scale"):
        TrainConfig.load(None, part_scale=(1.2, 0.8))
    with pytest.raises(ConfigError, match="resolution"):
        TrainConfig.load(None, resolution=100)


def test_training_noise_schedule_is_the_inference_one():
    """Peers mixed `scaled_linear` in training with `linear` at inference (noisy backgrounds)."""
    from vivid import VividPipeline
    from vivid.training.losses import training_scheduler

    inference = VividPipeline.tiny().scheduler
    training = training_scheduler()
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "steps_offset",
                "rescale_betas_zero_snr", "timestep_spacing"):
        assert training.config[key] == inference.config[key], key
    assert torch.allclose(training.alphas_cumprod, inference.alphas_cumprod)


def test_samples_depend_only_on_seed_and_index(data):
    clips = [PreparedClip(e["folder"]) for e in read_index(data)]
    ranges, held = split_frames(clips, 0.25, 8)
    spec = SampleSpec(stage=2, resolution=64, frames=8, clip_size=32)
    a, b = TrainingSamples(clips, ranges, spec, 5, 100), TrainingSamples(clips, ranges, spec, 5, 100)
    for i in (0, 7, 99):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert not np.array_equal(a[0]["target"], TrainingSamples(clips, ranges, spec, 6, 100)[0]["target"])
    s = a[3]
    assert s["target"].shape == (8, 64, 64, 3) and s["motion"].shape == (8, 64, 64, 3) and s["clip"].shape == (2, 32, 32, 3)
    # Stage 2 runs are consecutive frames; training never reaches the held-back tail.
    for i in range(50):
        clip, reference, target, _ = a.choose(i)
        assert target == list(range(target[0], target[0] + 8))
        stop = next(r.stop for r in ranges if r.clip == clip)
        assert max(target) < stop and reference < stop
    assert all(r.start == next(t.stop for t in ranges if t.clip == r.clip) for r in held)


def test_random_scaling_is_in_the_training_maps_only_when_asked(data):
    clips = [PreparedClip(e["folder"]) for e in read_index(data)]
    ranges = [FrameRange(i, 0, len(c)) for i, c in enumerate(clips)]
    plain = TrainingSamples(clips, ranges, SampleSpec(resolution=64, clip_size=32, random_scaling=False), 0, 10)
    scaled = TrainingSamples(clips, ranges, SampleSpec(resolution=64, clip_size=32, random_scaling=True), 0, 10)
    assert np.array_equal(plain[1]["target"], scaled[1]["target"])
    assert not np.array_equal(plain[1]["motion"], scaled[1]["motion"])


def test_checkpointed_temporal_layers_keep_names_and_gradients():
    """Stage 2's memory saver recomputes the temporal layers in backward: same state dict
    (checkpoints and exported models unchanged), same gradients."""
    import copy

    from diffusers import UNetMotionModel

    from vivid.models.builders import tiny_parts
    from vivid.training.denoiser import checkpoint_temporal_layers

    parts = tiny_parts(0)
    plain = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
    plain.freeze_unet2d_params()
    wrapped = copy.deepcopy(plain)
    assert checkpoint_temporal_layers(wrapped) > 0
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    torch.manual_seed(0)
    x, t, context = torch.randn(1, 4, 4, 8, 8), torch.tensor([10]), torch.randn(4, 1, 32)
    for unet in (plain, wrapped):
        unet(x, t, encoder_hidden_states=context).sample.square().mean().backward()
    grads = [(a.grad, b.grad) for a, b in zip(plain.parameters(), wrapped.parameters()) if a.requires_grad]
    assert grads and all(a is not None and torch.allclose(a, b, atol=1e-6) for a, b in grads)


def test_stage2_keeps_the_frozen_spatial_unet_in_bf16_and_trains_fp32_temporal_layers():
    """What the Trainer does in stage 2 under bf16 mixed precision: the frozen spatial UNet
    halves in size, the temporal layers stay fp32 master weights, and a step under autocast
    still gives them fp32 gradients close to those of the all-fp32 UNet."""
    import copy

    from diffusers import UNetMotionModel

    from vivid.models.builders import tiny_parts
    from vivid.training.denoiser import cast_frozen

    parts = tiny_parts(0)
    full = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
    full.freeze_unet2d_params()
    half = copy.deepcopy(full)
    cast_frozen(half, torch.bfloat16)
    assert {p.dtype for p in half.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in half.parameters() if not p.requires_grad} == {torch.bfloat16}
    size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters() if not p.requires_grad)  # noqa: E731
    assert size(half) * 2 == size(full)
    torch.manual_seed(0)
    x, t, context = torch.randn(1, 4, 4, 8, 8), torch.tensor([10]), torch.randn(4, 1, 32)
    for unet in (full, half):
        with torch.autocast("cpu", torch.bfloat16):
            out = unet(x, t, encoder_hidden_states=context).sample
        out.float().square().mean().backward()
    grads = [(a.grad, b.grad) for a, b in zip(full.parameters(), half.parameters()) if a.requires_grad]
    assert grads and all(b is not None and b.dtype == torch.float32 for _, b in grads)
    a, b = torch.cat([g.flatten() for g, _ in grads]), torch.cat([g.flatten() for _, g in grads])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


# -- refusals ---------------------------------------------------------------------------------
def _refusal(capsys, *argv: str) -> str:
    sys.path.insert(0, str(ROOT / "train"))
    try:
        from train import main  # train/train.py
    finally:
        sys.path.pop(0)
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: "), err
    return err


def test_bad_inputs_are_refused_in_one_line_before_any_network_loads(capsys, tmp_path, data):
    run = str(tmp_path / "run")
    assert "no such data folder" in _refusal(capsys, "--stage", "1", "--data", str(tmp_path / "nope"), "--output", run)
    (tmp_path / "empty").mkdir()
    assert "index.jsonl" in _refusal(capsys, "--stage", "1", "--data", str(tmp_path / "empty"), "--output", run)
    broken = tmp_path / "broken"
    broken.mkdir()
    line = json.loads((data / "index.jsonl").read_text().splitlines()[0])
    (broken / "index.jsonl").write_text(json.dumps(line) + "\n")
    assert "missing" in _refusal(capsys, "--stage", "1", "--data", str(broken), "--output", run)
    assert "--init" in _refusal(capsys, "--stage", "2", "--data", str(data), "--output", run, "--tiny")
    from vivid import VividPipeline

    VividPipeline.tiny().save_pretrained(tmp_path / "not-stage-1")
    capsys.readouterr()
    assert "stage 1" in _refusal(capsys, "--stage", "2", "--data", str(data), "--output", run, "--init",
                                 str(tmp_path / "not-stage-1"))
    assert "no checkpoint" in _refusal(capsys, "--stage", "1", "--data", str(data), "--output", run, "--resume", "--tiny")
    assert "learnig" in _refusal(capsys, "--stage", "1", "--data", str(data), "--output", run, "--set", "learnig_rate=1")
    if not torch.cuda.is_available():
        assert "bitsandbytes" in _refusal(capsys, "--stage", "1", "--data", str(data), "--output", run)


def test_settings_given_with_set_are_not_undone_by_flags_left_out():
    sys.path.insert(0, str(ROOT / "train"))
    try:
        from train import build_parser, config_from  # train/train.py
    finally:
        sys.path.pop(0)

    def config(*argv: str) -> TrainConfig:
        return config_from(build_parser().parse_args(["--stage", "2", "--data", "d", "--output", "o", *argv]))

    assert config("--tiny", "--set", "resolution=128", "--set", "mixed_precision=bf16").mixed_precision == "bf16"
    assert config("--tiny", "--set", "resolution=128").resolution == 128
    assert config("--set", "mixed_precision=no").mixed_precision == "no"  # YAML reads a bare no as false
    assert config("--set", "max_steps=7", "--max-steps", "9").max_steps == 9  # the flag, given, wins
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config("--set", "resolution")


# -- tiny runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage1(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("stage1") / "run"
    done = train("--stage", "1", "--data", str(data), "--output", str(run), "--max-steps", "6", "--save-every", "3",
                 "--val-every", "6", *QUICK)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.slow
def test_stage1_run_writes_metrics_checkpoints_samples_and_a_loadable_model(stage1, tmp_path, astronaut):
    rows = metrics(stage1)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 7)) and all(np.isfinite(r["loss"]) and r["seconds_per_step"] > 0 for r in rows if "loss" in r)
    val = next(r for r in rows if "val_loss" in r)
    for key in ("val_loss", "val_loss_other_motion", "val_loss_other_reference", "seen_loss", "seen_loss_other_motion",
                "seen_loss_other_reference"):
        assert np.isfinite(val[key]), key
    assert sorted(p.name for p in (stage1 / "checkpoints").iterdir()) == ["step-3", "step-6"]
    assert (stage1 / "samples" / "step-6.mp4").is_file()
    assert json.loads((stage1 / "model" / "training.json").read_text())["stage"] == 1
    # The exported model animates a portrait through the CLI.
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "ref.png")
    write_video(tmp_path / "drv.mp4", iter(_talking(astronaut, 4, 9)), fps=25)
    done = subprocess.run([sys.executable, "-m", "vivid", "animate", str(tmp_path / "ref.png"), str(tmp_path / "drv.mp4"),
                           "-o", str(tmp_path / "out.mp4"), "--engine", "diffusion", "--weights", str(stage1 / "model"),
                           "--steps", "1", "--window", "4", "--overlap", "1"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.mp4").is_file()


@pytest.mark.slow
def test_stage1_in_bf16_exports_the_vae_and_image_encoder_unrounded(data, tmp_path):
    """Stage 1 holds the frozen VAE and image encoder in the compute dtype; its export re-reads
    them from their source (here the tiny parts made again from the seed), so the model keeps
    their fp32 weights (and the VAE's calibrated scaling factor), not their bf16 rounding."""
    from vivid import VividPipeline
    from vivid.training.networks import random_training_parts

    run = tmp_path / "run1"
    done = train("--stage", "1", "--data", str(data), "--output", str(run), "--max-steps", "2", "--save-every", "2",
                 "--val-every", "100", *QUICK, "--mixed-precision", "bf16")
    assert done.returncode == 0, done.stderr[-3000:]
    model = VividPipeline.from_pretrained(run / "model", torch_dtype=torch.float32, disk_offload=False)
    seed = json.loads((run / "model" / "training.json").read_text())["config"]["seed"]
    source = random_training_parts(seed)
    for name in ("vae", "image_encoder"):
        want, got = getattr(source, name).state_dict(), getattr(model, name).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name
        assert any(not torch.equal(v, v.bfloat16().float()) for v in got.values() if v.is_floating_point()), name
    assert model.vae.config.scaling_factor != source.vae.config.scaling_factor  # calibrated, and kept


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_stage2_trains_exactly_the_temporal_layers(stage1, data, tmp_path, precision):
    """Every other weight comes out as stage 1 left it, bit for bit, also when stage 2 held
    the frozen ones in bf16 (its mixed-precision default)."""
    from vivid import VividPipeline

    run = tmp_path / "run2"
    done = train("--stage", "2", "--data", str(data), "--output", str(run), "--init", str(stage1 / "model"),
                 "--max-steps", "3", "--save-every", "3", "--val-every", "3", "--set", "clip_frames=4", *QUICK,
                 "--mixed-precision", precision)
    assert done.returncode == 0, done.stderr[-3000:]
    # Loaded in fp32: the default precision on a CPU with bf16 would round both alike.
    before, after = (VividPipeline.from_pretrained(path, torch_dtype=torch.float32, disk_offload=False)
                     for path in (stage1 / "model", run / "model"))
    for name in ("reference_net", "pose_guider", "vae", "image_encoder"):
        a, b = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a, b = before.unet.state_dict(), after.unet.state_dict()
    temporal = [k for k in a if ".motion_modules." in f".{k}"]
    assert temporal and all(torch.equal(a[k], b[k]) for k in a if k not in temporal)
    changed = [k for k in temporal if not torch.equal(a[k], b[k])]
    assert len(changed) > 0.5 * len(temporal)
    made = json.loads((run / "model" / "training.json").read_text())
    assert made["stage"] == 2 and made["config"]["mixed_precision"] == precision


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_same_losses(data, tmp_path):
    args = ["--stage", "1", "--data", str(data), "--max-steps", "8", "--save-every", "4", "--val-every", "100", *QUICK]
    whole = tmp_path / "whole"
    assert train(*args, "--output", str(whole)).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, *args, "--output", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step-4").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "step-4").is_dir()
    resumed = train(*args, "--output", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = lambda run: [(r["step"], r["loss"]) for r in metrics(run) if "loss" in r]  # noqa: E731
    assert losses(killed) == losses(whole)
    assert json.loads((killed / "weights-rank0.json").read_text())["weights"] == \
        json.loads((whole / "weights-rank0.json").read_text())["weights"]


@pytest.mark.slow
def test_two_processes_train_to_identical_weights(data, tmp_path):
    """Two CPU processes in one gloo group (`--multi_gpu` starts them with torchrun; accelerate's
    `--cpu --num_processes 2` would start one process unless MPI is set up)."""
    run = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(ROOT / "train" / "train.py"), "--stage", "1", "--data", str(data), "--output", str(run),
                           "--max-steps", "3", "--save-every", "3", "--val-every", "100", *QUICK],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((run / f"weights-rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["step"] == ranks[1]["step"] == 3
    assert {r["world"] for r in ranks} == {2}
