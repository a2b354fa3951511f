"""The diffusion engine (the shipped VividPortraits-mini) through `python -m vivid animate`, now
and at an earlier git revision, in interleaved rounds: seconds per run, their ratio per round,
and whether the two give the same frames. A check that a change elsewhere (face finding,
tracking, start-up) did not slow the diffusion engine down or change what it draws.

Usage: python bench/diffusion_cli.py --against REV [--rounds 3] [--frames 12]; --record writes
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
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
from bench.preview_engine import DATA, checkout  # noqa: E402
from bench.results import record  # noqa: E402
from vivid.media import read_video  # noqa: E402


def run(root: Path, reference: str, clip: str, out: Path, frames: int) -> float:
    """Seconds of one diffusion run of the CLI at `root` (bytecode written, as installed code has it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-m", "vivid", "animate", reference, clip, "-o", str(out), "--engine", "diffusion",
               "--max-frames", str(frames)]
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, metavar="REV")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--clip", default=str(DATA / "driving" / "d3.mp4"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    reference = str(tmp / "astronaut.png")
    Image.fromarray(data.astronaut()).save(reference)
    roots = {"now": ROOT, args.against: checkout(args.against, tmp / "previous")}
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in roots}
    for _ in range(args.rounds):
        for name, root in roots.items():
            times[name].append(run(root, reference, args.clip, tmp / f"{name}.mp4", args.frames))
    ratios = [a / b for a, b in zip(times["now"], times[args.against])]
    now, before = (list(read_video(tmp / f"{name}.mp4")) for name in roots)
    same = sum(np.array_equal(a, b) for a, b in zip(now, before))
    body = (f"VividPortraits-mini through `python -m vivid animate` (astronaut, the first {args.frames} frames of "
            f"{Path(args.clip).name}, the model's own sampling settings), now and at `{args.against}`, "
            f"{args.rounds} interleaved rounds; 1-min load average {load:.1f} at the start on 2 cores (other work "
            "was sharing the machine).\n\n| | s per run (median) | rounds |\n|---|---|---|\n"
            + "\n".join(f"| {name} | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} |"
                        for name, v in times.items())
            + f"\n\nNow / `{args.against}`: **{statistics.median(ratios):.2f}x** (median of the rounds' ratios: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}); {same} of {len(now)} frames identical.\n")
    if args.record:
        record("Diffusion engine through the CLI, against an earlier version", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
