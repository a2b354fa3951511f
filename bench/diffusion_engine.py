"""Diffusion engine figures: seconds per frame, UNet frame-evaluations against the schedule's
minimum, ReferenceNet runs per video, memory while building and while generating, and how
far bf16 output is from fp32 output (PSNR), for the tiny and the SD1.5-sized random model.

Usage:
  python bench/diffusion_engine.py                 tiny model: fp32 and bf16, streaming memory
  python bench/diffusion_engine.py --sd15          + SD1.5-sized random weights (16 frames,
                                                     window 8, overlap 2, 2 steps, 128 px)
  python bench/diffusion_engine.py --sd15 --load   + loading a saved SD1.5-sized model and
                                                     building from base-model folders
  --dtype auto|fp32|bf16|fp16 (repeatable) picks the dtypes compared (default: fp32 and bf16;
  the one `auto` picks, as the CLI does, is marked). --threads N (default 2).

Every measurement runs in a fresh subprocess, so its memory figures are its own:
construction peak = high-water RSS while building the networks, resident = RSS once built,
generation peak = high-water RSS during generation (reset after building). The same-run
baseline is the engine as it was before issue 12: fp32, the motion UNet copied by
`UNetMotionModel.from_unet2d`, reference keys/values recomputed for every frame and step,
torch's OpenMP threads spinning when idle. Other rows change one lever at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = dict(model="tiny", frames=32, window=24, overlap=4, steps=4, resolution=64)
SD15 = dict(model="sd15", frames=16, window=8, overlap=2, steps=2, resolution=128)


def _status(field: str) -> float:
    """A /proc/self/status memory figure in MB (VmHWM: high-water RSS, VmRSS: current)."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)


def build(model: str, resolution: int, dtype: str, legacy: bool = False, load: str | None = None):
    """The pipeline of one run. `legacy`: the pre-issue-12 construction (fp32 parts, the
    motion UNet copied by from_unet2d). `load`: a saved folder, or base: a base-model folder."""

    from vivid import VividPipeline
    from vivid.models.builders import BaseModels, sd15_sized_parts
    from vivid.precision import choose_precision

    if load is not None and load.startswith("base:"):
        folder = Path(load[5:])
        base = BaseModels(stable_diffusion=str(folder / "sd"), vae=str(folder / "vae"),
                          image_encoder=str(folder / "clip"), motion_adapter=str(folder / "adapter"))
        return VividPipeline.from_base_models(base, device="cpu", dtype=dtype, resolution=resolution)
    if load is not None:
        return VividPipeline.from_pretrained(load, device="cpu", dtype=dtype)
    if model == "tiny":
        return VividPipeline.tiny(resolution=resolution, dtype=dtype)
    if legacy:
        from diffusers import UNetMotionModel

        parts = sd15_sized_parts(0)
        components = parts.components()
        components["unet"] = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
        del parts
        return VividPipeline(**components, resolution=resolution, face_backend="mesh")
    precision = choose_precision(dtype, "cpu")
    pipe = VividPipeline(**sd15_sized_parts(0, precision.dtype).components(), resolution=resolution, face_backend="mesh")
    return pipe.to_precision(dtype)  # already in that dtype: records the choice, copies nothing


def measure(model: str, frames: int, window: int, overlap: int, steps: int, resolution: int, dtype: str = "auto",
            threads: int = 2, cache_kv: bool = True, legacy: bool = False, load: str | None = None,
            out: str | None = None, generate: bool = True, wrap: bool = False) -> dict:
    """One run in this process: build, then stream a generation; counts, timings, memory."""
    import torch

    torch.set_num_threads(threads)
    from skimage import data

    import vivid.pipeline  # noqa: F401  (imports are not construction)
    from vivid.face import MotionTrack
    from vivid.windows import context_windows

    wall, cpu = time.perf_counter(), time.process_time()
    pipe = build(model, resolution, dtype, legacy, load)
    result = dict(build_seconds=time.perf_counter() - wall, construction_peak_mb=_status("VmHWM"),
                  resident_mb=_status("VmRSS"), precision=str(pipe.precision), dtype=pipe.precision.name)
    if not generate:
        return result
    pipe.bank.cache_kv = cache_kv and not legacy
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
    _reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    images = [e.frame for e in pipe.generate(ref, motion, window=window, overlap=overlap, steps=steps, guidance=3.5, cyclic=True,
                                             wrap=wrap) if e.kind == "frame"]
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    minimum = sum(len(w) for s in range(steps) for w in context_windows(frames, window, overlap, s, cyclic=True, wrap=wrap))
    if out:
        np.save(out, np.stack(images))
    return dict(result, frames=len(images), seconds=seconds, cpu_seconds=cpu_seconds, unet_frames=counts["unet_frames"],
                schedule_frames=2 * minimum, reference_net=counts["reference_net"], generation_peak_mb=_status("VmHWM"))


