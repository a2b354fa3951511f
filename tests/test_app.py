"""The Parsing tab: callbacks on real inputs, and the page in a real (headless) browser."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

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
def test_parsing_tab_in_a_browser(tmp_path):
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
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
