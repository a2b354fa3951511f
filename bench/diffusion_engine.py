"""Diffusion engine figures: UNet work per frame vs the schedule's minimum, ReferenceNet runs
per video, peak memory while streaming 32 vs 512 frames, seconds per frame.

Usage: python bench/diffusion_engine.py [--sd15]   (--sd15 adds an SD1.5-sized random model)
Each measurement runs in a fresh subprocess so peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sd15_sized(resolution: int):
    """SD 1.5 / AnimateDiff / CLIP ViT-L shapes with random weights (no download)."""
    from vivid import VividPipeline
    from vivid.models.builders import sd15_sized_parts

    return VividPipeline(**sd15_sized_parts(0).components(), resolution=resolution, face_backend="mesh")


def measure(model: str, frames: int, window: int, overlap: int, steps: int, resolution: int) -> dict:
    """One streamed generation; returns counts, timings and this process's peak memory."""
    import resource

    import numpy as np
    import torch
    from skimage import data

    from vivid import VividPipeline
    from vivid.face import MotionTrack

    torch.set_num_threads(2)
    pipe = VividPipeline.tiny(resolution=resolution) if model == "tiny" else sd15_sized(resolution)
    ref = pipe.prepare_reference(data.astronaut())
    one = pipe.prepare_driving([data.astronaut()])
    rng = np.random.default_rng(0)
    motion = MotionTrack([one.points[0] + rng.normal(0, 0.5, one.points[0].shape).astype(np.float32) for _ in range(frames)],
                         one.resolution, one.square)
    counts = {"unet_frames": 0, "reference_net": 0}

    def count_unet(module, args, kwargs):
        counts["unet_frames"] += args[0].shape[0] * args[0].shape[2]  # batch x frames

    pipe.unet.register_forward_pre_hook(count_unet, with_kwargs=True)
    pipe.reference_net.register_forward_hook(lambda *a: counts.__setitem__("reference_net", counts["reference_net"] + 1))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    n_out = 0
    for event in pipe.generate(ref, motion, window=window, overlap=overlap, steps=steps, guidance=3.5, cyclic=True):
        n_out += event.kind == "frame"
    seconds = time.perf_counter() - start
    from vivid.windows import context_windows

    minimum = sum(len(w) for s in range(steps) for w in context_windows(frames, window, overlap, s, cyclic=True))
    return dict(
        frames=n_out, seconds=seconds, unet_frames=counts["unet_frames"], schedule_frames=2 * minimum,
        reference_net=counts["reference_net"], peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        setup_mb=rss_before,
    )


def run_child(**kw) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sd15", action="store_true", help="also measure an SD1.5-sized random model (slow, ~10 GB RAM)")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    from bench.results import record

    rows = []
    tiny = {n: run_child(model="tiny", frames=n, window=24, overlap=4, steps=4, resolution=64) for n in (32, 512)}
    for n, r in tiny.items():
        rows.append(_row(f"tiny, 64 px, {n} frames, window 24/overlap 4, 4 steps", r, n, 4))
    per_frame_mb = (tiny[512]["peak_mb"] - tiny[32]["peak_mb"]) / (512 - 32)
    text = _table(rows) + (
        f"\nPeak memory per extra frame while streaming (tiny): **{per_frame_mb * 1024:.0f} KB** "
        f"(target < 512 KB) — {'met' if per_frame_mb < 0.5 else 'NOT met'}.\n"
    )
    if args.sd15:
        r = run_child(model="sd15", frames=16, window=8, overlap=2, steps=2, resolution=128)
        text += "\n" + _table([_row("SD1.5-sized random weights, 128 px, 16 frames, window 8/overlap 2, 2 steps", r, 16, 2)])
    text += ("\n`UNet frame-evals / frame / step` counts each frame of each UNet call, guidance doubling "
             "included; the schedule's minimum is the sum of window lengths the schedule asks for (x2 for guidance).\n")
    record("Diffusion engine", text)


def _row(name: str, r: dict, frames: int, steps: int) -> list[str]:
    return [name, f"{r['unet_frames'] / frames / steps:.2f}", f"{r['schedule_frames'] / frames / steps:.2f}",
            str(r["reference_net"]), f"{r['peak_mb']:.0f}", f"{r['seconds'] / frames:.3f}"]


def _table(rows: list[list[str]]) -> str:
    head = ["run", "UNet frame-evals / frame / step", "schedule minimum", "ReferenceNet runs / video", "peak RSS MB", "s / frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


if __name__ == "__main__":
    main()
