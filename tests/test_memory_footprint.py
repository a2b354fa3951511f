"""The memory accounting bench/diffusion_engine.py reports for issue 12 (where the RSS of a
generation goes): weights counted once per tensor and split by network, and tensors counted
while they are alive. Wrong accounting would send the next person after the wrong lever."""
from __future__ import annotations

import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.diffusion_engine import MIB, live_tensors, weight_bytes  # noqa: E402
from vivid import VividPipeline  # noqa: E402


def test_weights_are_counted_once_each_and_split_by_network():
    pipe = VividPipeline.tiny(dtype="bf16")
    groups = weight_bytes(pipe)
    storages = {}
    for net in (pipe.unet, pipe.reference_net, pipe.image_encoder, pipe.vae, pipe.pose_guider):
        for t in [*net.parameters(), *net.buffers()]:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    assert sum(sum(by.values()) for by in groups.values()) == sum(storages.values())
    # The motion UNet holds the image UNet's tensors; ReferenceNet is a copy of that image UNet.
    assert groups["denoising UNet, image part"] == groups["ReferenceNet"]
    motion = sum(t.untyped_storage().nbytes() for n, t in [*pipe.unet.named_parameters(), *pipe.unet.named_buffers()]
                 if "motion_modules" in n)
    assert sum(groups["motion modules"].values()) == motion > 0
    floating = {dtype for by in groups.values() for dtype in by if dtype.startswith(("float", "bfloat"))}
    assert floating == {"bfloat16"}  # no fp32 copy left beside the bf16 one


def test_live_tensors_count_storages_while_referenced_and_keep_each_stages_peak():
    with live_tensors() as live:
        live.stage = "first"
        a = torch.zeros(MIB, dtype=torch.uint8)
        b = torch.zeros(2 * MIB, dtype=torch.uint8)
        view = b.view(2, MIB)  # the same storage: not counted again
        assert live.current == 3 * MIB
        del a
        live.stage = "second"
        c = view + 1  # 2 MiB more while b is alive
        del b
        assert live.current == 4 * MIB  # b's storage lives on in its view
        del view, c
    assert live.current == 0
    assert live.peaks == {"first": 3 * MIB, "second": 4 * MIB}
