"""Training cost: seconds per step and peak memory of the real training loop (issue 9).

    python bench/training.py                 # this CPU: tiny run, SD 1.5-sized stage 1 and stage 2 steps
    python bench/training.py --only tiny     # or: --only stage1 / stage2 / infer (repeatable)
    python bench/training.py --device cuda   # a GPU machine: stage 1 and 2 steps at 512 px, inference s/frame
    python bench/training.py --device cuda --only stage2 --frames 16 [--checkpoint-temporal]   # stage 2 variants
    python bench/training.py --only stage2 --frames 4 --frozen-unet-before-after   # issue 22: stage 2's
        # frozen spatial UNet in fp32 (before) and in the compute dtype (now), one table

What runs is `vivid.training.Trainer.run()` itself (data loader, network setup incl.
`freeze_unused`, bf16 autocast, gradient checkpointing, accelerate, the step), through a
subclass that only adds time/memory marks and skips the end-of-run validation, sample video
and checkpoint. For the SD 1.5-sized runs the base weights are replaced by random ones of
the same shapes (`sd15_sized_parts`, no download): stage 1 patches `load_base_parts`, stage 2
patches `VividPipeline.from_pretrained` (what stage 2 loads its `--init` model with).

Marks per step (one reset of the peak at the step's start): inputs (VAE + CLIP encoding)
done, denoiser forward done, backward done (optimizer pre-step hook), step done. Memory is
the process's RSS high-water mark (/proc/self/status VmHWM, reset through
/proc/self/clear_refs) on the CPU and `torch.cuda.max_memory_allocated` on a GPU. Every
configuration runs in a fresh subprocess, so one cannot inflate another; the parent kills a
child if the machine's available memory falls below 1 GB.

Stage 1's default optimizer, Adam with 8-bit state (bitsandbytes), needs CUDA. Where it
cannot run, the step uses a stateless SGD update as a stand-in and Adam's state is added as
a computed figure (2 bytes per trainable parameter for 8-bit state, 8 for fp32 state).
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

SHARED_DRIVING = ROOT.parent / "shared" / "data" / "driving"
GB = 1024**3  # GiB, the unit of "24 GB" GPU cards (a 24 GB RTX 3090/4090 holds 24,576 MiB)
#: Rough available-memory needs of the SD 1.5-sized CPU children (setup peaks included), in GB.
CPU_NEEDS_GB = {"stage1": 18.0, "stage2": 16.0}


# -- memory and time probes (used in the children) ---------------------------------------------
def proc_status(pid: str | int = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Marks:
    """Time and peak memory at named points of a step (CPU: RSS; CUDA: allocated bytes)."""

    def __init__(self, cuda: bool):
        import torch

        self.torch, self.cuda = torch, cuda
        self.steps: list[dict] = []
        self.current: dict | None = None

    def _now(self) -> dict:
        if self.cuda:
            self.torch.cuda.synchronize()
        point = {"t": time.perf_counter(), **{k.lower(): v for k, v in proc_status().items()}}
        if self.cuda:
            point["cuda_peak"] = self.torch.cuda.max_memory_allocated()
            point["cuda_now"] = self.torch.cuda.memory_allocated()
        return point

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        before = proc_status()
        reset = reset_peak_rss()
        self.current = {"start": {**self._now(), "rss_before_reset_hwm": before["VmHWM"]}, "hwm_reset": reset}
        self.steps.append(self.current)

    def mark(self, name: str) -> None:
        if self.current is not None and name not in self.current:
            self.current[name] = self._now()


# -- the measured trainer (children) -----------------------------------------------------------
def measured_trainer_class():
    """A Trainer subclass that marks each step and skips end-of-run bookkeeping."""
    from vivid.training import Trainer

    class MeasuredTrainer(Trainer):
        marks: Marks
        nets = None
        last_batch = None

        def _loss(self, batch, nets, generator, *, drop=True, timestep=None):
            if timestep is None and not getattr(self, "_inside_baseline", False):  # a training step
                if self.nets is None:
                    self.nets = nets
                    self.first_step_status = proc_status()
                    _hook_denoiser(self, nets)
                self.last_batch = batch
                self.marks.start()
            return super()._loss(batch, nets, generator, drop=drop, timestep=timestep)

        def _log(self, record):
            if "loss" in record:
                self.marks.mark("step_done")
            super()._log(record)

        # End-of-run bookkeeping is not part of a step: not measured here.
        def _validate(self, nets, checks):
            return {}

        def _sample(self, nets, clip, step):
            pass

        def _checkpoint(self, nets, step):
            pass

        def _write_rank_checksum(self, step):
            pass

    return MeasuredTrainer


def _hook_denoiser(trainer, nets) -> None:
    """Marks at the denoiser's forward start (inputs encoded) and end."""
    d = nets.denoiser
    d.register_forward_pre_hook(lambda *a: trainer.marks.mark("inputs_done"))
    d.register_forward_hook(lambda *a: trainer.marks.mark("forward_done"))