def save_models(folder: str) -> dict:
    """Write the SD1.5-sized random model twice: as a saved pipeline (fp32, as training
    exports it) and as base-model folders (the layout `from_base_models` reads)."""
    from vivid import VividPipeline
    from vivid.models.builders import sd15_sized_parts

    folder = Path(folder)
    parts = sd15_sized_parts(0)
    parts.unet2d.save_pretrained(folder / "base" / "sd" / "unet")
    parts.adapter.save_pretrained(folder / "base" / "adapter")
    parts.vae.save_pretrained(folder / "base" / "vae")
    parts.image_encoder.save_pretrained(folder / "base" / "clip" / "image_encoder")
    parts.feature_extractor.save_pretrained(folder / "base" / "clip" / "feature_extractor")
    VividPipeline(**parts.components(), resolution=128, face_backend="mesh").save_pretrained(folder / "saved")
    return {}


#: RAM (MB) a run needs, by model and dtype: the machine is shared, so a run waits for it.
NEEDS_MB = {("tiny", "any"): 1500, ("sd15", "bf16"): 7500, ("sd15", "fp16"): 7500, ("sd15", "fp32"): 12500,
            ("sd15", "legacy"): 17000}


def _wait_for_memory(need_mb: float, patience: float = 3600) -> None:
    """Wait (up to `patience` s) until the machine has `need_mb` available, so a big run
    neither fails nor pushes someone else's process out of memory."""
    start = time.monotonic()
    while True:
        available = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 1024
        if available >= need_mb:
            return
        if time.monotonic() - start > patience:
            raise RuntimeError(f"only {available:.0f} MB of RAM available, this run needs {need_mb:.0f} MB")
        print(f"waiting for {need_mb:.0f} MB of free RAM ({available:.0f} MB now)", file=sys.stderr, flush=True)
        time.sleep(30)


