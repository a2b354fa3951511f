"""Training settings: one dataclass whose defaults are the paper's (DESIGN.md, method 6),
read from train/configs/stage1.yaml / stage2.yaml and overridden by command-line flags.

Choices the peers make and the paper does not state (noise offset, min-SNR weighting,
AdamW weight decay, gradient clipping, joint augmentation) are options here, each off or at
the paper's value by default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..conditioning import ScalingConfig
from ..models.builders import BaseModels
from .views import MAX_VIEWS


#: What `--tiny` sets on top of a stage's config: tiny random networks at 64 px, with the
#: settings that made them learn on two CPU cores in minutes (feasibility runs: Adam at the
#: paper's 1e-5 barely moves a random network in that time; without the joint augmentation
#: six clips are memorised and nothing holds on an unseen clip). One torch thread and one
#: loader process: on two cores a second thread per process made tiny steps 10x slower
#: (threads spin-waiting for a core). Explicit flags still win.
TINY_PRESET: dict[str, Any] = dict(
    tiny=True, resolution=64, optimizer="adamw", learning_rate=1e-3, weight_decay=1e-2, batch_size=8,
    augment=True, mixed_precision="no", gradient_checkpointing=False, threads=1, num_workers=1,
)


class ConfigError(ValueError):
    """A training setting that cannot work; the message names it."""


@dataclass
class TrainConfig:
    """Every training knob, with the paper's defaults (stage 1 unless noted)."""

    stage: int = 1  # 1: frame pairs, ReferenceNet + UNet + PoseGuider; 2: clips, temporal layers only
    # -- data ---------------------------------------------------------------------------------
    resolution: int = 512  # frames are resized to this if prepared larger
    clip_frames: int = 24  # stage 2 clip length (16 for smaller GPUs)
    parser: str = "mesh"  # parser of the driving maps (mesh; farl needs FaRL maps in the data: not yet)
    random_scaling: bool = True  # the paper's augmentation against identity leakage
    part_scale: tuple[float, float] = (0.8, 1.2)  # each component's own factor
    face_scale: tuple[float, float] = (0.7, 1.3)  # the spacing between components
    augment: bool = False  # joint colour + affine jitter of reference, target and map (not in the paper)
    val_share: float = 0.1  # share of clips held out for validation (at least one) without --val-data
    seen_share: float = 0.1  # share of each training clip's frames training never samples (seen-clip checks)
    reference_gap: int = 0  # stage 1: at least this many frames between reference and target
    latent_views: int = 1  # copies of every clip to sample from: 1 itself; 2 + mirrored, colours changed; 3 + colours changed (training/views.py; cached with cache_latents)
    # -- what the networks see ----------------------------------------------------------------
    warp_guidance: bool = False  # the denoising UNet also sees the reference warped to the target (DESIGN.md; not in the paper)
    warp_residual: bool = False  # with warp_guidance: denoise the target's difference from the warp (what the warp cannot draw), not the target
    eye_landmarks: bool = True  # eyelids and irises drawn into the motion maps (the paper; off: its ablation)
    # -- optimisation -------------------------------------------------------------------------
    learning_rate: float = 1e-5
    batch_size: int = 1  # per process
    gradient_accumulation: int = 1
    max_steps: int = 120_000  # stage 2: 30_000
    optimizer: str = "adam"  # adam | adamw | adam8bit (Adam with 8-bit state: bitsandbytes, CUDA)
    weight_decay: float = 0.0  # AdamW's decoupled decay (peers: 1e-2)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 0.0  # 0: no clipping (peers: 1.0)
    lr_warmup_steps: int = 0  # learning rate rises linearly from 0 over these steps (networks trained from scratch)
    uncond_prob: float = 0.1  # classifier-free dropout of the image conditioning (peers: 0.05-0.1)
    noise_offset: float = 0.0  # peers: 0.05
    min_snr_gamma: float = 0.0  # 0: plain MSE (peers: 5)
    prediction_type: str = "epsilon"  # epsilon (SD 1.5, the paper) | v_prediction (stage 1; stage 2 keeps its init's)
    zero_terminal_snr: bool = False  # betas rescaled so the last timestep is pure noise (needs v_prediction)
    mixed_precision: str = "bf16"  # no | fp16 | bf16 (accelerate); the CPU runs fp32 when "no"
    gradient_checkpointing: bool = True
    seed: int = 0
    # -- bookkeeping --------------------------------------------------------------------------
    log_every: int = 10
    save_every: int = 1000
    val_every: int = 1000
    keep_checkpoints: int = 3
    val_samples: int = 8  # validation items per check (fixed timesteps and noise)
    sample_frames: int = 24  # frames of the sample video made every val_every steps
    sample_steps: int = 25
    num_workers: int = 2  # data loader processes per training process
    threads: int = 0  # torch CPU threads per process (0: torch's default); the CPU must not be oversubscribed
    # -- networks -----------------------------------------------------------------------------
    tiny: bool = False  # tiny random networks from the same builders (tests, CPU proofs)
    mini: bool = False  # VividPortraits-mini: narrower networks in the TAEF2 latent space (train/configs/mini-*.yaml)
    cache_latents: bool = False  # encode every frame once and keep the latents beside the clip (latent_cache.py)
    base: dict[str, str] = field(default_factory=lambda: BaseModels().to_dict())

    @property
    def scaling(self) -> ScalingConfig:
        return ScalingConfig(part_range=tuple(self.part_scale), face_range=tuple(self.face_scale))

    @property
    def base_models(self) -> BaseModels:
        return BaseModels(**self.base)

    def check(self) -> None:
        """Refuse settings that cannot work, before any model is loaded."""
        problems = []
        if self.stage not in (1, 2):
            problems.append(f"stage must be 1 or 2, not {self.stage}")
        if self.resolution % 64:
            problems.append(f"resolution must be a multiple of 64, not {self.resolution}")
        if self.stage == 2 and self.clip_frames < 2:
            problems.append(f"clip_frames must be at least 2 for stage 2, not {self.clip_frames}")
        if self.parser == "farl":
            problems.append("parser farl is not supported in training yet: prepared clips hold mesh landmarks, not "
                            "FaRL maps (the pipeline's FaRL and mesh maps share labels, palette and eye drawing)")
        elif self.parser != "mesh":
            problems.append(f"parser must be mesh, not {self.parser!r}")
        for name in ("part_scale", "face_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                problems.append(f"{name} must be (low, high) with 0 < low <= high, not {(lo, hi)}")
        if self.learning_rate <= 0 or self.max_steps < 1 or self.batch_size < 1:
            problems.append("learning_rate must be > 0, max_steps and batch_size at least 1")
        if self.optimizer not in ("adam", "adamw", "adam8bit"):
            problems.append(f"optimizer must be adam, adamw or adam8bit, not {self.optimizer!r}")
        if not 0 <= self.uncond_prob < 1:
            problems.append(f"uncond_prob must be in [0, 1), not {self.uncond_prob}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"mixed_precision must be no, fp16 or bf16, not {self.mixed_precision!r}")
        if not 0 < self.val_share < 1 or not 0 <= self.seen_share < 1:
            problems.append("val_share must be in (0, 1) and seen_share in [0, 1)")
        if min(self.save_every, self.val_every, self.log_every, self.keep_checkpoints) < 1:
            problems.append("save_every, val_every, log_every and keep_checkpoints must be at least 1")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            problems.append(f"prediction_type must be epsilon or v_prediction, not {self.prediction_type!r}")
        elif self.zero_terminal_snr and self.prediction_type != "v_prediction":
            problems.append("zero_terminal_snr needs prediction_type v_prediction (epsilon says nothing at pure noise)")
        if self.tiny and self.mini:
            problems.append("tiny and mini are two model sizes: choose one")
        if self.cache_latents and self.augment:
            problems.append("cache_latents keeps the latents of the unaugmented frames: it cannot be used with augment")
        if self.warp_residual and not self.warp_guidance:
            problems.append("warp_residual needs warp_guidance (it denoises the difference from the warp)")
        if not 1 <= self.latent_views <= MAX_VIEWS:
            problems.append(f"latent_views must be 1 to {MAX_VIEWS}, not {self.latent_views}")
        if self.lr_warmup_steps < 0:
            problems.append(f"lr_warmup_steps must be at least 0, not {self.lr_warmup_steps}")
        if problems:
            raise ConfigError("; ".join(problems))

    def check_machine(self) -> None:
        """Refuse settings this machine cannot run (checked by the trainer, not on load, so a
        config can be read and tested anywhere)."""
        if self.optimizer == "adam8bit" and not _cuda_with_bitsandbytes():
            raise ConfigError("optimizer adam8bit needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); "
                              "elsewhere use --set optimizer=adam")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path | None = None, tiny: bool = False, **overrides: Any) -> "TrainConfig":
        """Defaults, then the YAML file's values, then the tiny preset when `tiny`, then
        `overrides` (None values ignored). Unknown keys are errors (a misspelt setting
        must not be silently ignored)."""
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"{path}: no such config file")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of setting: value")
            values.update(loaded)
        if tiny:
            values.update(TINY_PRESET)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if values.get("mixed_precision") is False:  # YAML 1.1 reads a bare `no` as false
            values["mixed_precision"] = "no"
        for key in ("part_scale", "face_scale", "adam_betas"):
            if key in values:
                values[key] = tuple(values[key])
        config = cls(**values)
        config.check()
        return config


def _cuda_with_bitsandbytes() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None
