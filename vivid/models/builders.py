"""Build the networks: from the base models the paper starts from, or tiny and random for tests."""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from .base_files import config_folder, network_folder, pickled_weights_file
from .disk_streaming import stream_from_files, stream_from_memory
from .empty_init import empty_parameters
from .pose_guider import PoseGuider
from .weights import empty_network, load_network, load_pickled_network, weight_files

log = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class BaseModels:
    """Hugging Face ids (or local folders) of the pretrained parts (DESIGN.md, method 4)."""

    stable_diffusion: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # UNet, scheduler
    vae: str = "stabilityai/sd-vae-ft-mse"
    image_encoder: str = "lambdalabs/sd-image-variations-diffusers"  # CLIP ViT-L/14 with projection
    motion_adapter: str = "guoyww/animatediff-motion-adapter-v1-5-2"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def scheduler_config(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> dict:
    """DDIM as AnimateAnyone-family models sample: SD 1.5 betas, v1 offset, epsilon prediction,
    zero-SNR off. The mini model, trained from scratch, predicts v on betas rescaled to a zero
    terminal SNR (Lin et al. 2024): its first steps then predict the picture itself, where an
    epsilon model's estimate of the picture is its error amplified ~15x."""
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
        timestep_spacing="trailing", rescale_betas_zero_snr=zero_terminal_snr,
    )


@dataclass
class Parts:
    """The networks before assembly: training needs the image UNet and the motion adapter
    apart (stage 1 trains the image UNet; stage 2 adds the adapter's temporal layers)."""

    unet2d: UNet2DConditionModel
    adapter: MotionAdapter
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    feature_extractor: CLIPImageProcessor
    pose_guider: PoseGuider

    def components(self, reference_net: UNet2DConditionModel | None = None, unet2d: UNet2DConditionModel | None = None,
                   warp_guidance: bool = False, pretrained: bool = True) -> dict:
        """Pipeline components: ReferenceNet (a copy of the image UNet unless given), the
        denoising UNet with the adapter's temporal layers, and the rest. The denoising UNet
        is built around the image UNet's and the adapter's own tensors (`motion_unet`), so
        it shares them: no second copy of the image UNet is ever made for it. With
        `warp_guidance` its input takes the warped portrait's latents too (`widen_input`, from
        zero for a `pretrained` image UNet; ReferenceNet keeps the plain input)."""
        unet2d = unet2d or self.unet2d
        reference_net = reference_net if reference_net is not None else copy.deepcopy(unet2d)
        if warp_guidance:
            unet2d = widen_input(unet2d, self.vae.config.latent_channels, zero=pretrained)
        return dict(
            vae=self.vae, image_encoder=self.image_encoder, feature_extractor=self.feature_extractor,
            reference_net=reference_net, unet=motion_unet(unet2d, self.adapter), pose_guider=self.pose_guider,
            scheduler=DDIMScheduler(**scheduler_config()),
        )


def widen_input(unet: UNet2DConditionModel, extra: int, zero: bool) -> UNet2DConditionModel:
    """`unet` with `extra` more input channels, in place: warp guidance's latents beside the
    noisy ones (DESIGN.md). The new channels' weights start at zero (`zero`: a pretrained UNet
    then starts out exactly as it was, as inpainting and InstructPix2Pix UNets are made) or
    at the convolution's own random init (a UNet trained from scratch)."""
    old = unet.conv_in
    new = nn.Conv2d(old.in_channels + extra, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        if zero:
            new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra)
    return unet


