"""Diffusion engine figures: seconds per frame, UNet frame-evaluations against the schedule's
minimum, ReferenceNet runs per video, memory while building and while generating, and how
far bf16 output is from fp32 output (PSNR), for the tiny and the SD1.5-sized random model.

Usage:
  python bench/diffusion_engine.py                 tiny model: fp32 and bf16, streaming memory
  python bench/diffusion_engine.py --sd15          + SD1.5-sized random weights (16 frames,
                                                     window 8, overlap 2, 2 steps, 128 px)
  python bench/diffusion_engine.py --sd15 --load   + loading a saved SD1.5-sized model and
                                                     building from base-model folders
  python bench/diffusion_engine.py --loading       only the loading (its own section): the
                                                     saved model, the base models with and
                                                     without trained weights, next to the
                                                     previous from_base_models
  python bench/diffusion_engine.py --schedules N   only the clamped cyclic windows before issue 22,
                                                     wrapped windows and now, N interleaved rounds
                                                     (16 frames, window 8, overlap 2, 2 steps, 128 px;
                                                     --tiny: the tiny model, a check of the script)
  --dtype auto|fp32|bf16|fp16 (repeatable) picks the dtypes compared (default: fp32 and bf16;
  the one `auto` picks, as the CLI does, is marked). --threads N (default 2).

Memory is RSS in MiB (2^20 bytes); generation peaks are also given in GB = 10^9 bytes, the
unit of issue 12's target (6 GB = 6.0e9 bytes = 5722 MiB). With --sd15, one more run of the
default dtype (not timed) takes the memory apart: the runtime before any network exists, each
network's weights, the face models, and per stage of the generation the high-water RSS next to
the tensors actually alive (the rest is allocator slack).

Every measurement runs in a fresh subprocess, so its memory figures are its own:
construction peak = high-water RSS while building the networks, resident = RSS once built,
generation peak = high-water RSS during generation (reset after building). The same-run
baseline is the engine as it was before issue 12: fp32, the motion UNet copied by
`UNetMotionModel.from_unet2d`, reference keys/values recomputed for every frame and step,
torch's OpenMP threads spinning when idle. Other rows change one lever at a time. "Now"
builds as a user does, with `from_base_models` from the same random weights written once as
fp32 base-model folders, and streams CLIP and the ReferenceNet from disk, as every loader does
on a CPU; one row keeps every network in memory. --speed-rounds builds "now" from the random
weights in memory instead (`offload_to_disk` writes CLIP and the ReferenceNet out): the same
networks and speed, without writing 6.4 GB of files per round.
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


MIB = 2**20
#: Issue 12's target for the SD1.5-sized run's generation peak: 6 GB, in bytes (10^9).
TARGET_BYTES = 6.0e9


def gb(mib: float) -> float:
    """MiB -> GB (10^9 bytes)."""
    return mib * MIB / 1e9


def runtime_breakdown() -> dict[str, float]:
    """This process's RSS in MiB by what holds it (/proc/self/smaps): CUDA libraries (the PyPI
    torch wheel is the CUDA build; they load on a CPU too), triton (imported by torch._dynamo,
    which diffusers imports), other shared libraries, and anonymous memory (Python objects,
    torch's operator tables, malloc)."""
    kinds = dict.fromkeys(("cuda_libraries", "triton", "other_libraries", "anonymous"), 0.0)
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            path = fields[5] if len(fields) > 5 else ""
            kind = ("anonymous" if not path.startswith("/") else "cuda_libraries"
                    if re.search(r"/nvidia/|_cuda|/cuda/bindings/|/libcu[a-z]*\.so|/libnv", path)
                    else "triton" if "/triton/" in path else "other_libraries")
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) / 1024
    return dict(kinds, total=sum(kinds.values()))


#: Weight groups of the pipeline, in the order they are reported.
WEIGHT_GROUPS = ("denoising UNet, image part", "motion modules", "ReferenceNet", "CLIP image encoder", "VAE",
                 "PoseGuider")


def weight_bytes(pipe) -> dict[str, dict[str, int]]:
    """Bytes of parameters and buffers per weight group and dtype, each tensor storage counted
    once across the whole pipeline (the motion UNet holds the image UNet's tensors)."""
    networks = {"denoising UNet": pipe.unet, "ReferenceNet": pipe.reference_net,
                "CLIP image encoder": pipe.image_encoder, "VAE": pipe.vae, "PoseGuider": pipe.pose_guider}
    seen, out = set(), {g: {} for g in WEIGHT_GROUPS}
    for network, module in networks.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_meta:  # streamed from disk (`offload_to_disk`): not resident
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen or not storage.nbytes():
                continue
            seen.add(storage.data_ptr())
            group = ("motion modules" if "motion_modules" in name else "denoising UNet, image part") \
                if network == "denoising UNet" else network
            dtype = str(tensor.dtype).removeprefix("torch.")
            out[group][dtype] = out[group].get(dtype, 0) + storage.nbytes()
    return out


