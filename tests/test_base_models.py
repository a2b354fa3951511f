"""Building the pipeline from the base models (`VividPipeline.from_base_models`), issue 12's
"no construction peak above the steady state": every network is read straight into its
dtype, CLIP and the ReferenceNet are streamed from disk as they are built (from the base
files or the trained ReferenceNet), and the frames are those of the same networks in memory."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_frames, weights_in_memory
from vivid import VividPipeline
from vivid.models.builders import BaseModels, Parts, motion_unet, tiny_parts
from vivid.models.disk_streaming import ONCE_PER_VIDEO
from vivid.models.pose_guider import PoseGuider
from vivid.errors import WeightsError


def save_base(parts: Parts, root: Path) -> BaseModels:
    """`parts` in the layout of the base models' repositories."""
    parts.unet2d.save_pretrained(root / "sd" / "unet")
    parts.adapter.save_pretrained(root / "adapter")
    parts.vae.save_pretrained(root / "vae")
    parts.image_encoder.save_pretrained(root / "clip" / "image_encoder")
    parts.feature_extractor.save_pretrained(root / "clip" / "feature_extractor")
    return BaseModels(stable_diffusion=str(root / "sd"), vae=str(root / "vae"), image_encoder=str(root / "clip"),
                      motion_adapter=str(root / "adapter"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[BaseModels, Parts]:
    parts = tiny_parts(0)
    return save_base(parts, tmp_path_factory.mktemp("base")), parts


def in_memory(parts: Parts, **components) -> VividPipeline:
    """The same networks assembled in memory: what the loaded pipeline must reproduce."""
    return VividPipeline(**{**parts.components(), **components}, resolution=64)


@pytest.mark.parametrize("offload", [True, False])
def test_built_from_base_models_with_the_frames_of_the_same_networks_in_memory(base, tiny_scene, offload):
    models, parts = base
    pipe = VividPipeline.from_base_models(models, device="cpu", dtype="fp32", resolution=64, disk_offload=offload)
    assert pipe.streamed_networks == (ONCE_PER_VIDEO if offload else ())
    if offload:  # streamed as built: they hold no weights
        assert weights_in_memory(pipe.image_encoder) == weights_in_memory(pipe.reference_net) == 0
    assert pipe.unet.dtype == torch.float32 and pipe.config.base_models["vae"] == models.vae
    np.testing.assert_array_equal(tiny_frames(pipe, tiny_scene), tiny_frames(in_memory(parts), tiny_scene))


def test_streamed_by_default_on_a_cpu_in_the_dtype_asked_for(base):
    pipe = VividPipeline.from_base_models(base[0], device="cpu", dtype="bf16", resolution=64)
    assert pipe.streamed_networks == ONCE_PER_VIDEO
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.pose_guider.conv_out.weight.dtype} == {torch.bfloat16}


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> tuple[Path, dict]:
    """Trained weights that differ from the base models in all three networks."""
    models, parts = base
    others = tiny_parts(1)
    reference_net = tiny_parts(2).unet2d
    unet = motion_unet(copy.deepcopy(others.unet2d), copy.deepcopy(others.adapter))
    pose_guider = PoseGuider(out_channels=parts.unet2d.config.block_out_channels[0])
    torch.nn.init.normal_(pose_guider.conv_out.weight, std=0.05)  # starts at zero: trained, the maps matter
    folder = tmp_path_factory.mktemp("trained")
    for name, network in {"reference_net": reference_net, "denoising_unet": unet, "pose_guider": pose_guider}.items():
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / f"{name}.safetensors")
    return folder, dict(reference_net=reference_net, unet=unet, pose_guider=pose_guider)


@pytest.mark.parametrize("offload", [True, False])
def test_trained_weights_are_read_into_every_network_streamed_or_not(base, trained, tiny_scene, offload):
    models, parts = base
    folder, networks = trained
    pipe = VividPipeline.from_base_models(models, str(folder), device="cpu", dtype="fp32", resolution=64,
                                          disk_offload=offload)
    assert pipe.streamed_networks == (ONCE_PER_VIDEO if offload else ())
    expected = tiny_frames(in_memory(parts, **copy.deepcopy(networks)), tiny_scene)
    np.testing.assert_array_equal(tiny_frames(pipe, tiny_scene), expected)
    assert not np.array_equal(expected, tiny_frames(in_memory(parts), tiny_scene))  # the trained weights change the frames