def _patch(module, name: str, value) -> None:
    if not hasattr(module, name):
        raise AttributeError(f"{module.__name__}.{name} is gone: update bench/training.py")
    setattr(module, name, value)


def _optimizer_patch(trainer_box: dict, stand_in: bool) -> dict:
    """Wrap `make_optimizer`: count what it trains, mark the end of backward (pre-step hook);
    with `stand_in`, a stateless SGD update replaces the configured optimizer."""
    import torch

    import vivid.training.loop as loop

    real = loop.make_optimizer
    info: dict = {}

    def make(params, config):
        params = list(params)
        opt = torch.optim.SGD(params, lr=config.learning_rate) if stand_in else real(params, config)
        info.update(trainable=sum(p.numel() for p in params), optimizer=type(opt).__module__ + "." + type(opt).__name__,
                    trainable_dtypes=sorted({str(p.dtype) for p in params}))
        opt.register_step_pre_hook(lambda *a: trainer_box["trainer"].marks.mark("backward_done"))
        return opt

    _patch(loop, "make_optimizer", make)
    return info


def _bytes_by(nets) -> dict[str, float]:
    """GB of parameters (and buffers) held by each network, as the step saw them."""
    def size(m):
        return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers())) / GB

    d = nets.denoiser
    out = {"reference_net": size(d.reference_net), "unet": size(d.unet), "pose_guider": size(d.pose_guider),
           "vae": size(nets.vae), "image_encoder": size(nets.image_encoder)}
    out["trainable_fp32_gb"] = sum(p.numel() * p.element_size() for p in d.parameters() if p.requires_grad) / GB
    return out


def _summarise_steps(marks: Marks) -> list[dict]:
    out = []
    for s in marks.steps:
        if "step_done" not in s:
            continue
        start = s["start"]
        row = {"hwm_reset": s["hwm_reset"], "rss_start": start["vmrss"]}
        for name in ("inputs_done", "forward_done", "backward_done", "step_done"):
            if name in s:
                row[f"{name}_s"] = s[name]["t"] - start["t"]
                row[f"{name}_hwm"] = s[name]["vmhwm"]
                if "cuda_peak" in s[name]:
                    row[f"{name}_cuda_peak"] = s[name]["cuda_peak"]
        if "cuda_now" in start:
            row["cuda_start"] = start["cuda_now"]
        out.append(row)
    return out


def child_tiny(data: str, steps: int, work: str) -> dict:
    """The real Trainer with the --tiny preset on prepared 64 px clips."""
    import torch

    from vivid.training import TrainConfig

    config = TrainConfig.load(ROOT / "train" / "configs" / "stage1.yaml", tiny=True, max_steps=steps, log_every=10,
                              val_every=10**9, save_every=10**9)
    box: dict = {}
    info = _optimizer_patch(box, stand_in=False)
    out = Path(work) / "run-tiny"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    trainer = measured_trainer_class()(config, data, out, device="cpu")
    trainer.marks = Marks(cuda=False)
    box["trainer"] = trainer
    load0 = os.getloadavg()[0]
    trainer.run()
    peak_steps = proc_status()["VmHWM"]  # no reset in this run: the whole process so far
    workers = _children_hwm()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [m["seconds_per_step"] for m in metrics if "seconds_per_step" in m]
    # Same-run baseline: the step's forward alone (no backward, no optimizer), on the last batch.
    fwd = []
    trainer._inside_baseline = True
    with torch.no_grad():
        for i in range(10):
            gen = torch.Generator().manual_seed(i)
            t0 = time.perf_counter()
            trainer._loss(trainer.last_batch, trainer.nets, gen)
            fwd.append(time.perf_counter() - t0)
    return dict(
        windows=windows, log_every=config.log_every, steps=steps, threads=torch.get_num_threads(),
        rss_first_step=trainer.first_step_status["VmRSS"], hwm_first_step=trainer.first_step_status["VmHWM"],
        peak=peak_steps, workers=workers, forward_only_s=statistics.median(fwd), batch=config.batch_size,
        resolution=config.resolution, optimizer=info.get("optimizer"), trainable=info.get("trainable"),
        load_start=load0, load_end=os.getloadavg()[0], num_workers=config.num_workers,
    )


def _children_hwm() -> list[int]:
    """VmHWM of this process's children (the data loader workers)."""
    peaks = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                peaks.append(proc_status(pid)["VmHWM"])
            except (OSError, KeyError):
                pass
    return peaks


