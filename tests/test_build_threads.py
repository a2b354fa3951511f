"""Networks built on two threads at once: a build that lays its network out on the meta device
(the lazy diffusion load) must not put another thread's network there (the app builds FaRL
or CLIP on other request threads meanwhile). Each test holds the lazy build inside its
empty-weights region while the other thread builds, which is when a process-wide patch bites."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from vivid.models.builders import motion_unet, tiny_parts
from vivid.models.weights import empty_network


@contextmanager
def held_at_first_parameter(thread_name: str):
    """(started, release): the thread named `thread_name` stops at the first parameter it
    registers until `release` is set; `started` says it got there."""
    started, release = threading.Event(), threading.Event()

    def hook(module, name, param):
        if threading.current_thread().name == thread_name and not started.is_set():
            started.set()
            release.wait(60)

    handle = nn.modules.module.register_module_parameter_registration_hook(hook)
    try:
        yield started, release
    finally:
        release.set()
        handle.remove()


def other_threads_networks() -> list[nn.Module]:
    """What the app builds on request threads: CLIP (transformers) and plain torch layers (facer's FaRL)."""
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                          num_attention_heads=4, image_size=32, patch_size=8,
                                                          projection_dim=32))
    return [clip, nn.Sequential(nn.Conv2d(3, 8, 3), nn.LayerNorm(8))]


def on_meta(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.is_meta]


@pytest.fixture(scope="module")
def parts():
    return tiny_parts(0)


@pytest.fixture(scope="module")
def unet_folder(parts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    parts.unet2d.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("lazy", ["motion_unet", "empty_network"])
def test_a_lazy_build_leaves_other_threads_networks_alone(lazy, parts, unet_folder):
    from diffusers import UNet2DConditionModel

    builds = {
        "motion_unet": lambda: motion_unet(parts.unet2d, parts.adapter),
        "empty_network": lambda: empty_network(UNet2DConditionModel, unet_folder, torch.float32)[0],
    }
    result, errors = {}, []

    def lazy_build():
        try:
            result["lazy"] = builds[lazy]()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with held_at_first_parameter("lazy-build") as (started, release):
        thread = threading.Thread(target=lazy_build, name="lazy-build")
        thread.start()
        assert started.wait(60), "the lazy build registered no parameter"
        others = other_threads_networks()  # while the lazy build is inside its empty-weights region
        release.set()
        thread.join(60)
    assert not errors, errors
    for network in others:
        assert not on_meta(network), f"{type(network).__name__}: {on_meta(network)[:3]} on meta"
    if lazy == "motion_unet":  # filled with the image UNet's and the adapter's tensors
        assert not on_meta(result["lazy"])
    else:  # laid out only: every parameter on meta, buffers real
        network = result["lazy"]
        assert len(on_meta(network)) == len(list(network.parameters()))
        assert not any(b.is_meta for b in network.buffers())
    assert not on_meta(nn.Linear(2, 2))  # and nothing is left patched


def test_two_lazy_builds_at_once_both_finish_whole(parts):
    """Two motion UNets built on two threads, one held inside its region while the other
    runs start to end: neither keeps a meta parameter, nor does a network built afterwards."""
    result, errors = {}, []

    def build(key: str):
        try:
            result[key] = motion_unet(parts.unet2d, parts.adapter)
        except BaseException as exc:
            errors.append(exc)

    with held_at_first_parameter("first") as (started, release):
        first = threading.Thread(target=build, args=("first",), name="first")
        first.start()
        assert started.wait(60)
        second = threading.Thread(target=build, args=("second",), name="second")
        second.start()
        second.join(60)
        release.set()
        first.join(60)
    assert not errors, errors
    assert not on_meta(result["first"]) and not on_meta(result["second"])
    assert not on_meta(nn.Linear(2, 2))
