"""The shipped VividPortraits-mini (assets/mini) as a user gets it: small enough to ship, loaded
strictly with its own sampling settings, and the diffusion engine's default in the CLI, where it
draws a face that the face mesh finds where the portrait's face is."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open

from conftest import ROOT, talking
from vivid.models.shipped import PROJECT_MINI_MODEL_DIR

MINI = PROJECT_MINI_MODEL_DIR
pytestmark = pytest.mark.skipif(not (MINI / "model_index.json").is_file(), reason="this copy has no assets/mini")


def test_the_shipped_model_fits_the_budget_in_half_precision_with_a_card():
    files = [p for p in MINI.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} >= {"unet", "reference_net", "pose_guider", "image_encoder", "vae"}
    for path in weights:
        with safe_open(path, "pt") as f:
            floats = {str(f.get_slice(k).get_dtype()) for k in f.keys()} - {"I64", "I32", "BOOL"}
            assert floats <= {"BF16", "F16"}, (path, floats)
    card = (MINI / "README.md").read_text()
    for heading in ("Data", "Commands", "Metrics", "Limitations"):
        assert f"## {heading}" in card
    index = json.loads((MINI / "model_index.json").read_text())
    assert index["vae"] == ["vivid.models.tiny_autoencoder", "TinyAutoencoder"]
    assert set(index["sampling_defaults"]) == {"steps", "guidance", "scheduler"}


def test_from_pretrained_with_no_argument_is_the_shipped_model_with_its_settings(monkeypatch):
    import vivid.models.shipped as shipped
    from vivid import VividPipeline

    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", MINI)
    pipe = VividPipeline.from_pretrained()
    index = json.loads((MINI / "model_index.json").read_text())
    assert type(pipe.scheduler).__name__ == index["sampling_defaults"]["scheduler"]
    assert pipe.config.resolution == index["resolution"]
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # what it was trained with


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, astronaut, grace_hopper):
    """`animate --engine diffusion` without --weights, steps or guidance: the portrait, the
    driving clip and the result."""
    from PIL import Image

    from vivid.media import write_video

    folder = tmp_path_factory.mktemp("shipped")
    portrait = folder / "portrait.png"
    Image.fromarray(grace_hopper).save(portrait)
    driving = folder / "driving.mp4"
    head = np.ascontiguousarray(astronaut[:320, 80:400])
    write_video(driving, iter(talking(head, 8, seed=3)), fps=25)
    out = folder / "out.mp4"
    env = dict(os.environ, VIVID_SHIPPED_MODEL=str(MINI), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "vivid", "animate", str(portrait), str(driving), "-o", str(out),
                           "--engine", "diffusion"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return portrait, driving, out


def test_the_cli_animates_with_the_shipped_model_when_no_weights_are_given(cli_run, grace_hopper, analyzer):
    """`animate --engine diffusion` without --weights: every output frame shows a face (the model
    drew one: the mesh finds it), where the portrait's face is, at the portrait's size."""
    from vivid.media import read_video

    frames = list(read_video(cli_run[2]))
    assert len(frames) == 8 and frames[0].shape[:2] == grace_hopper.shape[:2]
    box = np.asarray(analyzer.analyze(grace_hopper).box, float)
    size = box[2:] - box[:2]
    for frame in frames:
        found = np.asarray(analyzer.analyze(frame).box, float)
        assert np.abs((found[:2] + found[2:]) / 2 - (box[:2] + box[2:]) / 2).max() < 0.25 * size.max()
        assert 0.6 < (found[2:] - found[:2]).max() / size.max() < 1.5


def test_the_python_api_samples_as_the_model_recommends_and_as_the_cli_does(cli_run, grace_hopper, monkeypatch, tmp_path):
    """The README's Python example (`from_pretrained()`, then `stream()` with no steps or
    guidance) runs the steps the model's model_index.json recommends, on its scheduler, with
    its guidance (one UNet call per window and step without guidance, a doubled batch with
    it), and its frames are the CLI's for the same inputs."""
    import vivid.models.shipped as shipped
    from vivid import VividPipeline
    from vivid.engines import DiffusionEngine
    from vivid.media import read_video, write_video
    from vivid.windows import context_windows

    recommended = json.loads((MINI / "model_index.json").read_text()).get("sampling_defaults", {})
    steps, guidance = recommended.get("steps", 25), recommended.get("guidance", 3.5)
    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", MINI)
    pipe = VividPipeline.from_pretrained()
    if "scheduler" in recommended:
        assert type(pipe.scheduler).__name__ == recommended["scheduler"]
    batches: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    portrait, driving, cli_out = cli_run
    frames, totals = [], set()
    for event in pipe.stream(grace_hopper, read_video(driving), fps=25, paste_back=True):
        if event.kind == "progress":
            totals.add(event.total)
        else:
            frames.append(event.frame)
    n = len(frames)
    windows = sum(len(context_windows(n, 24, 4, step=i, cyclic=True)) for i in range(steps))
    assert totals == {steps} and len(batches) == windows
    assert set(batches) == {2 if guidance > 1 else 1}  # with and without the reference embedding, or once
    ours = tmp_path / "python.mp4"
    write_video(ours, iter(frames), 25, encoding=DiffusionEngine.encoding)  # the CLI's encoder settings
    for a, b in zip(read_video(ours), read_video(cli_out), strict=True):
        np.testing.assert_array_equal(a, b)
