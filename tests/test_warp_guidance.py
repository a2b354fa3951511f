"""Warp guidance: training and inference warp the reference the same way, the model's picture
returns inside the head only, cached views of a clip stay consistent, and models with and
without warp guidance train, save, load and animate."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, talking
from vivid import VividPipeline
from vivid.face import MotionMapStyle, MotionTrack, SquareBox, render_motion_map
from vivid.face.mesh_parsing import analysis_from_mesh
from vivid.media import write_video
from vivid.pipeline import PreparedReference
from vivid.training import PreparedClip, read_index
from vivid.training.samples import SampleSpec, make_sample
from vivid.training.resizing import resize_landmarks
from vivid.training.views import View, clip_views
from vivid.warp_guidance import WarpPaste, head_mask, training_targets, warp_reference


def _clip(data: Path) -> PreparedClip:
    return PreparedClip(read_index(data)[0]["folder"])


def test_training_and_inference_give_the_model_the_same_warped_picture(data):
    """Self-reenactment of a prepared clip: the pipeline, driven by the clip's own frames from
    its reference frame on, encodes exactly the warped pictures a training sample holds."""
    clip = _clip(data)
    res = clip.resolution
    reference = int(clip.reference_frames[1])
    targets = [reference + 2, reference + 5, reference + 9]
    sample = make_sample(clip, reference, targets, SampleSpec(stage=2, frames=3, resolution=res, warp_guidance=True),
                         None)
    pipe = VividPipeline.tiny(resolution=res, warp_guidance=True)
    ref_points = clip.landmarks[reference]
    ref = PreparedReference(image=clip.frame(reference), person=clip.person(reference), points=ref_points,
                            square=SquareBox(res / 2, res / 2, res))
    # The driving video starts at the reference frame, as self-reenactment does.
    analyses = [analysis_from_mesh(clip.landmarks[f], (res, res)) for f in [reference, *targets]]
    motion = MotionTrack.from_analyses(analyses, res, reference=(ref_points, ref.square))
    events = pipe.warp_latents(ref, motion, steps=1)
    with pytest.raises(StopIteration) as done:
        while True:
            next(events)
    inference = done.value.value[0, :, 1:].permute(1, 0, 2, 3)  # (F, C, h, w), the targets
    from vivid.conditioning import encode_latents, to_model_range

    with torch.no_grad():
        training = encode_latents(pipe.vae, to_model_range(sample["warped"])).float()
    torch.testing.assert_close(inference, training, rtol=0, atol=1e-5)
    # ... and the picture is the reference moved: closer to the real targets than the reference is.
    real = clip.frames(targets).astype(float)
    assert np.abs(sample["warped"] - real).mean() < np.abs(clip.frame(reference)[None] - real).mean()


def test_warping_to_the_reference_own_mesh_changes_nothing(astronaut, astronaut_analysis):
    points = astronaut_analysis.landmarks.astype(np.float64)
    same = warp_reference(astronaut, points, training_targets(points, [points]))[0]
    assert np.abs(same.astype(int) - astronaut).max() <= 1


@pytest.fixture(scope="module")
def paste(astronaut, astronaut_analysis):
    """The astronaut's pipeline crop at 64 px and a WarpPaste that returns it to the portrait."""
    from vivid.face import CropConfig, crop_image, face_square

    square = face_square(astronaut_analysis.box, CropConfig())
    m = square.matrix(64)
    points = astronaut_analysis.landmarks @ m[:, :2].T + m[:, 2]
    return WarpPaste(crop_image(astronaut, square, 64), points, astronaut, square), points


def test_where_the_model_agrees_with_the_warp_the_portrait_detail_stays(paste, astronaut):
    warp_paste, points = paste
    picture = np.full((64, 64, 3), 90, np.uint8)
    crop, _ = warp_paste.crop(points, picture, picture)
    warped, _ = warp_paste.warp.warp(warp_paste._enlarged(points))
    assert warp_paste.size > 64 and np.array_equal(crop, warped)  # the portrait's resolution, not the model's
    frame = warp_paste.frame(points, picture, picture)
    assert frame.shape == astronaut.shape and np.abs(frame.astype(int) - astronaut).mean() < 1.0


