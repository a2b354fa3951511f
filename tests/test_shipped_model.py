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


def test_the_cli_animates_with_the_shipped_model_when_no_weights_are_given(tmp_path, astronaut, grace_hopper, analyzer):
    """`animate --engine diffusion` without --weights: every output frame shows a face (the model
    drew one: the mesh finds it), where the portrait's face is, at the portrait's size."""
    from vivid.media import read_video, write_video

    from PIL import Image

    portrait = tmp_path / "portrait.png"
    Image.fromarray(grace_hopper).save(portrait)
    driving = tmp_path / "driving.mp4"
    head = np.ascontiguousarray(astronaut[:320, 80:400])
    write_video(driving, iter(talking(head, 8, seed=3)), fps=25)
    out = tmp_path / "out.mp4"
    env = dict(os.environ, VIVID_SHIPPED_MODEL=str(MINI), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "vivid", "animate", str(portrait), str(driving), "-o", str(out),
                           "--engine", "diffusion"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    frames = list(read_video(out))
    assert len(frames) == 8 and frames[0].shape[:2] == grace_hopper.shape[:2]
    box = np.asarray(analyzer.analyze(grace_hopper).box, float)
    size = box[2:] - box[:2]
    for frame in frames:
        found = np.asarray(analyzer.analyze(frame).box, float)
        assert np.abs((found[:2] + found[2:]) / 2 - (box[:2] + box[2:]) / 2).max() < 0.25 * size.max()
        assert 0.6 < (found[2:] - found[:2]).max() / size.max() < 1.5