def child_sd15(stage: int, device: str, data: str, work: str, steps: int, frames: int, resolution: int,
               threads: int, check: bool = False, checkpoint_temporal: bool = False,
               frozen_unet_fp32: bool = False) -> dict:
    """SD 1.5-sized random networks through the real Trainer: `steps` steps of `stage`.
    `frozen_unet_fp32`: stage 2 as before issue 22, its frozen spatial UNet kept in fp32."""
    import torch

    import vivid.training.loop as loop
    import vivid.training.networks as networks
    from vivid.models.builders import sd15_sized_parts, tiny_parts
    from vivid.training import TrainConfig

    make_parts = tiny_parts if check else sd15_sized_parts  # check: this script's own quick test
    cuda = device == "cuda"
    torch.set_num_threads(threads)
    overrides = dict(max_steps=steps, log_every=1, val_every=10**9, save_every=10**9, resolution=resolution,
                     num_workers=0, threads=threads)
    if stage == 2:
        overrides["clip_frames"] = frames
    config = TrainConfig.load(ROOT / "train" / "configs" / f"stage{stage}.yaml", **overrides)
    stand_in = False
    if config.optimizer == "adam8bit":
        import importlib.util

        if not (cuda and importlib.util.find_spec("bitsandbytes") is not None):
            stand_in = True
            config.optimizer = "adam"  # passes the machine check; the step uses the stand-in below
    box: dict = {}
    info = _optimizer_patch(box, stand_in)
    held = {}
    if frozen_unet_fp32:
        _patch(loop, "cast_frozen", lambda module, dtype: None)

    if stage == 1:
        _patch(networks, "load_base_parts", lambda base, dtype=torch.float32: make_parts(0))
        real_build = loop.build_networks

        def build(config, init):
            nets = real_build(config, init)
            # The motion adapter waits on the host for the stage-1 model export (skipped here);
            # it is never on the GPU, so it is left out of this process too.
            held["adapter_gb"] = sum(p.numel() * p.element_size() for p in nets.adapter.parameters()) / GB
            nets.adapter = None
            return nets

        _patch(loop, "build_networks", build)
        init = None
    else:
        from vivid.pipeline import VividPipeline

        def from_pretrained(cls, path, **kw):
            # What loading a stage 1 export gives (Parts.components()), built with less memory
            # at once: the motion UNet copies the image UNet's weights, which then serves as
            # the ReferenceNet instead of a third copy.
            from diffusers import DDIMScheduler, UNetMotionModel

            from vivid.models.builders import scheduler_config

            parts = make_parts(0)
            unet = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
            parts.adapter = None
            if checkpoint_temporal:
                held["checkpointed_temporal"] = checkpoint_motion_modules(unet)
            return cls(vae=parts.vae, image_encoder=parts.image_encoder, feature_extractor=parts.feature_extractor,
                       reference_net=parts.unet2d, unet=unet, pose_guider=parts.pose_guider,
                       scheduler=DDIMScheduler(**scheduler_config()), resolution=resolution, parser="mesh")

        _patch(VividPipeline, "from_pretrained", classmethod(from_pretrained))
        init = Path(work) / "stage1-marker"  # what check_init looks for; the weights come from the patch
        init.mkdir(parents=True, exist_ok=True)
        (init / "model_index.json").write_text("{}")
        (init / networks.TRAINING_FILE).write_text(json.dumps({"stage": 1}))
    out = Path(work) / f"run-sd15-stage{stage}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    trainer = measured_trainer_class()(config, data, out, init=init, device="cpu" if not cuda else None)
    trainer.marks = Marks(cuda=cuda)
    box["trainer"] = trainer
    load0 = os.getloadavg()[0]
    setup0 = time.perf_counter()
    try:
        trainer.run()
    except torch.cuda.OutOfMemoryError as exc:  # a result too: this configuration does not fit the card
        reached = [k for k in ("inputs_done", "forward_done", "backward_done") if k in (trainer.marks.current or {})]
        return dict(oom=str(exc).splitlines()[0][:400], stage=stage, frames=frames if stage == 2 else 1,
                    resolution=resolution, gpu=torch.cuda.get_device_name(), optimizer=info.get("optimizer"),
                    total=torch.cuda.get_device_properties(0).total_memory, reached=reached[-1] if reached else "setup",
                    steps_done=len(_summarise_steps(trainer.marks)), **held)
    total = time.perf_counter() - setup0
    return dict(
        stage=stage, device=device, steps=_summarise_steps(trainer.marks), weights=_bytes_by(trainer.nets),
        first_step=trainer.first_step_status, stand_in=stand_in, frames=frames if stage == 2 else 1,
        resolution=resolution, threads=torch.get_num_threads(), mixed_precision=config.mixed_precision,
        gradient_checkpointing=config.gradient_checkpointing, configured_optimizer=config.optimizer if not stand_in else "adam8bit",
        load_start=load0, load_end=os.getloadavg()[0], total_s=total, **info, **held,
        gpu=torch.cuda.get_device_name() if cuda else None,
    )