def live_tensors():
    """A TorchDispatchMode that keeps the bytes of the tensor storages torch ops create while
    they are alive, and their high-water mark per `stage`: the activations, caches and
    outputs of a run, without the allocator's slack around them."""
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveTensors(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.stage, self.current, self.peaks = "other", 0, {}
            self._held: dict[int, list[int]] = {}  # storage address -> [bytes, tensors made by ops that hold it]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in tree_flatten(out)[0]:
                if hasattr(tensor, "untyped_storage") and tensor.untyped_storage().nbytes():
                    self._hold(tensor)
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), self.current)
            return out

        def _hold(self, tensor) -> None:
            storage = tensor.untyped_storage()
            entry = self._held.setdefault(storage.data_ptr(), [storage.nbytes(), 0])
            if entry[1] == 0:
                self.current += entry[0]
            entry[1] += 1
            weakref.finalize(tensor, self._release, storage.data_ptr())

        def _release(self, address: int) -> None:
            entry = self._held[address]
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self._held[address]

    return LiveTensors()


#: The networks a generation runs, in order, as stages of the memory anatomy.
STAGES = (("CLIP image encoder", "image_encoder"), ("VAE encoder", "vae.encoder"), ("ReferenceNet", "reference_net"),
          ("PoseGuider", "pose_guider"), ("denoising UNet", "unet"), ("VAE decoder", "vae.decoder"))


def anatomy_run(pipe, run) -> dict:
    """`run()` (a generation) with, per network it runs (STAGES; "between networks" for the
    rest), how much it raised the high-water RSS and the most tensor bytes alive, and the
    reference bank's size; the tensor bytes still alive at the end."""
    import threading

    live, raised, bank = live_tensors(), {}, {"features": 0, "keys_values": 0}
    state = {"stage": "between networks", "running": True, "high": _status("VmRSS")}
    start = state["high"]

    def enter(stage):
        state["stage"] = live.stage = stage

    def sample():  # every rise of the high-water mark goes to the stage running then
        while state["running"]:
            rss = _status("VmRSS")
            if rss > state["high"]:
                raised[state["stage"]] = raised.get(state["stage"], 0) + rss - state["high"]
                state["high"] = rss
            time.sleep(0.004)

    def measure_bank(*_):
        bank["features"] = max(bank["features"], sum(t.nbytes for t in pipe.bank.features.values()))
        bank["keys_values"] = max(bank["keys_values"], sum(k.nbytes + v.nbytes for *_, k, v in pipe.bank._kv.values()))

    for stage, path in STAGES:
        network, _, part = path.partition(".")
        module = getattr(pipe, network).get_submodule(part)  # "" is the network itself
        module.register_forward_pre_hook(lambda *_, s=stage: enter(s))
        module.register_forward_hook(lambda *_: enter("between networks"))
    pipe.unet.register_forward_hook(measure_bank)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with live:
            run()
    finally:
        state["running"] = False
        sampler.join()
    return dict(generation_start_mb=start, stage_raised_mb=raised, stage_live_mb={k: v / MIB for k, v in live.peaks.items()},
                live_at_end_mb=live.current / MIB, bank_mb={k: v / MIB for k, v in bank.items()})