def test_the_models_changes_reach_the_face_and_nothing_outside_the_head(paste, astronaut, astronaut_analysis):
    warp_paste, points = paste
    copy = np.full((64, 64, 3), 90, np.uint8)
    picture = copy + np.uint8(60)  # the model repaints everything
    frame = warp_paste.frame(points, picture, copy).astype(int)
    x0, y0, x1, y1 = (int(v) for v in astronaut_analysis.box)
    face = (slice(y0 + (y1 - y0) // 3, y1 - (y1 - y0) // 3), slice(x0 + (x1 - x0) // 3, x1 - (x1 - x0) // 3))
    assert (frame[face] - astronaut[face]).mean() > 40  # its change shows in the face
    # Far from the head (two face widths to the side, and the bottom rows) the portrait stays as it is.
    side = x1 + 2 * (x1 - x0)
    assert np.array_equal(frame[:, side:], astronaut[:, side:])
    assert np.array_equal(frame[-40:], astronaut[-40:])


def test_sampling_noise_leaves_the_portrait_and_a_real_correction_passes_whole(paste, astronaut):
    """Changes within `agree_below` grey levels are the sample's own noise, not a correction."""
    warp_paste, points = paste
    copy = np.full((64, 64, 3), 90, np.uint8)
    noise = np.random.default_rng(0).integers(-2, 3, copy.shape)
    picture = (copy + noise).astype(np.uint8)
    assert np.array_equal(warp_paste.frame(points, picture, copy), warp_paste.frame(points, copy, copy))
    repaint = copy + np.uint8(60)
    crop, _ = warp_paste.crop(points, repaint, copy)
    warped, _ = warp_paste.warp.warp(warp_paste._enlarged(points))
    centre = warp_paste.size // 2
    assert abs(int(crop[centre, centre, 0]) - int(warped[centre, centre, 0]) - 60) <= 2 or crop[centre, centre, 0] == 255


def test_the_head_mask_covers_the_face_and_stays_soft():
    from vivid.face import mesh_topology as mt

    angles = np.linspace(0, 2 * np.pi, len(mt.FACE_OVAL), endpoint=False)
    points = np.zeros((mt.NUM_POINTS, 2))
    points[list(mt.FACE_OVAL)] = np.c_[32 + 12 * np.cos(angles), 32 + 15 * np.sin(angles)]
    mask = head_mask([points], 64)
    assert mask[32, 32] > 0.99 and mask[0, 0] == 0 and mask[32, 63] == 0
    assert 0.05 < mask[32, 32 + 16] < 0.95  # the edge is a ramp, not a step


def test_a_mirrored_view_is_a_mirrored_person(data):
    """The motion map drawn from a mirrored view's landmarks is the mirrored map of the
    original (image-left parts are decided by position), so mirrored samples teach nothing false."""
    clip = _clip(data)
    res = clip.resolution
    view = clip_views(clip.path.name, 2)[1]
    assert view.flip and not View().flip
    points = clip.landmarks[int(clip.reference_frames[0])]
    direct = render_motion_map(analysis_from_mesh(view.points(points, res), (res, res)))
    mirrored = view.masks(render_motion_map(analysis_from_mesh(points, (res, res))).transpose(2, 0, 1)).transpose(1, 2, 0)
    agree = (direct == mirrored).all(axis=2)
    assert agree.mean() > 0.97
    # The view changes colours the same way for every frame of the clip.
    frames = clip.frames([0, 1])
    shown = view.images(frames)
    ratio = shown[:, :, ::-1].astype(float).mean(axis=(0, 1, 2)) / np.maximum(frames.astype(float).mean(axis=(0, 1, 2)), 1)
    assert not np.allclose(ratio, 1, atol=0.02)
    assert clip_views(clip.path.name, 3)[1] == view  # a view never changes with how many there are


def test_eye_landmarks_can_be_left_out_of_the_maps(big_face):
    _, analysis = big_face
    with_eyes = render_motion_map(analysis)
    without = render_motion_map(analysis, MotionMapStyle(eye_landmarks=False))
    eyelid, iris = (255, 255, 255), (255, 255, 0)
    for colour in (eyelid, iris):
        assert (with_eyes == colour).all(axis=2).sum() > 20
        assert (without == colour).all(axis=2).sum() == 0


def test_a_model_saved_without_warp_guidance_still_loads_and_runs(tmp_path, tiny_scene):
    """Folders written before warp guidance existed have no such entry: they load as they were."""
    VividPipeline.tiny().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    for key in ("warp_guidance", "eye_landmarks"):
        index.pop(key)
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    pipe = VividPipeline.from_pretrained(tmp_path, device="cpu", dtype="fp32")
    assert not pipe.config.warp_guidance and pipe.config.eye_landmarks
    ref, motion = tiny_scene
    frames = [e.frame for e in pipe.generate(ref, motion, window=4, overlap=1, steps=1) if e.kind == "frame"]
    assert len(frames) == len(motion)


def test_a_unet_that_does_not_match_the_warp_setting_is_refused():
    parts = VividPipeline.tiny().components
    with pytest.raises(ValueError, match="input channels"):
        VividPipeline(**parts, warp_guidance=True)


@pytest.mark.slow
def test_a_tiny_warp_guided_model_trains_saves_loads_and_animates_through_the_cli(data, tmp_path, astronaut):
    from PIL import Image

    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train" / "train.py"), "--stage", "1", "--data", str(data), "--output", str(run),
         "--tiny", "--max-steps", "3", "--batch-size", "2", "--set", "warp_guidance=true", "--set", "latent_views=2",
         "--set", "augment=false", "--set", "cache_latents=true", "--set", "num_workers=0", "--set", "val_samples=2",
         "--set", "sample_frames=4", "--set", "sample_steps=1", "--val-every", "3", "--save-every", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    model = run / "model"
    assert json.loads((model / "model_index.json").read_text())["warp_guidance"] is True
    pipe = VividPipeline.from_pretrained(model, device="cpu", dtype="fp32")
    assert pipe.unet.config.in_channels == 2 * pipe.unet.config.out_channels
    Image.fromarray(astronaut).save(tmp_path / "ref.png")
    write_video(tmp_path / "drv.mp4", iter(talking(astronaut, 4, 9)), fps=25)
    done = subprocess.run([sys.executable, "-m", "vivid", "animate", str(tmp_path / "ref.png"), str(tmp_path / "drv.mp4"),
                           "-o", str(tmp_path / "out.mp4"), "--engine", "diffusion", "--weights", str(model),
                           "--steps", "1", "--window", "4", "--overlap", "1"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.mp4").is_file()


def test_a_residual_model_denoises_the_difference_from_the_warp(data, tiny_scene):
    """Training's target is the frame's latents minus the warp's; the pipeline, which adds the
    warp back, refuses the setting without warp guidance and animates with it."""
    from vivid.training import TrainConfig
    from vivid.training.loop import step_inputs
    from vivid.training.networks import build_networks
    from vivid.training.samples import TrainingSamples, split_frames

    config = TrainConfig(tiny=True, resolution=64, warp_guidance=True, warp_residual=True, mixed_precision="no")
    nets = build_networks(config, None)
    clips = [PreparedClip(e["folder"]) for e in read_index(data)]
    spec = SampleSpec(stage=1, resolution=64, warp_guidance=True, clip_size=32)
    samples = TrainingSamples(clips, split_frames(clips, 0.1, 1)[0], spec, seed=0, length=2)
    batch = torch.utils.data.default_collate([samples[0], samples[1]])
    inputs = step_inputs(batch, nets, config, torch.Generator().manual_seed(0), drop=False)
    from vivid.conditioning import encode_latents, to_model_range

    with torch.no_grad():
        target = encode_latents(nets.vae, to_model_range(batch["target"].flatten(0, 1).numpy())).float()
    torch.testing.assert_close(inputs.latents + inputs.guide, target, rtol=0, atol=1e-5)

    with pytest.raises(ValueError, match="needs warp_guidance"):
        VividPipeline.tiny(warp_residual=True)
    pipe = VividPipeline.tiny(warp_guidance=True, warp_residual=True)
    ref, motion = tiny_scene
    frames = [e.frame for e in pipe.generate(ref, motion, window=4, overlap=1, steps=1) if e.kind == "frame"]
    assert len(frames) == len(motion)