def motion_unet(unet2d: UNet2DConditionModel, adapter: MotionAdapter) -> UNetMotionModel:
    """The image UNet with the adapter's temporal layers, as `UNetMotionModel.from_unet2d`
    builds it, but holding the same tensors as `unet2d` and `adapter` instead of copies: the
    model is laid out on the meta device (no memory) and the existing tensors are assigned
    into it. `from_unet2d` would allocate a whole fp32 UNet next to the image UNet (5 GB at
    SD 1.5 sizes) and then copy into it. Training keeps using `from_unet2d` when it wants a
    copy."""
    with empty_parameters():  # parameters on the meta device, this thread only; buffers real (positional tables)
        model = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)
    state = {**unet2d.state_dict(), **adapter.state_dict()}
    expected = model.state_dict().keys()
    if set(expected) != set(state) or len(state) != len(unet2d.state_dict()) + len(adapter.state_dict()):
        # An adapter with its own input conv (PIA) or an IP-adapter UNet: the copying path knows those.
        log.info("motion UNet: layouts differ from the plain image UNet + adapter; building a copy")
        return _cast(UNetMotionModel.from_unet2d(unet2d, adapter), unet2d.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return _cast(model, unet2d.dtype)  # the positional tables (buffers) follow the weights


def _cast(module: M, dtype: torch.dtype) -> M:
    """`module.to(dtype)`, tensor by tensor (nn.Module's own `to`: diffusers' override only
    adds a warning about fp32-pinned modules, which these networks do not have)."""
    return nn.Module.to(module, dtype)


def built(factory: Callable[[], M], dtype: torch.dtype) -> M:
    """A randomly initialised module, converted to `dtype` as soon as it exists (tensor by
    tensor), so building several networks never holds more than one of them in fp32."""
    return _cast(factory(), dtype)


def load_base_network(cls: type[M], source: str, subfolder: str | None, dtype: torch.dtype) -> M:
    """One network of a base model in `dtype`, read tensor by tensor from its safetensors
    files (`weights.load_network`; see `base_files` for why not the libraries' loaders). A
    repository without safetensors files is read from its torch-format file without running
    code (`weights.load_pickled_network`), never through the libraries' loaders either."""
    folder = network_folder(source, subfolder, cls)
    if weight_files(folder):
        return load_network(cls, folder, dtype)
    file = pickled_weights_file(source, subfolder, cls)
    return load_pickled_network(cls, file.parent, file, dtype)


def stream_base_network(cls: type[M], source: str, subfolder: str | None, dtype: torch.dtype, device: torch.device,
                        label: str, weights: Path | None = None) -> M:
    """One network of a base model built on the meta device and streamed from disk on
    `device` (`disk_streaming`), without its weights ever in memory: read from its own
    files, or from `weights`, a trained safetensors file of the same layout (checked to fit
    the base model's config). A repository without safetensors files is loaded first and
    then written out. `label` names its offload folder, if one is needed."""
    folder = network_folder(source, subfolder, cls)
    if weights is None and not weight_files(folder):
        model = load_base_network(cls, source, subfolder, dtype)
        stream_from_memory(model, device, label=label)
        return model
    model, files = empty_network(cls, folder, dtype, None if weights is None else [Path(weights)])
    stream_from_files(model, files, device, label)
    return model


def stream_base_networks(base: BaseModels, dtype: torch.dtype, device: torch.device,
                         reference_weights: Path | None = None) -> dict[str, nn.Module]:
    """The networks that run once per video (`disk_streaming.ONCE_PER_VIDEO`), streamed from
    disk as they are built: CLIP from its files, the ReferenceNet from the base UNet's files
    (it starts as a copy of that UNet) or from trained `reference_weights`."""
    return {
        "image_encoder": stream_base_network(CLIPVisionModelWithProjection, base.image_encoder, "image_encoder",
                                             dtype, device, "image_encoder"),
        "reference_net": stream_base_network(UNet2DConditionModel, base.stable_diffusion, "unet", dtype, device,
                                             "reference_net", reference_weights),
    }


def load_base_parts(base: BaseModels = BaseModels(), dtype: torch.dtype = torch.float32,
                    built: dict[str, nn.Module] | None = None) -> Parts:
    """Every part from the pretrained base models (downloads on first use), each read
    straight into `dtype`; `built`: networks already built (e.g. streamed, by Parts field
    name), not loaded again."""
    built = built or {}
    unet2d = load_base_network(UNet2DConditionModel, base.stable_diffusion, "unet", dtype)
    return Parts(
        unet2d=unet2d,
        adapter=load_base_network(MotionAdapter, base.motion_adapter, None, dtype),
        vae=built.get("vae") or load_base_network(AutoencoderKL, base.vae, None, dtype),
        image_encoder=built.get("image_encoder") or load_base_network(CLIPVisionModelWithProjection, base.image_encoder,
                                                                      "image_encoder", dtype),
        feature_extractor=CLIPImageProcessor.from_pretrained(config_folder(base.image_encoder, "feature_extractor")),
        pose_guider=_cast(PoseGuider(out_channels=unet2d.config.block_out_channels[0]), dtype),
    )


def load_base_components(base: BaseModels = BaseModels(), dtype: torch.dtype = torch.float32) -> dict:
    """Every pipeline component from the pretrained base models (downloads on first use)."""
    return load_base_parts(base, dtype).components()


def tiny_parts(seed: int = 0) -> Parts:
    """Tiny random parts with the same architecture families as the real ones: a 64 px model
    that runs in seconds on a CPU."""
    torch.manual_seed(seed)
    width = 32
    unet2d = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(width, 2 * width), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width, attention_head_dim=8, norm_num_groups=8,
    )
    adapter = MotionAdapter(
        block_out_channels=(width, 2 * width), motion_layers_per_block=1, motion_num_attention_heads=2,
        motion_norm_num_groups=8, motion_max_seq_length=32,
    )
    pose_guider = PoseGuider(block_out_channels=(4, 8, 8, 16), out_channels=width)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        sample_size=64,
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=width, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8, projection_dim=width)
    )
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return Parts(unet2d, adapter, vae, image_encoder, feature_extractor, pose_guider)


