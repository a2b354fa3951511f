"""The app as a visitor sees it, measured in headless Chromium (Debian's, fake camera):

- time from clicking Animate to the first streamed frame in the live view, and to the finished
  video, next to the engine's own time to its first frame in this process (same-run baseline:
  what the app adds on top is page, queue and transport);
- live webcam frames per second as the browser receives them, next to the rate the live
  engine manages in-process on the same camera frames (baseline).

`python bench/app_browser.py [--runs 3] [--seconds 15]`; results go to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from bench.results import record  # noqa: E402
from test_app_browser import BROWSER_FLAGS, CHROMIUM, face_camera_frames, write_y4m  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def start_app(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the app did not start")


def first_frame_times(browser, url: str, portrait: Path, clip: Path) -> tuple[float, float]:
    """Seconds from the Animate click to the first live-view frame, and to 'done'."""
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.locator("#animate-reference input[type=file]").set_input_files(str(portrait))
    page.locator("#animate-driving input[type=file]").set_input_files(str(clip))
    page.locator("#animate-driving video").first.wait_for(state="attached", timeout=60_000)
    page.locator("#animate-reference img").first.wait_for(state="visible", timeout=60_000)
    t0 = time.perf_counter()
    page.locator("#animate-button").click()
    page.locator("#animate-live img").first.wait_for(state="visible", timeout=120_000)
    first = time.perf_counter() - t0
    page.wait_for_function("() => document.querySelector('#animate-status textarea').value.startsWith('done')",
                           timeout=300_000)
    done = time.perf_counter() - t0
    page.close()
    return first, done


def live_fps(browser, url: str, seconds: float) -> float:
    """Distinct animated frames per second arriving in the Live tab's output."""
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-webcam").get_by_text("Click to Access Webcam").click()
    page.locator("#live-webcam button[aria-label='capture photo']").click()
    page.evaluate("""() => { window.__t = []; const root = document.querySelector('#live-output');
      new MutationObserver(() => { const img = root.querySelector('img');
        if (img && img.src !== window.__last) { window.__last = img.src; window.__t.push(performance.now()); } })
      .observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']}); }""")
    page.wait_for_function("() => window.__t.length >= 5", timeout=60_000)  # warmed up
    start = page.evaluate("window.__t.length")
    time.sleep(seconds)
    times = page.evaluate("window.__t")[start - 1:]
    page.close()
    return (len(times) - 1) / ((times[-1] - times[0]) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from vivid.live import LiveAnimator
    from vivid.media import load_image, read_video
    from vivid.preview import PreviewAnimator

    portrait = ROOT / "assets" / "grace_hopper.jpg"
    clip = DATA / "driving" / "d3.mp4"
    if not clip.is_file():
        sys.exit(f"{clip} is needed (sample data)")
    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    camera_frames = face_camera_frames(75)
    camera = tmp / "face.y4m"
    write_y4m(camera, camera_frames)

    # Baselines in this process.
    ref = load_image(portrait).rgb
    engine_first = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        next(iter(PreviewAnimator().stream(ref, read_video(clip), 30.0)))
        engine_first.append(time.perf_counter() - t0)
    live = LiveAnimator(ref)
    for f in camera_frames[:5]:
        live.step(f)
    t0 = time.perf_counter()
    for f in camera_frames:
        live.step(f)
    engine_fps = len(camera_frames) / (time.perf_counter() - t0)
    live.close()

    proc, url = start_app(tmp)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS + [
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}"])
            runs = [first_frame_times(browser, url, portrait, clip) for _ in range(args.runs)]
            fps = [live_fps(browser, url, args.seconds) for _ in range(max(1, args.runs - 1))]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    load = os.getloadavg()[0]
    first = statistics.median(r[0] for r in runs)
    done = statistics.median(r[1] for r in runs)
    body = f"""
Headless Chromium and the app on the same machine (loopback), preview engine, no weights.
Median of {args.runs} runs. Machine load (1-min load average) at the end: {load:.1f} on 2 cores
(other work was running; the in-process baselines ran under the same load).

| what | in the browser | same-run baseline (in-process engine) |
|---|---|---|
| Animate click → first streamed frame (grace_hopper.jpg 512x600, d3.mp4 354 frames 512x512) | {first:.2f} s | {statistics.median(engine_first):.2f} s to the engine's first frame |
| Animate click → finished mp4 with sound (same job) | {done:.1f} s | — |
| Live tab: animated frames/s received (fake camera 320x320 at 25 fps, {args.seconds:.0f} s) | {statistics.median(fps):.1f} | {engine_fps:.1f} frames/s of `LiveAnimator.step` alone |

The live rate is bounded by the webcam component's capture interval (`stream_every=0.05`,
at most 20 frames/s) and by Chromium, the server and the engine sharing the same two cores.
"""
    record("App in the browser", body)


if __name__ == "__main__":
    main()
