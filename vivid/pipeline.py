"""VividPipeline: the diffusion engine (DESIGN.md, method points 3-5).

Reads like the paper: analyse faces -> encode the reference (VAE, CLIP fg/bg, ReferenceNet
once) -> prepare windows -> denoise (PoseGuider per window, overlapping predictions
averaged, cyclic shift each step) -> decode in chunks, streaming frames out.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generator, Iterable, Iterator

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from PIL import Image

from .errors import GpuMemoryError, WeightsError
from .face import (
    CropConfig, FaceAnalyzer, MotionMapStyle, MotionTrack, NoFaceError, SquareBox, crop_image, face_square, paste_crop,
)
from .face.motion_edits import MotionEdits
from .media import checked_frames, to_rgb
from .models.base_files import hub_snapshot
from .models.builders import BaseModels, load_base_network, load_base_parts, stream_base_networks, tiny_components
from .events import FrameEvent, ProgressEvent
from .conditioning import (
    ReferenceEmbeddings, decode_latents, encode_latents, from_model_range, predict_noise, reference_embeddings,
    reference_features, to_model_range, unconditional,
)
from .models.pose_guider import PoseInjector
from .models.reference_attention import ReferenceBank, install_reference_attention
from .models.disk_streaming import (
    ONCE_PER_VIDEO, is_streamed, return_freed_memory, set_run_device, stream_from_files, stream_from_memory,
)
from .models.saved import (
    NETWORKS, OLD_PARSER_KEY, PARSER_KEY, SamplingDefaults, check_weights_folder, inspect_model, load_failure,
    parser_setting, vae_class_name,
)
from .models.weights import empty_network, load_network, load_strict
from .precision import Precision, choose_precision
from .sampling import Sampling
from .warp_guidance import ReferenceWarp, WarpPaste
from .windows import average_windows, context_windows

log = logging.getLogger(__name__)

#: Approximate linear map from SD 1.5 latents to RGB, for a cheap picture of the estimate.
LATENT_RGB_FACTORS = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)
#: Output pixels the VAE decodes per call (frames x side^2): 1 frame at 128 px and up, 4 at 64 px.
#: More frames per call is no faster on a CPU (0.78 vs 0.84 CPU s a frame at 128 px, 1 vs 8
#: frames), but the decoder's activations grow with it (+90 vs +360 MB).
DECODE_PIXELS = 128 * 128
#: Warped frames encoded per call, in units of the decoder's chunk (encoding is the cheaper half).
WARP_CHUNK_FRAMES = 8
#: `from_pretrained` keywords that say how to fetch a hub id.
HUB_DOWNLOAD_OPTIONS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")
#: What a saved VividPipeline consists of on the hub: configs and safetensors weights only.
HUB_FILES = ("model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors")
#: Trained weight files written by train/ and read by `load_trained`.
TRAINED_FILES = {
    "reference_net": "reference_net.safetensors",
    "unet": "denoising_unet.safetensors",
    "pose_guider": "pose_guider.safetensors",
}


@dataclass
class PreparedReference:
    """The reference portrait cropped for the model, with its person mask."""

    image: np.ndarray  # (res, res, 3) uint8
    person: np.ndarray  # (res, res) bool
    points: np.ndarray | None = None  # face mesh (478, 2) in crop pixels, for motion transfer
    square: SquareBox | None = None  # where the crop is in the reference image
    source: np.ndarray | None = None  # the whole reference image, for pasting results back


def _started(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`frames` with its first item already pulled (so its checks have run), as an iterator."""
    import itertools

    first = next(frames)
    return itertools.chain([first], frames)


def _auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _offloads(disk_offload: bool | None, device: torch.device) -> bool:
    """Whether to stream the once-per-video networks from disk: asked for, or by default on
    a CPU, where their weights would take RAM the machine shares with everything else. On a
    GPU it is off unless asked for: it saves their GPU memory but reads them from disk into
    the GPU for every video."""
    return device.type == "cpu" if disk_offload is None else disk_offload


def decoder_channels_last(vae: torch.nn.Module) -> torch.nn.Module:
    """The VAE decoder in oneDNN's native layout: it (a frame per call) ran 9% faster in bf16
    and 2% in fp32 on a CPU (SD1.5-sized, 128 px); the motion UNet ran 13% slower (its 5-D
    activations are reordered at every temporal layer), so it stays as it is. Loaders call
    this as soon as the VAE exists: converted with the other networks loaded, the replaced
    tensors' heap stayed behind (160 MiB above the built fp32 pipeline)."""
    vae.decoder.to(memory_format=torch.channels_last)
    return vae


