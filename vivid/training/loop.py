"""The training loop of both stages on accelerate: one GPU, several GPUs or several nodes
with the same code (`accelerate launch`), or plain `python` for one process.

Reproducible by construction: every sample is a function of (seed, index) and every step's
noise and timesteps of (seed, step, process), so a run killed at any moment and resumed
from its last checkpoint logs the same losses at the same steps as an uninterrupted run.

RUN/ holds metrics.jsonl, checkpoints/step-N/ (accelerate's full state, written under a
temporary name and renamed; the newest `keep_checkpoints` kept), model/ (a VividPipeline
folder, refreshed at every checkpoint and at the end) and samples/step-N.mp4.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..conditioning import (
    ReferenceEmbeddings, clip_size, drop_image_conditioning, embed_clip_inputs, encode_latents, to_model_range,
)
from .clips import DataError, PreparedClip, read_index
from .config import TrainConfig
from .latent_cache import cache_latents
from .losses import add_noise, denoising_loss, denoising_target, training_scheduler
from .denoiser import cast_frozen, checkpoint_temporal_layers, freeze_unused
from ..disk_space import directory_bytes, disk_full
from .networks import (Networks, build_networks, calibrate_latent_scale, check_init, export_model, pipeline_of,
                       recover_export)
from .samples import FrameRange, SampleSpec, TrainingSamples, split_frames
from .validation import build_checks, checksum, score_checks, write_sample_video

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
STATE_FILE = "training_state.json"
#: Frames the VAE encodes at once: a whole 24-frame clip at 512 px took ~7.7 GiB in one call.
VAE_CHUNK = 8


class ResumeError(ValueError):
    """--resume without a checkpoint to resume from."""


@dataclass
class Paths:
    run: Path

    @property
    def checkpoints(self) -> Path:
        return self.run / CHECKPOINTS

    @property
    def metrics(self) -> Path:
        return self.run / METRICS

    @property
    def model(self) -> Path:
        return self.run / "model"

    @property
    def samples(self) -> Path:
        return self.run / "samples"


def latest_checkpoint(paths: Paths) -> tuple[Path, int] | None:
    """The newest complete checkpoint folder and its step."""
    found = []
    for folder in paths.checkpoints.glob("step-*"):
        if (folder / STATE_FILE).is_file() and folder.name[5:].isdigit():
            found.append((int(folder.name[5:]), folder))
    if not found:
        return None
    step, folder = max(found)
    return folder, step


def sweep_leftovers(paths: Paths) -> None:
    """Remove what a run killed while writing left (unfinished checkpoint folders, an unfinished
    model export) and put a model moved aside mid-export back: `--resume` and readers of
    RUN/model only ever see complete ones."""
    for tmp in paths.checkpoints.glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    recover_export(paths.model)


def choose_validation_clips(entries: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training entries, validation entries): a fixed share of the clips, at least one,
    chosen by a hash of their ids (stable when clips are added)."""
    import hashlib

    if len(entries) < 2:
        raise DataError("the data holds one clip; validation needs clips training never sees: add clips or give --val-data")
    ranked = sorted(entries, key=lambda e: hashlib.sha256(f"{seed}:{e['id']}".encode()).hexdigest())
    count = min(max(1, round(share * len(entries))), len(entries) - 1)
    held = {e["id"] for e in ranked[:count]}
    return [e for e in entries if e["id"] not in held], [e for e in entries if e["id"] in held]


def _open(entries: list[dict]) -> list[PreparedClip]:
    return [PreparedClip(e["folder"]) for e in entries]


def _step_generator(config: TrainConfig, step: int, rank: int, micro: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + step) * 1_009 + rank) * 17 + micro)