@pytest.mark.parametrize("offload", [True, False])
def test_trained_weights_that_do_not_fit_are_refused_naming_the_file(base, trained, tmp_path, offload):
    models, _ = base
    folder, _ = trained
    for name in ("denoising_unet", "pose_guider"):
        (tmp_path / f"{name}.safetensors").symlink_to(folder / f"{name}.safetensors")
    other = tiny_parts(0)
    wider = type(other.unet2d).from_config({**other.unet2d.config, "block_out_channels": (32, 96)})
    save_file(wider.state_dict(), tmp_path / "reference_net.safetensors")
    with pytest.raises(WeightsError, match=r"reference_net\.safetensors.*does not fit"):
        VividPipeline.from_base_models(models, str(tmp_path), device="cpu", dtype="fp32", resolution=64,
                                       disk_offload=offload)
    (tmp_path / "pose_guider.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"pose_guider\.safetensors: trained weights file not found"):
        VividPipeline.from_base_models(models, str(tmp_path), device="cpu", resolution=64, disk_offload=offload)


def test_hub_base_models_fetch_only_configs_and_the_plain_safetensors(base, tmp_path, monkeypatch):
    """A Stable Diffusion repository holds fp16, non-EMA and .bin variants beside the weights
    (most of its size): only the config and the plain safetensors files are asked for."""
    import huggingface_hub

    models, _ = base
    local = {"org/sd": models.stable_diffusion, "org/vae": models.vae, "org/clip": models.image_encoder,
             "org/adapter": models.motion_adapter}
    asked = []

    def snapshot_download(repo_id, allow_patterns=(), **options):
        asked.extend(allow_patterns)
        return local[repo_id]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    hub = BaseModels(stable_diffusion="org/sd", vae="org/vae", image_encoder="org/clip", motion_adapter="org/adapter")
    pipe = VividPipeline.from_base_models(hub, device="cpu", dtype="fp32", resolution=64)
    assert pipe.streamed_networks == ONCE_PER_VIDEO and pipe.config.base_models["stable_diffusion"] == "org/sd"
    assert "unet/diffusion_pytorch_model.safetensors" in asked and "image_encoder/model.safetensors" in asked
    assert not [p for p in asked if "fp16" in p or "ema" in p or p.endswith(".bin") or p.startswith("*")], asked

    def offline(repo_id, **options):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files. Check your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsError, match=r"^org/(vae|clip|sd|adapter): no such weights folder, and it could not be fetched"):
        VividPipeline.from_base_models(hub, device="cpu", resolution=64)


