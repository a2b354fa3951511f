"""A crowd at the app (issue 32): 8 visitors at once mixing preview and diffusion jobs (the
tiny random diffusion model, `--weights tiny`), two of them in a cancel storm (jobs started
and cancelled after a random moment, by the Cancel button or by leaving). Every job must end
finished, refused with a message, or cancelled: none may hang. The diffusion model serves one
job at a time, and a waiting visitor is told its place in the queue. Resident memory is
sampled throughout and read again once the crowd has gone.

Figures: jobs per minute, time to the first frame (the first picture the visitor sees: a
frame, or the diffusion engine's first estimate), median and p95, peak and settled memory;
for this version and for another checkout (`--against DIR`, e.g. a `git worktree` of the
version before) in the same run, same inputs, same seeds.
`python bench/app_crowd.py [--against DIR] [--visitors 8]`.
"""
from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.app_load import AppServer, MemorySampler, make_inputs, settled_rss  # noqa: E402

PREVIEW, DIFFUSION = "Preview (fast, no model weights)", "Diffusion model"
#: Seconds a job may take before it counts as hung (the longest job alone takes a few seconds).
HANG_SECONDS = 300.0


@dataclass
class CrowdJob:
    """One visitor's job as the visitor saw it."""

    visitor: int
    engine: str
    cancel_after: float | None  # seconds after submitting; None: left to finish
    cancel_by: str = ""  # "button" (the page's Cancel) or "leaving" (the client closes the request)
    submitted: float = 0.0
    first_picture: float | None = None
    ended: float | None = None
    outcome: str = "hung"  # done / refused / cancelled / hung
    message: str = ""
    statuses: set[str] = field(default_factory=set)
    working_from: float | None = None  # first update that was not "waiting" (diffusion: its turn began)

    @property
    def to_first_picture(self) -> float | None:
        return None if self.first_picture is None else self.first_picture - self.submitted