def checkpoint_motion_modules(unet) -> int:
    """Experiment, not the Trainer's setting: recompute each temporal layer in the backward
    pass (diffusers' motion blocks checkpoint only their resnets and spatial transformers;
    the temporal layers, the ones stage 2 trains, keep all their activations)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    count = 0
    for module in unet.modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            plain = module.forward

            def forward(hidden_states, *args, _plain=plain, **kw):
                if torch.is_grad_enabled():
                    return checkpoint(_plain, hidden_states, *args, use_reentrant=False, **kw)
                return _plain(hidden_states, *args, **kw)

            module.forward = forward
            count += 1
    if not count:
        raise RuntimeError("no AnimateDiffTransformer3D in the UNet: update bench/training.py")
    return count


def child_infer(device: str, frames: int, steps: int, resolution: int, window: int) -> dict:
    """VividPipeline with SD 1.5-sized random weights: seconds per frame and peak GPU memory."""
    import numpy as np
    import torch

    from vivid import VividPipeline
    from vivid.face import MotionTrack
    from vivid.media import load_image
    from vivid.models.builders import sd15_sized_parts

    torch.set_num_threads(2)
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = VividPipeline(**sd15_sized_parts(0).components(), resolution=resolution, parser="mesh")
    pipe.to(device, dtype)
    portrait = load_image(ROOT / "assets" / "astronaut.jpg").rgb
    ref = pipe.prepare_reference(portrait)
    one = pipe.prepare_driving([portrait], reference=ref)
    rng = np.random.default_rng(0)
    motion = MotionTrack([one.points[0] + rng.normal(0, 0.5, one.points[0].shape).astype(np.float32)
                          for _ in range(frames)], one.resolution, one.square)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    weights = torch.cuda.memory_allocated() if device == "cuda" else 0
    t0 = time.perf_counter()
    first = None
    count = 0
    for event in pipe.generate(ref, motion, window=window, overlap=4, steps=steps, guidance=3.5, cyclic=True):
        if event.kind == "frame":
            count += 1
            first = first or time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    return dict(frames=count, steps=steps, window=window, seconds=seconds, first_frame_s=first,
                peak=torch.cuda.max_memory_allocated() if device == "cuda" else proc_status()["VmHWM"], weights=weights,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None, dtype=str(dtype))


# -- data ----------------------------------------------------------------------------------
def tiny_data(work: Path) -> Path | None:
    """Clips prepared at 64 px from the shared sample videos (None when they are absent)."""
    if not SHARED_DRIVING.is_dir():
        return None
    out = work / "data64"
    if not (out / "index.jsonl").is_file():
        _prepare([str(SHARED_DRIVING)], out, 64, ["--max-frames", "120"])
    return out


def sd15_data(work: Path, resolution: int) -> Path:
    """Two short synthetic clips (the two example portraits of assets/, slowly zoomed and
    moved) prepared at `resolution`: what the loader needs, made anywhere (a GPU machine has no
    ../shared). Their content does not change a step's time or memory."""
    out = work / f"synthetic{resolution}"
    if (out / "index.jsonl").is_file():
        return out
    import cv2
    import numpy as np

    from vivid.media import load_image, write_video

    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "grace_hopper"):
        img = load_image(ROOT / "assets" / f"{name}.jpg").rgb
        img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        h, w = img.shape[:2]

        def frame(i: int) -> np.ndarray:
            a = 2 * np.pi * i / 60
            m = cv2.getRotationMatrix2D((w / 2, h / 2), 3 * np.sin(a), 1 + 0.04 * np.sin(2 * a))
            m[:, 2] += (8 * np.cos(a), 6 * np.sin(a))
            return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT101)

        write_video(videos / f"{name}.mp4", (frame(i) for i in range(60)), 25.0)
    _prepare([str(videos)], out, resolution, ["--min-face-ratio", "0.1"])
    return out


def _prepare(inputs: list[str], out: Path, resolution: int, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "train" / "prepare_data.py"), *inputs, "-o", str(out),
           "--resolution", str(resolution), "--quiet", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)


# -- the parent --------------------------------------------------------------------------------
def run_child(kind: str, timeout: float, **kw) -> dict:
    """`_run_child`, its raw figures also printed (as JSON) for the record."""
    result = _run_child(kind, timeout, **kw)
    print(f"raw {kind} {json.dumps(kw)}: {json.dumps(result)}", flush=True)
    return result