_BUILD = """
import json, re, sys, pathlib
from vivid import VividPipeline
from vivid.models.builders import BaseModels
status = pathlib.Path("/proc/self/status")
mb = lambda field: int(re.search(field + r":\\s+(\\d+)", status.read_text()).group(1)) / 1024
root = pathlib.Path(sys.argv[1])
base = BaseModels(stable_diffusion=str(root / "sd"), vae=str(root / "vae"), image_encoder=str(root / "clip"),
                  motion_adapter=str(root / "adapter"))
pipe = VividPipeline.from_base_models(base, device="cpu", dtype=sys.argv[2], resolution=64)
print(json.dumps(dict(peak=mb("VmHWM"), resident=mb("VmRSS"), streamed=list(pipe.streamed_networks))))
"""


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_building_holds_no_more_than_the_built_pipeline(tmp_path, dtype):
    """With a UNet and a CLIP large enough to see (about 100 MB each in fp32), building from
    the base models peaks where it ends: no network is held whole before it is streamed, and
    no file is held beside the network read from it. (Loading everything and streaming
    afterwards peaked at least their size above; diffusers' own loader also held the fp32
    file beside the converted UNet.)"""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    parts = tiny_parts(0)
    parts.unet2d = UNet2DConditionModel(
        sample_size=8, block_out_channels=(160, 320), layers_per_block=2, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=32)
    parts.adapter = type(parts.adapter)(block_out_channels=(160, 320), motion_layers_per_block=2,
                                        motion_num_attention_heads=2, motion_norm_num_groups=32, motion_max_seq_length=32)
    parts.image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8, image_size=32,
        patch_size=8, projection_dim=32))
    size = {name: sum(p.numel() * 4 for p in getattr(parts, name).parameters()) / 2**20
            for name in ("unet2d", "image_encoder")}
    assert min(size.values()) > 90, size
    save_base(parts, tmp_path / "base")
    out = subprocess.run([sys.executable, "-c", _BUILD, str(tmp_path / "base"), dtype], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["streamed"] == list(ONCE_PER_VIDEO)
    above = run["peak"] - run["resident"]
    assert above < 0.2 * min(size.values()), f"building peaked {above:.0f} MB above the built pipeline ({run}, {size})"


def test_a_network_is_read_into_tensors_allocated_once_expanded_buffers_included(tmp_path):
    """`load_network` fills freshly allocated tensors from the file; a persistent buffer
    that a constructor made as an expanded view (one value shared by many positions) cannot
    be written into, so it is replaced too."""
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    from vivid.models.weights import load_network

    class Tabled(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, size: int = 4):
            super().__init__()
            self.proj = torch.nn.Linear(size, size)
            self.register_buffer("positions", torch.arange(size).expand(2, -1))

    saved = Tabled()
    saved.save_config(tmp_path)
    state = {k: v.contiguous() for k, v in saved.state_dict().items()}
    state["positions"] = torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3]])
    save_file(state, tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = load_network(Tabled, tmp_path, torch.bfloat16)
    assert torch.equal(loaded.positions, state["positions"])
    assert torch.equal(loaded.proj.weight, state["proj.weight"].to(torch.bfloat16))
    assert loaded.proj.weight.dtype == torch.bfloat16 and loaded.positions.dtype == torch.int64


def test_a_base_model_without_safetensors_is_read_without_the_libraries_loaders(base, tmp_path, monkeypatch):
    """A repository holding only torch-format files (`diffusion_pytorch_model.bin`,
    `pytorch_model.bin`) is read by our loader (weights_only, strict): the libraries' loaders
    patch process-wide state while they build (issue 32), so they must not run at all, and
    no process-wide function is left replaced."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from vivid.models.builders import load_base_network

    _, parts = base
    parts.vae.save_pretrained(tmp_path / "vae")
    parts.image_encoder.save_pretrained(tmp_path / "clip" / "image_encoder")
    from safetensors.torch import load_file
    for file in list(tmp_path.rglob("*.safetensors")):  # as older repositories hold them
        name = "diffusion_pytorch_model.bin" if file.parent.name == "vae" else "pytorch_model.bin"
        torch.save(load_file(str(file)), file.with_name(name))
        file.unlink()

    def refused(*args, **kwargs):
        raise AssertionError("a library loader ran")

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", refused)
    monkeypatch.setattr(CLIPVisionModelWithProjection, "from_pretrained", refused)
    process_wide = (torch.nn.Module.register_parameter, torch.nn.Module.register_buffer, torch.nn.init.normal_,
                    torch.nn.init.kaiming_uniform_)
    vae = load_base_network(AutoencoderKL, str(tmp_path / "vae"), None, torch.bfloat16)
    encoder = load_base_network(CLIPVisionModelWithProjection, str(tmp_path / "clip"), "image_encoder", torch.float32)
    assert (torch.nn.Module.register_parameter, torch.nn.Module.register_buffer, torch.nn.init.normal_,
            torch.nn.init.kaiming_uniform_) == process_wide
    for loaded, original, dtype in ((vae, parts.vae, torch.bfloat16), (encoder, parts.image_encoder, torch.float32)):
        want = original.state_dict()
        got = loaded.state_dict()
        assert set(want) <= set(got)
        assert all(torch.equal(got[k], want[k].to(dtype) if want[k].is_floating_point() else want[k]) for k in want)
        assert all(p.device.type == "cpu" for p in loaded.parameters())

    (tmp_path / "vae" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(WeightsError, match="neither diffusion_pytorch_model.safetensors nor"):
        load_base_network(AutoencoderKL, str(tmp_path / "vae"), None, torch.float32)