def run_job(url: str, inputs, job: CrowdJob, steps: int = 4) -> None:
    """Submit, follow the updates (time of the first picture, statuses), cancel when asked, and
    classify how the job ended."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    job.submitted = time.monotonic()
    handle = client.submit(handle_file(str(inputs.portrait)), handle_file(str(inputs.clip)), None, job.engine, False,
                           False, False, steps, 3.5, 0, 8, 2, True, api_name="/animate")
    seen, cancelled = 0, False
    deadline = job.submitted + HANG_SECONDS
    while time.monotonic() < deadline:
        outputs = handle.outputs()
        for out in outputs[seen:]:
            status = str(out[3] or "")
            job.statuses.add(status)
            if job.working_from is None and status and not status.startswith("waiting"):
                job.working_from = time.monotonic()
            if out[0] is not None and job.first_picture is None:
                job.first_picture = time.monotonic()
        seen = len(outputs)
        if job.cancel_after is not None and not cancelled and time.monotonic() - job.submitted > job.cancel_after:
            cancelled = True
            if job.cancel_by == "button":  # as the page's button: our cancel, and Gradio's of the event
                client.predict(api_name="/cancel")
            handle.cancel()
        if handle.done():
            break
        time.sleep(0.05)
    if not handle.done():
        return  # hung
    job.ended = time.monotonic()
    try:
        result = handle.result(timeout=5)
        job.message = str(result[3])
        job.outcome = "done" if job.message.startswith("done") else "cancelled" if "cancel" in job.message else "other"
    except Exception as exc:  # a refusal, or the client's own cancel
        job.message = f"{type(exc).__name__}: {exc}"
        job.outcome = "cancelled" if cancelled else "refused"
    if cancelled and job.outcome != "done":
        job.outcome = "cancelled"


def crowd_jobs(visitors: int, jobs: int, storm: int, seed: int = 0) -> list[list[CrowdJob]]:
    """Each visitor's jobs: the first `visitors - storm` alternate preview / diffusion visitors
    with `jobs` jobs each; the last `storm` start twice as many and cancel each after a random
    moment (by the Cancel button or by leaving, alternately)."""
    rng = random.Random(seed)
    plan = []
    for v in range(visitors):
        if v < visitors - storm:
            plan.append([CrowdJob(v, PREVIEW if v % 2 == 0 else DIFFUSION, None) for _ in range(jobs)])
        else:
            plan.append([CrowdJob(v, PREVIEW if k % 2 else DIFFUSION, rng.uniform(0.2, 2.0),
                                  "button" if k % 2 == 0 else "leaving") for k in range(2 * jobs)])
    return plan


def run_crowd(url: str, inputs, plan: list[list[CrowdJob]]) -> float:
    """All visitors at once, each running its jobs one after another; wall-clock seconds."""
    def visitor(jobs: list[CrowdJob]) -> None:
        for job in jobs:
            run_job(url, inputs, job)

    threads = [threading.Thread(target=visitor, args=(jobs,)) for jobs in plan]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def diffusion_overlaps(jobs: list[CrowdJob], slack: float = 0.3) -> int:
    """How many pairs of finished diffusion jobs worked at the same time: each from its first
    update past "waiting" for as long as the server says it worked ("done: ... in 3.0 s"), both
    seen by the visitor with the same lag (`slack`: the update interval, by which views lag)."""
    spans = []
    for j in jobs:
        took = re.search(r" in (\d+(\.\d+)?) s", j.message)
        if j.engine == DIFFUSION and j.outcome == "done" and j.working_from is not None and took:
            spans.append((j.working_from, j.working_from + float(took.group(1))))
    spans.sort()
    return sum(1 for (a0, a1), (b0, b1) in zip(spans, spans[1:]) if b0 < a1 - slack)


@dataclass
class CrowdResult:
    jobs: list[CrowdJob]
    wall: float
    baseline_mb: float
    peak_mb: float
    after_mb: float
    alive: bool

    def count(self, outcome: str) -> int:
        return sum(j.outcome == outcome for j in self.jobs)

    @property
    def jobs_per_minute(self) -> float:
        return 60 * self.count("done") / self.wall

    def first_picture(self, q: float) -> float:
        times = sorted(j.to_first_picture for j in self.jobs if j.cancel_after is None and j.to_first_picture)
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    @property
    def queue_shown(self) -> bool:
        return any("ahead of yours" in s for j in self.jobs for s in j.statuses)


def measure(folder: Path, inputs, plan: list[list[CrowdJob]], root: Path | None = None) -> CrowdResult:
    """Start the app of `root` (default: this checkout) with the tiny diffusion model, warm it
    up (one preview and one diffusion job), read its baseline memory, then run the crowd."""
    folder.mkdir(parents=True, exist_ok=True)
    with AppServer(folder, "--weights", "tiny", root=root) as server:
        for engine in (PREVIEW, DIFFUSION):
            warm = CrowdJob(-1, engine, None)
            run_job(server.url, inputs, warm)
            if warm.outcome != "done":
                raise RuntimeError(f"the warm-up {engine} job did not finish: {warm.message}")
        baseline = settled_rss(server)
        with MemorySampler(server) as memory:
            wall = run_crowd(server.url, inputs, plan)
        after = settled_rss(server, seconds=5.0)
        alive = server.alive()
    return CrowdResult([j for jobs in plan for j in jobs], wall, baseline, memory.peak, after, alive)


def table(results: dict[str, CrowdResult]) -> str:
    """The figures of each version side by side."""
    names = list(results)
    rows = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, fn) -> None:
        rows.append(f"| {label} | " + " | ".join(fn(r) for r in results.values()) + " |")

    row("jobs: finished / refused / cancelled / hung", lambda r: f"{r.count('done')} / {r.count('refused')} / "
        f"{r.count('cancelled')} / {r.count('hung')} of {len(r.jobs)}")
    row("jobs finished per minute", lambda r: f"{r.jobs_per_minute:.1f} ({r.wall:.0f} s for the crowd)")
    row("time to the first picture, median / p95 (jobs not cancelled)",
        lambda r: f"{r.first_picture(0.5):.1f} s / {r.first_picture(0.95):.1f} s")
    row("resident memory: baseline / peak / after the crowd", lambda r: f"{r.baseline_mb:.0f} / {r.peak_mb:.0f} / "
        f"{r.after_mb:.0f} MB")
    row("diffusion jobs working at the same time (pairs)", lambda r: str(diffusion_overlaps(r.jobs)))
    row("a waiting visitor shown its place in the queue", lambda r: "yes" if r.queue_shown else "no")
    row("server alive afterwards", lambda r: "yes" if r.alive else "NO")
    return "\n".join(rows)


def main(visitors: int = 8, jobs: int = 2, storm: int = 2, frames: int = 48, against: Path | None = None) -> None:
    import os
    import tempfile

    from bench.results import record

    load = os.getloadavg()
    results: dict[str, CrowdResult] = {}
    with tempfile.TemporaryDirectory(prefix="vivid-app-crowd-") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp / "inputs", side=256, frames=frames, fps=25)
        if against is not None:
            results[f"before ({against.name})"] = measure(tmp / "before", inputs, crowd_jobs(visitors, jobs, storm),
                                                          root=against)
        results["this version"] = measure(tmp / "now", inputs, crowd_jobs(visitors, jobs, storm))
    messages = sorted({(j.outcome, _short(j.message)) for r in results.values() for j in r.jobs
                       if j.outcome in ("refused", "hung")})
    body = (f"{visitors} visitors at once: {visitors - storm} with {jobs} jobs each (preview and diffusion visitors "
            f"alternating; a 256 px portrait, a {frames}-frame 256 px clip; diffusion: the tiny random model, 4 steps, "
            f"window 8), and {storm} in a cancel storm ({2 * jobs} jobs each, cancelled after 0.2-2 s by the Cancel "
            f"button or by leaving). Load average before the run: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}.\n\n"
            + table(results))
    if messages:
        body += "\n\nNot finished:\n" + "\n".join(f"- {o}: {m}" for o, m in messages)
    record("App: a crowd mixing preview, diffusion and cancels (issue 32)", body)


def _short(message: str, n: int = 140) -> str:
    message = message.replace("|", "/").replace("\n", " ")
    return message if len(message) <= n else message[: n - 1] + "…"


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--visitors", type=int, default=8, help="visitors at once")
    cli.add_argument("--jobs", type=int, default=2, help="jobs per visitor")
    cli.add_argument("--against", type=Path, help="another checkout (the version before) measured too")
    a = cli.parse_args()
    main(visitors=a.visitors, jobs=a.jobs, against=a.against)