class Trainer:
    """One training run; `run()` does the work. Built in two phases so every input is
    checked (one-line errors) before any network is loaded."""

    def __init__(self, config: TrainConfig, data: str | Path, output: str | Path, *, init: str | Path | None = None,
                 resume: bool = False, val_data: str | Path | None = None, device: str | None = None):
        config.check()
        self.config, self.paths = config, Paths(Path(output))
        self.entries = read_index(data)
        self.val_entries = read_index(val_data) if val_data else None
        self.init = check_init(init, config.stage)
        self.frozen_from: Path | None = None  # stage 2 under mixed precision: the folder its frozen weights come from
        self.resume_from = None
        if resume:
            self.resume_from = latest_checkpoint(self.paths)
            if self.resume_from is None:
                raise ResumeError(f"--resume: no checkpoint in {self.paths.checkpoints}; start without --resume")
        config.check_machine()
        if self.val_entries is None:
            self.train_entries, self.val_entries = choose_validation_clips(self.entries, config.val_share, config.seed)
        else:
            self.train_entries = self.entries
        self.device = device

    # -- setup --------------------------------------------------------------------------------
    def _accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        trackers = []
        try:
            import tensorboard  # noqa: F401

            trackers = ["tensorboard"]
        except ImportError:
            pass
        return Accelerator(
            mixed_precision=self.config.mixed_precision,
            gradient_accumulation_steps=self.config.gradient_accumulation,
            # Without CUDA, processes started by `accelerate launch --multi_gpu` (torchrun) join
            # one gloo group only when the Accelerator is told it is on the CPU.
            cpu=self.device == "cpu" or not torch.cuda.is_available(),
            log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.paths.run), logging_dir=str(self.paths.run / "logs")),
        )

    def _spec(self, nets: Networks) -> SampleSpec:
        c = self.config
        return SampleSpec(
            stage=c.stage, resolution=c.resolution, frames=1 if c.stage == 1 else c.clip_frames,
            separate_fg_bg=nets.separate_fg_bg, clip_size=clip_size(nets.feature_extractor),
            random_scaling=c.random_scaling, scaling=c.scaling, augment=c.augment, reference_gap=c.reference_gap,
            warp_guidance=nets.warp_guidance, eye_landmarks=nets.eye_landmarks, views=c.latent_views,
        )

    # -- one step -----------------------------------------------------------------------------
    def _loss(self, batch: dict, nets: Networks, generator: torch.Generator, *, drop: bool = True,
              timestep: int | None = None) -> torch.Tensor:
        inputs = step_inputs(batch, nets, self.config, generator, drop=drop, device=self.accelerator.device,
                             dtype=self.weight_dtype)
        return step_loss(self.denoiser, self.scheduler, inputs, generator, self.config, timestep)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to `max_steps`; returns the last logged metrics."""
        c, paths = self.config, self.paths
        if c.threads:
            torch.set_num_threads(c.threads)
        self.accelerator = acc = self._accelerator()
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
        paths.run.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            sweep_leftovers(paths)
        train_clips, val_clips = _open(self.train_entries), _open(self.val_entries)
        nets = build_networks(c, self.init)
        if c.tiny and c.stage == 1:
            frames = np.concatenate([clip.frames(clip.reference_frames[:4]) for clip in train_clips[:8]])
            frames = np.stack([__import__("cv2").resize(f, (c.resolution, c.resolution)) for f in frames])
            nets.vae.register_to_config(scaling_factor=calibrate_latent_scale(nets.vae, frames))
        self.scheduler = training_scheduler(nets.scheduler)
        nets.vae.to(acc.device, self.weight_dtype)
        nets.image_encoder.to(acc.device, self.weight_dtype)
        spec = self._spec(nets)
        if c.cache_latents:
            with acc.main_process_first():  # the main process encodes, the others then find the files
                cache_latents(val_clips, nets.vae, c.resolution, acc.is_local_main_process)  # validation: the clips alone
                tag = cache_latents(train_clips, nets.vae, c.resolution, acc.is_local_main_process, views=c.latent_views)
            spec = replace(spec, latent_tag=tag)
        train_ranges, held = split_frames(train_clips, c.seen_share, spec.frames)
        world = acc.num_processes
        total = c.max_steps * c.batch_size * world * c.gradient_accumulation
        dataset = TrainingSamples(train_clips, train_ranges, spec, c.seed, total)
        loader = torch.utils.data.DataLoader(dataset, batch_size=c.batch_size, shuffle=False, num_workers=c.num_workers,
                                             persistent_workers=c.num_workers > 0)
        if c.stage == 1:
            # On the accelerator: the probe's gradients of two UNets need ~14 GiB for SD 1.5
            # sizes, which a GPU has free before the optimiser exists and a host may not.
            nets.denoiser.to(acc.device)
            unused = freeze_unused_logged(nets, acc.device)
            if unused:
                log.info("frozen (no effect on the loss): %d tensors, e.g. %s", len(unused), unused[:3])
        if c.stage == 2 and self.weight_dtype != torch.float32:
            # Wholly frozen in stage 2: kept in the compute dtype (1.7 GB less for SD 1.5 sizes).
            nets.denoiser.reference_net.to(self.weight_dtype)
            nets.denoiser.pose_guider.to(self.weight_dtype)
            cast_frozen(nets.denoiser.unet, self.weight_dtype)  # the spatial UNet; temporal layers stay fp32
            self.frozen_from = self.init  # exports take those weights from there, unrounded
        if c.gradient_checkpointing:
            for m in (nets.denoiser.unet, nets.denoiser.reference_net):
                if hasattr(m, "enable_gradient_checkpointing") and any(p.requires_grad for p in m.parameters()):
                    m.enable_gradient_checkpointing()
            if c.stage == 2:
                checkpoint_temporal_layers(nets.denoiser.unet)
        optimizer = make_optimizer(nets.denoiser.trainable(), c)
        # accelerate steps a prepared schedule once per process at every optimiser step
        lr_schedule = warmup_schedule(optimizer, c.lr_warmup_steps * acc.num_processes)
        self.denoiser, optimizer, loader, lr_schedule = acc.prepare(nets.denoiser, optimizer, loader, lr_schedule)
        step = 0
        if self.resume_from is not None:
            folder, step = self.resume_from
            acc.load_state(str(folder))
            loader = acc.skip_first_batches(loader, step * c.gradient_accumulation)
            _truncate_metrics(paths.metrics, step, acc.is_main_process)
            log.info("resumed from %s (step %d)", folder, step)
        if acc.is_main_process and acc.trackers:
            acc.init_trackers("vivid", config={k: str(v) for k, v in c.to_dict().items()})
        checks = {}
        if acc.is_main_process:  # held-out clips; unseen frames of training clips
            everything = val_clips + train_clips
            n = len(val_clips)
            checks = {
                "val_loss": build_checks(everything, _ranges_of(val_clips), spec, c.val_samples, c.seed),
                "seen_loss": build_checks(everything, [FrameRange(r.clip + n, r.start, r.stop) for r in held], spec,
                                          c.val_samples, c.seed + 1),
            }
            checks = {k: v for k, v in checks.items() if v}
        self.denoiser.train()
        started, last = time.perf_counter(), {}
        window: list[float] = []
        bar = _progress(acc, c.max_steps, step)
        micro = 0
        for batch in loader:
            if step >= c.max_steps:
                break
            with acc.accumulate(self.denoiser):
                gen = _step_generator(c, step, acc.process_index, micro)
                loss = self._loss(batch, nets, gen)
                acc.backward(loss)
                if acc.sync_gradients and c.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.denoiser.parameters(), c.max_grad_norm)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            if not acc.sync_gradients:
                continue
            micro = 0
            step += 1
            window.append(float(acc.reduce(loss.detach(), reduction="mean")))
            bar.update(1)
            if step % c.log_every == 0 or step == c.max_steps:
                now = time.perf_counter()
                last = {"step": step, "loss": window[-1], "loss_mean": float(np.mean(window)),
                        "lr": optimizer.param_groups[0]["lr"], "seconds_per_step": (now - started) / len(window)}
                self._log(last)
                window, started = [], now
            if step % c.val_every == 0 or step == c.max_steps:
                if acc.is_main_process and checks:
                    self._log({"step": step, **self._validate(nets, checks)})
                if acc.is_main_process:
                    self._sample(nets, val_clips[0], step)
                acc.wait_for_everyone()
            if step % c.save_every == 0 or step == c.max_steps:
                self._checkpoint(nets, step)
                window, started = [], time.perf_counter()  # the loss window restarts where a resume would
        bar.close()
        acc.wait_for_everyone()
        self._write_rank_checksum(step)
        acc.end_training()
        return last

    # -- bookkeeping --------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            with open(self.paths.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            if acc.trackers:
                acc.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    @torch.no_grad()
    def _validate(self, nets: Networks, checks: dict) -> dict[str, float]:
        self.denoiser.eval()
        from torch.utils.data import default_collate

        def loss_of(sample, timestep, noise_seed):
            batch = default_collate([sample])
            gen = torch.Generator().manual_seed(noise_seed)
            with self.accelerator.autocast():
                return float(self._loss(batch, nets, gen, drop=False, timestep=timestep))

        out = {}
        for prefix, items in checks.items():
            out.update(score_checks(items, loss_of, prefix))
        self.denoiser.train()
        return out

    def _sample(self, nets: Networks, clip: PreparedClip, step: int) -> None:
        try:
            pipe = pipeline_of(self._unwrapped(nets), self.config.resolution)
            pipe.to(self.accelerator.device)
            write_sample_video(pipe, clip, self.config.sample_frames, self.config.sample_steps,
                               self.paths.samples / f"step-{step}.mp4", self.config.seed)
        except Exception as exc:  # a sample video is a convenience: never stop training for it
            log.warning("sample video at step %d failed: %s", step, exc)

    def _unwrapped(self, nets: Networks) -> Networks:
        return replace(nets, denoiser=self.accelerator.unwrap_model(self.denoiser))

    def _checkpoint(self, nets: Networks, step: int) -> None:
        acc, paths = self.accelerator, self.paths
        final = paths.checkpoints / f"step-{step}"
        tmp = paths.checkpoints / f".step-{step}.tmp"
        last = latest_checkpoint(paths)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        # A full disk: one line naming the checkpoint and its size; earlier checkpoints stay.
        with disk_full(final, f"the checkpoint {final}", needed=last and directory_bytes(last[0])):
            try:
                acc.save_state(str(tmp))
                acc.wait_for_everyone()
                if acc.is_main_process:
                    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "stage": self.config.stage}))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            done = sorted((int(f.name[5:]), f) for f in paths.checkpoints.glob("step-*") if f.name[5:].isdigit())
            for _, old in done[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            export_model(self._unwrapped(nets), paths.model, self.config.stage, step, self.config,
                         frozen_from=self.frozen_from)
        acc.wait_for_everyone()

    def _write_rank_checksum(self, step: int) -> None:
        """Each process records a fingerprint of its weights: all ranks must agree."""
        model = self.accelerator.unwrap_model(self.denoiser)
        record = {"step": step, "rank": self.accelerator.process_index, "world": self.accelerator.num_processes,
                  "weights": checksum(model)}
        with open(self.paths.run / f"weights-rank{self.accelerator.process_index}.json", "w") as f:
            json.dump(record, f)


@dataclass
class StepInputs:
    """What one training step feeds the denoiser, from a batch of samples (`samples.py`)."""

    latents: torch.Tensor  # what is denoised: targets' latents, scaled as the pipeline's (B, C, h, w), stage 2
    # (B, C, F, h, w); for a residual warp-guided model their difference from `guide`
    reference_latents: torch.Tensor  # (B, C, h, w)
    embeddings: ReferenceEmbeddings  # CLIP (B, 1, D) each; the dropped samples' are `unconditional`
    motion: torch.Tensor  # (B*F, 3, H, W) in [-1, 1], frames inner
    guide: torch.Tensor | None = None  # warped reference's latents, shaped like `latents` (warp guidance)


def step_inputs(batch: dict, nets: Networks, config: TrainConfig, generator: torch.Generator, *, drop: bool,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> StepInputs:
    """Latents, embeddings and motion tensors of a batch (frozen networks, no grad); with
    `drop`, each sample's image conditioning is dropped with probability `config.uncond_prob`.
    Warped references (`warped`, warp guidance) are encoded here, every step: their pairs are
    drawn at random, so there is nothing to cache."""
    b = batch["reference"].shape[0]
    frames = batch["target"].shape[1]
    with torch.no_grad():
        emb = embed_clip_inputs(nets.image_encoder, nets.feature_extractor, batch["clip"].numpy())
        if drop and config.uncond_prob > 0:
            emb = drop_image_conditioning(emb, torch.rand(b, generator=generator) < config.uncond_prob)
        if "target_latents" in batch:  # encoded once, before training (latent_cache)
            ref_latents = batch["reference_latents"].to(device, dtype)
            latents = batch["target_latents"].flatten(0, 1).to(device)
        else:
            ref_latents = encode_latents(nets.vae, to_model_range(batch["reference"].numpy(), device, dtype))
            latents = _encode_chunked(nets.vae, batch["target"].flatten(0, 1).numpy(), device, dtype)  # (B*F, C, h, w)
        guide = None
        if "warped" in batch:
            guide = _encode_chunked(nets.vae, batch["warped"].flatten(0, 1).numpy(), device, dtype).float()
    latents = latents.float()
    if nets.warp_residual:  # what is denoised: the target's difference from the warp (the pipeline adds the warp back)
        latents = latents - guide
    if config.stage == 2:
        latents = latents.unflatten(0, (b, frames)).transpose(1, 2)  # (B, C, F, h, w)
        guide = None if guide is None else guide.unflatten(0, (b, frames)).transpose(1, 2)
    motion = to_model_range(batch["motion"].flatten(0, 1).numpy(), device, dtype)
    return StepInputs(latents, ref_latents, emb, motion, guide)


def _encode_chunked(vae, images, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Latents of (N, H, W, 3) uint8 images, VAE_CHUNK at a time. Targets are the posterior
    mean too: SD's VAE has a near-zero posterior spread, so this is what peers' `.sample()`
    gives there, while a random tiny VAE's spread (std ~1 against a mean of std ~0.17) would
    bury the signal in noise."""
    return torch.cat([encode_latents(vae, to_model_range(images[i : i + VAE_CHUNK], device, dtype))
                      for i in range(0, len(images), VAE_CHUNK)])


