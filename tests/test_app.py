"""The Parsing tab: callbacks on real inputs, and the page in a real (headless) browser."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from conftest import ROOT
from vivid.media import probe_video, write_video


def test_parse_image_gives_three_pictures_and_the_backend(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    parsing, motion, mask, info = app.parse_image(str(path))
    for picture in (parsing, motion, mask):
        assert picture.shape == astronaut.shape and picture.dtype == np.uint8
    assert "mesh" in info or "farl" in info
    assert not np.array_equal(parsing, astronaut)  # the map is drawn over the photo


def test_parse_image_errors_are_messages(tmp_path):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(flat)
    with pytest.raises(gr.Error, match="no face"):
        app.parse_image(str(flat))
    with pytest.raises(gr.Error, match="Upload"):
        app.parse_image(None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    with pytest.raises(gr.Error, match="not a readable image"):
        app.parse_image(str(broken))


def test_parse_video_lists_faceless_frames(tmp_path, astronaut):
    frames = [np.roll(astronaut, i, axis=1) for i in range(12)]
    for i in range(4, 10):
        frames[i] = np.zeros_like(astronaut)
    src = tmp_path / "driving.mp4"
    write_video(src, iter(frames), fps=25)
    out, info = app.parse_video(str(src), progress=NoProgress())
    assert probe_video(out).frames == 12
    assert "Frames without a face: 4-9" in info


class NoProgress:
    def tqdm(self, iterable, **kwargs):
        return iterable


def test_ranges():
    assert app._ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert app._ranges([]) == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
@pytest.mark.slow
def test_the_app_in_a_browser(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.5)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.get_by_role("tab", name="Parsing").click()
            page.locator("#parse-image-input input[type=file]").set_input_files(str(ROOT / "assets" / "astronaut.jpg"))
            page.locator("#parse-image-button").click()
            for elem in ("#parse-parsing", "#parse-motion", "#parse-mask"):
                page.locator(f"{elem} img").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('#parse-image-info textarea').value.includes('Backend')",
                timeout=30_000,
            )
            assert "mesh" in page.locator("#parse-image-info textarea").input_value()
            page.screenshot(path=str(tmp_path / "parsing_tab.png"), full_page=True)
            # The Animate tab: portrait + driving clip -> a playable result video.
            clip = tmp_path / "driving.mp4"
            from skimage import data

            write_video(clip, iter([np.roll(data.astronaut(), 3 * i, axis=1) for i in range(15)]), fps=15)
            page.get_by_role("tab", name="Animate").click()
            page.locator("#animate-reference input[type=file]").set_input_files(str(ROOT / "assets" / "grace_hopper.jpg"))
            page.locator("#animate-driving input[type=file]").set_input_files(str(clip))
            page.locator("#animate-driving video").first.wait_for(state="attached", timeout=30_000)
            page.locator("#animate-button").click()
            page.wait_for_function(
                "() => document.querySelector('#animate-status textarea').value.startsWith('done')", timeout=120_000
            )
            page.locator("#animate-result video").first.wait_for(state="attached", timeout=30_000)
            page.screenshot(path=str(tmp_path / "animate_tab.png"), full_page=True)
            if os.environ.get("VIVID_SCREENSHOTS"):
                page.screenshot(path=os.environ["VIVID_SCREENSHOTS"], full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_animate_streams_status_then_the_video(tmp_path, astronaut, grace_hopper):
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(20)]), fps=20)
    updates = list(app.animate(str(ref), str(src), "Preview (fast, no model weights)", False, False, 25, 3.5, 0, 24, 4, True))
    live, video, status = updates[-1]
    assert video is not None and probe_video(video).frames == 20
    assert live.shape == grace_hopper.shape and "done: 20 frames" in status
    assert all(u[1] is None for u in updates[:-1])  # the video only once it is complete


def test_animate_errors_are_messages(tmp_path, astronaut):
    src = tmp_path / "driving.mp4"
    write_video(src, iter([astronaut] * 3), fps=20)
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(flat)
    with pytest.raises(gr.Error, match="no face"):
        list(app.animate(str(flat), str(src), "Preview (fast, no model weights)", False, False, 25, 3.5, 0, 24, 4, True))
    with pytest.raises(gr.Error, match="Upload"):
        list(app.animate(None, str(src), "Preview (fast, no model weights)", False, False, 25, 3.5, 0, 24, 4, True))
    with pytest.raises(gr.Error, match="--weights"):
        list(app.animate(str(flat), str(src), "Diffusion model", False, False, 25, 3.5, 0, 24, 4, True))


def test_animate_with_the_diffusion_engine(tmp_path, astronaut, grace_hopper, monkeypatch):
    monkeypatch.setattr(app, "_weights", "tiny")  # random tiny model: exercises the wiring only
    monkeypatch.setattr(app, "_pipeline", None)
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(6)]), fps=12)
    updates = list(app.animate(str(ref), str(src), "Diffusion model", False, False, 2, 3.5, 0, 4, 1, True))
    assert updates[-1][2].startswith("done: 6 frames")
    assert probe_video(updates[-1][1]).frames == 6


def test_random_scaling_preview(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    maps = app.scaled_motion_maps(str(path), seed=5)
    assert len(maps) == 4 and all(m.shape == astronaut.shape for m in maps)
    assert not np.array_equal(maps[0], maps[1])
    assert np.array_equal(maps[0], app.scaled_motion_maps(str(path), seed=5)[0])
