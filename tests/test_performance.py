"""Issue 12 (performance) on tiny models and real faces: which dtype `auto` picks and that an
asked-for dtype is honoured, bf16 output close to fp32 output, reference keys/values
projected once per video with the same frames as without, the motion UNet built around the
image UNet's own tensors, and the threaded preview stream giving the frames of the plain one."""
from __future__ import annotations

import threading
from pathlib import Path
import time

import numpy as np
import pytest
import torch

from conftest import shared_file
from vivid import VividPipeline
from vivid.precision import DtypeError, choose_precision, cpu_has_native_bf16

FAST = dict(window=4, overlap=1, steps=3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def capabilities(monkeypatch, **flags) -> None:
    """Pretend the CPU has exactly `flags` (as torch.cpu.get_capabilities reports them)."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **flags})


def frames(pipe: VividPipeline, tiny_scene, **kw) -> np.ndarray:
    ref, motion = tiny_scene
    return np.stack([e.frame for e in pipe.generate(ref, motion, **{**FAST, **kw}) if e.kind == "frame"])


# -- dtype choice ---------------------------------------------------------------------------
def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_bf16_with_it(monkeypatch):
    capabilities(monkeypatch, avx512_f=True, avx512_bf16=False, amx_bf16=False)
    assert not cpu_has_native_bf16()
    chosen = choose_precision("auto", "cpu")
    assert chosen.dtype == torch.float32 and "no native bf16" in str(chosen)
    pipe = VividPipeline.tiny(dtype="auto")
    assert pipe.unet.dtype == torch.float32 and pipe.precision.name == "fp32"
    capabilities(monkeypatch, avx512_f=True, avx512_bf16=True)
    assert choose_precision("auto", "cpu").dtype == torch.bfloat16
    assert choose_precision(None, "cpu").dtype == torch.bfloat16  # None means auto
    capabilities(monkeypatch, architecture="arm64", bf16=True)  # Arm's BF16 extension
    assert choose_precision("auto", "cpu").dtype == torch.bfloat16


def test_an_asked_for_dtype_is_honoured_everywhere(monkeypatch, tmp_path, tiny_scene):
    capabilities(monkeypatch, avx512_bf16=False)  # auto would say fp32: the request must win
    pipe = VividPipeline.tiny(dtype="bf16")
    assert pipe.precision.name == "bf16" and pipe.precision.reason == "asked for"
    for name in ("unet", "reference_net", "vae", "image_encoder", "pose_guider"):
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.bfloat16}, name
    out = frames(pipe, tiny_scene, steps=1)
    assert out.dtype == np.uint8 and out.shape == (8, 64, 64, 3)
    VividPipeline.tiny().save_pretrained(tmp_path / "model")
    loaded = VividPipeline.from_pretrained(tmp_path / "model", device="cpu", dtype="fp16")
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float16} and loaded.precision.name == "fp16"
    old_name = VividPipeline.from_pretrained(tmp_path / "model", device="cpu", torch_dtype=torch.float32)
    assert old_name.unet.dtype == torch.float32  # training's call keeps working
    auto = VividPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert auto.unet.dtype == torch.float32 and "auto" in str(auto.precision)


def test_loading_goes_straight_to_the_dtype_with_the_saved_values(tmp_path):
    pipe = VividPipeline.tiny()
    pipe.save_pretrained(tmp_path / "model")
    loaded = VividPipeline.from_pretrained(tmp_path / "model", device="cpu", dtype="bf16", disk_offload=False)
    for name in ("unet", "reference_net", "pose_guider", "vae", "image_encoder"):
        saved = getattr(pipe, name).state_dict()
        for key, value in getattr(loaded, name).state_dict().items():
            assert value.device.type == "cpu", f"{name}.{key} left on {value.device}"
            assert torch.equal(value, saved[key].to(value.dtype)), f"{name}.{key}"


_PEAK_WHILE_READING = """
import re, sys, pathlib, torch
from vivid.models.weights import stream_safetensors
status = pathlib.Path("/proc/self/status")
mb = lambda field: int(re.search(field + r":\\s+(\\d+)", status.read_text()).group(1)) / 1024
pathlib.Path("/proc/self/clear_refs").write_text("5")
before = mb("VmRSS")
kept = dict(stream_safetensors(sys.argv[1], torch.bfloat16))
print(mb("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc memory figures")
def test_reading_fp32_weights_into_bf16_holds_no_second_copy(tmp_path):
    """A 256 MB fp32 file read into bf16 costs the 128 MB of bf16 tensors plus one fp32
    tensor: not the whole fp32 file beside them (mapped files count while they are open)."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    save_file({f"t{i}": torch.randn(1024, 1024) for i in range(64)}, str(tmp_path / "w.safetensors"))
    out = subprocess.run([sys.executable, "-c", _PEAK_WHILE_READING, str(tmp_path / "w.safetensors")],
                         capture_output=True, text=True, check=True)
    grown = float(out.stdout.strip().splitlines()[-1])
    assert 120 < grown < 128 + 24, f"reading grew memory by {grown:.0f} MB"


def test_streamed_tensors_are_the_saved_ones_in_every_dtype(tmp_path):
    from safetensors.torch import save_file

    from vivid.models.weights import WeightsError, stream_safetensors

    saved = {"f32": torch.randn(3, 5), "f16": torch.randn(4).half(), "bf16": torch.randn(2, 2).bfloat16(),
             "i64": torch.arange(6).reshape(2, 3), "flag": torch.tensor([True, False]), "empty": torch.zeros(0, 4)}
    save_file(saved, str(tmp_path / "w.safetensors"))
    as_saved = dict(stream_safetensors(tmp_path / "w.safetensors"))
    assert as_saved.keys() == saved.keys()
    assert all(torch.equal(as_saved[k], v) and as_saved[k].dtype == v.dtype for k, v in saved.items())
    in_bf16 = dict(stream_safetensors(tmp_path / "w.safetensors", torch.bfloat16))
    assert in_bf16["f32"].dtype == torch.bfloat16 and torch.equal(in_bf16["f32"], saved["f32"].bfloat16())
    assert in_bf16["i64"].dtype == torch.int64 and in_bf16["flag"].dtype == torch.bool  # only floats convert
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(WeightsError, match="ends inside tensor"):
        dict(stream_safetensors(tmp_path / "cut.safetensors"))


def test_a_hub_id_is_fetched_first_then_read_like_a_folder(tmp_path, monkeypatch):
    """Hub models take the same checks and tensor-by-tensor path as folders; only configs
    and safetensors files are fetched; a failed fetch is one line naming the id."""
    import huggingface_hub

    from vivid.errors import WeightsError

    VividPipeline.tiny().save_pretrained(tmp_path / "model")
    asked = {}

    def snapshot_download(repo_id, **options):
        asked.update(options, repo_id=repo_id)
        return str(tmp_path / "model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    pipe = VividPipeline.from_pretrained("someone/vivid-model", device="cpu", dtype="bf16", revision="v1")
    assert asked["repo_id"] == "someone/vivid-model" and asked["revision"] == "v1"
    assert set(asked["allow_patterns"]) == {"model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"}
    assert pipe.unet.dtype == torch.bfloat16 and pipe.unet.device.type == "cpu"

    def offline(repo_id, **options):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files. Check your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsError, match=r"^someone/vivid-model: no such weights folder, and it could not be fetched "
                                           r"from the Hugging Face hub \(We couldn't connect"):
        VividPipeline.from_pretrained("someone/vivid-model", device="cpu")


def test_a_variant_file_beside_the_weights_is_not_read_too(tmp_path):
    from vivid.models.weights import weight_files

    pipe = VividPipeline.tiny()
    pipe.save_pretrained(tmp_path / "model")
    pipe.vae.save_pretrained(tmp_path / "model" / "vae", variant="fp16")  # as a hub cache can hold both
    assert [f.name for f in weight_files(tmp_path / "model" / "vae")] == ["diffusion_pytorch_model.safetensors"]
    loaded = VividPipeline.from_pretrained(tmp_path / "model", device="cpu", dtype="fp32")
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in loaded.vae.state_dict().items())


def test_unknown_dtypes_are_refused_with_the_value():
    with pytest.raises(DtypeError, match="'fp8'"):
        choose_precision("fp8")
    with pytest.raises(DtypeError, match="int8"):
        VividPipeline.tiny(dtype=torch.int8)


# -- bf16 against fp32 ----------------------------------------------------------------------
def test_bf16_output_stays_close_to_fp32(tiny_scene):
    """Same seed, same weights: bf16 frames within 35 dB of fp32 ones (measured: ~50 dB);
    another noise seed, for scale, lands near 13 dB."""
    fp32 = frames(VividPipeline.tiny(), tiny_scene)
    bf16 = frames(VividPipeline.tiny(dtype="bf16"), tiny_scene)
    other_seed = frames(VividPipeline.tiny(), tiny_scene, seed=5)
    assert psnr(fp32, bf16) > 35
    assert psnr(fp32, other_seed) < 25


# -- reference keys/values computed once -----------------------------------------------------
def test_reference_keys_and_values_are_projected_once_per_video_with_the_same_frames(tiny_scene):
    pipe = VividPipeline.tiny()
    reader = next(m for n, m in pipe.unet.named_modules() if n.endswith("attn1") and "motion_modules" not in n)
    ref_tokens = []

    def spy(module, args):
        ref_tokens.append(args[0].shape[0] <= 2)  # the reference batch (uncond, cond), not frames

    handle = reader.to_k.register_forward_pre_hook(spy)
    cached = frames(pipe, tiny_scene)
    calls_cached, ref_cached = len(ref_tokens), sum(ref_tokens)
    ref_tokens.clear()
    pipe.bank.cache_kv = False
    plain = frames(pipe, tiny_scene)
    handle.remove()
    assert np.array_equal(cached, plain)
    assert ref_cached == 1  # projected once for the whole video...
    assert len(ref_tokens) == calls_cached - 1  # ...where every UNet call projected them again before
    assert not pipe.bank._kv  # and nothing is kept once the video is done


def test_no_keys_values_are_cached_while_training():
    """With gradients on (training, gradient checkpointing) every projection stays in the graph."""
    from diffusers.models.attention_processor import Attention

    from vivid.models.reference_attention import ReferenceBank, ReferenceReadProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    bank = ReferenceBank()
    ref = torch.randn(1, 5, 16, requires_grad=True)
    bank.write("block", ref)
    out = ReferenceReadProcessor(bank, "block")(attn, torch.randn(3, 7, 16))
    out.sum().backward()
    assert not bank._kv and ref.grad is not None and ref.grad.abs().sum() > 0


# -- construction -----------------------------------------------------------------------------
def test_motion_unet_holds_the_image_unets_tensors_and_predicts_like_from_unet2d():
    from diffusers import UNetMotionModel

    from vivid.models.builders import tiny_parts

    parts = tiny_parts(0)
    copied = UNetMotionModel.from_unet2d(parts.unet2d, parts.adapter)
    unet = parts.components()["unet"]
    assert unet.conv_in.weight.data_ptr() == parts.unet2d.conv_in.weight.data_ptr()  # no second copy
    assert not any(p.is_meta for p in unet.parameters())
    sample, t, context = torch.randn(2, 4, 3, 8, 8), torch.tensor(10), torch.randn(6, 1, 32)
    with torch.no_grad():
        assert torch.equal(unet(sample, t, context).sample, copied(sample, t, context).sample)


# -- threaded preview -------------------------------------------------------------------------
def test_threaded_preview_gives_the_frames_of_the_plain_stream(astronaut):
    from vivid.media import read_video
    from vivid.preview import PreviewAnimator
    from vivid.preview_stream import StreamConfig, stream_in_threads

    clip = list(read_video(shared_file("driving", "d0.mp4"), max_frames=40))
    blank = np.zeros_like(clip[0])
    driving = [blank] * 14 + clip  # no face at first: those frames show the reference
    animator = PreviewAnimator()
    plain = list(animator.stream(astronaut, driving, fps=25))
    threaded = list(stream_in_threads(animator, astronaut, iter(driving), fps=25, config=StreamConfig(depth=3, warp_workers=2)))
    assert len(threaded) == len(plain) == len(driving)
    assert all(np.array_equal(a, b) for a, b in zip(plain, threaded))
    assert np.array_equal(threaded[0], astronaut) and not np.array_equal(threaded[-1], astronaut)


def test_background_stages_keep_order_pass_errors_on_and_stop_when_closed():
    from vivid.background import ordered_map, run_ahead

    def slow_square(x: int) -> int:
        time.sleep(0.001 * (x % 3))
        return x * x

    assert list(ordered_map(slow_square, run_ahead(range(30), depth=2), workers=3, depth=4)) == [x * x for x in range(30)]

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(run_ahead(broken()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = run_ahead(endless(), depth=4, name="endless")
    assert next(stream) == 0
    time.sleep(0.2)
    assert len(produced) <= 4 + 2  # bounded: the producer waits for the consumer
    stream.close()
    time.sleep(0.3)
    assert not any(t.name == "vivid-endless" for t in threading.enumerate())
