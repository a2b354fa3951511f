"""Do clamped cyclic windows show seams where they leave frames out of every overlap?
Measured on the shipped mini model (trained: its frames are coherent, unlike a random model's).

Usage: python bench/cyclic_seams.py [--frames 100] [--seeds 3] [--steps N] [--window 24] [--overlap 4]

Clamped cyclic windows (the default, `wrap=False`) keep the first window at frame 0 and the last
at the end; only the inner ones move, so at the pipeline's defaults fewer frames ever sit in an
overlap than with windows that wrap past the end (100 frames, window 24, overlap 4: 32 of the
98 inner frames against all 98; bench/cyclic_wrap.py (d)). A frame never in an overlap is
denoised by one window at every step, so a seam would show as a larger frame-to-frame change
where a window edge falls than elsewhere. For uniform, clamped and wrapped windows on the same
inputs and seeds: the mean frame-to-frame difference (0-255, full frames and 8x8 cells) at
transitions that were a window edge at some step (weighted by how often), at transitions that
never were, and their ratio (mean over seeds ± standard error; 1 = no seam).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.cyclic_wrap import coarse, driving_motion, edge_counts, frame_steps, smoothness, summarise  # noqa: E402
from bench.results import record  # noqa: E402

SCHEDULES = {"uniform": dict(cyclic=False, wrap=False), "cyclic, clamped (default)": dict(cyclic=True, wrap=False),
             "cyclic, wrapped": dict(cyclic=True, wrap=True)}


def in_overlap(num_frames: int, window: int, overlap: int, steps: int, flags: dict) -> int:
    """Inner frames (all but the first and last) that sit in two windows at some step."""
    from vivid.windows import context_windows

    seen = np.zeros(num_frames, bool)
    for step in range(steps):
        count = np.zeros(num_frames, int)
        for w in context_windows(num_frames, window, overlap, step, **flags):
            count[list(w)] += 1
        seen |= count > 1
    return int(seen[1:-1].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's own)")
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--overlap", type=int, default=4)
    args = parser.parse_args()
    import torch
    from skimage import data

    from vivid import VividPipeline
    from vivid.models.shipped import PROJECT_MINI_MODEL_DIR

    torch.set_num_threads(2)
    t0 = time.monotonic()
    pipe = VividPipeline.from_pretrained(PROJECT_MINI_MODEL_DIR)
    steps = args.steps or pipe.sampling_defaults.steps
    guidance = pipe.sampling_defaults.guidance
    ref = pipe.prepare_reference(data.astronaut())
    motion, source = driving_motion(pipe, ref, args.frames)
    n = len(motion)
    rows = []
    for name, flags in SCHEDULES.items():
        cuts = edge_counts(n, args.window, args.overlap, steps, flags)
        full, cells = [], []
        for seed in range(args.seeds):
            frames = np.stack([e.frame for e in pipe.generate(ref, motion, window=args.window, overlap=args.overlap,
                                                              steps=steps, guidance=guidance, seed=seed, **flags)
                               if e.kind == "frame"]).astype(np.float64)
            h, w = frames.shape[1] - frames.shape[1] % 8, frames.shape[2] - frames.shape[2] % 8
            frames = frames[:, :h, :w]  # whole 8x8 cells
            full.append(smoothness(frame_steps(frames), cuts, 4))
            cells.append(smoothness(frame_steps(coarse(frames)), cuts, 4))
        f, c = summarise(full), summarise(cells)
        rows.append(f"| {name} | {in_overlap(n, args.window, args.overlap, steps, flags)} of {n - 2} | "
                    f"{int((cuts > 0).sum())} | {f['edge']:.2f} / {f['never']:.2f} | {f['edge_ratio']:.3f} ± "
                    f"{f['edge_ratio_sem']:.3f} | {c['edge']:.2f} / {c['never']:.2f} | {c['edge_ratio']:.3f} ± "
                    f"{c['edge_ratio_sem']:.3f} |")
        print(rows[-1], flush=True)
    load = os.getloadavg()
    body = (f"The shipped mini model (128 px), its own sampling ({steps} steps, guidance {guidance:g}), reference: "
            f"skimage's astronaut; driving: {source}; window {args.window}, overlap {args.overlap}; seeds "
            f"0-{args.seeds - 1}; {(time.monotonic() - t0) / 60:.1f} min, load average {load[0]:.1f}.\n\n"
            "| schedule | inner frames ever in an overlap | transitions ever on a window edge | edge / never, full "
            "| ratio, full | edge / never, 8x8 | ratio, 8x8 |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    record("Cyclic windows: do clamped windows show seams? (issue 32)", body)


if __name__ == "__main__":
    main()
