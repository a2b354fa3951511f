"""Motion templates: the driver's motion without its pixels, replayed exactly as tracked."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from conftest import shared_file
from test_cli import make_clip
from vivid.face import FaceAnalyzer, MotionTemplate, TrackConfig
from vivid.face.template import FORMAT, TemplateError
from vivid.media import probe_video, read_video


@pytest.fixture(scope="module")
def clip_with_gap(tmp_path_factory, astronaut):
    """A moving astronaut with sound, four faceless frames (filled in) and a long faceless run."""
    frames = [np.roll(astronaut, 3 * i, axis=1) for i in range(40)]
    for i in list(range(10, 14)) + list(range(24, 38)):
        frames[i] = np.zeros_like(astronaut)
    path = tmp_path_factory.mktemp("clip") / "gap.mp4"
    make_clip(path, frames, fps=20, audio_seconds=2.0)
    return path


@pytest.fixture(scope="module")
def template(clip_with_gap):
    return MotionTemplate.from_video(clip_with_gap)


def _same(a, b) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.eye_points, b.eye_points)
        assert a.box == b.box and a.interpolated == b.interpolated


def test_template_replays_the_tracked_video_exactly(clip_with_gap, template):
    tracked = FaceAnalyzer("mesh", segment=False).track(read_video(clip_with_gap), TrackConfig(fps=20))
    replayed = list(template.analyses())
    assert len(template) == len(replayed) == len(tracked) == 40
    for a, b in zip(replayed, tracked):
        _same(a, b)
    assert [a is not None and a.interpolated for a in replayed][10:14] == [True] * 4  # short gap filled
    assert all(a is None for a in replayed[24:38])  # long gap stays faceless: NaN rows
    assert np.isnan(template.points[24:38]).all() and template.found.sum() == 26
    assert template.frame_size == (512, 512) and template.fps == pytest.approx(20)


def test_save_load_round_trip_keeps_motion_and_sound_but_no_pixels(tmp_path, template):
    path = template.save(tmp_path / "t.npz")
    loaded = MotionTemplate.load(path)
    np.testing.assert_array_equal(loaded.points, template.points)  # NaN rows included
    np.testing.assert_array_equal(loaded.interpolated, template.interpolated)
    assert (loaded.frame_size, loaded.fps, loaded.audio_format) == (template.frame_size, template.fps, "m4a")
    assert loaded.audio == template.audio and len(loaded.audio) > 1000
    with zipfile.ZipFile(path) as z:
        names = sorted(n.removesuffix(".npy") for n in z.namelist())
    assert names == ["audio", "audio_format", "format", "fps", "frame_size", "interpolated", "points", "version"]
    for a, b in zip(loaded.analyses(), template.analyses()):
        _same(a, b)
    sound = loaded.write_audio(tmp_path)
    with __import__("av").open(str(sound)) as c:
        assert float(c.streams.audio[0].duration * c.streams.audio[0].time_base) == pytest.approx(2.0, abs=0.15)


def test_template_without_sound(tmp_path, clip_with_gap):
    t = MotionTemplate.from_video(clip_with_gap, audio=False, max_frames=12)
    assert len(t) == 12 and not t.has_audio and t.write_audio(tmp_path) is None
    assert not MotionTemplate.load(t.save(tmp_path / "silent.npz")).has_audio


def test_from_frames_needs_fps(astronaut):
    with pytest.raises(TemplateError, match="fps"):
        MotionTemplate.from_video([astronaut] * 3)
    t = MotionTemplate.from_video([astronaut] * 3, fps=10)
    assert len(t) == 3 and t.found.all() and not t.has_audio


def test_files_that_are_not_templates_get_clear_errors(tmp_path, template):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(TemplateError, match="other.npz is not a motion template"):
        MotionTemplate.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TemplateError, match="text.npz is not a readable motion template"):
        MotionTemplate.load(tmp_path / "text.npz")
    with pytest.raises(TemplateError, match="no such"):
        MotionTemplate.load(tmp_path / "missing.npz")
    newer = dict(np.load(template.save(tmp_path / "t.npz")))
    newer["version"] = np.array(99, np.int32)
    np.savez(tmp_path / "newer.npz", **newer)
    with pytest.raises(TemplateError, match="version 99"):
        MotionTemplate.load(tmp_path / "newer.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array(FORMAT), version=np.array(1), points=np.array([object()], dtype=object))
    with pytest.raises(TemplateError):  # never unpickled
        MotionTemplate.load(pickled)
    with pytest.raises(TemplateError, match="shape"):
        MotionTemplate(np.zeros((3, 10, 2)), (10, 10), 25)
    with pytest.raises(TemplateError, match=r"\.npz"):
        template.save(tmp_path / "t.json")


def test_preview_engine_takes_a_template_like_the_video(tmp_path, grace_hopper):
    from vivid.preview import PreviewAnimator

    clip = shared_file("driving", "d12.mp4")
    info = probe_video(clip)
    t = MotionTemplate.from_video(clip, max_frames=30)
    animator = PreviewAnimator()
    from_video = list(animator.stream(grace_hopper, read_video(clip, max_frames=30), info.fps))
    from_template = list(animator.stream(grace_hopper, t))
    assert len(from_template) == len(from_video) == 30
    for a, b in zip(from_template, from_video):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(from_template[0], from_template[-1])  # it moves


def test_cli_parse_template_then_animate_with_it(tmp_path, clip_with_gap, grace_hopper):
    from PIL import Image

    from test_cli import vivid

    ref = tmp_path / "grace.jpg"
    Image.fromarray(grace_hopper).save(ref)
    r = vivid("parse", str(clip_with_gap), "--template", str(tmp_path / "motion.npz"))
    assert r.returncode == 0, r.stderr
    assert "40 frames at 20 fps" in r.stderr and "with sound" in r.stderr
    out = tmp_path / "out.mp4"
    r = vivid("animate", str(ref), str(tmp_path / "motion.npz"), "-o", str(out), "--max-frames", "20")
    assert r.returncode == 0, r.stderr
    info = probe_video(out)
    assert (info.frames, info.fps, info.has_audio) == (20, pytest.approx(20), True)
    r = vivid("parse", str(clip_with_gap))
    assert r.returncode == 2 and "--template" in r.stderr
    (tmp_path / "fake.npz").write_bytes(b"PK nothing")
    r = vivid("animate", str(ref), str(tmp_path / "fake.npz"), "-o", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and "not a readable motion template" in r.stderr and "Traceback" not in r.stderr


def test_cli_diffusion_engine_with_a_template(tmp_path, template, grace_hopper):
    from PIL import Image

    from test_cli import vivid

    ref = tmp_path / "grace.jpg"
    Image.fromarray(grace_hopper).save(ref)
    out = tmp_path / "d.mp4"
    r = vivid("animate", str(ref), str(template.save(tmp_path / "t.npz")), "-o", str(out), "--engine", "diffusion",
              "--weights", "tiny", "--steps", "1", "--window", "4", "--overlap", "1", "--max-frames", "6")
    assert r.returncode == 0, r.stderr
    assert probe_video(out).frames == 6
