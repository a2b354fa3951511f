"""The networks of each training stage, and their export as a VividPipeline folder.

Stage 1 trains the image UNet (no temporal layers take part), a ReferenceNet copied from it
and the PoseGuider. Its exported pipeline gets the motion adapter's temporal layers around
the trained image UNet (`UNetMotionModel.from_unet2d`), so it animates at once and stage 2
can start from it. Stage 2 loads that pipeline and trains the temporal layers only.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNetMotionModel
from torch import nn
from transformers import CLIPVisionModelWithProjection

from ..disk_space import directory_bytes, disk_full
from ..models.builders import Parts, load_base_network, load_base_parts, mini_parts, scheduler_config, tiny_parts, widen_input
from .config import TrainConfig
from .denoiser import Denoiser, freeze_for_stage, temporal_parameter_names

#: Written into every exported model folder: which stage made it, at which step, how.
TRAINING_FILE = "training.json"


class InitError(ValueError):
    """`--init` does not name a model this stage can start from."""


@dataclass
class Networks:
    """Trained (in `denoiser`) and frozen networks of one stage."""

    denoiser: Denoiser
    vae: nn.Module
    image_encoder: nn.Module
    feature_extractor: object
    adapter: MotionAdapter | None  # stage 1: the temporal layers its exported pipeline gets
    scheduler: dict  # the inference scheduler's config: training noises by it, the export samples with it
    separate_fg_bg: bool = True
    warp_guidance: bool = False  # the denoising UNet also takes the warped reference's latents
    eye_landmarks: bool = True  # eyelids and irises drawn into the motion maps
    warp_residual: bool = False  # ... and denoises the target's difference from them


def random_training_parts(seed: int, mini: bool = False) -> Parts:
    """The tiny (or mini) parts, with the adapter's temporal output projections at zero: a
    random temporal layer would otherwise scramble what stage 1 learnt as soon as it is
    exported (AnimateDiff's trained layers start near identity; random ones do not)."""
    parts = mini_parts(seed) if mini else tiny_parts(seed)
    with torch.no_grad():
        for name, p in parts.adapter.named_parameters():
            if ".proj_out." in f".{name}":
                p.zero_()
    return parts


def check_init(init: str | Path | None, stage: int) -> Path | None:
    """The `--init` folder, checked before any weights load: stage 2 needs a stage 1 model."""
    if stage == 1:
        if init is not None:
            raise InitError("--init is for stage 2 (a stage 1 model); stage 1 starts from the base models")
        return None
    if init is None:
        raise InitError("stage 2 needs --init RUN1/model (the model stage 1 exported)")
    folder = Path(init)
    if not (folder / "model_index.json").is_file():
        raise InitError(f"--init {folder}: not a saved VividPipeline folder (no model_index.json)")
    marker = folder / TRAINING_FILE
    if not marker.is_file():
        raise InitError(f"--init {folder}: no {TRAINING_FILE}, so not a model exported by stage 1 training")
    made_by = json.loads(marker.read_text()).get("stage")
    if made_by != 1:
        raise InitError(f"--init {folder}: exported by stage {made_by} training; stage 2 starts from a stage 1 model")
    return folder


def build_networks(config: TrainConfig, init: Path | None) -> Networks:
    """The networks of `config.stage`, in fp32 on the CPU (accelerate places them)."""
    if config.stage == 1:
        from_scratch = config.tiny or config.mini
        parts = random_training_parts(config.seed, mini=config.mini) if from_scratch else load_base_parts(config.base_models)
        reference_net = copy.deepcopy(parts.unet2d)  # ReferenceNet keeps the plain input
        unet = parts.unet2d
        if config.warp_guidance:
            unet = widen_input(unet, parts.vae.config.latent_channels, zero=not from_scratch)
        denoiser = Denoiser(reference_net, unet, parts.pose_guider)
        nets = Networks(denoiser, parts.vae, parts.image_encoder, parts.feature_extractor, parts.adapter,
                        scheduler_config(config.prediction_type, config.zero_terminal_snr),
                        warp_guidance=config.warp_guidance, eye_landmarks=config.eye_landmarks,
                        warp_residual=config.warp_residual)
    else:
        from ..pipeline import VividPipeline

        pipe = VividPipeline.from_pretrained(init, device="cpu", torch_dtype=torch.float32, disk_offload=False)
        if not isinstance(pipe.unet, UNetMotionModel):
            raise InitError(f"--init {init}: its UNet has no temporal layers")
        schedule = dict(pipe.scheduler.config)
        trained = (schedule.get("prediction_type"), bool(schedule.get("rescale_betas_zero_snr")))
        if trained != (config.prediction_type, config.zero_terminal_snr):
            raise InitError(f"--init {init}: stage 1 trained with prediction_type {trained[0]}, zero_terminal_snr "
                            f"{trained[1]}; stage 2's settings say {config.prediction_type}, {config.zero_terminal_snr}")
        names = ("warp_guidance", "eye_landmarks", "warp_residual")
        guided = tuple(bool(pipe.config.get(name, False)) for name in names)
        wanted = tuple(bool(getattr(config, name)) for name in names)
        if guided != wanted:
            raise InitError(f"--init {init}: stage 1 trained with " + ", ".join(f"{n} {g}" for n, g in zip(names, guided))
                            + "; stage 2's settings say " + ", ".join(f"{n} {w}" for n, w in zip(names, wanted)))
        pipe.pose_injector.remove()
        denoiser = Denoiser(pipe.reference_net, pipe.unet, pipe.pose_guider)
        nets = Networks(denoiser, pipe.vae, pipe.image_encoder, pipe.feature_extractor, None, schedule,
                        pipe.config.separate_fg_bg, *guided)
    freeze_for_stage(nets.denoiser, config.stage)
    nets.vae.requires_grad_(False)
    nets.image_encoder.requires_grad_(False)
    return nets


def calibrate_latent_scale(vae: nn.Module, images: np.ndarray) -> float:
    """The VAE scaling factor that gives unit-variance latents on `images` (N, H, W, 3):
    SD's 0.18215 fits SD's VAE only; a random tiny VAE's latents are far smaller."""
    from ..conditioning import encode_latents, to_model_range

    with torch.no_grad():
        latents = encode_latents(vae, to_model_range(images, vae.device, vae.dtype)) / vae.config.scaling_factor
    return float(1.0 / latents.float().std().clamp_min(1e-6))


def fresh_copy(module: nn.Module) -> nn.Module:
    """The same network with the same weights, without the hooks and attention processors
    training installed on the original (the pipeline installs its own)."""
    copy_ = type(module).from_config(module.config)
    copy_.load_state_dict(module.state_dict())
    dtype = next(module.parameters()).dtype
    return copy_ if dtype == torch.float32 else copy_.to(dtype)


def pipeline_of(nets: Networks, resolution: int, parser: str = "mesh"):
    """A VividPipeline holding copies of the current weights (stage 1: with the adapter's
    temporal layers added), on the CPU in fp32."""
    from diffusers import DDIMScheduler

    from ..pipeline import VividPipeline

    d = nets.denoiser
    unet = fresh_copy(d.unet)
    if nets.adapter is not None:
        unet = UNetMotionModel.from_unet2d(unet, nets.adapter)
    return VividPipeline(
        vae=nets.vae, image_encoder=nets.image_encoder, feature_extractor=nets.feature_extractor,
        reference_net=fresh_copy(d.reference_net), unet=unet, pose_guider=fresh_copy(d.pose_guider),
        scheduler=DDIMScheduler.from_config(nets.scheduler), resolution=resolution, parser=parser,
        separate_fg_bg=nets.separate_fg_bg, warp_guidance=nets.warp_guidance, eye_landmarks=nets.eye_landmarks,
        warp_residual=nets.warp_residual,
    )


def with_frozen_from(nets: Networks, init: Path) -> Networks:
    """Stage 2's networks with every weight it never trains exactly as the stage 1 model
    `init` holds it, the temporal layers as trained: training keeps the frozen ones in the
    compute dtype (`cast_frozen`, the VAE and image encoder too), and a model written from
    those would carry their rounding."""
    from ..pipeline import VividPipeline

    source = VividPipeline.from_pretrained(init, device="cpu", torch_dtype=torch.float32, disk_offload=False)
    source.pose_injector.remove()
    trained = nets.denoiser.unet.state_dict()
    temporal = temporal_parameter_names(source.unet)
    frozen = source.unet.state_dict()
    if any(not torch.equal(frozen[k].to(trained[k].dtype), trained[k].cpu()) for k in frozen if k not in temporal):
        raise InitError(f"--init {init} changed while stage 2 ran: its weights are no longer the ones it started from")
    source.unet.load_state_dict({k: trained[k].float() for k in temporal}, strict=False)
    return replace(nets, denoiser=Denoiser(source.reference_net, source.unet, source.pose_guider), vae=source.vae,
                   image_encoder=source.image_encoder)


def source_encoders(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Stage 1's VAE and image encoder in fp32 as their source holds them (the base models, or
    the tiny/mini parts made again from the seed): training keeps them in the compute dtype."""
    if config.tiny or config.mini:
        with torch.random.fork_rng(devices=[]):  # made from the seed without touching training's random state
            parts = random_training_parts(config.seed, mini=config.mini)
        return parts.vae, parts.image_encoder
    base = config.base_models
    return (load_base_network(AutoencoderKL, base.vae, None, torch.float32),
            load_base_network(CLIPVisionModelWithProjection, base.image_encoder, "image_encoder", torch.float32))


def with_source_encoders(nets: Networks, config: TrainConfig) -> Networks:
    """Stage 1's networks with the VAE and image encoder re-read unrounded (`source_encoders`),
    the VAE's scaling factor kept (a tiny run calibrates it)."""
    vae, image_encoder = source_encoders(config)
    vae.register_to_config(scaling_factor=nets.vae.config.scaling_factor)
    return replace(nets, vae=vae, image_encoder=image_encoder)


def export_model(nets: Networks, folder: Path, stage: int, step: int, config: TrainConfig,
                 frozen_from: Path | None = None) -> None:
    """Write the current model to `folder` as a VividPipeline folder (loadable by
    `VividPipeline.from_pretrained`, the app's --weights and the CLI), atomically. Written in
    the precision training holds the weights in; with `frozen_from` (the stage 1 model that
    stage 2 started from, its frozen weights kept in a lower precision), in fp32 with those
    weights exactly as they were (`with_frozen_from`)."""
    if frozen_from is not None:
        nets = with_frozen_from(nets, frozen_from)
    elif stage == 1 and next(nets.vae.parameters()).dtype != torch.float32:
        nets = with_source_encoders(nets, config)
    pipe = pipeline_of(nets, config.resolution)
    recover_export(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with disk_full(folder, f"the model {folder}", needed=directory_bytes(folder)):
        try:
            pipe.save_pretrained(tmp)
            (tmp / TRAINING_FILE).write_text(json.dumps({"stage": stage, "step": step, "config": config.to_dict()},
                                                        indent=1))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_export(folder: Path) -> None:
    """Undo what a run killed while exporting left: the earlier model back in place when the
    kill came between moving it aside and moving the new one in, and the unfinished one removed."""
    old = folder.with_name(folder.name + ".old")
    if old.is_dir() and not folder.exists():
        old.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
