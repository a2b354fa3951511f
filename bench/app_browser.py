"""The app as a visitor sees it, measured in headless Chromium (Debian's, fake camera):

- time from clicking Animate to the first streamed frame on screen in the live view, split
  into its stages (request accepted, the frame's update received, image painted), timed in
  the page itself; the first click after the server starts apart from the later ones; next
  to the same-run baselines of the engine's own first frame and of the app's `animate()`
  yielding its first live frame in this process (what the app adds on top of those is page,
  queue and transport);
- `--against REV`: the same clicks, interleaved, on the app.py of an earlier commit (with
  today's `vivid`), for a before/after in one run;
- live webcam frames per second as the browser receives them, next to the rate the live
  engine manages in-process on the same camera frames (baseline).

`python bench/app_browser.py [--runs 3] [--seconds 15] [--against REV]`; results go to
bench/RESULTS.md.
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

#: In-page timing (Date.now(), ms), installed before the page's own scripts: when the reply to
#: the queue request arrives, and when the update carrying the first live frame has arrived
#: whole on the event stream (the first one with an image URL in it: the live view is the only
#: output with a picture before the end).
PAGE_CLOCK = r"""
window.__marks = {};
const mark = (name) => { if (!(name in window.__marks)) window.__marks[name] = Date.now(); };
const pageFetch = window.fetch;
window.fetch = async function (input, init) {
  const url = String((input && input.url) || input);
  const reply = await pageFetch.apply(this, arguments);
  if (url.includes('/queue/join') && window.__marks.click) mark('accepted');
  if (url.includes('/queue/data') && reply.body) {
    const [page, ours] = reply.body.tee();
    (async () => {
      const reader = ours.getReader(), text = new TextDecoder();
      let buffer = '';
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        buffer += text.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (window.__marks.click && message.includes('process_generating') && message.includes('"url"')) mark('received');
        }
      }
    })();
    return new Response(page, {headers: reply.headers, status: reply.status, statusText: reply.statusText});
  }
  return reply;
};
"""

#: Armed just before the click: the click itself (capture phase), and the first live-view image
#: loaded and painted (two animation frames after its load event), with the status shown then.
ARM = r"""() => {
  window.__marks = {};
  const mark = (name) => { if (!(name in window.__marks)) window.__marks[name] = Date.now(); };
  document.querySelector('#animate-button').addEventListener('click', () => mark('click'), {capture: true, once: true});
  const root = document.querySelector('#animate-live');
  const seen = new MutationObserver(() => {
    const img = root.querySelector('img');
    if (!img || !img.getAttribute('src')) return;
    seen.disconnect();
    window.__first_src = img.src.slice(0, 40);
    const painted = () => requestAnimationFrame(() => requestAnimationFrame(() => {
      mark('painted');
      window.__status_then = document.querySelector('#animate-status textarea').value;
    }));
    if (img.complete && img.naturalWidth) painted(); else img.addEventListener('load', painted, {once: true});
  });
  seen.observe(root, {subtree: true, childList: true, attributes: true});
}"""


def start_app(tmp: Path, app: Path = ROOT / "app.py") -> tuple[subprocess.Popen, str]:
    """The app (`app`: this tree's, or an older copy) on a free port, its temp files in `tmp`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(app), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the app did not start")


def app_at(rev: str, tmp: Path) -> Path:
    """app.py as it was at git revision `rev`, beside a link to today's assets."""
    folder = tmp / f"app-{rev}"
    folder.mkdir()
    source = subprocess.run(["git", "show", f"{rev}:app.py"], cwd=ROOT, check=True, capture_output=True).stdout
    (folder / "app.py").write_bytes(source)
    (folder / "assets").symlink_to(ROOT / "assets")
    return folder / "app.py"


def click_timeline(browser, url: str, portrait: Path, clip: Path) -> dict:
    """One Animate click on a fresh page: seconds from the click (in-page clock) to the queue
    accepting the request, the first frame's update arriving, and that frame painted; what
    Playwright's own wait saw (it polls at 0.1-0.5 s steps, so it rounds up); and the finished video."""
    page = browser.new_page()
    page.add_init_script(PAGE_CLOCK)
    page.goto(url, wait_until="load")
    page.locator("#animate-reference input[type=file]").set_input_files(str(portrait))
    page.locator("#animate-driving input[type=file]").set_input_files(str(clip))
    page.locator("#animate-driving video").first.wait_for(state="attached", timeout=60_000)
    page.locator("#animate-reference img").first.wait_for(state="visible", timeout=60_000)
    page.evaluate(ARM)
    t0 = time.perf_counter()
    page.locator("#animate-button").click()
    page.locator("#animate-live img").first.wait_for(state="visible", timeout=120_000)
    polled = time.perf_counter() - t0
    page.wait_for_function("() => 'painted' in window.__marks", timeout=120_000)
    marks = page.evaluate("window.__marks")
    first_src, status = page.evaluate("[window.__first_src, window.__status_then]")
    page.wait_for_function("() => document.querySelector('#animate-status textarea').value.startsWith('done')",
                           timeout=300_000)
    done = time.perf_counter() - t0
    page.close()
    if not status.startswith("frame"):
        raise RuntimeError(f"the first live image came with the status {status!r}, not a made frame's")
    since = {k: (v - marks["click"]) / 1000 for k, v in marks.items() if k != "click"}
    return {**since, "playwright": polled, "done": done, "src": first_src}


def first_frame_times(browser, url: str, portrait: Path, clip: Path) -> tuple[float, float]:
    """Seconds from the Animate click to the first live-view frame on screen, and to 'done'."""
    t = click_timeline(browser, url, portrait, clip)
    return t["painted"], t["done"]


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


def app_first_frame(portrait: Path, clip: Path, runs: int) -> list[float]:
    """Seconds from calling the app's Animate callback in this process to its first live-view
    frame (face analysers warmed up first, as `launch` does)."""
    import app

    app.warm_up()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job = app.animate(str(portrait), str(clip), None, app.PREVIEW_ENGINE, False, False, False,
                          25, 3.5, 0, 24, 4, True)
        for update in job:
            if update[0] is not None:
                break
        times.append(time.perf_counter() - start)
        job.close()
    return times


STAGES = [
    ("accepted", "request accepted (checked by the validator, queued)"),
    ("received", "first frame's update received by the page"),
    ("painted", "**first frame on screen** (loaded and painted in the live view)"),
    ("playwright", "the same, as Playwright's `wait_for` sees it (polls at 0.1–0.5 s steps)"),
    ("done", "finished mp4 with sound (same job)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="clicks after the first one (which is timed apart)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--against", metavar="REV", help="also time app.py as of this git revision, same run")
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
    callback_first = app_first_frame(portrait, clip, args.runs)
    live = LiveAnimator(ref)
    for f in camera_frames[:5]:
        live.step(f)
    t0 = time.perf_counter()
    for f in camera_frames:
        live.step(f)
    engine_fps = len(camera_frames) / (time.perf_counter() - t0)
    live.close()

    apps = {"this tree": ROOT / "app.py"}
    if args.against:
        rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        apps[f"app.py at {rev}"] = app_at(rev, tmp)
    servers = {}
    try:
        for name, path in apps.items():
            (tmp / str(len(servers))).mkdir()
            servers[name] = start_app(tmp / str(len(servers)), path)
        clicks: dict[str, list[dict]] = {name: [] for name in apps}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS + [
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}"])
            for _ in range(args.runs + 1):  # interleaved, so both meet the same machine
                for name, (_, url) in servers.items():
                    clicks[name].append(click_timeline(browser, url, portrait, clip))
            fps = {name: [live_fps(browser, url, args.seconds) for _ in range(max(1, args.runs - 1))]
                   for name, (_, url) in servers.items()}
            browser.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)
    load = os.getloadavg()[0]
    header = "| Animate click → | " + " | ".join(f"{n}: first click after start | {n}: later clicks" for n in apps) + " |"
    rows = [header, "|---|" + "---|---|" * len(apps)]
    for key, label in STAGES:
        digits = 1 if key == "done" else 2
        cells = []
        for runs in clicks.values():
            cells += [f"{runs[0][key]:.{digits}f} s", f"{statistics.median(r[key] for r in runs[1:]):.{digits}f} s"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    body = f"""
Headless Chromium and the app on the same machine (loopback), preview engine, no weights,
grace_hopper.jpg (512x600) driven by d3.mp4 (354 frames, 512x512). Each server's first click is
shown apart; "later clicks" is the median of the next {args.runs}. Times are taken in the page: from
the click event to the first live-view image loaded and painted (two animation frames after its
load event); that first image came with the status "frame …", i.e. a made frame, not a placeholder.
Machine load (1-min load average) at the end: {load:.1f} on 2 cores (the in-process baselines ran
in the same session).

{chr(10).join(rows)}

Same-run baselines in this process: the preview engine's own first frame
{statistics.median(engine_first):.2f} s; the app's `animate()` callback yielding its first live frame
{statistics.median(callback_first):.2f} s (checks of the inputs, then the engine). The rest of the
on-screen figure is Gradio's queue and transport and the browser.

| Live tab: animated frames/s received (fake camera 320x320 at 25 fps, {args.seconds:.0f} s) | {" | ".join(apps)} | same-run baseline |
|---|{"---|" * len(apps)}---|
| median of {max(1, args.runs - 1)} | {" | ".join(f"{statistics.median(v):.1f}" for v in fps.values())} | {engine_fps:.1f} frames/s of `LiveAnimator.step` alone |

The live rate is bounded by the webcam component's capture interval (`stream_every=0.05`,
at most 20 frames/s) and by Chromium, the server and the engine sharing the same two cores.
"""
    record("App in the browser", body)


if __name__ == "__main__":
    main()
