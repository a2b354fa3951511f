"""The memory ceiling (issue 32): a job whose frame count, window or resolution would need more
memory than is available is refused before any work, with both figures and the setting that
would fit, in the CLI and the app, instead of being killed by the system halfway.

The limit is set the way an operator sets it ($VIVID_MEMORY_LIMIT_MB, what the process may use
in all; a container's cgroup limit is read the same way), so the refusals are real runs."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_reliability import lines, make_clip
from vivid.job_memory import SUGGESTION_MARGIN, JobMemoryError, MemoryNeed, check_fits, diffusion_need, preview_need

#: Frames of the driving clip: enough that they are a good share of the job's memory.
CLIP_FRAMES = 600
FIGURES = re.compile(r"needs about (\d+(\.\d+)? [MG]B) of memory \(.*\) and (\d+(\.\d+)? [MG]B) is available")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("memory_inputs")
    Image.fromarray(astronaut).save(folder / "portrait.png")
    make_clip(folder / "driving.mp4", [np.roll(astronaut, 2 * i, axis=1) for i in range(CLIP_FRAMES)], gop=50)
    return folder


def animate(inputs, out, *flags, limit_mb: float):
    env = {**__import__("os").environ, "VIVID_MEMORY_LIMIT_MB": str(limit_mb)}
    return subprocess.run([sys.executable, "-m", "vivid", "animate", str(inputs / "portrait.png"),
                           str(inputs / "driving.mp4"), "-o", str(out), *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def mb(text: str) -> float:
    number, unit = text.split()
    return float(number) * (1024 if unit == "GB" else 1)


@pytest.mark.slow
def test_cli_refuses_a_clip_too_long_for_the_memory_and_the_frame_count_it_names_fits(inputs, tmp_path):
    out = tmp_path / "out.mp4"
    first = animate(inputs, out, limit_mb=1)  # nothing fits: the figures say what the job and the program take
    line = lines(first.stderr)[-1]
    assert first.returncode == 2 and FIGURES.search(line), first.stderr[-2000:]
    need = mb(FIGURES.search(line).group(1))
    frames = mb(re.search(rf"{CLIP_FRAMES} frames hold (\d+(\.\d+)? [MG]B)", line).group(1))
    held = mb(re.search(r"this program holds (\d+(\.\d+)? [MG]B)", line).group(1))
    assert "under VIVID_MEMORY_LIMIT_MB=1" in line and "Traceback" not in first.stderr
    # just too little for the whole clip; the suggestion leaves SUGGESTION_MARGIN free (the program's size moves)
    assert frames > SUGGESTION_MARGIN / 2**20 + 2
    limit = held + need - 2
    refused = animate(inputs, out, limit_mb=limit)
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = lines(refused.stderr)[-1]
    assert line.startswith("vivid: error: this job needs about") and f"{CLIP_FRAMES} frames hold" in line, line
    assert not out.exists() and not list(tmp_path.iterdir())  # refused before any work: nothing written
    fits = int(re.search(r"at most (\d+) frames \(--max-frames\)", line).group(1))
    assert 0 < fits < CLIP_FRAMES
    done = animate(inputs, out, "--max-frames", str(fits), limit_mb=limit)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()


def test_the_window_that_fits_is_named_when_the_window_is_what_is_too_large():
    """An SD 1.5-sized model at 512 px (64x64 latents, first block 320 wide) in bf16 with guidance."""
    need = diffusion_need(120, 512 * 512, 512 * 512, latent_pixels=64 * 64, latent_channels=4, unet_width=320,
                          window=24, guided=True, dtype_bytes=2, warp_guidance=False)
    available = need.total // 2
    with pytest.raises(JobMemoryError, match=r"a 24-frame window .* use a window of at most (\d+) frames") as refused:
        check_fits(need, available)
    assert refused.value.option == "window"
    window = int(re.search(r"at most (\d+) frames", str(refused.value)).group(1))
    smaller = diffusion_need(120, 512 * 512, 512 * 512, latent_pixels=64 * 64, latent_channels=4, unet_width=320,
                             window=window, guided=True, dtype_bytes=2, warp_guidance=False)
    spare = available - max(SUGGESTION_MARGIN, available // 20)  # what a suggestion leaves free
    assert smaller.total <= spare < diffusion_need(
        120, 512 * 512, 512 * 512, latent_pixels=64 * 64, latent_channels=4, unet_width=320, window=window + 1,
        guided=True, dtype_bytes=2, warp_guidance=False).total
    check_fits(need, need.total)  # exactly enough: no refusal


def test_a_picture_too_large_for_any_frame_count_names_the_size():
    need = preview_need(10, 8000 * 8000, 256 * 256)
    with pytest.raises(JobMemoryError, match=r"use a smaller portrait \(max_side\)") as refused:
        check_fits(need, need.working // 2)
    assert FIGURES.search(str(refused.value))
    assert MemoryNeed(100, 10, 5).total == 1005


def test_app_refuses_a_job_beyond_the_memory_with_the_figures(inputs, monkeypatch, tmp_path):
    import gradio as gr

    import app

    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "app_out")
    monkeypatch.setenv("VIVID_MEMORY_LIMIT_MB", "1")  # less than the test process holds already
    with pytest.raises(gr.Error, match=FIGURES.pattern) as refused:
        list(app.animate(str(inputs / "portrait.png"), str(inputs / "driving.mp4"), None,
                         "Preview (fast, no model weights)", False, False, False, 25, 3.5, 0, 24, 4, True))
    assert "--" not in str(refused.value) and "/" not in str(refused.value)  # the visitor's words: no flags, no paths
    assert not list((tmp_path / "app_out").rglob("*.mp4"))