@dataclass(frozen=True)
class MiniConfig:
    """VividPortraits-mini (DESIGN.md, "Two model sizes"): the paper's networks, narrower, in
    the latent space of the TAEF2 tiny autoencoder (32 channels at 1/8 of the image side),
    sized so both training stages fit a few hours on two CPU cores (train/configs/mini-*.yaml,
    assets/mini/README.md). CLIP is a small vision transformer of the same class, random and
    frozen: no pretrained CLIP can be loaded where the mini model is trained, and a frozen
    random projection still tells the two networks apart what the foreground and background
    look like (colours, layout); its measured worth is in the model card."""

    block_out_channels: tuple[int, ...] = (64, 128, 128)  # the smallest level stays at 128: ~25 M parameters in all, 51 MB in bf16
    layers_per_block: int = 2
    attention_head_dim: int = 32  # channels per head
    cross_attention_dim: int = 128  # the CLIP projection's width
    motion_heads: int = 4
    motion_max_seq_length: int = 32  # the longest window the temporal layers take
    pose_channels: tuple[int, ...] = (16, 32, 64, 128)
    clip_hidden: int = 128
    clip_layers: int = 2
    clip_heads: int = 4
    clip_image_size: int = 64
    clip_patch_size: int = 8


#: The autoencoder the mini model works in, shipped with the project (assets/taef2/README.md).
TAEF2_DIR = Path(__file__).resolve().parents[2] / "assets" / "taef2"


def mini_parts(seed: int = 0, config: MiniConfig = MiniConfig(), autoencoder: str | Path = TAEF2_DIR) -> Parts:
    """The mini model's parts: random networks of `config`'s sizes around the pretrained
    tiny autoencoder (loaded strictly from `autoencoder`, fp32)."""
    from .tiny_autoencoder import TinyAutoencoder

    vae = load_network(TinyAutoencoder, Path(autoencoder), torch.float32)
    torch.manual_seed(seed)
    c, levels = config, len(config.block_out_channels)
    latent = vae.config.latent_channels
    cross = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)  # attention in all but the smallest level
    unet2d = UNet2DConditionModel(
        sample_size=16, in_channels=latent, out_channels=latent, block_out_channels=c.block_out_channels,
        layers_per_block=c.layers_per_block, down_block_types=cross,
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=tuple(w // c.attention_head_dim for w in c.block_out_channels),
    )
    adapter = MotionAdapter(
        block_out_channels=c.block_out_channels, motion_layers_per_block=c.layers_per_block,
        motion_num_attention_heads=c.motion_heads, motion_max_seq_length=c.motion_max_seq_length,
    )
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=c.clip_hidden, intermediate_size=4 * c.clip_hidden, num_hidden_layers=c.clip_layers,
        num_attention_heads=c.clip_heads, image_size=c.clip_image_size, patch_size=c.clip_patch_size,
        projection_dim=c.cross_attention_dim,
    ))
    size = c.clip_image_size
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    pose_guider = PoseGuider(block_out_channels=c.pose_channels, out_channels=c.block_out_channels[0])
    return Parts(unet2d, adapter, vae, image_encoder, feature_extractor, pose_guider)


def sd15_sized_parts(seed: int = 0, dtype: torch.dtype = torch.float32) -> Parts:
    """Random parts with the shapes of SD 1.5, sd-vae-ft-mse, AnimateDiff v1-5-2 and CLIP
    ViT-L/14: for measuring time and memory without downloading weights. Each part is
    initialised in fp32 (the same values for every `dtype`) and converted to `dtype` before
    the next one is made."""
    torch.manual_seed(seed)
    unet2d = built(lambda: UNet2DConditionModel(cross_attention_dim=768), dtype)
    return Parts(
        unet2d=unet2d,
        adapter=built(MotionAdapter, dtype),
        vae=built(lambda: AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ), dtype),
        image_encoder=built(lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             patch_size=14, projection_dim=768)
        ), dtype),
        feature_extractor=CLIPImageProcessor(),
        pose_guider=built(lambda: PoseGuider(out_channels=unet2d.config.block_out_channels[0]), dtype),
    )


def tiny_components(seed: int = 0, warp_guidance: bool = False) -> dict:
    """Tiny random pipeline components, for tests and UI work (`tiny_parts`)."""
    return tiny_parts(seed).components(warp_guidance=warp_guidance, pretrained=False)
