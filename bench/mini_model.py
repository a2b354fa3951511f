"""VividPortraits-mini's speed against the preview engine's, in one run on the same clip:
`python -m vivid animate` end to end (start-up, decoding, tracking, denoising, decoding,
encoding with sound) with `--engine preview` and with `--engine diffusion` (the shipped model
at its recommended settings, then at other step counts), rounds interleaved so load from other
work hits them alike. The issue's target: a 10 s clip in at most 40x the preview's time.

Usage: python bench/mini_model.py [--clip CLIP] [--seconds 10] [--reference IMG] [--rounds 2]
       [--steps 6,10,15] [--no-record]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results import record  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TARGET = 40.0  # the diffusion engine's time, at most this many times the preview's


def cut(clip: Path, seconds: float, folder: Path) -> Path:
    """The first `seconds` of `clip` (sound kept), re-encoded so every run decodes the same file."""
    out = folder / f"{clip.stem}-{seconds:g}s.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-t", str(seconds), "-c:v", "libx264", "-crf", "14",
                    "-c:a", "aac", str(out)], check=True)
    return out


def animate(reference: Path, clip: Path, out: Path, *extra: str) -> float:
    """Seconds of one `python -m vivid animate` run (the shipped model visible to it)."""
    env = {k: v for k, v in os.environ.items() if k != "VIVID_SHIPPED_MODEL"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vivid", "animate", str(reference), str(clip), "-o", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"animate {' '.join(extra)} failed:\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, default=DATA / "driving" / "d3.mp4")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--reference", type=Path, default=ROOT / "assets" / "grace_hopper.jpg")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", default="", help="other step counts to time, comma-separated (one run each)")
    p.add_argument("--no-record", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args()

    from vivid.media import probe_video
    from vivid.models.shipped import PROJECT_MINI_MODEL_DIR
    from vivid.models.saved import check_weights_folder

    defaults = check_weights_folder(PROJECT_MINI_MODEL_DIR).sampling
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = cut(args.clip, args.seconds, tmp)
        frames = probe_video(clip).frames
        preview, diffusion = [], []
        for _ in range(args.rounds):
            preview.append(animate(args.reference, clip, tmp / "p.mp4", "--engine", "preview"))
            diffusion.append(animate(args.reference, clip, tmp / "d.mp4", "--engine", "diffusion"))
        others = {}
        for steps in [int(s) for s in args.steps.split(",") if s.strip()]:
            others[steps] = animate(args.reference, clip, tmp / "s.mp4", "--engine", "diffusion", "--steps", str(steps))
    p_med, d_med = statistics.median(preview), statistics.median(diffusion)
    ratio = statistics.median(d / p for d, p in zip(diffusion, preview))
    load = os.getloadavg()[0]
    rows = [f"| preview | {p_med:.1f} | {frames / p_med:.1f} | 1.0 |",
            f"| diffusion, recommended ({defaults.steps} steps, guidance {defaults.guidance:g}, "
            f"{defaults.scheduler or 'saved scheduler'}) | {d_med:.1f} | {frames / d_med:.2f} | {ratio:.1f} |"]
    rows += [f"| diffusion, {steps} steps | {t:.1f} | {frames / t:.2f} | {t / p_med:.1f} |" for steps, t in others.items()]
    verdict = "met" if ratio <= TARGET else "NOT met"
    body = (
        f"`{args.clip.name}`, first {args.seconds:g} s ({frames} frames), portrait `{args.reference.name}`; "
        f"`python -m vivid animate` end to end, median of {args.rounds} interleaved rounds (ratio: median of the "
        f"rounds' ratios). 1-min load average at the end: {load:.1f} on 2 cores.\n\n"
        "| engine | seconds | frames/s | x preview |\n|---|---:|---:|---:|\n" + "\n".join(rows) +
        f"\n\nTarget: the diffusion engine at most {TARGET:g}x the preview's time at its default settings: **{verdict}** "
        f"({ratio:.1f}x). Rounds: preview {json.dumps([round(t, 1) for t in preview])} s, diffusion "
        f"{json.dumps([round(t, 1) for t in diffusion])} s.\n"
    )
    if args.no_record:
        print(body)
    else:
        record("VividPortraits-mini: speed against the preview engine", body)


if __name__ == "__main__":
    main()