def step_loss(denoiser: torch.nn.Module, scheduler, inputs: StepInputs, generator: torch.Generator,
              config: TrainConfig, timestep: int | None = None) -> torch.Tensor:
    """The denoising loss of one step: the latents noised at random timesteps (or at
    `timestep` for every sample: validation), the denoiser's prediction, its target."""
    latents = inputs.latents
    noisy, noise, t = add_noise(scheduler, latents, generator, config.noise_offset)
    if timestep is not None:
        t = torch.full_like(t, timestep)
        noisy = scheduler.add_noise(latents, noise, t)
    pred = denoiser(noisy, t, inputs.reference_latents, inputs.embeddings.reference_net, inputs.embeddings.unet,
                    inputs.motion, inputs.guide)
    target = denoising_target(scheduler, latents, noise, t)
    return denoising_loss(pred, target, scheduler, t, config.min_snr_gamma)


def _ranges_of(clips: list[PreparedClip]) -> list[FrameRange]:
    return [FrameRange(i, 0, len(c)) for i, c in enumerate(clips)]


def probe_inputs(nets: Networks, frames: int = 1, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Small inputs of the right kinds (64 px), to find parameters that never get a gradient."""
    unet = nets.denoiser.unet
    channels, dim = unet.config.out_channels, unet.config.cross_attention_dim
    noisy = torch.randn(1, channels, 8, 8) if frames == 1 else torch.randn(1, channels, frames, 8, 8)
    probe = dict(noisy=noisy, timesteps=torch.tensor([10]), reference_latents=torch.randn(1, channels, 8, 8),
                 reference_context=torch.randn(1, 1, dim), unet_context=torch.randn(1, 1, dim),
                 motion=torch.rand(frames, 3, 64, 64) * 2 - 1)
    if nets.warp_guidance:
        probe["guide"] = torch.randn_like(noisy)
    return {k: v.to(device) for k, v in probe.items()}


def freeze_unused_logged(nets: Networks, device: torch.device | str = "cpu") -> list[str]:
    return freeze_unused(nets.denoiser, probe_inputs(nets, device=device))


def make_optimizer(params: list, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper), AdamW, or Adam with 8-bit state (bitsandbytes, CUDA: a quarter of
    Adam's 8 bytes per parameter, what lets stage 1 fit a 24 GB GPU)."""
    kw = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), eps=config.adam_eps)
    if config.optimizer == "adam8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ImportError("optimizer adam8bit needs bitsandbytes: pip install bitsandbytes") from exc
        if config.weight_decay:
            return bnb.optim.AdamW8bit(params, weight_decay=config.weight_decay, **kw)
        return bnb.optim.Adam8bit(params, **kw)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, weight_decay=config.weight_decay, **kw)
    return torch.optim.Adam(params, **kw)


def warmup_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rising linearly to its set value over `steps` optimiser steps, then
    constant (0 steps: constant from the start, the paper's schedule)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: min(1.0, (n + 1) / steps) if steps else 1.0)


def _truncate_metrics(path: Path, step: int, main: bool) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be
    logged again), so the file reads like one uninterrupted run."""
    if not main or not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _progress(acc, total: int, start: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step", disable=not acc.is_local_main_process)