def previous_from_base_models(base, dtype: str, resolution: int):
    """`from_base_models` as it was before it streamed as it built: diffusers' and
    transformers' own loaders, every network in memory (the ReferenceNet a copy of the image
    UNet), then CLIP and the ReferenceNet written to disk and streamed from there."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from vivid import VividPipeline
    from vivid.models.builders import Parts
    from vivid.models.pose_guider import PoseGuider
    from vivid.precision import choose_precision

    precision = choose_precision(dtype, "cpu")
    dt = precision.dtype
    unet2d = UNet2DConditionModel.from_pretrained(base.stable_diffusion, subfolder="unet", torch_dtype=dt)
    parts = Parts(
        unet2d=unet2d, adapter=MotionAdapter.from_pretrained(base.motion_adapter, torch_dtype=dt),
        vae=AutoencoderKL.from_pretrained(base.vae, torch_dtype=dt),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(base.image_encoder, subfolder="image_encoder",
                                                                    torch_dtype=dt),
        feature_extractor=CLIPImageProcessor.from_pretrained(base.image_encoder, subfolder="feature_extractor"),
        pose_guider=PoseGuider(out_channels=unet2d.config.block_out_channels[0]).to(dt))
    pipe = VividPipeline(**parts.components(), resolution=resolution, parser="mesh")
    pipe._precision = precision
    return pipe.offload_to_disk()


def build(model: str, resolution: int, dtype: str, legacy: bool = False, load: str | None = None,
          offload: bool | None = None, trained: str | None = None):
    """The pipeline of one run. `legacy`: the pre-issue-12 construction (fp32 parts, the
    motion UNet copied by from_unet2d). `load`: a saved folder, base: a base-model folder
    (with `trained` weights, if given), or libraries: a base-model folder read the way
    `from_base_models` read it before (`previous_from_base_models`). `offload`: CLIP and the
    ReferenceNet streamed from disk (`disk_offload`; None: the loaders' default, on for the
    SD1.5-sized model here as on any CPU, off for the tiny one)."""

    from vivid import VividPipeline
    from vivid.models.builders import BaseModels, sd15_sized_parts
    from vivid.precision import choose_precision

    if load is not None and load.startswith(("base:", "libraries:")):
        folder = Path(load.split(":", 1)[1])
        base = BaseModels(stable_diffusion=str(folder / "sd"), vae=str(folder / "vae"),
                          image_encoder=str(folder / "clip"), motion_adapter=str(folder / "adapter"))
        if load.startswith("libraries:"):
            return previous_from_base_models(base, dtype, resolution)
        pipe = VividPipeline.from_base_models(base, trained, device="cpu", dtype=dtype, resolution=resolution,
                                              disk_offload=offload)
        pipe.register_to_config(parser="mesh")  # as every other row, wherever FaRL's weights are
        return pipe
    if load is not None:
        return VividPipeline.from_pretrained(load, device="cpu", dtype=dtype, disk_offload=offload)
    if model == "tiny":
        return VividPipeline.tiny(resolution=resolution, dtype=dtype)
    if legacy:
        from diffusers import UNetMotionModel

        parts = sd15_sized_parts(0)
        components = parts.components()
        components["unet"] = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
        del parts
        return VividPipeline(**components, resolution=resolution, parser="mesh")
    precision = choose_precision(dtype, "cpu")
    pipe = VividPipeline(**sd15_sized_parts(0, precision.dtype).components(), resolution=resolution, parser="mesh")
    pipe.to_precision(dtype)  # already in that dtype: records the choice, copies nothing
    # As from_pretrained does on a CPU, except that random weights have no files: written first.
    return pipe.offload_to_disk() if offload is not False else pipe


def measure(model: str, frames: int, window: int, overlap: int, steps: int, resolution: int, dtype: str = "auto",
            threads: int = 2, cache_kv: bool = True, legacy: bool = False, load: str | None = None,
            out: str | None = None, generate: bool = True, wrap: bool = False, anatomy: bool = False,
            offload: bool | None = None, trained: str | None = None, grid: bool = False) -> dict:
    """One run in this process: build, then stream a generation; counts, timings, memory.
    `anatomy`: also where the memory goes (`runtime_breakdown`, `weight_bytes`, `anatomy_run`;
    the tracking slows the run, so its times mean nothing). `grid`: the clamped cyclic windows
    of before issue 22 (`bench/cyclic_wrap.py`'s `grid_schedule`)."""
    import torch

    torch.set_num_threads(threads)
    from skimage import data

    import vivid.pipeline  # noqa: F401  (imports are not construction)
    from bench.cyclic_wrap import grid_schedule, windows_of
    from vivid.face import MotionTrack

    runtime = runtime_breakdown() if anatomy else None
    wall, cpu = time.perf_counter(), time.process_time()
    pipe = build(model, resolution, dtype, legacy, load, offload, trained)
    result = dict(build_seconds=time.perf_counter() - wall, construction_peak_mb=_status("VmHWM"),
                  resident_mb=_status("VmRSS"), precision=str(pipe.precision), dtype=pipe.precision.name,
                  streamed=list(pipe.streamed_networks))
    if anatomy:
        result.update(runtime_mb=runtime, weights_mb={g: {d: b / MIB for d, b in by.items()} for g, by in weight_bytes(pipe).items()})
    if not generate:
        return result
    pipe.bank.cache_kv = cache_kv and not legacy
    ref = pipe.prepare_reference(data.astronaut())
    one = pipe.prepare_driving([data.astronaut()])
    result["faces_prepared_mb"] = _status("VmRSS")
    rng = np.random.default_rng(0)
    motion = MotionTrack([one.points[0] + rng.normal(0, 0.5, one.points[0].shape).astype(np.float32) for _ in range(frames)],
                         one.resolution, one.square)
    counts = {"unet_frames": 0, "reference_net": 0}

    def count_unet(module, args, kwargs):
        counts["unet_frames"] += args[0].shape[0] * args[0].shape[2]  # batch x frames

    pipe.unet.register_forward_pre_hook(count_unet, with_kwargs=True)
    pipe.reference_net.register_forward_hook(lambda *a: counts.__setitem__("reference_net", counts["reference_net"] + 1))
    # Reference encoding: CLIP, the VAE encoder and the ReferenceNet, once per video.
    encoding = {}
    pipe.image_encoder.register_forward_pre_hook(lambda *a: encoding.setdefault("start", time.perf_counter()) and None)
    pipe.reference_net.register_forward_hook(lambda *a: encoding.__setitem__("end", time.perf_counter()))
    images = []

    def run():
        with grid_schedule(grid):
            images.extend(e.frame for e in pipe.generate(ref, motion, window=window, overlap=overlap, steps=steps,
                                                         guidance=3.5, cyclic=True, wrap=wrap) if e.kind == "frame")

    _reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    if anatomy:
        result.update(anatomy_run(pipe, run))
    else:
        run()
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    minimum = sum(len(w) for s in range(steps) for w in windows_of(frames, window, overlap, s, True, wrap, grid))
    if out:
        np.save(out, np.stack(images))
    return dict(result, frames=len(images), seconds=seconds, cpu_seconds=cpu_seconds, unet_frames=counts["unet_frames"],
                schedule_frames=2 * minimum, reference_net=counts["reference_net"], generation_peak_mb=_status("VmHWM"),
                encode_seconds=encoding["end"] - encoding["start"],
                after_generation_mb=_status("VmRSS"))


def save_models(folder: str) -> dict:
    """Write the SD1.5-sized random model three times: as a saved pipeline (fp32, as training
    exports it), as base-model folders (the layout `from_base_models` reads) and as trained
    weights (`TRAINED_FILES`, links to the saved pipeline's files)."""
    from vivid import VividPipeline
    from vivid.models.builders import sd15_sized_parts

    folder = Path(folder)
    parts = sd15_sized_parts(0)
    parts.unet2d.save_pretrained(folder / "base" / "sd" / "unet")
    parts.adapter.save_pretrained(folder / "base" / "adapter")
    parts.vae.save_pretrained(folder / "base" / "vae")
    parts.image_encoder.save_pretrained(folder / "base" / "clip" / "image_encoder")
    parts.feature_extractor.save_pretrained(folder / "base" / "clip" / "feature_extractor")
    VividPipeline(**parts.components(), resolution=128, parser="mesh").save_pretrained(folder / "saved")
    from vivid.pipeline import TRAINED_FILES

    (folder / "trained").mkdir()
    for name, file in TRAINED_FILES.items():
        (folder / "trained" / file).symlink_to(folder / "saved" / name / "diffusion_pytorch_model.safetensors")
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


def run_child(spin: bool = False, env: dict | None = None, **kw) -> dict:
    """`measure(**kw)` (or `save_models`) in a fresh interpreter, once the RAM it needs is free.
    Its OpenMP threads sleep when idle, as under `python -m vivid` and the app (vivid/__main__.py),
    unless `spin`: then torch's default, spinning a while before sleeping. `env`: more variables."""
    if kw.get("model") == "tiny":
        _wait_for_memory(NEEDS_MB[("tiny", "any")])
    elif "save" in kw:
        _wait_for_memory(NEEDS_MB[("sd15", "fp32")])
    else:
        _wait_for_memory(NEEDS_MB[("sd15", "legacy" if kw.get("legacy") else kw.get("dtype", "fp32"))])
    child_env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", **(env or {}))
    if spin:
        child_env.pop("OMP_WAIT_POLICY")
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(kw)], capture_output=True, text=True, cwd=ROOT,
                         env=child_env)
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
    parser.add_argument("--speed-rounds", type=int, metavar="N",
                        help="only the SD1.5-sized speed: N interleaved rounds of the pre-issue engine and the default, "
                             "the median of the per-round ratios (recorded as its own section)")
    parser.add_argument("--loading", action="store_true",
                        help="only the SD1.5-sized loading figures (recorded as their own section)")
    parser.add_argument("--schedules", type=int, metavar="N",
                        help="only the window schedules: N interleaved rounds of the clamped windows before issue 22, "
                             "wrapped windows and now, at the SD1.5-sized configuration (its own section)")
    parser.add_argument("--tiny", action="store_true", help="with --schedules: the tiny model instead (prints only)")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        kw = json.loads(args.child)
        print(json.dumps(save_models(kw["save"]) if "save" in kw else measure(**kw)))
        return
    if args.speed_rounds:
        speed_rounds(args.speed_rounds, args.threads)
        return
    if args.schedules:
        schedule_rounds(args.schedules, args.threads, args.tiny)
        return
    if args.loading:
        from vivid.precision import choose_precision

        auto = choose_precision("auto", "cpu").name
        loading(list(dict.fromkeys(auto if d == "auto" else d for d in (args.dtype or ["fp32", "bf16"]))), args.threads)
        return
    from bench.results import record
    from vivid.precision import choose_precision

    auto = choose_precision("auto", "cpu")
    dtypes = list(dict.fromkeys(auto.name if d == "auto" else d for d in (args.dtype or ["fp32", "bf16"])))
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    text = (f"`auto` on this machine: **{auto}**. Torch threads per run: {args.threads}. "
            "Memory figures are RSS in MiB (2^20 bytes), generation peaks also in GB (10^9 bytes, the unit of "
            "the issue's target); 'construction peak' is the high-water mark while building the networks, 'resident' "
            "the RSS once built, 'generation peak' the high-water mark while generating (the face models, loaded "
            "before, included).\n\n")

    rows, outputs = [], {}
    for dt in dtypes:
        outputs[("tiny", dt)] = str(tmp / f"tiny-{dt}.npy")
        r = run_child(**TINY, dtype=dt, threads=args.threads, out=outputs[("tiny", dt)])
        rows.append(_row("tiny, 64 px, 32 frames, window 24/overlap 4, 4 steps", r, TINY, dt == auto.name))
    _add_psnr(rows, outputs, "tiny", dtypes)
    long = {n: run_child(**dict(TINY, frames=n), dtype=auto.name, threads=args.threads) for n in (32, 512)}
    per_frame_kb = (long[512]["generation_peak_mb"] - long[32]["generation_peak_mb"]) * 1024 / (512 - 32)
    text += _table(rows) + (
        f"\nStreaming memory (tiny, {auto.name}): generation peak {long[32]['generation_peak_mb']:.0f} MiB at 32 frames, "
        f"{long[512]['generation_peak_mb']:.0f} MiB at 512 frames: **{per_frame_kb:.0f} KB per extra frame** "
        f"(target < 512 KB) — {'met' if per_frame_kb < 512 else 'NOT met'}.\n")

    if args.sd15:
        rows = []
        # "Now" builds the way a user does, from base-model files: the random weights written once.
        run_child(save=str(tmp / "models"))
        now = dict(SD15, load=f"base:{tmp / 'models' / 'base'}")
        if not args.no_baseline:
            outputs[("sd15", "before")] = str(tmp / "sd15-before.npy")
            r = run_child(**SD15, dtype="fp32", threads=args.threads, legacy=True, spin=True, out=outputs[("sd15", "before")])
            rows.append(_row("before issue 12: fp32, motion UNet copied by from_unet2d, K/V uncached, threads spinning",
                             r, SD15, False))
        for dt in dtypes:
            outputs[("sd15", dt)] = str(tmp / f"sd15-{dt}.npy")
            r = run_child(**now, dtype=dt, threads=args.threads, out=outputs[("sd15", dt)])
            rows.append(_row("now (CLIP and ReferenceNet streamed from disk, as on any CPU)", r, SD15, dt == auto.name))
        outputs[("sd15", "resident")] = str(tmp / "sd15-resident.npy")
        r = run_child(**now, dtype=auto.name, threads=args.threads, offload=False, out=outputs[("sd15", "resident")])
        resident_same = np.array_equal(np.load(outputs[("sd15", "resident")]), np.load(outputs[("sd15", auto.name)]))
        rows.append(_row("now, every network in memory (`disk_offload=False`; frames "
                         + ("identical" if resident_same else "NOT identical") + ")", r, SD15, False))
        outputs[("sd15", "nocache")] = str(tmp / "sd15-nocache.npy")
        r = run_child(**now, dtype=auto.name, threads=args.threads, cache_kv=False, out=outputs[("sd15", "nocache")])
        rows.append(_row("now, reference K/V recomputed per call (cache off)", r, SD15, False))
        outputs[("sd15", "spin")] = str(tmp / "sd15-spin.npy")
        r = run_child(**now, dtype=auto.name, threads=args.threads, spin=True, out=outputs[("sd15", "spin")])
        rows.append(_row("now, OpenMP threads spinning when idle (torch's default)", r, SD15, False))
        _add_psnr(rows, outputs, "sd15", dtypes)
        r = run_child(**now, dtype=auto.name, threads=args.threads, wrap=True)  # output differs by design: no PSNR
        rows.append(_row("now, windows wrapping past the end (the schedule the issue measured; `--wrap`)", r, SD15, False))
        outputs[("sd15", "malloc")] = str(tmp / "sd15-malloc.npy")
        r = run_child(**now, dtype=auto.name, threads=args.threads, env=dict(GLIBC_TUNABLES=MMAP_EVERY_4_MIB),
                      out=outputs[("sd15", "malloc")])
        rows.append(_row("now, malloc returning every block of 4 MiB or more to the OS when freed (`GLIBC_TUNABLES="
                         f"{MMAP_EVERY_4_MIB}`; frames "
                         + ("identical" if np.array_equal(np.load(outputs[("sd15", "malloc")]), np.load(outputs[("sd15", auto.name)]))
                            else "NOT identical") + ")", r, SD15, False))
        default = next((row for row in rows if row[1] == f"{auto.name} (auto)"), None)
        same = np.array_equal(np.load(outputs[("sd15", "nocache")]), np.load(outputs[("sd15", auto.name)]))
        text += ("\nSD1.5-sized random weights (UNet 2D + AnimateDiff v1-5-2 adapter + ReferenceNet + CLIP ViT-L/14 + "
                 "sd-vae-ft-mse shapes), 128 px, 16 frames, window 8/overlap 2, 2 steps, guidance 3.5:\n\n" + _table(rows))
        text += (f"\nReference K/V cache: frames with and without it are "
                 f"{'identical' if same else 'NOT identical (PSNR %.1f dB)' % psnr(np.load(outputs[('sd15', 'nocache')]), np.load(outputs[('sd15', auto.name)]))}.\n")
        peak = float(default[HEAD.index("generation peak MiB")]) if default else float("nan")
        text += "" if default is None else (f"\nTarget (issue 12): generation peak of this run at the default dtype ≤ 6 GB = {TARGET_BYTES / 1e9:.1f}e9 bytes = "
                 f"{TARGET_BYTES / MIB:.0f} MiB. Now **{peak:.0f} MiB = {gb(peak):.2f}e9 bytes — "
                 f"{'met' if peak * MIB <= TARGET_BYTES else 'NOT met'}** ({peak * MIB / 2**30:.2f} GiB).\n")
        anatomy = run_child(**now, dtype=auto.name, threads=args.threads, anatomy=True)
        text += _anatomy_text(anatomy)
        if args.load:
            loading(dtypes, args.threads)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    text += (f"\n1-min load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "(other work shares the machine; wall times depend on it, ratios within one run much less).\n"
             "`UNet frame-evals / frame / step` counts each frame of each UNet call, guidance doubling included; the "
             "schedule's minimum is the sum of window lengths the schedule asks for (x2 for guidance). "
             "'CPU s / frame' is process CPU time (all threads).\n")
    record("Diffusion engine", text)


