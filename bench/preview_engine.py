"""Preview engine speed, in one run on the same 512x512 talking-head clip:
- bare MediaPipe face mesh (tracking mode, irises; graph set-up included), the baseline;
- the engine in-process (tracking, motion transfer, warp, blend; frames already decoded);
- `python -m vivid animate` end to end (interpreter start, decoding, tracking, warping,
  encoding, sound carried over), with its stages in threads (now) and one after another
  (before issue 12: the same CLI with `stream_in_threads` swapped for the plain stream);
- the app's time from Animate to the first live-view frame (in-process; --app: in Chromium);
- self-reenactment quality, and memory while streaming a long clip through the CLI.
Rounds interleave the measurements, so load from other work hits them alike; best of N.

Usage: python bench/preview_engine.py [--clip CLIP] [--reference IMG] [--runs 3] [--app] [--quick]
       python bench/preview_engine.py --warp [--warp-frames 20]

--warp (its own section, nothing timed): the warp before issue 22 (a fillConvexPoly call per
triangle, `fill_convex_poly_maps`) against now (the whole mesh in one pass of array
operations) on real clips: PSNR of the frames, pixels whose source moved, and the
instructions per rendered frame (warp + blend) counted by valgrind's callgrind, which do not
depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results import record  # noqa: E402
from vivid.media import probe_video, read_video  # noqa: E402
from vivid.preview import PreviewAnimator, triangle_affines  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
#: The CLI as it ran before issue 12: every stage in the main thread, one after another, and
#: the encoder's default settings (start-up as then, but scipy is no longer imported).
SEQUENTIAL = (
    "import sys, vivid.cli, vivid.engines, vivid.media, vivid.preview_stream as s\n"
    "s.stream_in_threads = lambda animator, reference, frames, fps=25.0, config=None: animator.stream(reference, frames, fps)\n"
    "vivid.engines.PreviewEngine.encoding = vivid.media.Encoding()\n"
    "sys.exit(vivid.cli.main(sys.argv[1:]))\n"
)


#: The CLI's stages timed by CPU per thread (run with the project at `cwd`, any version): the
#: engine streaming into the encoder as `animate` does, frames decoded from the file; CPU time
#: per frame of each of our threads and of the rest (MediaPipe's graph threads, FFmpeg's).
STAGES = (
    "import json, sys, threading, time\n"
    "cpu = {}\n"
    "run = threading.Thread.run\n"
    "def timed(self):\n"
    "    try: run(self)\n"
    "    finally: cpu[self.name.split('_')[0]] = cpu.get(self.name.split('_')[0], 0) + time.thread_time()\n"
    "threading.Thread.run = timed\n"
    "from vivid.engines import PreviewEngine\n"
    "from vivid.media import load_image, read_video, write_video\n"
    "reference, clip, out = sys.argv[1:4]\n"
    "engine = PreviewEngine(whole_process=True)\n"
    "ref = load_image(reference).rgb\n"
    "write_video(out, engine.animate(ref, read_video(clip, max_frames=10), 30.0), 30.0, encoding=engine.encoding)\n"
    "cpu.clear()\n"
    "wall, main, total = time.perf_counter(), time.thread_time(), time.process_time()\n"
    "n = write_video(out, engine.animate(ref, read_video(clip), 30.0), 30.0, encoding=engine.encoding)\n"
    "wall, main, total = time.perf_counter() - wall, time.thread_time() - main, time.process_time() - total\n"
    "rest = total - main - sum(cpu.values())\n"
    "print(json.dumps({'frames': n, 'wall': wall, 'total': total, 'encode (main thread)': main, **cpu, 'other threads': rest}))\n"
)


def stage_cpu(reference: str, clip: str, out: str, root: Path = ROOT) -> dict:
    """CPU ms per frame of each stage's thread (see `STAGES`), and wall and total ms per frame."""
    done = subprocess.run([sys.executable, "-c", STAGES, reference, clip, out], cwd=root, check=True,
                          capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    n = figures.pop("frames")
    return {k: 1000 * v / n for k, v in figures.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def fill_convex_poly_maps(ref, src: np.ndarray, dst: np.ndarray, x0: int, y0: int, x1: int,
                          y1: int) -> tuple[np.ndarray, np.ndarray]:
    """The warp's maps before issue 22, the baseline of `--warp`: one `cv2.fillConvexPoly`
    call per triangle draws its index, then each pixel takes its triangle's affine map."""
    import cv2

    lin, shift, order = triangle_affines(src, dst)
    # Which triangle covers each window pixel (0 = none: pixel stays).
    h, w = y1 - y0, x1 - x0
    index = np.zeros((h, w), np.int32)
    corners = np.round((dst - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits
    for polygon, k in zip(list(corners[order]), (order + 1).tolist()):
        cv2.fillConvexPoly(index, polygon, k, cv2.LINE_8, 4)
    # Pixels on a shared edge can fall between two rasterised triangles: give them a
    # neighbour's triangle (else they would keep the unwarped image and speckle).
    gaps = index == 0
    if gaps.any():
        index[gaps] = cv2.dilate(index, np.ones((3, 3), np.uint8))[gaps]
    coef = np.concatenate([[[1, 0, 0, 0, 1, 0]], np.concatenate([lin, shift[:, :, None]], axis=2).reshape(-1, 6)])
    c = np.take(coef.astype(np.float32), index, axis=0)  # (h, w, 6): x' = c0 x + c1 y + c2, y' = c3 x + c4 y + c5
    ys, xs = ref.grid[:, y0:y1, x0:x1]
    return c[..., 0] * xs + c[..., 1] * ys + c[..., 2], c[..., 3] * xs + c[..., 4] * ys + c[..., 5]


def bare_mesh(frames: list[np.ndarray]) -> float:
    """Frames/s of MediaPipe's face mesh alone, as a user would call it (graph set-up included)."""
    from vivid.face.mesh_backend import mp

    start = time.perf_counter()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        for f in frames:
            mesh.process(f)
    return len(frames) / (time.perf_counter() - start)


def in_process(animator: PreviewAnimator, reference: np.ndarray, frames: list[np.ndarray], fps: float) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in animator.stream(reference, frames, fps))
    return n / (time.perf_counter() - start)


def cli_seconds(reference: str, clip: str, out: str, threaded: bool = True, max_frames: int | None = None,
                root: Path = ROOT) -> float:
    """Wall time of one `python -m vivid animate` process (the preview engine's defaults), run
    from the project at `root` (another checkout: an earlier version)."""
    args = ["animate", reference, clip, "-o", out] + (["--max-frames", str(max_frames)] if max_frames else [])
    command = [sys.executable, "-m", "vivid", *args] if threaded else [sys.executable, "-c", SEQUENTIAL, *args]
    # With bytecode written and read, as an installed package or a clone after its first run has
    # it (this machine's environment turns that off); the same for every version measured.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run(command, cwd=root, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def import_seconds(reference: str, clip: str, out: str, root: Path = ROOT) -> tuple[float, list[str]]:
    """Seconds a one-frame `python -m vivid animate` spends importing (`-X importtime`, every
    top-level import summed, those made while working included), and its five largest."""
    import re

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vivid", "animate", reference, clip, "-o", out,
                           "--max-frames", "1"], cwd=root, check=True, capture_output=True, text=True, env=env)
    top = [(int(m[1]), m[2]) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", done.stderr, re.M)]
    largest = [f"{name} {us / 1000:.0f} ms" for us, name in sorted(top, reverse=True)[:5]]
    return sum(us for us, _ in top) / 1e6, largest


def checkout(rev: str, folder: Path) -> Path:
    """The project's files at git revision `rev`, unpacked into `folder` (no worktree state)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def peak_memory_mb(clip: Path, reference: str, frames: int) -> float:
    """Max RSS of a fresh `python -m vivid animate` run over the first `frames` frames."""
    # VmHWM, not ru_maxrss: the latter counts the forked parent (this benchmark's own frames).
    code = (
        "import json, re, sys; from vivid.cli import main; rc = main(sys.argv[1:]); "
        "print(json.dumps(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, "animate", reference, str(clip), "-o", f"{tmp}/o.mp4", "--max-frames", str(frames)],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def app_first_frame(portrait: str, clip: str, runs: int, uploaded: bool = True) -> list[float]:
    """Seconds from calling the app's Animate callback to its first live-view frame (after
    one warm-up job: the server's first job also loads the face models). Each job gets a new
    upload (one pixel differs), as a user's would: nothing is remembered from the job before.
    `uploaded`: the page's own handling of the upload has run first, as it does when a portrait
    arrives (the face picker, which also analyses it); False: Animate pressed on a portrait the
    app has not seen."""
    import app
    from PIL import Image

    picture = np.array(Image.open(portrait).convert("RGB"))
    folder = Path(tempfile.mkdtemp(prefix="vivid-bench-uploads-"))
    times = []
    for i in range(runs + 1):
        picture[0, 0, 0] = i + (128 if uploaded else 0)
        upload = folder / f"portrait-{i}-{uploaded}.png"
        Image.fromarray(picture).save(upload)
        if uploaded:
            app.pick_face(str(upload))  # the page's change event on the upload
        start = time.perf_counter()
        job = app.animate(str(upload), clip, None, app.PREVIEW_ENGINE, False, False, False, 25, 3.5, 0, 24, 4, True)
        for update in job:
            if update[0] is not None:
                break
        elapsed = time.perf_counter() - start
        job.close()
        if i:
            times.append(elapsed)
    return times


def app_in_browser(portrait: Path, clip: Path, runs: int) -> list[float]:
    """Animate click -> first live-view frame in headless Chromium (bench/app_browser.py's way)."""
    from playwright.sync_api import sync_playwright

    from bench.app_browser import start_app, first_frame_times
    from test_app_browser import BROWSER_FLAGS, CHROMIUM

    proc, url = start_app(Path(tempfile.mkdtemp(prefix="vivid-bench-")))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
            first_frame_times(browser, url, portrait, clip)  # warm-up: the server's first job loads the face models
            times = [first_frame_times(browser, url, portrait, clip)[0] for _ in range(runs)]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return times


#: Clip, portrait and frames of the warp comparison: the issue's 512x512 talking head, a larger
#: portrait crop (grace_hopper.jpg: 524 px), and the clip with the widest head turns.
WARP_CASES = (("d3.mp4", "astronaut"), ("d0.mp4", "grace_hopper.jpg"), ("d12.mp4", "astronaut"))
WARP_FRAMES = 150


def warp_targets() -> list[tuple[str, str, np.ndarray, object, list]]:
    """(clip, portrait, its image, prepared reference, targets) of each WARP_CASES entry found."""
    from skimage import data

    from vivid.media import load_image

    found = []
    for clip, portrait in WARP_CASES:
        path = DATA / "driving" / clip
        if not path.is_file():
            continue
        image = data.astronaut() if portrait == "astronaut" else load_image(ROOT / "assets" / portrait).rgb
        animator = PreviewAnimator()
        ref = animator.prepare(image)
        goals = [g for g in animator.targets(ref, read_video(path, max_frames=WARP_FRAMES), probe_video(path).fps) if g]
        found.append((clip, portrait, image, ref, goals))
    return found


def render_with(maps, ref, goals) -> list[np.ndarray]:
    """Frames rendered with `maps` as the warp's map builder (None: the engine's own)."""
    animator = PreviewAnimator()
    if maps is not None:
        animator._backward_maps = maps  # an instance attribute: a plain function, called unbound
    return [animator.render(ref, g) for g in goals]


def save_case(path: Path, image: np.ndarray, goals: list) -> None:
    """A portrait and its targets as arrays, for `warp_child`."""
    np.savez(path, image=image, points=np.stack([g.points for g in goals]), head=np.stack([g.head for g in goals]),
             eye_opening=np.stack([g.eye_opening for g in goals]))


def warp_child(case: str, maps: str, frames: int) -> None:
    """Render 3 warm-up frames and `frames` more of a saved case (under callgrind)."""
    import cv2

    from vivid.face.motion_transfer import Target

    cv2.setNumThreads(1)  # as the CLI runs it
    saved = np.load(case)
    animator = PreviewAnimator()
    ref = animator.prepare(saved["image"])  # the same in every run: its instructions cancel
    goals = [Target(*parts) for parts in zip(saved["points"], saved["head"], saved["eye_opening"])]
    if maps == "before":
        animator._backward_maps = fill_convex_poly_maps
    for i in range(3 + frames):
        animator.render(ref, goals[i % len(goals)])


def instructions(case: str, maps: str, frames: int) -> int:
    """Instructions callgrind counts for `warp_child` (the whole process)."""
    import re

    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--warp-child", json.dumps(dict(case=case, maps=maps, frames=frames))]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def warp_section(frames: int) -> str:
    """The warp before issue 22 against now: frames' PSNR, instructions per frame."""
    import shutil

    cases = warp_targets()
    rows = []
    for clip, portrait, _, ref, goals in cases:
        before, now = render_with(fill_convex_poly_maps, ref, goals), render_with(None, ref, goals)
        scores = [psnr(a, b) for a, b in zip(before, now)]
        differ = np.mean([(np.abs(a.astype(int) - b).max(axis=2) > 8).sum() for a, b in zip(before, now)])
        rows.append([clip, portrait, ref.size, len(goals), min(scores), float(np.mean(scores)), sum(s < 40 for s in scores),
                     differ])
    text = ("Frames of the preview engine (whole portrait out) with the warp's maps built as before issue 22 "
            "(`fill_convex_poly_maps`: a `cv2.fillConvexPoly` call per triangle, ~1,130 a frame) and now (the whole "
            f"mesh in one pass of array operations), on the first {WARP_FRAMES} frames of each clip:\n\n"
            "| clip | portrait | crop px | frames | PSNR now vs before, worst frame (dB) | mean (dB) | frames under 40 dB "
            "| pixels a frame differing by more than 8 levels |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(f"| {c} | {p} | {n} | {f} | {lo:.1f} | {mean:.1f} | {under} | {d:.0f} |"
                        for c, p, n, f, lo, mean, under, d in rows)
            + "\n\nWhere they differ it is the old warp that is wrong: `cv2.fillConvexPoly` draws a triangle "
            "thinner than a pixel by its outline, so pixels next to a sliver took its nearly singular affine map and "
            "fetched colour from far away (isolated wrong pixels); the new maps equal a brute-force per-pixel "
            "reference (`tests/test_preview.py::test_warp_maps_equal_a_per_pixel_reference`, which the old maps fail).\n")
    if shutil.which("valgrind") and cases:
        with tempfile.TemporaryDirectory() as tmp:
            lines = []
            for i, (clip, portrait, image, ref, goals) in enumerate(cases[:2]):
                path = Path(tmp) / f"case{i}.npz"
                save_case(path, image, goals)
                per = {m: (instructions(str(path), m, frames) - instructions(str(path), m, 0)) / frames
                       for m in ("before", "now")}
                lines.append(f"| {clip}, {portrait} ({ref.size} px crop) | {per['before'] / 1e6:.1f} | "
                             f"{per['now'] / 1e6:.1f} | {per['now'] / per['before']:.2f} |")
        text += (f"\nInstructions per rendered frame (warp and blend into the portrait; valgrind's callgrind, "
                 f"a process rendering {frames} frames after 3 warm-up frames minus the same process rendering none, "
                 "so start-up cancels; OpenCV on one thread, as in the CLI). Counted instructions do not depend on the "
                 "machine's load, unlike times:\n\n| case | before (M instructions) | now | now / before |\n"
                 "|---|---|---|---|\n" + "\n".join(lines) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(DATA / "driving" / "d3.mp4"))
    parser.add_argument("--reference", default=None, help="portrait (default: scikit-image's 512x512 astronaut)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--app", action="store_true", help="also time the first live-view frame in headless Chromium")
    parser.add_argument("--quick", action="store_true", help="speed only (no quality table, no long-clip memory)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also run the CLI of this git revision (e.g. the previous version) in each round")
    parser.add_argument("--warp", action="store_true", help="only the warp before issue 22 against now (its own section)")
    parser.add_argument("--warp-frames", type=int, default=20, help="frames per callgrind run of --warp")
    parser.add_argument("--warp-child", help=argparse.SUPPRESS)
    parser.add_argument("--stages", action="store_true", help="only the CPU per frame of each stage's thread, now and "
                        "at --against (its own section)")
    args = parser.parse_args()
    if args.warp_child:
        warp_child(**json.loads(args.warp_child))
        return
    if args.warp:
        record("Preview engine: the warp", warp_section(args.warp_frames))
        return
    if args.stages:
        record("Preview engine: CPU per stage", stages_section(args))
        return
    from PIL import Image

    from vivid.media import load_image

    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    if args.reference:
        reference, ref_name, ref_path = load_image(args.reference).rgb, Path(args.reference).name, args.reference
    else:
        from skimage import data

        reference, ref_name, ref_path = data.astronaut(), "astronaut", str(tmp / "astronaut.png")
        Image.fromarray(reference).save(ref_path)
    info = probe_video(args.clip)
    frames = list(read_video(args.clip))
    n = len(frames)
    h, w = frames[0].shape[:2]
    load_before = os.getloadavg()[0]
    animator = PreviewAnimator()
    list(animator.stream(reference, frames[:5]))  # warm-up: graphs and caches
    out = str(tmp / "out.mp4")
    runs: dict[str, list[float]] = {k: [] for k in ("bare", "engine", "cli", "cli_before", "startup", "cli_rev", "startup_rev")}
    previous = checkout(args.against, tmp / "previous") if args.against else None
    for _ in range(args.runs):
        runs["bare"].append(bare_mesh(frames))
        runs["engine"].append(in_process(animator, reference, frames, info.fps))
        runs["cli"].append(n / cli_seconds(ref_path, args.clip, str(tmp / "out_now.mp4")))
        runs["cli_before"].append(n / cli_seconds(ref_path, args.clip, out, threaded=False))
        runs["startup"].append(cli_seconds(ref_path, args.clip, out, max_frames=1))
        if previous is not None:
            runs["cli_rev"].append(n / cli_seconds(ref_path, args.clip, str(tmp / "out_rev.mp4"), root=previous))
            runs["startup_rev"].append(cli_seconds(ref_path, args.clip, out, max_frames=1, root=previous))
    imports = [import_seconds(ref_path, args.clip, str(tmp / "imp.mp4")) for _ in range(args.runs)]
    imports_rev = ([import_seconds(ref_path, args.clip, str(tmp / "imp.mp4"), root=previous) for _ in range(args.runs)]
                   if previous is not None else [])
    best = {k: max(v, default=0.0) for k, v in runs.items()}
    best["startup"] = min(runs["startup"])

    def beyond_startup(rates: str, startups: str) -> list[float]:
        """Frames/s after start-up in each round: the frames after the first over the full run's
        time less the same round's one-frame run."""
        return [(n - 1) / max(n / rate - one, 1e-6) for rate, one in zip(runs[rates], runs[startups])]

    runs["beyond"] = beyond_startup("cli", "startup")
    runs["beyond_rev"] = beyond_startup("cli_rev", "startup_rev") if previous is not None else []
    best["beyond"], best["beyond_rev"] = max(runs["beyond"]), max(runs["beyond_rev"], default=0.0)
    # Each round's figure against that round's bare mesh, then the median round: one round
    # whose bare mesh met a burst of other work would flatter a best-of ratio.
    def ratio_of(key: str) -> float:
        return statistics.median(c / b for c, b in zip(runs[key], runs["bare"])) if runs[key] else 0.0

    ratio, ratio_before, ratio_rev = ratio_of("cli"), ratio_of("cli_before"), ratio_of("cli_rev")
    beyond, beyond_rev = ratio_of("beyond"), ratio_of("beyond_rev")
    same = _same_frames(tmp / "out_now.mp4", tmp / "out_rev.mp4") if previous is not None else ""
    app_times = app_first_frame(ref_path, args.clip, args.runs)
    app_unseen = app_first_frame(ref_path, args.clip, args.runs, uploaded=False)
    browser_times = app_in_browser(Path(ref_path), Path(args.clip), args.runs) if args.app else []
    load_after = os.getloadavg()[0]

    body = f"""Driving clip {Path(args.clip).name} ({n} frames, {w}x{h}, {info.fps:g} fps, {"with" if info.has_audio else "no"} sound),
reference {ref_name} ({reference.shape[1]}x{reference.shape[0]}); the preview engine's defaults (whole portrait out).
{args.runs} interleaved rounds; 1-min load average {load_before:.1f} before, {load_after:.1f} after, on 2 cores
(other work was sharing the machine). Frames/s: the best round; ratios: each round's figure over the same
round's bare face mesh, median of the rounds.

| what | frames/s (best round) | vs bare face mesh (median of the rounds' ratios) |
|---|---|---|
| bare MediaPipe face mesh (tracking mode, irises), frames in memory | {best['bare']:.1f} | 1.00x |
| preview engine in-process (track, transfer, warp, blend), frames in memory | {best['engine']:.1f} | {ratio_of('engine'):.2f}x |
| **`python -m vivid animate`, frames beyond start-up (now)** | **{best['beyond']:.1f}** | **{beyond:.2f}x** (target: at least 0.5x) — {"met" if beyond >= 0.5 else "NOT met"} |
| `python -m vivid animate` end to end, stages in threads (now) | {best['cli']:.1f} | {ratio:.2f}x |
| `python -m vivid animate` end to end, stages one after another, default encoder settings (before) | {best['cli_before']:.1f} | {ratio_before:.2f}x |
""" + (f"""| `python -m vivid animate`, frames beyond start-up, at `{args.against}` (previous version) | {best['beyond_rev']:.1f} | {beyond_rev:.2f}x |
| `python -m vivid animate` end to end at `{args.against}` (previous version) | {best['cli_rev']:.1f} | {ratio_rev:.2f}x |
""" if previous is not None else "") + f"""
End to end = the whole process: interpreter start and imports, probing, reading the portrait, decoding,
tracking, warping, H.264 encoding and the driving clip's sound muxed in. Of that, a one-frame run
(`--max-frames 1`: start-up, portrait, encoder and muxing, no video work) takes **{best['startup']:.2f} s**
(best round; median {statistics.median(runs['startup']):.2f} s; target: at most 0.7 s)""" + (f"""; at `{args.against}`
{min(runs['startup_rev']):.2f} s (median {statistics.median(runs['startup_rev']):.2f} s)""" if previous is not None else "") + f""".
Its imports (`python -X importtime`, every top-level import summed, the fastest of {args.runs} runs): {min(imports)[0]:.2f} s
(largest: {", ".join(min(imports)[1])})""" + (f"""; at `{args.against}` {min(imports_rev)[0]:.2f} s
(largest: {", ".join(min(imports_rev)[1])})""" if imports_rev else "") + f""".
"Frames beyond start-up": each round's (frames - 1) / (full run - one-frame run).
Threads: decoding (PyAV), tracking (MediaPipe + smoothing + motion transfer) and warping (OpenCV/NumPy,
OpenCV's own pool off, GIL switch interval 1 ms) each run ahead of the next stage through a queue of 8 frames; the encoder is the
consuming loop, with one x264 thread and the `superfast` preset (same CRF 18; files about 1.6x larger
than `veryfast`). Start-up skips the plotting and audio modules MediaPipe imports (`vivid/deferred_imports.py`).

App (preview engine, {Path(ref_path).name} + {Path(args.clip).name}): Animate → first live-view frame
**{statistics.median(app_times):.2f} s** in-process (median of {len(app_times)}, after a warm-up job; each job a new
upload, handled by the page's change event as a portrait arrives; target 0.4 s), {statistics.median(app_unseen):.2f} s
on a portrait the app has not seen before the click"""
    if browser_times:
        body += f", **{statistics.median(browser_times):.2f} s** in headless Chromium (median of {len(browser_times)})"
    body += "." + same
    if not args.quick:
        body += _quality(animator)
        long_clip = DATA / "driving" / "d6.mp4"
        if long_clip.is_file():
            short, long = peak_memory_mb(long_clip, ref_path, 100), peak_memory_mb(long_clip, ref_path, 1008)
            body += (f"\n\nMemory while streaming a long clip through the CLI (d6.mp4, 480x480, stages in threads, "
                     f"video written as it goes): peak RSS {short:.0f} MB for 100 frames, {long:.0f} MB for 1008 frames "
                     f"({(long - short) * 1024 / 908:.1f} KB per extra frame).")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    record("Preview engine", body)


def stages_section(args: argparse.Namespace) -> str:
    """CPU ms per frame of each thread of the CLI's pipeline, now and at `args.against`,
    interleaved rounds, the median of each figure."""
    from PIL import Image
    from skimage import data

    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    reference = args.reference or str(tmp / "astronaut.png")
    if not args.reference:
        Image.fromarray(data.astronaut()).save(reference)
    roots = {"now": ROOT}
    if args.against:
        roots[f"at {args.against}"] = checkout(args.against, tmp / "previous")
    load = os.getloadavg()[0]
    rounds = {name: [] for name in roots}
    for _ in range(args.runs):
        for name, root in roots.items():
            rounds[name].append(stage_cpu(reference, args.clip, str(tmp / "stages.mp4"), root))
    keys = list(dict.fromkeys(k for runs in rounds.values() for r in runs for k in r))
    rows = "\n".join(f"| {k} | " + " | ".join(f"{statistics.median(r.get(k, 0.0) for r in runs):.2f}"
                                               for runs in rounds.values()) + " |" for k in keys)
    return (f"The CLI's pipeline in one process ({Path(args.clip).name}, {Path(reference).name}; the engine streaming "
            "into the encoder as `animate` does, frames decoded from the file): CPU milliseconds per frame of each "
            "thread (decode, track, warp: ours; encode: the consuming loop; other threads: MediaPipe's graph "
            "threads, which run the face mesh, and FFmpeg's), wall and total time per frame, median of "
            f"{args.runs} interleaved rounds; 1-min load average {load:.1f} at the start on 2 cores (other work was "
            "sharing the machine, and CPU times grow with it too).\n\n"
            f"| ms per frame | {' | '.join(roots)} |\n|---|{'---|' * len(roots)}\n{rows}\n")


def _same_frames(now: Path, before: Path) -> str:
    """PSNR of this version's result against the previous version's, frame by frame."""
    scores = [psnr(a, b) for a, b in zip(read_video(now), read_video(before))]
    identical = sum(s >= 99 for s in scores)
    return (f"\n\nThe result against the previous version's (same inputs, both CLIs' mp4s decoded): PSNR "
            f"{min(scores):.1f} dB at the worst of {len(scores)} frames, mean {np.mean(scores):.1f} dB; {identical} frames "
            "identical (target: at least 40 dB).")


def _quality(animator: PreviewAnimator) -> str:
    rows = []
    for name in ("d0.mp4", "d3.mp4", "d12.mp4"):
        path = DATA / "driving" / name
        if not path.is_file():
            continue
        clip = list(read_video(path, max_frames=150))
        out = list(animator.stream(clip[0], clip))
        ours = np.mean([psnr(o, f) for o, f in zip(out[1:], clip[1:])])
        still = np.mean([psnr(clip[0], f) for f in clip[1:]])
        rows.append(f"| {name} (150 frames) | {ours:.2f} | {still:.2f} |")
    return ("\n\nSelf-reenactment (reference = first frame, driven by its own clip), mean PSNR vs the real frames:\n\n"
            "| clip | preview engine | still first frame |\n|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
