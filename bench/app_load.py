"""The public app under load, as `gradio_client` visitors see it: several visitors at once,
a few jobs each, plus requests beyond the server's limits (a video too long, a decompression
bomb, an upload too large). Every job must complete or be refused with a message; the
server's resident memory is sampled throughout and compared before and after.

Figures: per-job time (queue wait included) next to the same job run alone on the idle
server (same-run baseline), jobs per minute, and resident memory at baseline, peak and
after. `python bench/app_load.py [--clients 6] [--jobs 3] [--frames 75] [--side 512]`;
results go to bench/RESULTS.md. tests/test_app_load.py runs a small version of the same.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PREVIEW = "Preview (fast, no model weights)"


# -- the server ---------------------------------------------------------------------------------
class AppServer:
    """`python app.py [args]` (of this checkout, or of `root`) in its own process on a free port,
    with the given limits (environment variables, see app.AppLimits) and its files under `folder`."""

    def __init__(self, folder: Path, *args: str, root: Path | None = None, **limits: str):
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(folder),
               "GRADIO_TEMP_DIR": str(folder / "gradio"), **limits}  # a limit given may move TMPDIR too
        self.log = open(folder / "server.log", "a")
        started = time.monotonic()
        root = root or ROOT  # another checkout's app (a baseline version) when given
        self.proc = subprocess.Popen([sys.executable, str(root / "app.py"), "--port", str(self.port), *args], cwd=root,
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the app did not start; see {folder / 'server.log'}")
                time.sleep(0.3)
        self.start_seconds = time.monotonic() - started  # from launch until it answers

    def rss_mb(self) -> float:
        """Resident memory of the server process, MB (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        """SIGKILL, as the system's out-of-memory killer or a forced restart does: no clean-up runs."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> "AppServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class MemorySampler:
    """Samples the server's resident memory in the background; `peak` is the largest seen."""

    def __init__(self, server: AppServer, every: float = 0.2):
        self.server, self.every, self.samples = server, every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.server.rss_mb())
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.every)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=float("nan"))


def settled_rss(server: AppServer, seconds: float = 3.0) -> float:
    """Resident memory once the server has been idle a moment (the last of a few readings)."""
    readings = []
    for _ in range(int(seconds / 0.5)):
        time.sleep(0.5)
        readings.append(server.rss_mb())
    return readings[-1]


# -- inputs -------------------------------------------------------------------------------------
@dataclass
class Inputs:
    portrait: Path
    clip: Path
    too_long: Path  # a clip longer than the server's video limit
    bomb: Path  # a PNG whose header declares a huge image
    too_big: Path  # a file larger than the upload limit


def make_inputs(folder: Path, side: int = 256, frames: int = 24, fps: int = 12, upload_mb: float = 1.0,
                video_seconds: float = 10.0) -> Inputs:
    """A real face (scikit-image's astronaut) as portrait and as a moving driving clip."""
    import cv2
    from PIL import Image
    from skimage import data

    sys.path.insert(0, str(ROOT))
    from vivid.media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    face = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    Image.fromarray(face).save(folder / "portrait.png")
    write_video(folder / "clip.mp4", (np.roll(face, 2 * i, axis=1) for i in range(frames)), fps)
    slow = int(video_seconds) + 3  # frames at 1 fps: a long clip in a small file
    write_video(folder / "too_long.mp4", (np.roll(face, 3 * i, axis=1) for i in range(slow)), 1)
    (folder / "too_big.mp4").write_bytes(os.urandom(int(upload_mb * 2**20 * 1.1)))  # Gradio's "mb" is MiB
    return Inputs(folder / "portrait.png", folder / "clip.mp4", folder / "too_long.mp4",
                  huge_png(folder / "bomb.png", 40000, 40000), folder / "too_big.mp4")


def huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a few hundred bytes whose header declares width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


# -- visitors -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One request: what was asked, whether it completed, how long it took, what was said."""

    kind: str  # "job" or the refusal it was meant to provoke
    completed: bool
    seconds: float
    message: str


@dataclass
class LoadRun:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def animate(client, portrait: Path, clip: Path) -> tuple:
    from gradio_client import handle_file

    return client.predict(handle_file(str(portrait)), handle_file(str(clip)), None, PREVIEW, False, False, False,
                          25, 3.5, 0, 24, 4, True, api_name="/animate")


