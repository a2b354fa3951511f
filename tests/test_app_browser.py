"""The app in a real browser (Playwright driving Debian's Chromium, headless, fake camera).

One app server and one browser for the module, so the whole file takes about a minute.
Screenshots of failing tests are saved under out/test-artifacts/ (or $VIVID_TEST_ARTIFACTS).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("VIVID_TEST_ARTIFACTS", ROOT / "out" / "test-artifacts"))
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    """A raw YUV4MPEG2 file, what Chromium's fake camera plays (in a loop)."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())


def face_camera_frames(count: int = 75) -> list[np.ndarray]:
    """A talking face for the fake camera: a real clip when the sample data is there, else
    the astronaut moving her head (a packaged photo)."""
    clip = SHARED / "driving" / "d12.mp4"
    if clip.is_file():
        from vivid.media import read_video

        return [cv2.resize(f, (320, 320), interpolation=cv2.INTER_AREA) for f in read_video(clip, max_frames=count)]
    from skimage import data

    face = cv2.resize(data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    return [np.roll(face, int(12 * np.sin(i / 6)), axis=1) for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with the tiny random diffusion model (so both engines show), its temp folder apart."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(tmp), GRADIO_TEMP_DIR=str(tmp / "gradio"))
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--weights", "tiny"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((tmp / "server.log").read_text()[-3000:])
            time.sleep(0.3)
    yield {"url": f"http://127.0.0.1:{port}/", "pid": proc.pid, "tmp": tmp}
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    camera = tmp_path_factory.mktemp("camera") / "face.y4m"
    write_y4m(camera, face_camera_frames())
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    """A fresh tab on the app (tests save a screenshot when they fail: `screenshot_on_failure`)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    tab = context.new_page()
    tab.goto(server["url"], wait_until="load")
    tab.locator("#animate-button").wait_for(timeout=60_000)
    yield tab
    context.close()


def save_screenshot(tab, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@contextlib.contextmanager
def screenshot_on_failure(tab, name: str):
    try:
        yield
    except BaseException:
        save_screenshot(tab, name)
        raise


def status(tab) -> str:
    return tab.locator("#animate-status textarea").input_value()


def wait_status(tab, prefix: str, timeout: float = 60_000) -> None:
    tab.wait_for_function(
        "p => document.querySelector('#animate-status textarea').value.startsWith(p)", arg=prefix, timeout=timeout)


def test_an_example_runs_with_one_click_and_gives_a_playable_video(page):
    with screenshot_on_failure(page, "example"):
        example = page.locator("#animate-examples").get_by_text("astronaut × head-motion")
        example.click()
        live = page.locator("#animate-live img").first
        live.wait_for(state="visible", timeout=30_000)  # frames as they come
        assert live.get_attribute("src").startswith("data:image/jpeg;base64,")  # inside the update: no extra request
        wait_status(page, "done", 60_000)
        assert "78 frames" in status(page)
        video = page.locator("#animate-result video").first
        video.wait_for(state="attached", timeout=20_000)
        page.wait_for_function("() => document.querySelector('#animate-result video').readyState >= 1", timeout=20_000)
        duration = page.evaluate("() => document.querySelector('#animate-result video').duration")
        assert duration == pytest.approx(78 / 25, abs=0.2)
        assert "100%" in page.locator("#animate-progress").inner_text()
        # The driving slot shows the template's motion-map video.
        assert page.locator("#animate-driving video").count() == 1


def test_cancel_and_closing_the_tab_stop_the_work(page, browser, server):
    outputs = server["tmp"] / "vivid_app"
    with screenshot_on_failure(page, "cancel"):
        page.locator("#animate-side-by-side input").check()
        page.locator("#animate-examples").get_by_text("grace hopper × expressions").click()
        page.wait_for_function("() => document.querySelector('#animate-status textarea').value.startsWith('frame')",
                               timeout=30_000)
        t0 = time.time()
        page.locator("#animate-cancel").click()
        wait_status(page, "cancelled", 5_000)
        cpu = cpu_seconds(server["pid"])
        time.sleep(1.5)
        assert cpu_seconds(server["pid"]) - cpu < 0.5, "the server kept working after Cancel"
        assert not list(outputs.rglob("*.mp4")) or all(p.stat().st_mtime < t0 for p in outputs.rglob("*.mp4"))
        # The next job starts at once (nothing left holding the queue).
        page.locator("#animate-side-by-side input").uncheck()
        page.locator("#animate-examples").get_by_text("astronaut × head-motion").click()
        wait_status(page, "done", 60_000)
    # Closing the tab mid-job stops it too.
    tab = browser.new_context().new_page()
    tab.goto(server["url"], wait_until="load")
    tab.locator("#animate-examples").get_by_text("grace hopper × speech").click()
    tab.wait_for_function("() => document.querySelector('#animate-status textarea').value.startsWith('frame')",
                          timeout=30_000)
    before = {p for p in outputs.rglob("*.mp4")}
    tab.context.close()
    time.sleep(1.5)
    cpu = cpu_seconds(server["pid"])
    time.sleep(1.5)
    assert cpu_seconds(server["pid"]) - cpu < 0.5, "the server kept working after the tab was closed"
    assert {p for p in outputs.rglob("*.mp4")} <= before


def test_a_driving_video_recorded_with_the_webcam(page):
    with screenshot_on_failure(page, "record"):
        driving = page.locator("#animate-driving")
        driving.locator("button[aria-label='Capture from camera']").click()
        driving.get_by_text("Click to Access Webcam").click()
        record = driving.locator("button[aria-label='start recording']")
        record.click()
        time.sleep(2.5)
        record.click()  # the same button stops
        driving.locator("video").first.wait_for(state="attached", timeout=30_000)
        page.locator("#animate-reference input[type=file]").set_input_files(str(ROOT / "assets" / "grace_hopper.jpg"))
        page.locator("#animate-reference img").first.wait_for(state="visible", timeout=30_000)
        page.locator("#animate-button").click()
        wait_status(page, "done", 60_000)
        frames = int(status(page).split()[1])
        assert frames >= 30  # about 2.5 s of the fake camera's 25 fps
        page.locator("#animate-result video").first.wait_for(state="attached", timeout=20_000)


def test_diffusion_settings_only_for_the_diffusion_engine(page):
    with screenshot_on_failure(page, "engine"):
        for elem in ("#animate-window", "#animate-overlap", "#animate-steps"):
            assert not page.locator(elem).is_visible()
        page.locator("#animate-engine").get_by_label("Diffusion model").check()
        page.locator("#animate-window").wait_for(state="visible", timeout=10_000)
        window = page.locator("#animate-window input[type=number]")
        window.fill("6")
        window.press("Enter")
        overlap = page.locator("#animate-overlap input[type=number]")
        overlap.fill("6")
        overlap.press("Enter")
        page.locator("#animate-settings-error").get_by_text("must be smaller than the window").wait_for(timeout=10_000)
        assert page.locator("#animate-button").is_disabled()
        overlap.fill("2")
        overlap.press("Enter")
        page.wait_for_function("() => !document.querySelector('#animate-button').disabled", timeout=10_000)
        page.locator("#animate-engine").get_by_label("Preview (fast, no model weights)").check()
        page.locator("#animate-window").wait_for(state="hidden", timeout=10_000)


def test_the_webcam_drives_the_portrait_live(page, server):
    with screenshot_on_failure(page, "live"):
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-webcam").get_by_text("Click to Access Webcam").click()
        page.locator("#live-webcam button[aria-label='capture photo']").click()
        page.evaluate("""() => { window.__frames = []; const root = document.querySelector('#live-output');
          new MutationObserver(() => { const img = root.querySelector('img');
            if (img && img.src !== window.__last) { window.__last = img.src; window.__frames.push(img.src); } })
          .observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']}); }""")
        page.wait_for_function("() => window.__frames.length >= 20", timeout=30_000)
        page.locator("#live-motion img").first.wait_for(state="visible")
        sources = page.evaluate("window.__frames")
        assert all(src.startswith("data:image/jpeg;base64,") for src in sources)  # inside the updates
        assert not list((server["tmp"] / "gradio").rglob("*.jpeg")), "a cache file per live frame"
        first, last = (_fetch_image(src) for src in (sources[2], sources[-1]))
        assert first.shape == last.shape and np.abs(first.astype(int) - last.astype(int)).mean() > 0.5  # it moves
        assert "frames/s" in page.locator("#live-fps textarea").input_value()


def _fetch_image(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=10) as r:
        data = np.frombuffer(r.read(), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def test_the_parsing_tab_shows_the_legend_and_lossless_maps(page):
    with screenshot_on_failure(page, "parsing"):
        page.get_by_role("tab", name="Parsing").click()
        page.locator("#parse-image-input input[type=file]").set_input_files(str(ROOT / "assets" / "grace_hopper.jpg"))
        page.locator("#parse-image-button").click()
        for elem in ("#parse-parsing", "#parse-motion", "#parse-mask", "#parse-eyes"):
            img = page.locator(f"{elem} img").first
            img.wait_for(state="visible", timeout=60_000)
            assert img.get_attribute("src").split("?")[0].endswith(".png"), elem
        assert page.locator("#parse-legend li").count() == 12
        assert page.locator("#parse-legend").get_by_text("inner mouth").is_visible()
        info = page.locator("#parse-image-info textarea").input_value()
        assert "Parser" in info and "/root" not in info and "/tmp" not in info
        if os.environ.get("VIVID_SCREENSHOTS"):
            page.screenshot(path=os.environ["VIVID_SCREENSHOTS"], full_page=True)


def test_the_parsing_tab_takes_a_motion_template(page):
    with screenshot_on_failure(page, "parsing-template"):
        page.get_by_role("tab", name="Parsing").click()
        page.get_by_role("tab", name="Driving video").click()
        page.locator("#parse-template-input input[type=file]").set_input_files(
            str(ROOT / "assets" / "templates" / "speech.npz"))
        page.locator("#parse-video-button").click()
        page.wait_for_function(
            "() => document.querySelector('#parse-video-info textarea').value.includes('motion template')",
            timeout=60_000)
        info = page.locator("#parse-video-info textarea").input_value()
        assert "100 frames" in info and "with sound" in info and "Frames without a face: none" in info
        page.locator("#parse-video-output video").first.wait_for(state="attached", timeout=20_000)


def edited_picture(tab) -> str:
    """The src (a JPEG data URL) of the Edit tab's picture, once there is one."""
    img = tab.locator("#edit-result img").first
    img.wait_for(state="visible", timeout=30_000)
    return img.get_attribute("src")


def drag_slider(tab, elem_id: str, share: float) -> None:
    """Drag a slider's knob with the mouse from its place to `share` of its track's width."""
    track = tab.locator(f"#{elem_id} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    value = float(track.input_value())
    low, high = float(track.get_attribute("min")), float(track.get_attribute("max"))
    y = box["y"] + box["height"] / 2
    tab.mouse.move(box["x"] + box["width"] * (value - low) / (high - low), y)
    tab.mouse.down()
    for k in range(1, 6):  # a drag, not a click: the picture may follow on the way
        tab.mouse.move(box["x"] + box["width"] * ((value - low) / (high - low) * (1 - k / 5) + share * k / 5), y)
        time.sleep(0.05)
    tab.mouse.up()


def test_edit_a_portrait_with_sliders_then_animate_a_clip_with_the_edits(page):
    with screenshot_on_failure(page, "edit"):
        page.get_by_role("tab", name="Edit").click()
        page.wait_for_function("() => (document.querySelector('#edit-status textarea') || {}).value"
                               "?.startsWith('Move a slider')", timeout=60_000)
        before = edited_picture(page)
        motion = page.locator("#edit-map img").first.get_attribute("src")
        drag_slider(page, "edit-smile", 0.95)
        page.wait_for_function("() => document.querySelector('#edit-status textarea').value.includes('smile=')",
                               timeout=30_000)
        page.wait_for_function("b => document.querySelector('#edit-result img').src !== b", arg=before, timeout=30_000)
        assert page.locator("#edit-map img").first.get_attribute("src") != motion  # the motion map follows too
        smile = float(page.locator("#edit-smile input[type=range]").input_value())
        assert smile > 0.5
        # The edited still can be downloaded as a PNG.
        page.locator("#edit-save").click()
        page.locator("#edit-file a").first.wait_for(state="attached", timeout=30_000)
        assert page.locator("#edit-file a").first.get_attribute("href").endswith(".png")
        # Reset gives the portrait back.
        page.locator("#edit-reset").click()
        page.wait_for_function("() => document.querySelector('#edit-status textarea').value.startsWith('reset')",
                               timeout=30_000)
        assert float(page.locator("#edit-smile input[type=range]").input_value()) == 0
        page.wait_for_function("b => document.querySelector('#edit-result img').src === b", arg=before, timeout=30_000)
        # The edit applied to a driving clip, then cancelled.
        drag_slider(page, "edit-yaw", 0.8)
        page.wait_for_function("() => document.querySelector('#edit-status textarea').value.includes('yaw=')",
                               timeout=30_000)
        page.get_by_role("tab", name="Animate").click()
        page.locator("#animate-use-edits input").check()
        page.locator("#animate-edits-note").get_by_text("yaw=").wait_for(timeout=10_000)
        page.locator("#animate-examples").get_by_text("grace hopper × expressions").click()
        wait_status(page, "frame", 30_000)
        page.locator("#animate-cancel").click()
        wait_status(page, "cancelled", 5_000)