def run_child(spin: bool = False, **kw) -> dict:
    """`measure(**kw)` (or `save_models`) in a fresh interpreter, once the RAM it needs is free.
    Its OpenMP threads sleep when idle, as under `python -m vivid` and the app (vivid/__main__.py),
    unless `spin`: then torch's default, spinning a while before sleeping."""
    if kw.get("model") == "tiny":
        _wait_for_memory(NEEDS_MB[("tiny", "any")])
    elif "save" in kw:
        _wait_for_memory(NEEDS_MB[("sd15", "fp32")])
    else:
        _wait_for_memory(NEEDS_MB[("sd15", "legacy" if kw.get("legacy") else kw.get("dtype", "fp32"))])
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if spin:
        env.pop("OMP_WAIT_POLICY")
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd15", action="store_true", help="also the SD1.5-sized random model (slow; ~10 GB RAM at fp32)")
    parser.add_argument("--load", action="store_true", help="with --sd15: also load a saved model / base-model folders")
    parser.add_argument("--dtype", action="append", choices=["auto", "fp32", "bf16", "fp16"],
                        help="dtypes to compare (repeatable; default fp32 and bf16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pre-issue-12 SD1.5-sized run")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        kw = json.loads(args.child)
        print(json.dumps(save_models(kw["save"]) if "save" in kw else measure(**kw)))
        return
    from bench.results import record
    from vivid.precision import choose_precision

    auto = choose_precision("auto", "cpu")
    dtypes = list(dict.fromkeys(auto.name if d == "auto" else d for d in (args.dtype or ["fp32", "bf16"])))
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    text = (f"`auto` on this machine: **{auto}**. Torch threads per run: {args.threads}. "
            "Memory figures are RSS in MB (MiB); 'construction peak' is the high-water mark while building "
            "the networks, 'resident' the RSS once built, 'generation peak' the high-water mark while generating.\n\n")

    rows, outputs = [], {}
    for dt in dtypes:
        outputs[("tiny", dt)] = str(tmp / f"tiny-{dt}.npy")
        r = run_child(**TINY, dtype=dt, threads=args.threads, out=outputs[("tiny", dt)])
        rows.append(_row("tiny, 64 px, 32 frames, window 24/overlap 4, 4 steps", r, TINY, dt == auto.name))
    _add_psnr(rows, outputs, "tiny", dtypes)
    long = {n: run_child(**dict(TINY, frames=n), dtype=auto.name, threads=args.threads) for n in (32, 512)}
    per_frame_kb = (long[512]["generation_peak_mb"] - long[32]["generation_peak_mb"]) * 1024 / (512 - 32)
    text += _table(rows) + (
        f"\nStreaming memory (tiny, {auto.name}): generation peak {long[32]['generation_peak_mb']:.0f} MB at 32 frames, "
        f"{long[512]['generation_peak_mb']:.0f} MB at 512 frames: **{per_frame_kb:.0f} KB per extra frame** "
        f"(target < 512 KB) — {'met' if per_frame_kb < 512 else 'NOT met'}.\n")

    if args.sd15:
        rows = []
        if not args.no_baseline:
            outputs[("sd15", "before")] = str(tmp / "sd15-before.npy")
            r = run_child(**SD15, dtype="fp32", threads=args.threads, legacy=True, spin=True, out=outputs[("sd15", "before")])
            rows.append(_row("before issue 12: fp32, motion UNet copied by from_unet2d, K/V uncached, threads spinning",
                             r, SD15, False))
        for dt in dtypes:
            outputs[("sd15", dt)] = str(tmp / f"sd15-{dt}.npy")
            r = run_child(**SD15, dtype=dt, threads=args.threads, out=outputs[("sd15", dt)])
            rows.append(_row("now", r, SD15, dt == auto.name))
        outputs[("sd15", "nocache")] = str(tmp / "sd15-nocache.npy")
        r = run_child(**SD15, dtype=auto.name, threads=args.threads, cache_kv=False, out=outputs[("sd15", "nocache")])
        rows.append(_row("now, reference K/V recomputed per call (cache off)", r, SD15, False))
        outputs[("sd15", "spin")] = str(tmp / "sd15-spin.npy")
        r = run_child(**SD15, dtype=auto.name, threads=args.threads, spin=True, out=outputs[("sd15", "spin")])
        rows.append(_row("now, OpenMP threads spinning when idle (torch's default)", r, SD15, False))
        _add_psnr(rows, outputs, "sd15", dtypes)
        r = run_child(**SD15, dtype=auto.name, threads=args.threads, wrap=True)  # output differs by design: no PSNR
        rows.append(_row("now, windows wrapping past the end (the schedule the issue measured; `--wrap`)", r, SD15, False))
        same = np.array_equal(np.load(outputs[("sd15", "nocache")]), np.load(outputs[("sd15", auto.name)]))
        text += ("\nSD1.5-sized random weights (UNet 2D + AnimateDiff v1-5-2 adapter + ReferenceNet + CLIP ViT-L/14 + "
                 "sd-vae-ft-mse shapes), 128 px, 16 frames, window 8/overlap 2, 2 steps, guidance 3.5:\n\n" + _table(rows))
        text += (f"\nReference K/V cache: frames with and without it are "
                 f"{'identical' if same else 'NOT identical (PSNR %.1f dB)' % psnr(np.load(outputs[('sd15', 'nocache')]), np.load(outputs[('sd15', auto.name)]))}.\n")
        if args.load:
            run_child(save=str(tmp / "models"))
            rows = []
            for dt in dtypes:
                for what, where in (("from_pretrained (saved fp32 pipeline)", str(tmp / "models" / "saved")),
                                    ("from_base_models (base-model folders, fp32 files)", "base:" + str(tmp / "models" / "base"))):
                    r = run_child(**SD15, dtype=dt, threads=args.threads, load=where, generate=False)
                    rows.append([what, r["precision"], f"{r['construction_peak_mb']:.0f}", f"{r['resident_mb']:.0f}",
                                 f"{r['build_seconds']:.1f}"])
            text += ("\nLoading the SD1.5-sized model from disk (no generation):\n\n"
                     + _plain_table(["how", "dtype", "construction peak MB", "resident MB", "seconds"], rows))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    text += (f"\n1-min load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "(other work shares the machine; wall times depend on it, ratios within one run much less).\n"
             "`UNet frame-evals / frame / step` counts each frame of each UNet call, guidance doubling included; the "
             "schedule's minimum is the sum of window lengths the schedule asks for (x2 for guidance). "
             "'CPU s / frame' is process CPU time (all threads).\n")
    record("Diffusion engine", text)


def _row(name: str, r: dict, cfg: dict, is_auto: bool) -> list[str]:
    frames, steps = cfg["frames"], cfg["steps"]
    return [name, r["dtype"] + (" (auto)" if is_auto else ""), f"**{r['seconds'] / frames:.3f}**",
            f"{r['cpu_seconds'] / frames:.3f}", f"{r['unet_frames'] / frames / steps:.2f}",
            f"{r['schedule_frames'] / frames / steps:.2f}", str(r["reference_net"]), f"{r['construction_peak_mb']:.0f}",
            f"{r['resident_mb']:.0f}", f"{r['generation_peak_mb']:.0f}", "—"]


def _add_psnr(rows: list[list[str]], outputs: dict, model: str, dtypes: list[str]) -> None:
    if ("fp32" not in dtypes):
        return
    base = np.load(outputs[(model, "fp32")])
    keys = [k for k in outputs if k[0] == model]
    for row, key in zip(rows[-len(keys):], keys):
        if key[1] != "fp32":
            row[-1] = f"{psnr(np.load(outputs[key]), base):.1f}"


HEAD = ["run", "dtype", "s / frame", "CPU s / frame", "UNet frame-evals / frame / step", "schedule minimum",
        "ReferenceNet runs / video", "construction peak MB", "resident MB", "generation peak MB", "PSNR vs fp32 (dB)"]


def _table(rows: list[list[str]]) -> str:
    return _plain_table(HEAD, rows)


def _plain_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


if __name__ == "__main__":
    main()