def request(url: str, kind: str, portrait: Path, clip: Path, run: LoadRun) -> None:
    """One visitor request; an exception from the server is recorded as its message."""
    from gradio_client import Client

    t0 = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        result = animate(client, portrait, clip)
        run.add(Outcome(kind, True, time.perf_counter() - t0, str(result[3])))
    except Exception as exc:  # the refusal as the visitor's client reports it
        run.add(Outcome(kind, False, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"))


def visitor(url: str, inputs: Inputs, jobs: int, run: LoadRun) -> None:
    for _ in range(jobs):
        request(url, "job", inputs.portrait, inputs.clip, run)


def load(url: str, inputs: Inputs, clients: int, jobs: int, refusals: bool = True) -> LoadRun:
    """`clients` visitors at once, `jobs` animations each; with `refusals`, one more visitor
    sends the three requests beyond the limits meanwhile."""
    run = LoadRun()
    threads = [threading.Thread(target=visitor, args=(url, inputs, jobs, run)) for _ in range(clients)]
    if refusals:
        asks = [("video too long", inputs.portrait, inputs.too_long), ("image bomb", inputs.bomb, inputs.clip),
                ("upload too large", inputs.portrait, inputs.too_big)]
        threads.append(threading.Thread(target=lambda: [request(url, k, p, c, run) for k, p, c in asks]))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return run


# -- the benchmark ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per client")
    parser.add_argument("--frames", type=int, default=75, help="driving frames per job")
    parser.add_argument("--side", type=int, default=512, help="portrait and driving-frame side, px")
    parser.add_argument("--rounds", type=int, default=3, help="the load repeated; memory is read after each round")
    args = parser.parse_args()
    import tempfile

    sys.path.insert(0, str(ROOT))
    from bench.results import record

    with tempfile.TemporaryDirectory(prefix="vivid-app-load-") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp / "inputs", args.side, args.frames, fps=25, upload_mb=5, video_seconds=30)
        with AppServer(tmp, VIVID_MAX_UPLOAD_MB="5", VIVID_MAX_VIDEO_SECONDS="30") as server:
            started = server.rss_mb()
            alone = LoadRun()
            for _ in range(2):  # the first also loads the face models; the second is the baseline
                request(server.url, "job", inputs.portrait, inputs.clip, alone)
            baseline_job = alone.outcomes[-1].seconds
            baseline_rss = settled_rss(server)
            t0 = time.perf_counter()
            with MemorySampler(server) as memory:
                run = load(server.url, inputs, args.clients, args.jobs)
            wall = time.perf_counter() - t0
            after_rss = [settled_rss(server)]
            for _ in range(args.rounds - 1):  # does memory keep growing with more jobs, or settle?
                later = load(server.url, inputs, args.clients, args.jobs, refusals=False)
                run.outcomes += later.outcomes
                after_rss.append(settled_rss(server))
            alive = server.alive()
    jobs = [o for o in run.outcomes if o.kind == "job"]
    done = [o for o in jobs if o.completed]
    refused = [o for o in run.outcomes if o.kind != "job"]
    times = sorted(o.seconds for o in done)
    rows = [
        "| | value |", "|---|---|",
        f"| visitors at once × jobs each | {args.clients} × {args.jobs} ({args.side} px portrait, {args.frames}-frame "
        f"{args.side} px clip, preview engine) |",
        f"| jobs completed | {len(done)} of {len(jobs)} ({args.rounds} rounds) |",
        f"| one job alone on the idle server (baseline) | {baseline_job:.1f} s |",
        f"| job time under load, median / max (queue wait included) | {statistics.median(times):.1f} s / "
        f"{times[-1]:.1f} s |" if times else "| job time under load | no job completed |",
        f"| throughput under load (first round) | {60 * args.clients * args.jobs / wall:.1f} jobs/min "
        f"({wall:.0f} s for all) |",
        f"| resident memory: at start / baseline after 2 jobs / peak in the first round | {started:.0f} / "
        f"{baseline_rss:.0f} / {memory.peak:.0f} MB |",
        f"| resident memory after each round of {args.clients * args.jobs} jobs | "
        + " / ".join(f"{m:.0f}" for m in after_rss) + " MB |",
        f"| server alive afterwards | {'yes' if alive else 'NO'} |",
    ]
    rows += [f"| refused: {o.kind} | {o.seconds:.1f} s, \"{_short(o.message)}\" |" for o in refused]
    record("App under load (issue 13)", "\n".join(rows) + "\n\nThe app's queue runs two jobs at once "
           "(`default_concurrency_limit=2`), the rest wait. Requests beyond the limits are refused when they arrive "
           "(Gradio's validator runs before the queue), so they never wait behind jobs; an upload over the size "
           "limit is refused by Gradio itself (the client knows the limit; the server answers 413). While this was "
           "being fixed, preview jobs each opened a face analyser and left its MediaPipe models in memory: with 3 "
           "visitors x 2 jobs of 24 frames per round, memory grew about 170 MB per round (850 -> 1590 MB in four "
           "rounds); sharing one analyser made it settle.")


def _short(message: str, n: int = 110) -> str:
    message = message.replace("|", "/").replace("\n", " ")
    return message if len(message) <= n else message[: n - 1] + "…"


if __name__ == "__main__":
    main()