def _run_child(kind: str, timeout: float, **kw) -> dict:
    """Run one measurement in a fresh process; kill it (by its pid) if the machine's
    available memory falls below 1 GB."""
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kw})]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        started, low = time.time(), None
        while proc.poll() is None:
            time.sleep(0.5)
            if mem_available() < 1 * GB:
                low = mem_available()
                proc.kill()
            elif time.time() - started > timeout:
                proc.kill()
        proc.wait()
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if low is not None:
        raise RuntimeError(f"stopped: the machine's available memory fell to {low / GB:.1f} GB")
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode} after {time.time() - started:.0f} s: {stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _gb(x: float) -> str:
    return f"{x / GB:.2f}"


def report_tiny(r: dict) -> str:
    steady = r["windows"][1:] or r["windows"]
    lines = [
        f"Real `Trainer.run()` with the `--tiny` preset ({r['resolution']} px, batch {r['batch']}, "
        f"{r['optimizer'].rsplit('.', 1)[-1]}, {r['threads']} torch thread, {r['num_workers']} loader process) on clips "
        f"prepared from `../shared/data/driving` (`--resolution 64 --max-frames 120`), {r['steps']} steps; "
        f"end-of-run validation, sample video and checkpoint skipped. {r['trainable'] / 1e6:.2f} M trainable parameters. "
        f"1-min load average {r['load_start']:.1f} at the start, {r['load_end']:.1f} at the end (2 cores, shared).",
        "",
        "| tiny, stage 1 | figure | same-run baseline |",
        "|---|---|---|",
        f"| seconds per step (the Trainer's own `seconds_per_step`, median of {len(steady)} windows of "
        f"{r['log_every']} steps after the first) | **{statistics.median(steady):.3f}** | "
        f"{r['forward_only_s']:.3f} (the step's loss alone, no backward/optimizer, median of 10) |",
        f"| first {r['log_every']} steps (warm-up) | {r['windows'][0]:.3f} | |",
        f"| peak RSS of the training process (VmHWM, setup included) | **{r['peak'] / 2**20:.0f} MB** | "
        f"{r['rss_first_step'] / 2**20:.0f} MB RSS just before the first step |",
    ]
    if r["workers"]:
        lines.append(f"| peak RSS of the data loader process | {max(r['workers']) / 2**20:.0f} MB | |")
    return "\n".join(lines) + "\n"


def report_sd15(r: dict, device: str) -> str:
    if r.get("oom"):
        name = f"stage {r['stage']}" + (f", {r['frames']} frames" if r["stage"] == 2 else "")
        return (f"**{name}, {r['resolution']} px, batch 1: out of GPU memory** on {r['gpu']} "
                f"({r['total'] / GB:.1f} GiB) in step {r['steps_done'] + 1}, after {r['reached'].replace('_', ' ')}; "
                f"optimizer {str(r['optimizer']).rsplit('.', 1)[-1]}. torch: {r['oom']}\n")
    s = r["steps"]
    first, last = s[0], s[-1]
    cuda = device == "cuda"
    peak_key = "_cuda_peak" if cuda else "_hwm"
    unit = "torch.cuda.max_memory_allocated" if cuda else "process RSS high-water mark (VmHWM)"
    w = r["weights"]
    weights_gb = sum(v for k, v in w.items() if k != "trainable_fp32_gb")
    trainable = r["trainable"]
    name = f"stage {r['stage']}" + (f", {r['frames']} frames" if r["stage"] == 2 else "")
    opt = r["optimizer"].rsplit(".", 1)[-1]
    lines = [
        f"**{name}, {r['resolution']} px, batch 1** — {trainable / 1e9:.3f} B trainable parameters "
        f"({', '.join(r['trainable_dtypes'])}); mixed precision {r['mixed_precision']}, gradient checkpointing "
        f"{'on' if r['gradient_checkpointing'] else 'off'}; optimizer in the step: {opt}"
        + (" (stand-in: the configured Adam with 8-bit state needs bitsandbytes on CUDA)" if r["stand_in"] else "")
        + (f"; **experiment: the {r['checkpointed_temporal']} temporal layers checkpointed too** (not the Trainer's setting)"
           if r.get("checkpointed_temporal") else "")
        + f"; {r['threads']} torch threads; 1-min load average {r['load_start']:.1f} → {r['load_end']:.1f}.",
        "",
        f"| {name} ({'GPU: ' + r['gpu'] if cuda else 'this CPU'}) | memory GiB ({unit}) | seconds from step start |",
        "|---|---|---|",
        f"| baseline: at the step's start (weights of every network and all else already in memory) | "
        f"{_gb(first['cuda_start'] if cuda else first['rss_start'])} | 0 |",
        f"| baseline: the networks' parameters themselves (computed from the tensors) | {weights_gb:.2f} | |",
    ]
    if not cuda:
        lines.insert(-2, f"| (setup, before the first step: process RSS peak while building the networks, incl. "
                         f"`freeze_unused`'s fp32 probe) | {_gb(r['first_step']['VmHWM'])} | |")
    for key, what in (("inputs_done", "VAE + CLIP encoding of the batch done"),
                      ("forward_done", "denoiser forward done (activations kept for backward)"),
                      ("backward_done", "backward done (**measured forward + backward peak**)"),
                      ("step_done", ("stateless SGD stand-in update" if r["stand_in"] else f"{opt} step")
                       + " done (peak of the whole step)")):
        if f"{key}_s" in first:
            lines.append(f"| {what} | {_gb(first[key + peak_key])} | {first[key + '_s']:.1f} |")
    if len(s) > 1:
        lines.append(f"| step {len(s)} (optimizer state, if any, present throughout): whole step | "
                     f"{_gb(last['step_done' + peak_key])} | {last['step_done_s']:.1f} |")
    fb = first["backward_done" + peak_key]
    host = 0.0 if cuda else first["rss_start"] - weights_gb * GB  # libraries, interpreter, data: not GPU memory
    lines += ["", f"Memory of one full step with the optimizer state (fwd+bwd peak measured, state **computed** "
              f"from {trainable / 1e9:.3f} B trainable parameters; from step 2 on the state is held through forward "
              "and backward):", ""]
    head = "| optimizer | state GiB (computed) | measured fwd+bwd peak + state, GiB |"
    if not cuda:
        head += (f" the same without the process's host-only share ({host / GB:.2f} GiB: RSS at the step's start minus "
                 "the parameters), the closest CPU figure to GPU memory, GiB |")
    lines += [head, "|---|---|---|" + ("---|" if not cuda else "")]
    for label, b in (("Adam with 8-bit state (bitsandbytes), 2 bytes/param", 2), ("Adam, fp32 state, 8 bytes/param", 8)):
        row = f"| {label} | {trainable * b / GB:.2f} | {(fb + trainable * b) / GB:.2f} |"
        lines.append(row + (f" {(fb - host + trainable * b) / GB:.2f} |" if not cuda else ""))
    if not r["stand_in"] and len(s) == 1:
        lines.append(f"\n(The step above ran {opt} for real; its state was created inside the step, after backward.)")
    if "adapter_gb" in r:
        lines.append(f"\nLeft out of this process: the motion adapter ({r['adapter_gb']:.2f} GiB fp32) that stage 1 keeps "
                     "on the host only to export the model; it never reaches the GPU.")
    lines.append("\nParameters per network as the step saw them, GiB: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in w.items() if k != "trainable_fp32_gb")
                 + f" (of which trainable {w['trainable_fp32_gb']:.2f}).")
    return "\n".join(lines) + "\n"


def frozen_unet_before_after(args, data: Path, work: Path, steps: int) -> str:
    """Stage 2 at each clip length with its frozen spatial UNet in fp32 (before issue 22) and in
    the compute dtype (now), in fresh processes one after the other: the peaks side by side."""
    cuda = args.device == "cuda"
    peak = "_cuda_peak" if cuda else "_hwm"
    rows, runs = [], {}
    for frames in sorted(args.frames or [24]):
        for label, fp32 in (("before", True), ("now", False)):
            try:
                runs[label] = run_child("sd15", args.timeout, stage=2, device=args.device, data=str(data), work=str(work),
                                        steps=steps, frames=frames, resolution=args.resolution, threads=args.threads,
                                        check=args.check, frozen_unet_fp32=fp32)
            except RuntimeError as exc:
                return f"Failed at {args.resolution} px, {frames} frames ({label}): {exc}\n"
        before, now = (runs[k]["steps"][0] for k in ("before", "now"))
        figures = [("parameters of every network (computed from the tensors)",
                    *(sum(v for k, v in runs[x]["weights"].items() if k != "trainable_fp32_gb") * GB for x in ("before", "now"))),
                   ("the UNet's parameters alone", runs["before"]["weights"]["unet"] * GB, runs["now"]["weights"]["unet"] * GB),
                   ("memory at the step's start", before["cuda_start" if cuda else "rss_start"],
                    now["cuda_start" if cuda else "rss_start"]),
                   ("**forward + backward peak**", before["backward_done" + peak], now["backward_done" + peak]),
                   ("peak of the whole step (optimizer step included)", before["step_done" + peak], now["step_done" + peak])]
        if not cuda:
            figures.insert(2, ("setup peak (building the networks, before the first step)",
                               runs["before"]["first_step"]["VmHWM"], runs["now"]["first_step"]["VmHWM"]))
        rows += [f"| {frames} | {what} | {_gb(b)} | {_gb(n)} | {_gb(b - n)} |" for what, b, n in figures]
    r = runs["now"]
    unit = "torch.cuda.max_memory_allocated" if cuda else "process RSS high-water mark (VmHWM)"
    return (f"Stage 2, {args.resolution} px, batch 1, mixed precision {r['mixed_precision']}, gradient checkpointing "
            f"{'on' if r['gradient_checkpointing'] else 'off'}, {r['threads']} torch threads; each row pair from two "
            f"fresh processes, one after the other: 'before' keeps the frozen spatial UNet in fp32 (the Trainer before "
            f"issue 22), 'now' casts it to the compute dtype (`cast_frozen`); the temporal layers train in "
            f"{', '.join(r['trainable_dtypes'])} in both. GiB, {unit}.\n\n"
            "| frames | what | before GiB | now GiB | saved GiB |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def extrapolate(results: list[dict], target: int, device: str) -> str:
    """Figures at `target` frames on the line through the two longest measured runs."""
    a, b = sorted(results, key=lambda r: r["frames"])[-2:]
    fa, fb = a["frames"], b["frames"]
    peak = "_cuda_peak" if device == "cuda" else "_hwm"

    def line(key: str) -> tuple[float, float]:
        ya, yb = a["steps"][0][key], b["steps"][0][key]
        slope = (yb - ya) / (fb - fa)
        return yb + slope * (target - fb), slope

    fwd_bwd, per_frame = line("backward_done" + peak)
    step_s, s_per_frame = line("step_done_s")
    adam = b["trainable"] * 8
    return (
        f"**{target} frames: computed, not measured** — a straight line through the {fa}- and {fb}-frame runs "
        f"above (activations and time grow with the frame count; weights do not):\n\n"
        f"| {target} frames, extrapolated | value |\n|---|---|\n"
        f"| forward + backward peak | {fwd_bwd / GB:.2f} GiB ({per_frame / GB:.3f} GiB per frame) |\n"
        f"| + Adam fp32 state of the {b['trainable'] / 1e6:.0f} M temporal parameters (computed, 8 bytes/param) | "
        f"{(fwd_bwd + adam) / GB:.2f} GiB |\n"
        f"| seconds per step (first step, this machine's load) | {step_s:.0f} ({s_per_frame:.0f} per frame) |\n"
        + ("" if device == "cuda" else
           f"| the same peak + state without the process's host-only share (as above), the closest CPU figure to GPU "
           f"memory | {(fwd_bwd + adam - _host_share(b)) / GB:.2f} GiB |\n")
    )


def _host_share(r: dict) -> float:
    """Bytes of the process at the step's start that are not parameters (libraries, interpreter, data)."""
    params = sum(v for k, v in r["weights"].items() if k != "trainable_fp32_gb") * GB
    return r["steps"][0]["rss_start"] - params


def report_infer(r: dict) -> str:
    return (f"Inference with `VividPipeline` (SD 1.5-sized random weights, {r['dtype']}, 512 px, {r['frames']} frames, "
            f"window {r['window']}, {r['steps']} DDIM steps, guidance 3.5) on {r['gpu'] or 'the CPU'}: "
            f"**{r['seconds'] / r['frames']:.2f} s per frame** ({r['seconds']:.1f} s in all; first frame after "
            f"{r['first_frame_s']:.1f} s); peak memory {_gb(r['peak'])} GiB vs {_gb(r['weights'])} GiB of weights.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", action="append", choices=["tiny", "stage1", "stage2", "infer"],
                        help="measure only these (default: cpu: tiny stage1 stage2; cuda: stage1 stage2 infer)")
    parser.add_argument("--frames", type=int, action="append",
                        help="stage 2 clip length (default 24); repeat for one run per length: without 24 among "
                             "them, the 24-frame figures are extrapolated from the two longest (and labelled so)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, help="SD 1.5-sized steps per stage (default: cpu 1, cuda 3)")
    parser.add_argument("--tiny-steps", type=int, default=100)
    parser.add_argument("--infer-steps", type=int, default=25, help="denoising steps of the inference figure")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the SD 1.5-sized CPU runs")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "vivid_bench_training"),
                        help="prepared data and run folders")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per configuration")
    parser.add_argument("--no-record", action="store_true", help="print, do not write bench/RESULTS.md")
    parser.add_argument("--check", action="store_true",
                        help="run the SD 1.5 code path with the tiny networks (a quick test of this script; implies --no-record)")
    parser.add_argument("--checkpoint-temporal", action="store_true",
                        help="experiment: stage 2 with its temporal layers under gradient checkpointing too (diffusers "
                             "checkpoints only the motion blocks' resnets and spatial transformers); reported apart")
    parser.add_argument("--frozen-unet-before-after", action="store_true",
                        help="stage 2 only: each clip length twice, the frozen spatial UNet in fp32 (before issue 22) "
                             "and in the compute dtype (now); one table, its own subsection")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        kw = json.loads(args.child)
        kind = kw.pop("kind")
        print(json.dumps({"tiny": child_tiny, "sd15": child_sd15, "infer": child_infer}[kind](**kw)))
        return

    cuda = args.device == "cuda"
    if cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("bench/training.py: error: --device cuda, but torch sees no CUDA GPU "
                     f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); run it on a GPU machine")
    parts = args.only or (["stage1", "stage2", "infer"] if cuda else ["tiny", "stage1", "stage2"])
    steps = args.steps or (3 if cuda else 1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load: {os.getloadavg()}, available memory {mem_available() / GB:.1f} GB", flush=True)
    texts: dict[str, str] = {}
    if "tiny" in parts:
        data = tiny_data(work)
        if data is None:
            texts["tiny"] = f"Skipped: {SHARED_DRIVING} is absent.\n"
        else:
            r = run_child("tiny", args.timeout, data=str(data), steps=args.tiny_steps, work=str(work))
            texts["tiny"] = report_tiny(r)
        print(texts["tiny"], flush=True)
    for stage in (1, 2):
        if f"stage{stage}" not in parts:
            continue
        need = CPU_NEEDS_GB[f"stage{stage}"]
        if not cuda and not args.check and mem_available() < need * GB:
            text = (f"Skipped: only {mem_available() / GB:.1f} GB of memory available, it needs about {need:.0f} GB; "
                    "run it when the machine is idle.\n")
        elif stage == 2 and args.frozen_unet_before_after:
            text = frozen_unet_before_after(args, sd15_data(work, args.resolution), work, steps)
            texts["stage2_frozen"] = text
            print(text, flush=True)
            continue
        else:
            data = sd15_data(work, args.resolution)
            done, text = [], ""
            for frames in (sorted(args.frames or [24]) if stage == 2 else [1]):
                try:
                    r = run_child("sd15", args.timeout, stage=stage, device=args.device, data=str(data), work=str(work),
                                  steps=steps, frames=frames, resolution=args.resolution, threads=args.threads,
                                  check=args.check, checkpoint_temporal=args.checkpoint_temporal and stage == 2)
                    done.append(r)
                    text += report_sd15(r, args.device) + "\n"
                except RuntimeError as exc:
                    text += f"Failed at {args.resolution} px" + (f", {frames} frames" if stage == 2 else "") + f": {exc}\n\n"
            if stage == 2 and len(done) >= 2 and 24 not in [r["frames"] for r in done]:
                text += extrapolate(done, 24, args.device)
            text = text.strip() + "\n"
        texts[f"stage{stage}" + ("_ckpt" if stage == 2 and args.checkpoint_temporal else "")] = text
        print(text, flush=True)
    if "infer" in parts:
        if not cuda:
            text = "GPU only (`--device cuda`); the CPU's figures are in the diffusion engine section.\n"
        else:
            r = run_child("infer", args.timeout, device=args.device, frames=24, steps=args.infer_steps,
                          resolution=args.resolution, window=24)
            text = report_infer(r)
        texts["infer"] = text
        print(text, flush=True)
    if not (args.no_record or args.check):
        record_parts(cuda, texts)


#: Subsections of the results section, in order; a run replaces only the ones it measured.
TITLES = {"summary": "Summary (written by hand from the runs below; no run replaces it)",
          "tiny": "Tiny model (`--tiny`)", "stage1": "Stage 1 step, SD 1.5-sized random model",
          "stage2": "Stage 2 step, SD 1.5-sized random model",
          "stage2_ckpt": "Stage 2 experiment: temporal layers checkpointed too (not the Trainer's setting)",
          "stage2_frozen": "Stage 2: frozen spatial UNet in fp32 (before issue 22) vs in the compute dtype",
          "infer": "Inference, SD 1.5-sized random model"}

INTRO = """What runs is the real `Trainer.run()` (data loader, network setup with `freeze_unused`, the
stage's dtype choices, gradient checkpointing, accelerate's autocast, the step), through a subclass that
marks each step and skips the end-of-run validation, sample video and checkpoint. SD 1.5-sized
networks have random weights (`sd15_sized_parts`). Each configuration ran in a fresh subprocess;
memory is the process RSS high-water mark (VmHWM, reset at the step's start) on the CPU and
`torch.cuda.max_memory_allocated` on a GPU. Each part below names the command that measured it."""


def record_parts(cuda: bool, texts: dict[str, str]) -> None:
    """Write the measured parts into their subsections of the RESULTS.md section, keeping the
    other parts' earlier results."""
    import re
    import shlex

    from bench.results import RESULTS, record

    section = "Training: step time and peak memory" + (" (GPU)" if cuda else "")
    old = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.search(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", old, re.S | re.M)
    kept = {}
    if found:
        for key, title in TITLES.items():
            m = re.search(rf"^### {re.escape(title)}\n.*?(?=^### |\Z)", found.group(0), re.S | re.M)
            if m:
                kept[key] = m.group(0).rstrip() + "\n"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    for key, text in texts.items():
        if key in kept and text.startswith(("Skipped", "Failed")):
            continue  # a run that measured nothing does not replace an earlier measurement
        kept[key] = f"### {TITLES[key]}\n\n`{command}` ({stamp})\n\n{text.strip()}\n"
    body = INTRO + "\n\n" + "\n".join(kept[k] for k in TITLES if k in kept)
    record(section, body)

if __name__ == "__main__":
    main()
