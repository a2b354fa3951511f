"""Issue 31's front doors: `python -m vivid edit`, `animate --edit`, a portrait video as the
source, a photo as the driver, the face chosen among several; packaged pictures and templates
and clips made here, so nothing needs ../shared/data."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_cli import make_clip, vivid
from vivid.errors import OptionError
from vivid.face.measures import mouth_openness
from vivid.face.motion_edits import MotionEdits
from vivid.media import has_sound, probe_video, read_video

TEMPLATE = ROOT / "assets" / "templates" / "talking.npz"  # 120 frames at 30 fps, with sound


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edit-inputs")


@pytest.fixture(scope="module")
def astronaut_file(folder, astronaut) -> Path:
    path = folder / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def two_faces(folder, astronaut, grace_hopper) -> Path:
    """The astronaut (left) and Grace Hopper (right) side by side."""
    h = astronaut.shape[0]
    grace = cv2.resize(grace_hopper, (round(grace_hopper.shape[1] * h / grace_hopper.shape[0]), h))
    path = folder / "two.png"
    Image.fromarray(np.hstack([astronaut, grace])).save(path)
    return path


@pytest.fixture(scope="module")
def source_clip(folder, astronaut) -> Path:
    """A portrait video: the astronaut sliding right 3 px a frame, 40 frames at 25 fps, with a tone."""
    path = folder / "source.mp4"
    make_clip(path, [np.roll(astronaut, 3 * i, axis=1) for i in range(40)], fps=25, audio_seconds=1.6)
    return path


def meshes(frames) -> list[np.ndarray | None]:
    from vivid.face import TrackConfig
    from vivid.face.shared_analyzers import mesh_analyzer

    return list(mesh_analyzer().iter_landmarks(frames, TrackConfig(smoothing=None, parse=False)))


# -- python -m vivid edit -----------------------------------------------------------------------
def test_edit_writes_the_edited_portrait_and_its_motion_map(astronaut_file, folder, astronaut):
    out, motion = folder / "smile.png", folder / "smile-map.png"
    done = vivid("edit", str(astronaut_file), "-o", str(out), "--set", "smile=0.6", "gaze_x=-0.3", "--map", str(motion))
    assert done.returncode == 0, done.stderr
    edited = np.asarray(Image.open(out))
    assert edited.shape == astronaut.shape and not np.array_equal(edited, astronaut)
    assert np.asarray(Image.open(motion)).any()
    # No edit at all: the portrait itself.
    same = folder / "same.png"
    assert vivid("edit", str(astronaut_file), "-o", str(same)).returncode == 0
    assert np.array_equal(np.asarray(Image.open(same)), astronaut)


def test_edit_list_prints_one_edit_a_line(astronaut_file):
    done = vivid("edit", "--list")
    assert done.returncode == 0
    rows = [line.split(maxsplit=4) for line in done.stdout.splitlines()]
    assert [r[0] for r in rows] == list(MotionEdits.names())
    assert all(float(low) < float(high) for _, low, high, _, _ in rows)


@pytest.mark.parametrize("args, message", [
    (["--set", "smil=0.5"], "unknown edit 'smil' (did you mean smile?)"),
    (["--set", "yaw=40"], "edit yaw=40 is out of range: yaw goes from -25 to 25"),
    (["--set", "mouth_open=wide"], "the value must be a number"),
    (["--face", "3"], "face 3: the reference image shows one face; choose 1 to 1"),
])
def test_a_bad_edit_is_one_line_and_nothing_is_written(astronaut_file, folder, args, message):
    out = folder / "refused.png"
    done = vivid("edit", str(astronaut_file), "-o", str(out), *args)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vivid: error:") and message in lines[0], done.stderr
    assert not out.exists()


def test_edit_like_a_photo_takes_its_expression(astronaut_file, folder, grace_hopper):
    """--like: the portrait with the photo's expression (here: the astronaut's own face with
    its mouth closed and eyes shut is the photo)."""
    from vivid.still_edit import StillEditor

    shut = StillEditor(np.asarray(Image.open(astronaut_file))).render(
        MotionEdits(mouth_open=0, left_eye_open=0.05, right_eye_open=0.05))
    photo = folder / "shut.png"
    Image.fromarray(shut).save(photo)
    out = folder / "like.png"
    done = vivid("edit", str(ROOT / "assets" / "grace_hopper.jpg"), "--like", str(photo), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "read as:" in done.stderr and "mouth_open=0" in done.stderr


# -- animate --edit -------------------------------------------------------------------------------
def test_animate_with_edits_keeps_the_lips_closed_over_a_talking_clip(astronaut_file, folder):
    plain, closed = folder / "plain.mp4", folder / "closed.mp4"
    args = ["animate", str(astronaut_file), str(TEMPLATE), "--max-frames", "60"]
    assert vivid(*args, "-o", str(plain)).returncode == 0
    done = vivid(*args, "-o", str(closed), "--edit", "mouth_open=0", "mouth_motion=0")
    assert done.returncode == 0, done.stderr
    talking = [mouth_openness(m) for m in meshes(read_video(plain)) if m is not None]
    kept = [mouth_openness(m) for m in meshes(read_video(closed)) if m is not None]
    assert max(talking) > 0.2  # the template talks (her smile's own opening is 0.16) ...
    assert max(kept) < 0.06  # ... and the edited portrait keeps its lips closed


def test_animate_refuses_a_bad_edit_before_any_work(astronaut_file, folder):
    out = folder / "never.mp4"
    done = vivid("animate", str(astronaut_file), str(TEMPLATE), "-o", str(out), "--edit", "gaze=0")
    assert done.returncode == 2 and "unknown edit 'gaze'" in done.stderr and not out.exists()


def test_the_diffusion_engine_draws_its_maps_from_the_edited_mesh(astronaut):
    from vivid import VividPipeline
    from vivid.face import MotionTemplate

    pipe = VividPipeline.tiny()
    template = MotionTemplate.load(TEMPLATE)
    ref = pipe.prepare_reference(astronaut)
    plain = pipe.prepare_driving(template, reference=ref)
    turned = pipe.prepare_driving(template, reference=ref, edits=MotionEdits(yaw=20, smile=0.8))
    assert len(plain) == len(turned) == len(template)
    frames = [0, 40]
    assert np.abs(plain.motion_maps(frames).astype(int) - turned.motion_maps(frames)).mean() > 1
    assert np.abs(plain.points[40] - turned.points[40]).max() > 3


# -- the face chosen among several ----------------------------------------------------------------
def test_a_face_is_chosen_by_its_place_from_the_left(two_faces, analyzer):
    rgb = np.asarray(Image.open(two_faces))
    boxes = analyzer.face_boxes(rgb)
    assert len(boxes) == 2 and boxes[0][0] < boxes[1][0]
    half = rgb.shape[1] / 2
    assert analyzer.analyze(rgb, "two", face=1).box[0] < half < analyzer.analyze(rgb, "two", face=2).box[0]
    with pytest.raises(OptionError, match="shows 2 faces; choose 1 to 2"):
        analyzer.analyze(rgb, "two", face=3)


def test_animate_and_edit_take_a_face_number(two_faces, folder):
    out = folder / "right.mp4"
    done = vivid("animate", str(two_faces), str(TEMPLATE), "-o", str(out), "--max-frames", "10", "--face", "2")
    assert done.returncode == 0, done.stderr
    left, right = (folder / f"{k}.png" for k in ("left", "right"))
    for k, path in ((1, left), (2, right)):
        assert vivid("edit", str(two_faces), "-o", str(path), "--face", str(k), "--set", "yaw=20").returncode == 0
    original = np.asarray(Image.open(two_faces)).astype(int)
    half = original.shape[1] // 2
    changed = [np.abs(np.asarray(Image.open(p)).astype(int) - original).sum(axis=2) > 0 for p in (left, right)]
    assert changed[0][:, :half].any() and not changed[0][:, half:].any()
    assert changed[1][:, half:].any() and not changed[1][:, :half].any()


# -- a photo as the driver --------------------------------------------------------------------------
def test_a_driving_photo_makes_a_short_clip_to_its_expression(astronaut_file, folder):
    from vivid.still_edit import StillEditor

    photo = folder / "open.png"  # the astronaut with her mouth wide open and turned: the photo to copy
    Image.fromarray(StillEditor(np.asarray(Image.open(astronaut_file))).render(
        MotionEdits(mouth_open=0.35, yaw=15))).save(photo)
    out = folder / "photo.mp4"
    done = vivid("animate", str(ROOT / "assets" / "grace_hopper.jpg"), str(photo), "-o", str(out))
    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    assert (info.frames, info.fps, info.has_audio) == (38, 25.0, False)  # 1.5 s at 25 fps, silent
    opening = [mouth_openness(m) for m in meshes(read_video(out))]
    assert opening[0] < 0.1 < opening[-1]  # from her own face to the photo's open mouth
    one = folder / "one.mp4"
    assert vivid("animate", str(ROOT / "assets" / "grace_hopper.jpg"), str(photo), "-o", str(one),
                 "--photo-seconds", "0").returncode == 0
    assert probe_video(one).frames == 1


# -- a portrait video as the source ------------------------------------------------------------------
def test_a_source_video_keeps_its_own_motion_under_the_drivers(source_clip, folder):
    out = folder / "source-driven.mp4"
    done = vivid("animate", str(source_clip), str(TEMPLATE), "-o", str(out))
    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    # Paired by time at the source's rate; as long as the shorter (40 source frames = 1.6 s, the template 4 s).
    assert (info.frames, info.fps) == (40, 25.0)
    assert info.has_audio  # the driver's sound by default
    got = meshes(read_video(out))
    source = meshes(read_video(source_clip))
    # The source's own motion is kept: the face slides right 3 px a frame as in the source ...
    centres = np.array([m[list(range(468))].mean(axis=0)[0] for m in got])
    assert np.polyfit(np.arange(len(centres)), centres, 1)[0] == pytest.approx(3.0, abs=0.5)
    # ... and the driver's is added: the mouth talks where the source's is still.
    assert np.ptp([mouth_openness(m) for m in source]) < 0.02
    assert np.ptp([mouth_openness(m) for m in got]) > 0.06


def test_a_source_videos_sound_can_be_kept_or_left_out(source_clip, folder):
    kept, silent = folder / "kept.mp4", folder / "silent.mp4"
    assert vivid("animate", str(source_clip), str(TEMPLATE), "-o", str(kept), "--sound", "source").returncode == 0
    assert vivid("animate", str(source_clip), str(TEMPLATE), "-o", str(silent), "--sound", "none").returncode == 0
    assert has_sound(kept) and not has_sound(silent)
    import av

    with av.open(str(kept)) as c:  # the source's tone (1.6 s), cut to the video's length
        assert float(c.streams.audio[0].duration * c.streams.audio[0].time_base) == pytest.approx(1.6, abs=0.1)


def test_a_source_video_is_refused_by_the_diffusion_engine_and_a_photo_has_no_sound(source_clip, folder,
                                                                                   astronaut_file):
    out = folder / "never.mp4"
    done = vivid("animate", str(source_clip), str(TEMPLATE), "-o", str(out), "--engine", "diffusion", "--weights",
                 "tiny")
    assert done.returncode == 2 and "cannot animate a portrait video" in done.stderr and not out.exists()
    done = vivid("animate", str(astronaut_file), str(TEMPLATE), "-o", str(out), "--sound", "source")
    assert done.returncode == 2 and "the portrait is a photo, which has no sound" in done.stderr
    assert not out.exists()


def test_a_source_video_without_a_face_in_some_frames_is_one_line_and_nothing_written(folder, astronaut):
    blank = np.full_like(astronaut, 128)
    clip = folder / "gap.mp4"
    make_clip(clip, [astronaut] * 10 + [blank] * 20 + [astronaut] * 10, fps=25)
    out = folder / "gap-out.mp4"
    done = vivid("animate", str(clip), str(TEMPLATE), "-o", str(out))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("vivid:")]
    assert len(lines) == 1 and "no face in frame 11 (0.4 s) of the source video" in lines[0], done.stderr
    assert not out.exists()