def gpu_memory_advice(resolution: int, window: int, overlap: int, dtype: torch.dtype) -> str:
    """What to change after the GPU ran out of memory: a smaller window that still exceeds the
    overlap, and 16-bit numbers when running in fp32. Plain words, so it reads the same in
    the CLI and the app."""
    smaller = max(overlap + 1, window * 2 // 3)
    fixes = [f"a smaller window (e.g. {smaller} frames)" if smaller < window
             else f"less overlap (now {overlap}) to allow a smaller window" if overlap > 0 else None,
             "16-bit numbers (dtype bf16 or fp16)" if dtype == torch.float32 else None]
    fixes = [f for f in fixes if f]
    advice = "use " + " or ".join(fixes) if fixes else "use a GPU with more memory"
    return f"out of GPU memory at {resolution} px with a {window}-frame window: {advice}"


def recommended_scheduler(folder: Path, name: str):
    """The scheduler class `name` (a model's recommendation) made from the saved scheduler's
    config, so it keeps the schedule the model was trained with (betas, prediction type)."""
    import diffusers

    kind = getattr(diffusers, name, None)
    if not (isinstance(kind, type) and issubclass(kind, diffusers.SchedulerMixin)):
        raise WeightsError(f"{folder / 'model_index.json'}: sampling_defaults names the scheduler {name}, "
                           "which diffusers does not have")
    return kind.from_pretrained(folder, subfolder="scheduler")


def fetch_from_hub(repo_id: str, **options) -> Path:
    """The local folder of a hub model (downloaded, or found in the cache): its configs and
    safetensors files only, so it is then checked and loaded like any saved folder. (diffusers'
    own `download` refuses our pose guider's module, which is not part of diffusers.)"""
    return hub_snapshot(repo_id, list(HUB_FILES), **options)


class VividPipeline(DiffusionPipeline):
    """Portrait animation guided by facial parsing maps.

    Components: `vae`, `image_encoder` (+ `feature_extractor`), `reference_net`, `unet`
    (UNetMotionModel), `pose_guider`, `scheduler`.
    """

    model_cpu_offload_seq = "image_encoder->reference_net->pose_guider->unet->vae"

    def __init__(
        self,
        vae,
        image_encoder,
        feature_extractor,
        reference_net,
        unet,
        pose_guider,
        scheduler,
        resolution: int = 512,
        parser: str | None = None,
        separate_fg_bg: bool = True,
        base_models: dict | None = None,
        sampling_defaults: dict | None = None,
        warp_guidance: bool = False,
        eye_landmarks: bool = True,
        warp_residual: bool = False,
        face_backend: str | None = None,
    ):
        super().__init__()
        if warp_residual and not warp_guidance:
            raise ValueError("warp_residual needs warp_guidance (it denoises the difference from the warp)")
        latent = unet.config.out_channels
        if unet.config.in_channels != latent * (2 if warp_guidance else 1):
            raise ValueError(f"the denoising UNet takes {unet.config.in_channels} input channels for {latent} latent "
                             f"channels: {'with' if warp_guidance else 'without'} warp guidance it needs "
                             f"{latent * (2 if warp_guidance else 1)}")
        self.register_modules(
            vae=vae, image_encoder=image_encoder, feature_extractor=feature_extractor,
            reference_net=reference_net, unet=unet, pose_guider=pose_guider, scheduler=scheduler,
        )
        self.register_to_config(
            resolution=resolution,
            # the face parser of the motion maps ("auto", "mesh", "farl"); `face_backend` is its
            # name in folders saved before it had one name
            parser=parser_setting({PARSER_KEY: parser, OLD_PARSER_KEY: face_backend}),
            separate_fg_bg=separate_fg_bg,
            base_models=base_models or {},
            sampling_defaults=sampling_defaults or {},  # what the model recommends (`sampling_defaults`)
            warp_guidance=warp_guidance,  # the UNet also sees the portrait warped to each frame (vivid.warp_guidance)
            eye_landmarks=eye_landmarks,  # eyelids and irises in the motion maps (off: the paper's ablation)
            warp_residual=warp_residual,  # the UNet denoises the frame's difference from the warp
        )
        decoder_channels_last(vae)  # a no-op when the loaders did it already
        self.bank = ReferenceBank()
        install_reference_attention(reference_net, unet, self.bank)
        self.pose_injector = PoseInjector(unet)
        self._analyzer: FaceAnalyzer | None = None
        self.crop = CropConfig()
        self._precision: Precision | None = None

    def register_to_config(self, **kwargs) -> None:
        """diffusers' `register_to_config`; the face parser setting's old name (`face_backend`)
        sets it under its one name (`parser`)."""
        if OLD_PARSER_KEY in kwargs:
            kwargs[PARSER_KEY] = kwargs.pop(OLD_PARSER_KEY)
        super().register_to_config(**kwargs)

    @property
    def parser(self) -> str:
        """The face parser this model's motion maps are drawn with ("auto", "mesh" or "farl")."""
        return self.config.parser

    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """What this model recommends sampling with (its config's `sampling_defaults`, over
        25 steps at guidance 3.5 for a model that says nothing)."""
        return SamplingDefaults.from_config(self.config.get("sampling_defaults"), "the model's model_index.json")

    @property
    def precision(self) -> Precision:
        """The dtype the networks run in, and why (`vivid.precision`): what `auto` chose, or
        what was asked for. Latents, guidance and the scheduler stay in fp32."""
        if self._precision is None or self._precision.dtype != self.unet.dtype:
            return Precision(self.unet.dtype, "the networks' dtype")
        return self._precision

    def to_precision(self, dtype: str | torch.dtype | None = "auto") -> "VividPipeline":
        """Convert the networks to `dtype` ("auto", "fp32", "bf16", "fp16" or a torch dtype;
        `vivid.precision.choose_precision`), tensor by tensor, and remember why."""
        precision = choose_precision(dtype, self._execution_device)
        for name in NETWORKS:
            torch.nn.Module.to(getattr(self, name), precision.dtype)  # diffusers' `to` only adds a warning
        self._precision = precision
        log.info("diffusion engine runs in %s", precision)
        return self

    @property
    def _execution_device(self) -> torch.device:
        """Where the networks run: the denoising UNet's device (it is never streamed; a
        network streamed from disk holds no weights between calls, so diffusers' guess from
        the first one can say meta)."""
        return self.unet.device

    @property
    def streamed_networks(self) -> tuple[str, ...]:
        """The networks whose weights stay on disk, read layer by layer while they run
        (`offload_to_disk`)."""
        return tuple(name for name in ONCE_PER_VIDEO if is_streamed(getattr(self, name)))

    def offload_to_disk(self, folder: str | Path | None = None) -> "VividPipeline":
        """Keep CLIP and the ReferenceNet, which run once per video, on disk: their weights
        are written to `folder`/<network> (default: folders under
        `disk_streaming.offload_root()`, removed with the networks) and read back layer by
        layer each time a reference is encoded. Saves their share of memory (2.3e9 bytes at
        bf16 for the SD1.5-sized model) for a re-read per video."""
        device = self._execution_device
        for name in ONCE_PER_VIDEO:
            if not is_streamed(getattr(self, name)):
                stream_from_memory(getattr(self, name), device, None if folder is None else Path(folder) / name, name)
        log.info("%s stream from disk", " and ".join(ONCE_PER_VIDEO))
        return self

    def to(self, *args, **kwargs) -> "VividPipeline":
        """diffusers' `to`; networks streamed from disk keep their weights there and only
        change where their layers run (and their dtype)."""
        streamed = self.streamed_networks
        if not streamed:
            return super().to(*args, **kwargs)
        device = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        dtype = next((a for a in args if isinstance(a, torch.dtype)), kwargs.get("dtype"))
        for name in NETWORKS:
            network = getattr(self, name)
            if name in streamed:
                if device is not None:
                    set_run_device(network, torch.device(device))
                if dtype is not None:
                    torch.nn.Module.to(network, dtype)  # its parameters are on meta: only their dtype changes
            else:
                torch.nn.Module.to(network, **{k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})
        return self

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def tiny(cls, seed: int = 0, resolution: int = 64, dtype: str | torch.dtype | None = None,
             warp_guidance: bool = False, warp_residual: bool = False) -> "VividPipeline":
        """Tiny random components on the CPU, same code paths as the full model; fp32
        unless `dtype` says ("auto", "bf16", ...: `to_precision`)."""
        pipe = cls(**tiny_components(seed, warp_guidance), resolution=resolution, parser="mesh",
                   warp_guidance=warp_guidance, warp_residual=warp_residual)
        return pipe if dtype is None else pipe.to_precision(dtype)

    @classmethod
    def from_base_models(
        cls,
        base: BaseModels = BaseModels(),
        trained: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        resolution: int = 512,
        disk_offload: bool | None = None,
        warp_guidance: bool = False,
    ) -> "VividPipeline":
        """Base components by Hugging Face id or local folder, plus our trained weights
        (`trained`: a folder with the files of TRAINED_FILES) loaded strictly. Every network
        is read straight into `dtype` ("auto": `vivid.precision.choose_precision`), tensor by
        tensor. `disk_offload` (default: when running on a CPU): CLIP and the ReferenceNet are
        streamed from disk (as after `offload_to_disk`) as they are built, from the base models' files
        or the trained ReferenceNet's, so building never holds more than the pipeline keeps.
        `warp_guidance`: weights trained with it (the UNet's input is widened before they load)."""
        device = torch.device(device) if device else _auto_device()
        precision = choose_precision(dtype, device)
        trained_files = {name: Path(trained, file) for name, file in TRAINED_FILES.items()} if trained is not None else {}
        for path in trained_files.values():  # before anything is read
            if not path.is_file():
                raise WeightsError(f"{path}: trained weights file not found")
        built = {"vae": decoder_channels_last(load_base_network(AutoencoderKL, base.vae, None, precision.dtype))}
        streamed = {}
        if _offloads(disk_offload, device):  # early: the others' memory is not held while these convert
            streamed = stream_base_networks(base, precision.dtype, device, trained_files.get("reference_net"))
        parts = load_base_parts(base, precision.dtype, {**built, **streamed})
        pipe = cls(**parts.components(reference_net=streamed.get("reference_net"), warp_guidance=warp_guidance),
                   resolution=resolution, base_models=base.to_dict(), warp_guidance=warp_guidance)
        del parts
        pipe._precision = precision
        for name, path in trained_files.items():
            if name not in streamed:
                load_strict(getattr(pipe, name), path, name)
        return_freed_memory()  # the tensors read through on the way
        log.info("diffusion engine runs in %s%s", precision,
                 f"; {' and '.join(streamed)} stream from disk" if streamed else "")
        return pipe.to(device)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, *, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, torch_dtype: str | torch.dtype | None = None,
                        disk_offload: bool | None = None, **kwargs) -> "VividPipeline":
        """A saved pipeline (local folder or Hugging Face id), placed on `device` (default: the
        GPU if there is one) in `dtype` (or `torch_dtype`, its older name; default "auto":
        `vivid.precision.choose_precision`, e.g. bf16 on CPUs with native bf16, fp32 on
        others). Each network is read straight into that dtype, with no randomly initialised
        copy alongside. `disk_offload` (default: when running on a CPU): CLIP and the
        ReferenceNet are not loaded but read from the folder's files layer by layer when a
        reference is encoded (`offload_to_disk`, without writing anything). With no path (or
        "mini"), the model shipped in `assets/mini` (VividPortraits-mini). The scheduler the
        model recommends (`sampling_defaults`) replaces the saved one unless `scheduler` is given."""
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"give dtype or torch_dtype, not both (got {dtype} and {torch_dtype})")
        device = torch.device(device) if device else _auto_device()
        precision = choose_precision(dtype if dtype is not None else torch_dtype, device)
        kwargs.setdefault("use_safetensors", True)  # never the pickle-based .bin files
        # Layout, configs and complete safetensors files checked before anything loads.
        source, saved = inspect_model(pretrained_model_name_or_path)
        if saved is None:  # a hub id: fetched (or found in the cache) first, then checked like a folder
            fetched = fetch_from_hub(source, **{k: kwargs.pop(k) for k in HUB_DOWNLOAD_OPTIONS if k in kwargs})
            saved = check_weights_folder(fetched)
        folder = saved.folder
        if "scheduler" not in kwargs and saved.sampling.scheduler is not None:
            kwargs["scheduler"] = recommended_scheduler(folder, saved.sampling.scheduler)
        try:
            # Each network read tensor by tensor: memory never holds a second copy in the files' dtype.
            for name, network_class in cls.network_classes(folder).items():
                if name in kwargs:
                    continue
                if name in ONCE_PER_VIDEO and _offloads(disk_offload, device):
                    kwargs[name], files = empty_network(network_class, folder / name, precision.dtype)
                    stream_from_files(kwargs[name], files, device, name)  # before the others load: a lower peak
                else:
                    kwargs[name] = load_network(network_class, folder / name, precision.dtype)
                if name == "vae":
                    decoder_channels_last(kwargs[name])
            pipe = super().from_pretrained(folder, dtype=precision.dtype, **kwargs)
        except WeightsError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:  # diffusers' own text otherwise
            raise load_failure(folder, exc) from exc  # one line naming the file and what is wrong
        pipe._precision = precision
        log.info("diffusion engine runs in %s", precision)
        return pipe.to(device)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' `save_pretrained`, refused for networks streamed from disk (they hold no
        weights to save: save the pipeline they were loaded from instead)."""
        if self.streamed_networks:
            raise ValueError(f"{' and '.join(self.streamed_networks)} stream their weights from disk and hold none "
                             "to save; load the pipeline with disk_offload=False to save it")
        super().save_pretrained(save_directory, **kwargs)

    @staticmethod
    def network_classes(folder: str | Path | None = None) -> dict[str, type[torch.nn.Module]]:
        """The class of each network. Fixed but for the VAE, which a saved folder's
        model_index.json may name as the mini model's tiny autoencoder (`vivid.options`
        accepts only the classes listed here, so no other code is ever imported)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel
        from transformers import CLIPVisionModelWithProjection

        from .models.pose_guider import PoseGuider
        from .models.tiny_autoencoder import TinyAutoencoder

        vae = AutoencoderKL
        if folder is not None and vae_class_name(folder) == TinyAutoencoder.__name__:
            vae = TinyAutoencoder
        return {"vae": vae, "image_encoder": CLIPVisionModelWithProjection,
                "reference_net": UNet2DConditionModel, "unet": UNetMotionModel, "pose_guider": PoseGuider}

    def load_trained(self, folder: str) -> None:
        """Load ReferenceNet, denoising UNet and PoseGuider weights; any missing or
        mismatched tensor is an error naming the file."""
        if self.streamed_networks:  # their parameters are placeholders: loading into them would do nothing
            raise ValueError(f"{' and '.join(self.streamed_networks)} stream their weights from disk; load trained "
                             "weights before offload_to_disk (from_base_models(trained=...) does)")
        for name, filename in TRAINED_FILES.items():
            load_strict(getattr(self, name), Path(folder) / filename, name)

    # -- faces ----------------------------------------------------------------------------
    @property
    def analyzer(self) -> FaceAnalyzer:
        """The face analyser of reference and driving video, with this model's parser (`parser`)."""
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer(self.parser)
        return self._analyzer

    @analyzer.setter
    def analyzer(self, analyzer: FaceAnalyzer) -> None:
        self._analyzer = analyzer

    def prepare_reference(self, reference: np.ndarray, face: int | None = None) -> PreparedReference:
        """Find the face (`face`: the one chosen, counted from the left), crop the square the
        model works in, and the person mask there."""
        rgb = to_rgb(reference, "reference").rgb
        analysis = self.analyzer.analyze(rgb, "the reference image", face)
        square = face_square(analysis.box, self.crop)
        res = self.config.resolution
        if square.size < res:
            log.warning("the face in the reference is small: the model's %d px crop is upscaled from %.0f px of the "
                        "image, so the animated face will look softer than the rest of it", res, square.size)
        m = square.matrix(res)
        points = None if analysis.landmarks is None else analysis.landmarks @ m[:, :2].T + m[:, 2]
        return PreparedReference(
            image=crop_image(rgb, square, res),
            person=crop_image(analysis.foreground.astype(np.uint8), square, res, nearest=True) > 0,
            points=points,
            square=square,
            source=rgb,
        )

    def prepare_driving(
        self, frames: Iterable[np.ndarray], fps: float = 25.0, reference: PreparedReference | None = None,
        relative: bool = True, edits: MotionEdits = MotionEdits(),
    ) -> MotionTrack:
        """The driving motion as landmarks per frame (and parsing maps, for the FaRL
        parser); moved onto the reference's face when `reference` is given (the maps then
        carry no trace of the driver's face shape), with `edits` made on every frame's mesh.
        `frames` may also be a motion template (`vivid.face.MotionTemplate`: a tracked
        landmark sequence, drawn with the mesh)."""
        target = None if reference is None or reference.points is None else (reference.points, reference.square)
        if hasattr(frames, "analyses"):  # a motion template: already tracked
            return MotionTrack.from_analyses(frames.analyses(), self.config.resolution, self.crop, target, relative,
                                             edits, getattr(frames, "rest", None))
        return MotionTrack.from_frames(self.analyzer, frames, self.config.resolution, fps, self.crop, target, relative,
                                       edits)

    # -- the diffusion steps --------------------------------------------------------------
    def check_inputs(self, sampling: Sampling) -> Sampling:
        """The settings a run samples with: steps and guidance left unset (None) take what this
        model recommends (`sampling_defaults`), then everything is checked as the CLI and the
        app check it (`Sampling.checked`, against this model's temporal length): an OptionError
        (a ValueError) quoting the bad value. Runs once, first, in `stream` and `generate`."""
        recommended = self.sampling_defaults
        sampling = replace(sampling, steps=recommended.steps if sampling.steps is None else sampling.steps,
                           guidance=recommended.guidance if sampling.guidance is None else sampling.guidance)
        return sampling.checked(max_window=self.unet.config.motion_max_seq_length)

    def _model_tensor(self, images: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return to_model_range(images, self._execution_device, dtype or self.unet.dtype)

    @torch.no_grad()
    def encode_reference(self, ref: PreparedReference, guided: bool) -> ReferenceEmbeddings:
        """CLIP fg/bg embeddings and the ReferenceNet's attention features, once per video."""
        emb = reference_embeddings(
            self.image_encoder, self.feature_extractor, ref.image, ref.person, self.config.separate_fg_bg
        )
        latents = encode_latents(self.vae, self._model_tensor(ref.image[None], self.vae.dtype))
        context = emb.reference_net
        if guided:  # unconditional branch first, as in the denoising batch
            latents = torch.cat([latents, latents])
            context = torch.cat([unconditional(context), context])
        reference_features(self.reference_net, self.bank, latents, context)
        return emb

    @property
    def map_style(self) -> MotionMapStyle:
        """How this model's motion maps are drawn (with or without eye landmarks)."""
        return MotionMapStyle(eye_landmarks=self.config.eye_landmarks)

    def _predict_window(
        self, latents: torch.Tensor, frames: list[int], t: torch.Tensor, motion: MotionTrack,
        context: torch.Tensor, guidance: float, guide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Guided noise prediction for the frames of one window: (1, C, len(frames), h, w)."""
        guided = guidance > 1.0
        sample = latents[:, :, frames]
        sample = torch.cat([sample, sample]) if guided else sample
        sample = self.scheduler.scale_model_input(sample, t)
        if guide is not None:
            guide = guide[:, :, frames]
            guide = torch.cat([guide, guide]) if guided else guide  # the warp is kept in both branches
        pose = self.pose_guider(self._model_tensor(motion.motion_maps(frames, self.map_style), self.pose_guider.dtype))
        pose = torch.cat([pose, pose]) if guided else pose  # (B*F, C, h, w), frames inner
        noise = predict_noise(self.unet, self.pose_injector, sample, t, context, pose, guide).float()
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance * (cond - uncond)
        return noise

    def _estimate_picture(self, x0: torch.Tensor | None, frame: int) -> np.ndarray | None:
        """The current estimate of one frame: SD latents mapped straight to colours (no VAE),
        4x upscaled; other latent spaces (the mini model's tiny autoencoder, which decodes a
        frame in a tenth of a second on a CPU) through the decoder."""
        if x0 is None:
            return None
        if x0.shape[1] != LATENT_RGB_FACTORS.shape[0]:
            return from_model_range(decode_latents(self.vae, x0[:, :, frame]))[0]
        lat = x0[0, :, frame].float().cpu()  # (C, h, w)
        rgb = torch.einsum("chw,cr->hwr", lat, LATENT_RGB_FACTORS)
        img = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
        return np.asarray(Image.fromarray(img).resize((img.shape[1] * 4, img.shape[0] * 4), Image.NEAREST))

    @torch.no_grad()
    def warp_latents(self, ref: PreparedReference, motion: MotionTrack, steps: int
                     ) -> Generator[ProgressEvent, None, torch.Tensor]:
        """Warp guidance: the reference crop warped to every frame's motion (`vivid.warp_guidance`,
        as training warps it) and encoded, (1, C, F, h, w) fp32. Yields a progress event per
        chunk (a chance to stop); returns the latents."""
        if ref.points is None:
            raise NoFaceError("warp guidance needs the face mesh of the reference")
        warp = ReferenceWarp(ref.image, ref.points)
        chunk = max(1, DECODE_PIXELS // self.config.resolution**2) * WARP_CHUNK_FRAMES
        parts = []
        for start in range(0, len(motion), chunk):
            pictures = np.stack([warp.warp(p)[0] for p in motion.points[start : start + chunk]])
            parts.append(encode_latents(self.vae, self._model_tensor(pictures, self.vae.dtype)).float())
            yield ProgressEvent(0, steps, None, within=0.0)
        return torch.cat(parts).permute(1, 0, 2, 3)[None].to(self._execution_device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int | None = None) -> Iterator[np.ndarray]:
        """VAE-decode (1, C, F, h, w) latents a few frames at a time (`chunk`; default: as
        many as DECODE_PIXELS allows, at least one), yielding RGB frames."""
        chunk = chunk or max(1, DECODE_PIXELS // self.config.resolution**2)
        for start in range(0, latents.shape[2], chunk):
            part = latents[0, :, start : start + chunk].permute(1, 0, 2, 3)  # (n, C, h, w)
            yield from from_model_range(decode_latents(self.vae, part))

    # -- entry points ---------------------------------------------------------------------
    def stream(
        self,
        reference: np.ndarray,
        driving_frames: Iterable[np.ndarray],
        *,
        window: int = Sampling.window,
        overlap: int = Sampling.overlap,
        cyclic: bool = Sampling.cyclic,
        wrap: bool = Sampling.wrap,
        steps: int | None = Sampling.steps,
        guidance: float | None = Sampling.guidance,
        seed: int = Sampling.seed,
        fps: float = 25.0,
        relative: bool = True,
        paste_back: bool = False,
        edits: MotionEdits = MotionEdits(),
        face: int | None = None,
    ) -> Iterator[ProgressEvent | FrameEvent]:
        """Animate `reference` with `driving_frames`: progress events during denoising, then
        the frames one by one. Closing the generator stops the work. The sampling settings are
        `vivid.sampling.Sampling`'s; `steps` and `guidance` left as None take what the model
        recommends (`check_inputs`). `relative=False` draws the driver's own face shape into
        the motion maps instead of the reference's; `paste_back=True` returns whole
        reference-sized frames instead of the face crop; `edits` change the motion on every
        frame's mesh before its map is drawn (`vivid.face.edit_rig`); `face` chooses the
        reference's face, counted from the left. `cyclic` moves the windows one frame
        per step; `wrap` lets them run past the end of the video into its start (for looping
        clips; see `vivid.windows`). Bad settings, driving frames of different sizes, an empty
        sequence and float images outside [0, 1] are refused (`OptionError`,
        `vivid.media.InputError`) before any work."""
        sampling = self.check_inputs(Sampling(window=window, overlap=overlap, cyclic=cyclic, wrap=wrap, steps=steps,
                                              guidance=guidance, seed=seed))
        if not hasattr(driving_frames, "analyses"):  # frames, not a motion template
            driving_frames = checked_frames(driving_frames)
            driving_frames = _started(driving_frames)  # an empty iterator is refused here, before any work
        ref = self.prepare_reference(reference, face)
        motion = self.prepare_driving(driving_frames, fps, ref, relative, edits.check())
        yield from self._generate(ref, motion, sampling, paste_back=paste_back)

    def generate(self, ref: PreparedReference, motion: MotionTrack, *, decode_chunk: int | None = None,
                 paste_back: bool = False, **sampling) -> Iterator[ProgressEvent | FrameEvent]:
        """The engine on prepared inputs (reference crop + driving motion); `sampling` holds
        `stream`'s sampling keywords (window, overlap, cyclic, wrap, steps, guidance, seed).
        `paste_back` blends each generated crop into the whole reference image."""
        return self._generate(ref, motion, self.check_inputs(Sampling(**sampling)), decode_chunk, paste_back)

    @torch.no_grad()
    def _generate(
        self, ref: PreparedReference, motion: MotionTrack, sampling: Sampling, decode_chunk: int | None = None,
        paste_back: bool = False,
    ) -> Iterator[ProgressEvent | FrameEvent]:
        """Encode the reference, prepare the latents, denoise window by window, decode: the
        paper's steps, with `sampling` as `check_inputs` returned it."""
        guided = sampling.guidance > 1.0
        device = self._execution_device
        try:
            emb = self.encode_reference(ref, guided)
            context = emb.unet.to(device, self.unet.dtype)
            if guided:
                context = torch.cat([unconditional(context), context])
            num_frames = len(motion)
            h = w = self.config.resolution // self.vae_scale_factor
            guide = None
            if self.config.warp_guidance:
                guide = yield from self.warp_latents(ref, motion, sampling.steps)
            generator = torch.Generator("cpu").manual_seed(sampling.seed)
            shape = (1, self.unet.config.out_channels, num_frames, h, w)
            # Latents, guidance and scheduler steps in fp32 whatever the networks run in: the
            # same noise for every dtype, and no rounding of the small per-step updates.
            latents = torch.randn(shape, generator=generator).to(device, torch.float32)
            self.scheduler.set_timesteps(sampling.steps, device=device)
            latents = latents * self.scheduler.init_noise_sigma
            timesteps = self.scheduler.timesteps
            # Stochastic schedulers (Euler ancestral, DDPM, ...) draw noise: from our generator.
            step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
            for i, t in enumerate(timesteps):
                windows = context_windows(num_frames, sampling.window, sampling.overlap, step=i, cyclic=sampling.cyclic,
                                          wrap=sampling.wrap)
                preds = []
                for k, frames in enumerate(windows):
                    preds.append(self._predict_window(latents, frames, t, motion, context, sampling.guidance, guide))
                    if k + 1 < len(windows):  # between windows: a chance to stop, and finer progress
                        yield ProgressEvent(i, len(timesteps), None, within=(k + 1) / len(windows))
                noise = average_windows(preds, windows, num_frames)
                out = self.scheduler.step(noise.to(latents.device), t, latents, **step_kwargs)
                latents = out.prev_sample
                estimate = getattr(out, "pred_original_sample", None)
                if estimate is not None and self.config.warp_residual:
                    estimate = estimate + guide
                yield ProgressEvent(i + 1, len(timesteps), self._estimate_picture(estimate, num_frames // 2))
            if self.config.warp_residual:  # the UNet denoised the difference from the warp
                latents = latents + guide
            if guide is not None:
                paste = WarpPaste(ref.image, ref.points, ref.source, ref.square)
                pairs = zip(self.decode(latents, decode_chunk), self.decode(guide, decode_chunk))
                for index, (frame, warp_copy) in enumerate(pairs):
                    yield FrameEvent(index, paste.frame(motion.points[index], frame, warp_copy, whole=paste_back))
                return
            for index, frame in enumerate(self.decode(latents, decode_chunk)):
                if paste_back and ref.source is not None and ref.square is not None:
                    frame = paste_crop(ref.source, frame, ref.square, self.crop)
                yield FrameEvent(index, frame)
        except torch.OutOfMemoryError as exc:  # CUDA's (and other accelerators') allocator
            raise GpuMemoryError(gpu_memory_advice(self.config.resolution, sampling.window, sampling.overlap,
                                                   self.precision.dtype)) from exc
        finally:
            self.bank.clear()

    def __call__(self, reference: np.ndarray, driving_frames: Iterable[np.ndarray], **options) -> list[np.ndarray]:
        """All output frames (RGB uint8, the model's resolution, or the reference's size with
        `paste_back`), with a progress bar; `options` are `stream`'s keywords."""
        frames: list[np.ndarray] = []
        bar = None
        for event in self.stream(reference, driving_frames, **options):
            if event.kind == "progress":
                bar = bar or self.progress_bar(total=event.total)
                bar.update(event.step - bar.n)  # steps done (within a step, or before the first: no change)
            else:
                frames.append(event.frame)
        if bar is not None:
            bar.close()
        return frames
