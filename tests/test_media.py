"""Reading videos: frames streamed, clear errors for bad files; writing mp4."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from vivid.media import ALONGSIDE_OTHER_WORK, Encoding, InputError, probe_video, read_video, write_video


def test_write_then_read_roundtrip(tmp_path, astronaut):
    path = tmp_path / "clip.mp4"
    frames = [np.roll(astronaut, 4 * i, axis=1) for i in range(10)]
    assert write_video(path, iter(frames), fps=24) == 10
    info = probe_video(path)
    assert info.fps == pytest.approx(24) and (info.width, info.height) == (512, 512) and not info.has_audio
    back = list(read_video(path))
    assert len(back) == 10 and back[0].shape == (512, 512, 3) and back[0].dtype == np.uint8
    assert np.abs(back[3].astype(int) - frames[3].astype(int)).mean() < 6


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def test_the_preview_clis_faster_encoding_keeps_the_quality_and_trades_file_size(tmp_path):
    """Same CRF, so the picture is as good; the faster preset only spends more bytes."""
    frames = list(read_video(shared_file("driving", "d3.mp4"), max_frames=40))
    sizes, quality = {}, {}
    for name, encoding in (("default", Encoding()), ("fast", ALONGSIDE_OTHER_WORK)):
        path = tmp_path / f"{name}.mp4"
        assert write_video(path, iter(frames), fps=30, encoding=encoding) == 40
        back = list(read_video(path))
        quality[name] = np.mean([_psnr(a, b) for a, b in zip(back, frames)])
        sizes[name] = path.stat().st_size
    assert quality["fast"] > 38 and abs(quality["fast"] - quality["default"]) < 1.5
    assert sizes["default"] < sizes["fast"] < 3 * sizes["default"]


def test_bad_videos(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_video(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="not a readable video"):
        list(read_video(junk))
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "empty.mp4", iter([]), fps=25)


def test_reads_sample_clip_lazily():
    path = shared_file("driving", "d6.mp4")
    info = probe_video(path)
    assert info.frames == 1008 and info.fps == pytest.approx(30)
    frames = read_video(path, max_frames=5)
    assert next(frames).shape == (480, 480, 3)
    assert len(list(frames)) == 4


def test_phone_video_rotation_is_applied(tmp_path, astronaut):
    """Phones store portrait video sideways with a display rotation; frames come out upright."""
    import av

    upright = astronaut[:, :400]
    sideways = np.ascontiguousarray(np.rot90(upright, 1))
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height = sideways.shape[1], sideways.shape[0]
        s.pix_fmt = "yuv420p"
        s.set_display_rotation(-90)
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(sideways, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (400, 512, 90)
    frame = next(read_video(path))
    assert frame.shape == upright.shape and np.abs(frame.astype(int) - upright.astype(int)).mean() < 6


def _clip_with_pcm_sound(path, frames: list[np.ndarray], fps: int = 25, seconds: float = 2.0):
    """An mkv whose sound is uncompressed PCM, a codec mp4 cannot carry as it is."""
    import av

    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        audio = c.add_stream("pcm_s16le", rate=44100)
        audio.layout = "mono"
        for f in frames:
            for p in video.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in video.encode():
            c.mux(p)
        t = np.arange(int(44100 * seconds)) / 44100
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="s16", layout="mono")
            frame.sample_rate = 44100
            for p in audio.encode(frame):
                c.mux(p)
        for p in audio.encode():
            c.mux(p)


def test_sound_in_a_codec_mp4_cannot_hold_is_reencoded_and_cut_to_the_video(tmp_path, astronaut):
    import av

    from vivid.face.template import extract_audio

    frames = [np.roll(astronaut[:256, :256], 3 * i, axis=1) for i in range(25)]  # 1 s of video
    source = tmp_path / "pcm.mkv"
    _clip_with_pcm_sound(source, frames, seconds=2.0)
    out = tmp_path / "out.mp4"
    write_video(out, iter(frames), fps=25, audio_from=source)
    with av.open(str(out)) as c:
        sound = c.streams.audio[0]
        assert sound.codec_context.name == "aac"
        last = max(float(p.pts * p.time_base) for p in c.demux(sound) if p.pts is not None)
    assert 0.8 < last <= 1.05  # the 2 s of sound end with the 1 s of video
    data, kind = extract_audio(source)
    (tmp_path / f"sound.{kind}").write_bytes(data)
    with av.open(str(tmp_path / f"sound.{kind}")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert float(c.duration / 1e6) == pytest.approx(2.0, abs=0.1)  # the whole sound, re-encoded


def test_leftovers_of_a_killed_run_go_with_the_next_write_and_nothing_else_does(tmp_path, astronaut):
    """SIGKILL lets no clean-up code run: the next write of the same output removes what a
    dead process on this machine left, but never a living process's files, another
    machine's, or a user's own files whose names merely start alike."""
    import subprocess
    import sys

    from vivid.paths import owner_tag

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    killed_file = tmp_path / f".result.mp4.{owner_tag(dead)}-0a1b2c3d.partial.mp4"
    killed_folder = tmp_path / f".result.mp4.vivid-{owner_tag(dead)}-x7y8z9_q"
    kept = [tmp_path / f".result.mp4.{owner_tag()}-feedbeef.partial.mp4",  # this (living) process
            tmp_path / f".result.mp4.otherhost-{dead}-0a1b2c3d.partial.mp4",  # another machine's run
            tmp_path / f".other.mp4.{owner_tag(dead)}-0a1b2c3d.partial.mp4",  # another output's
            tmp_path / ".result.mp4.20240101-notes.txt",  # the user's own
            tmp_path / ".result.mp4.2024-takes"]
    for f in [killed_file, *kept[:-1]]:
        f.write_bytes(b"half a video")
    for folder in (killed_folder, kept[-1]):
        folder.mkdir()
        (folder / "video.mp4").write_bytes(b"x")
    write_video(tmp_path / "result.mp4", iter([astronaut] * 3), fps=25)
    assert (tmp_path / "result.mp4").is_file()
    assert not killed_file.exists() and not killed_folder.exists()
    assert all(f.exists() for f in kept) and (kept[-1] / "video.mp4").exists()
