"""The command line: outputs with the driving video's timing and audio, one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from vivid.media import probe_video


def make_clip(path: Path, frames: list[np.ndarray], fps: int = 24, audio_seconds: float | None = None) -> None:
    """An mp4 of `frames`, optionally with a sine tone as AAC audio."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=44100) if audio_seconds else None
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        if a is not None:
            t = 0
            while t < audio_seconds * 44100:
                s = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(1024) + t) / 44100)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(s, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 44100, t
                t += 1024
                for p in a.encode(frame):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
        for p in v.encode():
            c.mux(p)


def vivid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vivid", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("clip") / "talking.mp4"
    make_clip(path, [np.roll(astronaut, 2 * i, axis=1) for i in range(30)], fps=24, audio_seconds=1.25)
    return path


@pytest.fixture(scope="module")
def portrait(tmp_path_factory, grace_hopper):
    path = tmp_path_factory.mktemp("ref") / "grace.jpg"
    Image.fromarray(grace_hopper).save(path)
    return path


def test_animate_keeps_frame_count_rate_and_audio(clip, portrait, tmp_path):
    out = tmp_path / "out.mp4"
    result = vivid("animate", str(portrait), str(clip), "-o", str(out))
    assert result.returncode == 0, result.stderr
    info = probe_video(out)
    assert info.frames == 30 and info.fps == pytest.approx(24) and info.has_audio
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(1.25, abs=0.15)
    w, h = Image.open(portrait).size
    assert (info.width, info.height) == (w - w % 2, h - h % 2)  # the whole reference image
    assert "Traceback" not in result.stderr


def test_animate_crop_only_and_diffusion_tiny(clip, portrait, tmp_path):
    out = tmp_path / "crop.mp4"
    assert vivid("animate", str(portrait), str(clip), "-o", str(out), "--crop-only", "--size", "256").returncode == 0
    assert (probe_video(out).width, probe_video(out).height) == (256, 256)
    out = tmp_path / "diffusion.mp4"
    r = vivid("animate", str(portrait), str(clip), "-o", str(out), "--engine", "diffusion", "--weights", "tiny",
              "--steps", "2", "--window", "8", "--overlap", "2", "--max-frames", "10")
    assert r.returncode == 0, r.stderr
    assert probe_video(out).frames == 10 and probe_video(out).has_audio


@pytest.mark.parametrize(
    "args, message",
    [
        (["animate", "missing.jpg", "{clip}", "-o", "{out}"], "missing.jpg: no such file"),
        (["animate", "{flat}", "{clip}", "-o", "{out}"], "no face"),
        (["animate", "{portrait}", "{junk}", "-o", "{out}"], "not a readable video"),
        (["animate", "{portrait}", "{clip}", "-o", "/no/such/dir/out.mp4"], "does not exist"),
        (["animate", "{portrait}", "{clip}", "-o", "{out}", "--steps", "5"], "only apply to the diffusion engine"),
        (["animate", "{portrait}", "{clip}", "-o", "{out}", "--engine", "diffusion"], "needs --weights"),
        (["animate", "{portrait}", "{clip}", "-o", "{out}", "--engine", "diffusion", "--weights", "{tmp}"], "model_index.json"),
        (["animate", "{portrait}", "{clip}", "-o", "{out}", "--engine", "diffusion", "--weights", "./runs/model"],
         "no such weights folder"),
        (["parse", "{flat}", "-o", "{tmp}/p"], "no face"),
    ],
)
def test_bad_input_gives_one_readable_line(args, message, clip, portrait, tmp_path):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(flat)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 500)
    fill = dict(clip=clip, portrait=portrait, flat=flat, junk=junk, out=tmp_path / "o.mp4", tmp=tmp_path)
    result = vivid(*[a.format(**fill) for a in args])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vivid: error:") and message in lines[0]
    assert not (tmp_path / "o.mp4").exists()  # nothing half-written left behind


def test_a_hub_id_that_cannot_be_fetched_is_one_line_naming_it(clip, portrait, tmp_path):
    """`--weights owner/name` is a hub model; offline and not in the cache, the user reads why."""
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-m", "vivid", "animate", str(portrait), str(clip), "-o",
                             str(tmp_path / "o.mp4"), "--engine", "diffusion", "--weights", "someone/vivid-model"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 2
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("vivid: error: someone/vivid-model: no such weights folder, and it could not be fetched "
                           "from the Hugging Face hub"), result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    from vivid.models.saved import is_hub_id

    monkeypatch.chdir(tmp_path)
    assert is_hub_id("someone/vivid-model") and is_hub_id("org.name/model_v1.5")
    assert not any(is_hub_id(w) for w in ("tiny", "model", "./runs/model", "/abs/model", "~/model", "a/b/c", None))
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert not is_hub_id("runs/model")  # a folder on disk wins


def test_parse_image_and_video(clip, portrait, tmp_path):
    r = vivid("parse", str(portrait), "-o", str(tmp_path / "img"), "--backend", "mesh")
    assert r.returncode == 0, r.stderr
    for name in ("parsing.png", "labels.png", "motion_map.png", "foreground.png"):
        assert Image.open(tmp_path / "img" / name).size == Image.open(portrait).size
    r = vivid("parse", str(clip), "-o", str(tmp_path / "vid"))
    assert r.returncode == 0, r.stderr
    assert probe_video(tmp_path / "vid" / "motion_maps.mp4").frames == 30
    assert (tmp_path / "vid" / "frames_without_face.txt").read_text() == ""