def loading(dtypes: list[str], threads: int) -> None:
    """Building the SD1.5-sized model from files (no generation), each way next to the
    previous `from_base_models` in the same run: construction peak against the resident
    memory once built (issue 12: no construction peak above the steady state)."""
    import shutil

    from bench.results import record
    from vivid.precision import choose_precision

    auto = choose_precision("auto", "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="vivid-bench-"))
    try:
        run_child(save=str(tmp / "models"))
        saved, base, trained = tmp / "models" / "saved", tmp / "models" / "base", tmp / "models" / "trained"
        ways = (
            ("from_pretrained (saved fp32 pipeline; default: CLIP and ReferenceNet read from its files)",
             dict(load=str(saved))),
            ("from_pretrained (saved fp32 pipeline), `disk_offload=False`", dict(load=str(saved), offload=False)),
            ("from_base_models before: the libraries' loaders, every network in memory, then CLIP and ReferenceNet "
             "written out", dict(load=f"libraries:{base}")),
            ("from_base_models (base-model folders, fp32 files; default: CLIP and ReferenceNet streamed as built)",
             dict(load=f"base:{base}")),
            ("from_base_models + trained weights (default)", dict(load=f"base:{base}", trained=str(trained))),
            ("from_base_models, `disk_offload=False`", dict(load=f"base:{base}", offload=False)),
        )
        rows = []
        for dt in dtypes:
            for what, how in ways:
                r = run_child(**SD15, dtype=dt, threads=threads, generate=False, **how)
                above = r["construction_peak_mb"] - r["resident_mb"]
                rows.append([what, r["precision"], f"{r['construction_peak_mb']:.0f}", f"{r['resident_mb']:.0f}",
                             f"{above:+.0f} ({100 * above / r['resident_mb']:+.1f}%)", f"{r['build_seconds']:.1f}"])
                print(rows[-1], file=sys.stderr, flush=True)
        r = run_child(**SD15, dtype=auto.name, threads=threads, load=str(saved))
        text = ("SD1.5-sized random weights written as a saved fp32 pipeline, as fp32 base-model folders and as "
                "trained weights; each row builds in a fresh process (no generation). 'above' is the construction "
                "peak minus the resident memory once built.\n\n"
                + _plain_table(["how", "dtype", "construction peak MiB", "resident MiB", "above resident MiB",
                                "seconds"], rows)
                + f"\nGenerating with the model `from_pretrained` loaded ({auto.name}; CLIP and the ReferenceNet "
                f"converted once at load from the saved fp32 files into {auto.name} files, read from there as each "
                f"layer runs): {r['seconds'] / SD15['frames']:.3f} s/frame, reference encoding "
                f"{r['encode_seconds']:.2f} s per video, generation peak {r['generation_peak_mb']:.0f} MiB = "
                f"{gb(r['generation_peak_mb']):.2f}e9 bytes.\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record("Diffusion engine: loading", text)


def speed_rounds(rounds: int, threads: int) -> None:
    """Seconds per frame of the default engine against the pre-issue one, in interleaved
    rounds: each round's ratio is judged against the same round's baseline, so load that
    comes and goes on a shared machine shifts both sides."""
    import statistics

    from bench.results import record
    from vivid.precision import choose_precision

    auto = choose_precision("auto", "cpu")
    rows, ratios = [], []
    for i in range(rounds):
        before = run_child(**SD15, dtype="fp32", threads=threads, legacy=True, spin=True)
        now = run_child(**SD15, dtype=auto.name, threads=threads)
        b, n = before["seconds"] / SD15["frames"], now["seconds"] / SD15["frames"]
        ratios.append(n / b)
        rows.append([str(i + 1), f"{b:.3f}", f"{n:.3f}", f"{n / b:.3f}", f"{gb(now['generation_peak_mb']):.2f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    median = statistics.median(ratios)
    # The target: half of Moore-AnimateAnyone's 3.81 s/frame, measured when the pre-issue engine took
    # 3.71 s/frame on the same machine: 1.905 / 3.71 of the pre-issue engine's time.
    target = 3.81 / 2 / 3.71
    record("Diffusion engine: speed rounds", (
        f"SD1.5-sized random weights, {SD15['resolution']} px, {SD15['frames']} frames, window {SD15['window']}/overlap "
        f"{SD15['overlap']}, {SD15['steps']} steps, guidance 3.5, {threads} torch threads; 'before' is the pre-issue "
        f"engine (fp32, motion UNet copied by from_unet2d, K/V uncached, threads spinning), 'now' the default "
        f"({auto}; CLIP and ReferenceNet streamed from disk). Rounds interleave the two.\n\n"
        + _plain_table(["round", "before s / frame", "now s / frame", "now / before", "now: generation peak GB (10^9 B)"], rows)
        + f"\nMedian ratio **{median:.3f}** (rounds: {', '.join(f'{r:.3f}' for r in ratios)}). Issue 12's target, half of "
        f"Moore-AnimateAnyone's 3.81 s/frame measured when the pre-issue engine took 3.71 s/frame, is a ratio of "
        f"{target:.3f} to the pre-issue engine: **{'met' if median <= target else 'NOT met'}**.\n"))


#: The schedules `--schedules` compares: name -> measure()'s window options.
SCHEDULES = {"clamped grid, one window more at most steps (before issue 22)": dict(grid=True),
             "wrapped past the end (`--wrap`)": dict(wrap=True), "clamped at the wrapped count": {}}


def schedule_rounds(rounds: int, threads: int, tiny: bool = False) -> None:
    """UNet frame-evaluations and seconds per frame of the engine with the clamped cyclic windows
    before issue 22, with wrapped windows and now, in interleaved rounds (ratios within a round)."""
    import statistics

    from bench.results import record
    from vivid.precision import choose_precision

    auto = choose_precision("auto", "cpu")
    cfg = dict(SD15, model="tiny", resolution=64) if tiny else SD15
    before, wrapped, now = SCHEDULES
    rows, ratios = [], {before: [], wrapped: []}
    for i in range(rounds):
        r = {name: run_child(**cfg, dtype=auto.name, threads=threads, **kw) for name, kw in SCHEDULES.items()}
        per = {name: x["seconds"] / cfg["frames"] for name, x in r.items()}
        for base in ratios:
            ratios[base].append(per[now] / per[base])
        rows.append([str(i + 1)] + [f"{x['unet_frames'] / cfg['frames'] / cfg['steps']:.2f}" for x in r.values()]
                    + [f"{per[name]:.3f}" for name in SCHEDULES] + [f"{ratios[base][-1]:.3f}" for base in ratios])
        print(rows[-1], file=sys.stderr, flush=True)
    short = ["before", "wrapped", "now"]
    text = (f"{'Tiny' if tiny else 'SD1.5-sized'} random weights, {cfg['resolution']} px, {cfg['frames']} frames, window "
            f"{cfg['window']}/overlap {cfg['overlap']}, {cfg['steps']} steps, guidance 3.5, {auto}, {threads} torch "
            "threads; each round runs the three schedules one after another in fresh processes (" +
            "; ".join(f"{k}: {v}" for k, v in zip(short, SCHEDULES)) + "). UNet frame-evaluations per frame per step "
            "are counted by a hook on the UNet, guidance doubling included.\n\n"
            + _plain_table(["round"] + [f"{k}: frame-evals / frame / step" for k in short]
                           + [f"{k}: s / frame" for k in short] + ["now / before", "now / wrapped"], rows)
            + f"\nMedian time ratio now / before **{statistics.median(ratios[before]):.3f}**, now / wrapped "
            f"**{statistics.median(ratios[wrapped]):.3f}** ({rounds} rounds); 1-min load average at the end "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n")
    if tiny:
        print(text)
    else:
        record("Diffusion engine: cyclic windows at the wrapped count", text)


def _row(name: str, r: dict, cfg: dict, is_auto: bool) -> list[str]:
    frames, steps = cfg["frames"], cfg["steps"]
    return [name, r["dtype"] + (" (auto)" if is_auto else ""), f"**{r['seconds'] / frames:.3f}**",
            f"{r['cpu_seconds'] / frames:.3f}", f"{r['unet_frames'] / frames / steps:.2f}",
            f"{r['schedule_frames'] / frames / steps:.2f}", str(r["reference_net"]), f"{r['encode_seconds']:.2f}",
            f"{r['construction_peak_mb']:.0f}",
            f"{r['resident_mb']:.0f}", f"{r['generation_peak_mb']:.0f}", f"{gb(r['generation_peak_mb']):.2f}", "—"]


def _add_psnr(rows: list[list[str]], outputs: dict, model: str, dtypes: list[str]) -> None:
    if ("fp32" not in dtypes):
        return
    base = np.load(outputs[(model, "fp32")])
    keys = [k for k in outputs if k[0] == model]
    for row, key in zip(rows[-len(keys):], keys):
        if key[1] != "fp32":
            row[-1] = f"{psnr(np.load(outputs[key]), base):.1f}"


HEAD = ["run", "dtype", "s / frame", "CPU s / frame", "UNet frame-evals / frame / step", "schedule minimum",
        "ReferenceNet runs / video", "reference encoding s / video", "construction peak MiB", "resident MiB", "generation peak MiB",
        "generation peak GB (10^9 B)", "PSNR vs fp32 (dB)"]


#: glibc tunable for the allocator row: blocks of 4 MiB and more are mapped on their own and
#: unmapped when freed (glibc raises its default threshold up to 32 MiB as it sees large frees).
MMAP_EVERY_4_MIB = "glibc.malloc.mmap_threshold=4194304"


def _anatomy_text(r: dict) -> str:
    """Where the memory of the default-dtype SD1.5-sized run goes, as a table."""
    runtime, weights = r["runtime_mb"], r["weights_mb"]
    total_weights = sum(sum(by.values()) for by in weights.values())
    other = r["resident_mb"] - runtime["total"] - total_weights
    faces = r["faces_prepared_mb"] - r["resident_mb"]
    floor = runtime["total"] + total_weights + faces
    rows = [
        ["runtime before any network: imports (Python, torch, diffusers, transformers, MediaPipe, OpenCV)", runtime["total"]],
        ["  of which CUDA libraries (the PyPI torch wheel is the CUDA build; loaded, never used on a CPU)",
         runtime["cuda_libraries"]],
        ["  of which triton (imported by torch._dynamo, which diffusers imports)", runtime["triton"]],
        ["  of which other shared libraries (libtorch_cpu, OpenCV, MediaPipe, ...)", runtime["other_libraries"]],
        ["  of which anonymous memory (Python objects, torch's operator tables, malloc)", runtime["anonymous"]],
    ]
    rows += [[f"weights: {group} ({', '.join(by)})", sum(by.values())] for group, by in weights.items() if by]
    rows += [
        ["weights in memory (each tensor once; networks streamed from disk hold none between their calls)", total_weights],
        ["the rest after building (allocator slack)", other],
        ["**resident after building**", r["resident_mb"]],
        ["face models (MediaPipe face landmarker: first reference and driving analysis)", faces],
        ["**floor of the generation peak: runtime + weights + face models**", floor],
        ["RSS when the generation starts (resident + face models)", r["generation_start_mb"]],
    ]
    for stage, _ in (*STAGES, ("between networks", None)):
        where = "between networks (windows, scheduler, motion maps)" if stage == "between networks" else f"while the {stage} runs"
        rows.append([f"generation, {where}: rise of the high-water RSS (tensors alive at most: "
                     f"{r['stage_live_mb'].get(stage, 0):.0f} MiB)", r["stage_raised_mb"].get(stage, 0)])
    rows += [
        ["reference bank: ReferenceNet features + projected keys/values (in the tensors above)",
         r["bank_mb"]["features"] + r["bank_mb"]["keys_values"]],
        ["**generation peak** (this run, with the tracking)", r["generation_peak_mb"]],
        [f"after the generation, with {r['live_at_end_mb']:.0f} MiB of the tensors made during it alive (the rest "
         "freed, not returned to the OS)", r["after_generation_mb"]],
    ]
    table = _plain_table(["what (default dtype)", "MiB", "GB (10^9 B)"],
                         [[what, f"{mib:.0f}", f"{gb(mib):.3f}"] for what, mib in rows])
    room = TARGET_BYTES / MIB - floor
    verdict = (f"with these networks in memory, a generation peak ≤ {TARGET_BYTES / 1e9:.1f}e9 bytes would need "
               f"{-room:.0f} MiB less runtime, weights or face models before the first activation" if room < 0 else
               f"that leaves {room:.0f} MiB under {TARGET_BYTES / 1e9:.1f}e9 bytes for activations and allocator slack")
    return ("\nWhere the memory goes (one more run of the default dtype, with every tensor tracked, so not timed; "
            "'tensors alive' counts the storages torch ops made that are still referenced, the rest of a stage's "
            "RSS is allocator slack and oneDNN's caches):\n\n" + table
            + f"\nThe floor alone is {gb(floor):.2f}e9 bytes: {verdict}.\n")


def _table(rows: list[list[str]]) -> str:
    return _plain_table(HEAD, rows)


def _plain_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


if __name__ == "__main__":
    main()
