"""PoseGuider: alive at initialisation (issue 8, part 5), silent until trained, and its
features added once, after the denoising UNet's input conv, to the frames they belong to."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vivid.conditioning import to_model_range
from vivid.face import crop_analysis, face_square, render_motion_map
from vivid.models import PoseGuider, PoseInjector, tiny_components


@pytest.fixture(scope="module")
def real_maps(astronaut, astronaut_analysis):
    """Motion maps of a real face at 256 px, in the model's range: the face, and the face
    moved 24 px to the right (another frame of a driving video)."""
    a = crop_analysis(astronaut_analysis, face_square(astronaut_analysis.box), 256)
    m = render_motion_map(a)
    return to_model_range(np.stack([m, np.roll(m, 24, axis=1)]))


GUIDERS = ["tiny(seed=0)", "tiny(seed=1)", "full(seed=0)", "full(seed=1)", "full(seed=2)"]


@pytest.fixture(scope="module")
def all_guiders():
    """The tiny pipeline's guiders and full-size ones (16-32-64-128 -> 320), several draws."""
    out = {}
    for name in GUIDERS:
        seed = int(name[-2])
        if name.startswith("tiny"):
            out[name] = tiny_components(seed)["pose_guider"]
        else:
            torch.manual_seed(seed)
            out[name] = PoseGuider()
    return out


def last_conv_input(guider: PoseGuider, maps: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = guider.conv_out.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach()))
    try:
        guider(maps)
    finally:
        handle.remove()
    return seen["x"]


@pytest.fixture(params=GUIDERS)
def guider(request, all_guiders):
    return request.param, all_guiders[request.param]


def test_features_entering_the_zero_conv_have_unit_order_std_at_init(guider, real_maps):
    """Issue 8: with N(0, 0.02) convs the features reaching the last conv had std ~1e-6."""
    name, g = guider
    std = last_conv_input(g, real_maps[:1]).std().item()
    assert 0.1 < std < 10, f"{name}: features entering conv_out have std {std:.2g}"


def test_one_optimiser_step_gives_the_zero_conv_a_real_gradient_and_makes_maps_matter(guider, real_maps):
    name, g = guider
    g = PoseGuider.from_config(g.config)
    g.load_state_dict(guider[1].state_dict())  # a copy: the step must not leak into other tests
    out = g(real_maps)
    assert (out == 0).all()  # the zero conv: an untrained guider adds nothing
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    F.mse_loss(out, target).backward()
    grad = g.conv_out.weight.grad.norm().item()
    assert grad > 1e-3, f"{name}: last conv gradient norm {grad:.2g}"  # ~1e-8 when the guider starts dead
    torch.optim.Adam(g.parameters(), lr=1e-3).step()
    with torch.no_grad():
        after = g(real_maps)
    # After one step the two frames' maps give different features (not just a shared bias).
    difference = (after[0] - after[1]).std().item()
    assert difference > 1e-3, f"{name}: motion maps change the features by only {difference:.2g}"


def test_untrained_guider_outputs_zeros_at_latent_size():
    g = PoseGuider(block_out_channels=(4, 8, 8, 16), out_channels=32)
    out = g(torch.rand(3, 3, 64, 48) * 2 - 1)
    assert out.shape == (3, 32, 8, 6)
    assert (out == 0).all()


@torch.no_grad()
def test_pose_features_are_added_once_to_the_unet_input_conv_output_of_their_own_frame():
    unet = tiny_components(0)["unet"]
    injector = PoseInjector(unet)
    seen = []
    unet.conv_in.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
    b, frames = 2, 3
    sample = torch.randn(b, 4, frames, 8, 8)
    context = torch.randn(b * frames, 1, 32)
    pose = torch.randn(b * frames, 32, 8, 8)
    with injector.inject(pose):
        unet(sample, torch.tensor(10), encoder_hidden_states=context)
    (x, y), = seen
    for i in range(b):
        for f in range(frames):
            assert torch.equal(x[i * frames + f], sample[i, :, f])  # rows: samples outer, frames inner
    plain = F.conv2d(x, unet.conv_in.weight, unet.conv_in.bias, padding=unet.conv_in.padding)
    assert torch.allclose(y - plain, pose, atol=1e-5)  # added once, to its own row
    # Outside the block nothing is added; a mismatched pose is an error, not a broadcast.
    seen.clear()
    unet(sample, torch.tensor(10), encoder_hidden_states=context)
    assert torch.allclose(seen[0][1], plain, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"), injector.inject(pose[:frames]):
        unet(sample, torch.tensor(10), encoder_hidden_states=context)
    injector.remove()
    seen.clear()
    with injector.inject(pose):
        unet(sample, torch.tensor(10), encoder_hidden_states=context)
    assert torch.allclose(seen[0][1], plain, atol=1e-6)
