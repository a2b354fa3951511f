"""Reliability (issue 13): a failed or interrupted run never destroys a file, options are
checked before any work in one place for the CLI, the app and the Python API, every refusal
is one plain line, damaged inputs are used as far as they go (or refused) with a count, and
no untrusted file is ever unpickled."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from vivid.errors import InputError, OptionError, WeightsError
from vivid.media import check_video, load_image, probe_video, read_video, to_rgb, write_video
from vivid.models.saved import check_weights_folder
from vivid.options import AnimateOptions
from vivid.paths import atomic_output

sys.path.insert(0, str(ROOT))
from bench.app_load import huge_png  # noqa: E402  (a PNG header declaring a huge image)

#: An exception class name in a message, e.g. "ValueError:" or "SafetensorError".
CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b")


# -- inputs -------------------------------------------------------------------------------------
def make_clip(path: Path, frames: list[np.ndarray], fps: int = 25, gop: int = 5, faststart: bool = True) -> Path:
    """An H.264 mp4 with a keyframe every `gop` frames; `faststart` puts the index first, as
    phones and web exports do (a file cut short then still opens)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("libx264", rate=fps, options={"g": str(gop), "keyint_min": str(gop)})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def cut_short(src: Path, dst: Path, share: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut, grace_hopper):
    """Portrait, driving clips (good, cut short, mostly faceless) and a flat picture."""
    folder = tmp_path_factory.mktemp("inputs")
    small = np.ascontiguousarray(astronaut[::2, ::2])  # 256 px: quick to animate
    Image.fromarray(grace_hopper).save(folder / "portrait.png")
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(folder / "flat.png")
    moving = [np.roll(small, 2 * i, axis=1) for i in range(40)]
    make_clip(folder / "driving.mp4", moving)
    cut_short(folder / "driving.mp4", folder / "cut70.mp4", 0.7)
    cut_short(folder / "driving.mp4", folder / "cut20.mp4", 0.2)
    faceless = [f if i % 4 == 0 else np.zeros_like(f) for i, f in enumerate(moving[:24])]
    make_clip(folder / "mostly_faceless.mp4", faceless)
    return folder


def vivid(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vivid", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env, **kwargs)


def lines(stderr: str) -> list[str]:
    """What a terminal would show: progress-bar redraws (\\r) collapsed, empty lines dropped."""
    return [part.split("\r")[-1].strip() for part in stderr.split("\n") if part.split("\r")[-1].strip()]


def one_refusal(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The run was refused with exactly one plain `vivid: error:` line containing `needles`."""
    shown = lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(shown) == 1, result.stderr
    line = shown[0]
    assert line.startswith("vivid: error: ") and "Traceback" not in result.stderr
    assert not CLASS_NAME.search(line), line
    assert "VIVID_DEBUG" not in line  # anticipated: no bug-report hint
    for needle in needles:
        assert needle in line, line
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with its checksum."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def earlier_output(tmp_path):
    """A folder holding a result from an earlier run, which no failed run may touch."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "out.mp4").write_bytes(os.urandom(4096))
    return out / "out.mp4"


# -- never lose the user's data -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["no face in the portrait", "no face in most driving frames", "overlap too large",
                                  "driving video cut short", "weights file cut short"])
def test_a_failed_run_leaves_an_existing_output_untouched(case, files, earlier_output, tmp_path):
    weights = tmp_path / "weights"
    make_weights_folder(weights)
    cut_weights = weights / "unet" / "diffusion_pytorch_model.safetensors"
    cut_weights.write_bytes(cut_weights.read_bytes()[:-100])
    args = {
        "no face in the portrait": [files / "flat.png", files / "driving.mp4"],
        "no face in most driving frames": [files / "portrait.png", files / "mostly_faceless.mp4"],
        "overlap too large": [files / "portrait.png", files / "driving.mp4", "--engine", "diffusion", "--weights", "tiny",
                              "--window", "8", "--overlap", "8"],
        "driving video cut short": [files / "portrait.png", files / "cut20.mp4"],
        "weights file cut short": [files / "portrait.png", files / "driving.mp4", "--engine", "diffusion",
                                   "--weights", weights],
    }[case]
    before = snapshot(earlier_output.parent)
    result = vivid("animate", *args, "-o", earlier_output)
    assert result.returncode == 2, result.stderr
    shown = lines(result.stderr)
    assert shown[-1].startswith("vivid: error: ") and not CLASS_NAME.search(shown[-1]), result.stderr
    assert sum("error" in line for line in shown) == 1 and "Traceback" not in result.stderr
    assert snapshot(earlier_output.parent) == before  # same bytes, and no partial file or temp folder


_SWALLOWED_INTERRUPT = """
import os, signal, sys
from pathlib import Path
from vivid.interrupts import stop_on_signals
from vivid.paths import atomic_output
stop_on_signals()
class Finaliser:
    def __del__(self):  # Python prints and drops an exception raised in here
        os.kill(os.getpid(), int(sys.argv[2]))
Finaliser()
try:
    with atomic_output(Path(sys.argv[1])) as tmp:
        tmp.write_text("the interrupted run's output")
except KeyboardInterrupt:
    print("refused")
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_whose_exception_a_finaliser_swallowed_still_keeps_the_earlier_output(sig, tmp_path):
    earlier = tmp_path / "out.txt"
    earlier.write_text("earlier")
    result = subprocess.run([sys.executable, "-c", _SWALLOWED_INTERRUPT, str(earlier), str(int(sig))], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert "KeyboardInterrupt" in result.stderr  # the exception really was dropped in the finaliser
    assert result.stdout.strip() == "refused"
    assert earlier.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_leaves_an_existing_output_untouched(sig, code, files, earlier_output, tmp_path, astronaut):
    long_clip = make_clip(tmp_path / "long.mp4", [np.roll(astronaut[::2, ::2], i, axis=1) for i in range(400)], gop=50)
    before = snapshot(earlier_output.parent)
    run = subprocess.Popen([sys.executable, "-m", "vivid", "animate", str(files / "portrait.png"), str(long_clip),
                            "-o", str(earlier_output)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".partial.mp4") for p in earlier_output.parent.iterdir()):  # writing has begun
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    run.send_signal(sig)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == code
    assert lines(stderr)[-1].startswith("vivid: interrupted")
    assert snapshot(earlier_output.parent) == before


def test_an_output_that_is_an_input_is_refused_before_anything_runs(files, tmp_path):
    driving = tmp_path / "driving.mp4"
    driving.write_bytes((files / "driving.mp4").read_bytes())
    (tmp_path / "link.mp4").symlink_to(driving)
    os.link(driving, tmp_path / "hardlink.mp4")
    before = snapshot(tmp_path)
    for output in (driving, tmp_path / "link.mp4", tmp_path / "hardlink.mp4"):
        one_refusal(vivid("animate", files / "portrait.png", driving, "-o", output), "is one of the inputs")
    # parse: the input sits in the output folder under a name parse writes
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "motion_maps.mp4").write_bytes(driving.read_bytes())
    before = snapshot(tmp_path)
    one_refusal(vivid("parse", maps / "motion_maps.mp4", "-o", maps), "under a name parse writes")
    # evaluate replaces an earlier evaluation folder whole: an input kept inside it would be swept away
    (maps / "table.md").write_text("an earlier evaluation")
    before = snapshot(tmp_path)
    one_refusal(vivid("evaluate", "--self", maps / "motion_maps.mp4", "-o", maps), "inside the output folder")
    assert snapshot(tmp_path) == before


def test_parse_refuses_a_file_as_its_output_folder_and_leaves_no_folder_after_a_failure(files, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    one_refusal(vivid("parse", files / "portrait.png", "-o", existing), "is a file", "give a folder")
    assert existing.read_text() == "mine"
    r = vivid("parse", files / "flat.png", "-o", tmp_path / "new")
    assert r.returncode == 2 and "no face" in lines(r.stderr)[-1]
    assert not (tmp_path / "new").exists()  # the folder it would have made is not left behind


def test_write_video_replaces_the_target_only_when_complete(tmp_path, astronaut):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"earlier result")

    def failing(exc: BaseException):
        for i in range(5):
            yield np.roll(astronaut, i, axis=1)
        raise exc

    for exc in (InputError("driving video damaged"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            write_video(target, failing(exc), fps=25)
        assert target.read_bytes() == b"earlier result" and sorted(os.listdir(tmp_path)) == ["out.mp4"]
    assert write_video(target, iter([astronaut] * 3), fps=25) == 3
    assert probe_video(target).frames == 3 and sorted(os.listdir(tmp_path)) == ["out.mp4"]
    with pytest.raises(InputError, match="takes its sound from"):
        write_video(target, iter([astronaut]), fps=25, audio_from=target)


def test_atomic_output_and_templates_are_complete_or_absent(tmp_path):
    from vivid.face import MotionTemplate

    target = tmp_path / "t.npz"
    template = MotionTemplate(np.zeros((3, 478, 2), np.float32), (64, 64), 25)
    template.save(target)
    saved = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == saved and sorted(os.listdir(tmp_path)) == ["t.npz"]


# -- options checked first, in one place ----------------------------------------------------------
@pytest.mark.parametrize("flags, needles", [
    (["--max-frames", "0"], ["--max-frames", "got 0"]),
    (["--max-frames", "-3"], ["--max-frames", "got -3"]),
    (["--size", "-5"], ["--size", "got -5"]),
    (["--max-side", "10"], ["--max-side", "got 10"]),
    (["--engine", "diffusion", "--weights", "tiny", "--window", "40"], ["--window", "between 1 and 32", "got 40"]),
    (["--engine", "diffusion", "--weights", "tiny", "--overlap", "30"], ["--overlap", "smaller than the window", "30"]),
    (["--engine", "diffusion", "--weights", "tiny", "--steps", "0"], ["--steps", "got 0"]),
    (["--engine", "diffusion", "--weights", "tiny", "--guidance", "nan"], ["--guidance", "got nan"]),
    (["--engine", "diffusion", "--weights", "tiny", "--seed", "-1"], ["--seed", "got -1"]),
    (["--engine", "diffusion", "--weights", "tiny", "--size", "100"], ["--size", "multiple of 8"]),
    (["--size", "abc"], ["--size", "invalid int value: 'abc'"]),
    (["--engine", "diffusion", "--weights", "{missing}"], ["no such weights folder"]),
])
def test_bad_options_are_one_line_before_any_work(flags, needles, files, tmp_path):
    flags = [f.format(missing=tmp_path / "nowhere") for f in flags]
    result = vivid("animate", files / "portrait.png", files / "driving.mp4", "-o", tmp_path / "o.mp4", *flags)
    one_refusal(result, *needles)  # one line, and no progress bar: nothing was loaded, tracked or decoded
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("changes, needle", [
    (dict(engine="warp"), "engine must be one of preview, diffusion"),
    (dict(max_frames=0), "max_frames must be between 1"),
    (dict(max_frames=2.5), "max_frames must be a whole number"),
    (dict(size=-5), "size must be between 64"),
    (dict(size=True), "size must be a whole number"),
    (dict(max_side=8), "max_side must be at least 64"),
    (dict(crop_only="yes"), "crop_only must be True or False"),
    (dict(crop_only=True, size=1024, max_side=512), "larger than max_side"),
    (dict(engine="diffusion"), "needs weights"),
    (dict(engine="diffusion", weights="tiny", window=0), "window must be between 1 and 32"),
    (dict(engine="diffusion", weights="tiny", window="8"), "window must be a whole number"),
    (dict(engine="diffusion", weights="tiny", overlap=-1), "overlap must be at least 0"),
    (dict(engine="diffusion", weights="tiny", window=8, overlap=8), "overlap must be smaller than the window"),
    (dict(engine="diffusion", weights="tiny", cyclic=False, wrap=True), "wrap only applies to cyclic windows"),
    (dict(engine="diffusion", weights="tiny", steps=0), "steps must be between 1 and 1000"),
    (dict(engine="diffusion", weights="tiny", steps=5000), "steps must be between 1 and 1000"),
    (dict(engine="diffusion", weights="tiny", guidance=float("inf")), "guidance must be between 0 and 30"),
    (dict(engine="diffusion", weights="tiny", guidance=-1), "guidance must be between 0 and 30"),
    (dict(engine="diffusion", weights="tiny", seed=-1), "seed must be between 0"),
    (dict(engine="diffusion", weights="tiny", seed=1.5), "seed must be a whole number"),
    (dict(engine="diffusion", weights="tiny", dtype="float8"), "dtype must be one of auto, fp32, bf16, fp16"),
    (dict(engine="diffusion", weights="tiny", parser="dlib"), "parser must be one of auto, mesh, farl"),
])
def test_options_refuse_bad_values_quoting_them(changes, needle):
    with pytest.raises(OptionError, match=re.escape(needle)):
        AnimateOptions(**changes).check()


def test_good_options_pass_and_dtype_names_match_the_engine():
    for dtype in ("auto", "fp32", "bf16", "fp16"):
        AnimateOptions(engine="diffusion", weights="tiny", dtype=dtype, window=16, overlap=0, steps=1000,
                       guidance=0.0, seed=2**64 - 1, size=128).check()
    AnimateOptions(max_frames=24.0, size=64).check()  # 24.0 from a slider is a whole number
    try:
        from vivid.precision import DTYPES  # issue 12's dtype names: the same set, so --dtype plugs in
    except ImportError:
        return
    assert set(DTYPES) == {"auto", "fp32", "bf16", "fp16"}


# -- weights ------------------------------------------------------------------------------------
def make_weights_folder(folder: Path) -> Path:
    """The layout `VividPipeline.save_pretrained` writes, with small stand-in tensors (the
    folder check reads headers and configs only; loading needs the real thing)."""
    from safetensors.numpy import save_file

    index = {"_class_name": "VividPipeline", "_diffusers_version": "0.42.1", "resolution": 64,
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "pose_guider": ["vivid.models.pose_guider", "PoseGuider"],
             "reference_net": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "unet": ["diffusers", "UNetMotionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name in ("vae", "image_encoder", "reference_net", "unet", "pose_guider", "feature_extractor", "scheduler"):
        (folder / name).mkdir()
        config = {"scheduler": "scheduler_config.json", "feature_extractor": "preprocessor_config.json"}.get(name, "config.json")
        (folder / name / config).write_text(json.dumps({"motion_max_seq_length": 16} if name == "unet" else {}))
        if name not in ("scheduler", "feature_extractor"):
            weights = "model.safetensors" if name == "image_encoder" else "diffusion_pytorch_model.safetensors"
            save_file({"w": np.ones((64, 64), np.float32)}, str(folder / name / weights))
    return folder


def test_weights_folder_layout_is_checked_without_loading(tmp_path):
    saved = check_weights_folder(make_weights_folder(tmp_path / "ok"))
    assert (saved.resolution, saved.max_window) == (64, 16)
    with pytest.raises(OptionError, match="window must be between 1 and 16"):  # the model's own temporal length
        AnimateOptions(engine="diffusion", weights=str(tmp_path / "ok"), window=24).check()
    with pytest.raises(OptionError, match="this model works at 64 px"):
        AnimateOptions(engine="diffusion", weights=str(tmp_path / "ok"), window=8, size=128).check()

    def broken(name: str, damage) -> str:
        folder = make_weights_folder(tmp_path / name)
        damage(folder)
        with pytest.raises(WeightsError) as info:
            check_weights_folder(folder)
        message = str(info.value)
        assert "\n" not in message and not CLASS_NAME.search(message)
        return message

    unet = "unet/diffusion_pytorch_model.safetensors"
    cut = broken("cut", lambda f: (f / unet).write_bytes((f / unet).read_bytes()[:-10]))
    assert unet in cut and "cut short" in cut
    garbage = broken("garbage", lambda f: (f / unet).write_bytes(b"\xff" * 64))
    assert unet in garbage and "not a complete safetensors file" in garbage
    assert "vae: missing" in broken("missing", lambda f: __import__("shutil").rmtree(f / "vae"))
    pickled = broken("pickle", lambda f: ((f / "vae" / "diffusion_pytorch_model.safetensors").rename(
        f / "vae" / "diffusion_pytorch_model.bin")))
    assert "pickle" in pickled and "never loaded" in pickled
    index = "model_index.json"
    assert "not a readable JSON file" in broken("json", lambda f: (f / index).write_text('{"_class_name": "Viv'))
    assert "not one of diffusers" in broken("code", lambda f: (f / index).write_text(
        (f / index).read_text().replace('"diffusers", "AutoencoderKL"', '"os", "system"')))
    assert "not a VividPipeline" in broken("other", lambda f: (f / index).write_text(
        (f / index).read_text().replace("VividPipeline", "StableDiffusionPipeline")))


# -- damaged and cut-short videos -------------------------------------------------------------------
def test_a_cut_short_video_is_used_as_far_as_it_goes_with_a_count(files, tmp_path):
    declared = probe_video(files / "cut70.mp4").frames
    usable = len(list(read_video(files / "cut70.mp4")))
    assert declared == 40 and 20 <= usable < 40
    out = tmp_path / "out.mp4"
    result = vivid("animate", files / "portrait.png", files / "cut70.mp4", "-o", out)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in lines(result.stderr) if line.startswith("vivid: warning:")]
    assert len(warnings) == 1 and f"{usable} of the 40 frames" in warnings[0], result.stderr
    assert probe_video(out).frames == usable


def test_a_video_with_too_few_usable_frames_is_refused_before_decoding(files):
    with pytest.raises(InputError, match=r"cut short or damaged: only \d+ of the 40 frames"):
        check_video(files / "cut20.mp4")
    with pytest.raises(InputError, match=r"could be decoded|no frame"):
        list(read_video(files / "cut20.mp4"))
    check_video(files / "cut20.mp4", max_frames=3)  # the first frames are all a user asked for


def test_a_driving_clip_whose_face_is_missing_from_most_frames_is_refused(files, tmp_path, caplog):
    from vivid.face import FaceAnalyzer, NoFaceError

    with pytest.raises(NoFaceError, match="no face in 18 of 24 frames"):
        list(FaceAnalyzer("mesh", segment=False).iter_track(read_video(files / "mostly_faceless.mp4")))
    some = [f if i != 5 else np.zeros_like(f) for i, f in enumerate(read_video(files / "driving.mp4", max_frames=12))]
    with caplog.at_level("WARNING", logger="vivid"):
        list(FaceAnalyzer("mesh", segment=False).iter_track(some))
    assert "found in 11 of 12 frames" in caplog.text


# -- the Python API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from vivid import VividPipeline

    return VividPipeline.tiny()


def test_pipeline_refuses_bad_driving_frames_before_any_work(tiny, astronaut, monkeypatch):
    def untouched(*args, **kwargs):
        raise AssertionError("the reference was analysed before the driving frames were checked")

    monkeypatch.setattr(tiny, "prepare_reference", untouched)
    frame = np.ascontiguousarray(astronaut[::2, ::2])
    cases = [
        ([frame, frame, frame[:200]], "driving frame 2 is 256x200 px but the first is 256x256"),
        ([], "the driving video has no frames"),
        (iter([]), "the driving video has no frames"),
        ([frame.astype(np.float32)], "float values from 0 to 255; float images must be in [0, 1]"),
        ([frame / 255.0 - 0.5], "float images must be in [0, 1]"),
        (frame, "the driving frames are one image"),
        ("clip.mp4", "file name"),
    ]
    for frames, needle in cases:
        with pytest.raises(InputError, match=re.escape(needle)):
            tiny(astronaut, frames, steps=1, window=4, overlap=1)
    with pytest.raises(InputError, match=re.escape("float images must be in [0, 1]")):  # the reference too
        to_rgb(astronaut.astype(np.float32) * 2 / 255, "reference")
    assert to_rgb(astronaut / 255.0).rgb.dtype == np.uint8  # floats in [0, 1] are fine


def test_pipeline_checks_options_with_the_clis_messages(tiny, astronaut, files, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "prepare_reference", lambda *a: pytest.fail("work began before the options were checked"))
    with pytest.raises(OptionError) as api:
        tiny(astronaut, [astronaut] * 3, window=8, overlap=30)
    cli = one_refusal(vivid("animate", files / "portrait.png", files / "driving.mp4", "-o", tmp_path / "o.mp4",
                            "--engine", "diffusion", "--weights", "tiny", "--window", "8", "--overlap", "30"))
    assert cli == f"vivid: error: --{api.value}"  # the same check, the flag spelt as a flag
    for bad in (dict(steps=0), dict(guidance=float("nan")), dict(seed=-2), dict(window=33), dict(cyclic=False, wrap=True)):
        with pytest.raises(OptionError):
            tiny(astronaut, [astronaut] * 3, **bad)


def test_corrupt_and_mismatched_saved_weights_are_one_line_naming_the_file(tiny, tmp_path):
    from vivid import VividPipeline

    tiny.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "vae" / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(WeightsError, match=r"vae/diffusion_pytorch_model.safetensors: not a complete .*cut short"):
        VividPipeline.from_pretrained(tmp_path / "model")
    weights.write_bytes((tmp_path / "model" / "pose_guider" / "diffusion_pytorch_model.safetensors").read_bytes())
    with pytest.raises(WeightsError) as info:
        VividPipeline.from_pretrained(tmp_path / "model")
    message = str(info.value)
    assert "vae" in message and ("does not fit" in message or "could not be loaded" in message)
    assert "\n" not in message
    weights.write_bytes(good)  # weights and config from different models: the file and the tensor are named
    config = tmp_path / "model" / "pose_guider" / "config.json"
    settings = json.loads(config.read_text())
    settings["block_out_channels"][-1] *= 2
    config.write_text(json.dumps(settings))
    with pytest.raises(WeightsError, match=r"pose_guider/diffusion_pytorch_model.safetensors does not fit its config: "
                                           r"\S+ is \(\d+\) in the file but \(\d+\) in pose_guider/config.json"):
        VividPipeline.from_pretrained(tmp_path / "model")


# -- big and odd inputs -----------------------------------------------------------------------------
def test_huge_images_are_refused_from_their_header(tmp_path):
    bomb = huge_png(tmp_path / "bomb.png", 30000, 30000)  # 900 MP declared in a file of a few hundred bytes
    t0 = time.monotonic()
    with pytest.raises(InputError, match="far too large"):
        load_image(bomb)
    with pytest.raises(InputError, match=r"9000x9000 px \(81 MP\); the limit is 50 MP"):
        load_image(huge_png(tmp_path / "big.png", 9000, 9000))
    assert time.monotonic() - t0 < 5  # nothing was decoded (a decoded 900 MP image alone would take minutes)


def test_a_folder_given_as_an_input_says_it_is_a_folder(files, tmp_path):
    one_refusal(vivid("animate", tmp_path, files / "driving.mp4", "-o", tmp_path / "o.mp4"), "is a folder")
    one_refusal(vivid("animate", files / "portrait.png", tmp_path, "-o", tmp_path / "o.mp4"), "is a folder")


def test_large_portraits_are_capped_so_the_video_plays_in_browsers(files, tmp_path, grace_hopper):
    big = tmp_path / "big.png"
    Image.fromarray(np.asarray(Image.fromarray(grace_hopper).resize((2400, 3000)))).save(big)
    result = vivid("animate", big, files / "driving.mp4", "-o", tmp_path / "capped.mp4", "--max-frames", "2")
    assert result.returncode == 0, result.stderr
    info = probe_video(tmp_path / "capped.mp4")
    assert max(info.width, info.height) == 2048
    assert any("2400x3000" in line and "--max-side 0" in line for line in lines(result.stderr))
    result = vivid("animate", big, files / "driving.mp4", "-o", tmp_path / "full.mp4", "--max-frames", "2",
                   "--max-side", "0")
    assert result.returncode == 0, result.stderr
    assert (probe_video(tmp_path / "full.mp4").width, probe_video(tmp_path / "full.mp4").height) == (2400, 3000)


# -- the terminal ------------------------------------------------------------------------------------
#: What libraries print on their own: Python warnings, diffusers/transformers notices and
#: loading bars, MediaPipe/TensorFlow Lite/absl start-up lines, FFmpeg's decoder messages.
CHATTER = re.compile(r"Warning\b|warnings\.warn|should be kept in float32|Loading pipeline components|"
                     r"TensorFlow Lite|absl|\.cc:\d+\]|\[h264|@ 0x[0-9a-f]+\]")


def _quiet_env() -> dict:
    """The environment without the switches that silence MediaPipe at its source (conftest sets
    one), so what reaches stderr is what our filtering lets through."""
    return {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}


def test_library_chatter_only_with_verbose(files, tmp_path):
    normal = vivid("animate", files / "portrait.png", files / "driving.mp4", "-o", tmp_path / "a.mp4",
                   "--max-frames", "6", env=_quiet_env())
    assert normal.returncode == 0, normal.stderr
    assert not CHATTER.search(normal.stderr), normal.stderr
    assert [line for line in lines(normal.stderr) if not line.startswith("animating")] == [
        f"wrote 6 frames to {tmp_path / 'a.mp4'}"]
    verbose = vivid("animate", files / "portrait.png", files / "driving.mp4", "-o", tmp_path / "b.mp4", "--verbose",
                    "--max-frames", "6", env=_quiet_env())
    assert verbose.returncode == 0, verbose.stderr
    assert CHATTER.search(verbose.stderr)  # e.g. MediaPipe's start-up lines
    assert "vivid: note: " in verbose.stderr


@pytest.mark.slow
def test_no_library_chatter_from_the_diffusion_engine(files, tmp_path):
    normal = vivid("animate", files / "portrait.png", files / "driving.mp4", "-o", tmp_path / "a.mp4",
                   "--engine", "diffusion", "--weights", "tiny", "--steps", "1", "--window", "8", "--max-frames", "6",
                   env=_quiet_env())
    assert normal.returncode == 0, normal.stderr
    assert not CHATTER.search(normal.stderr), normal.stderr
    assert lines(normal.stderr)[-1] == f"wrote 6 frames to {tmp_path / 'a.mp4'}"


def test_unanticipated_errors_are_one_line_with_the_debug_hint():
    from vivid.cli import describe_error
    from vivid.face import NoFaceError

    assert describe_error(NoFaceError("no face found in a.png")) == ("no face found in a.png", True)
    assert describe_error(OptionError("overlap must be ...", "overlap")) == ("--overlap must be ...", True)
    message, anticipated = describe_error(OSError(28, "No space left on device", "/data/out.mp4"))
    assert anticipated and message.startswith("no space left on the disk for /data/out.mp4: it needs more than the ")
    assert describe_error(FileNotFoundError("FaRL weights not found in /w; set VIVID_FARL_DIR")) == (
        "FaRL weights not found in /w; set VIVID_FARL_DIR", True)
    message, anticipated = describe_error(ZeroDivisionError("division by zero"))
    assert not anticipated and message == "ZeroDivisionError: division by zero"


def test_out_of_gpu_memory_is_a_refusal_naming_the_settings_to_lower(tiny, astronaut, monkeypatch):
    """Not a bug report: the user can fix it with a smaller window, size or dtype."""
    import torch

    from vivid.cli import describe_error

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tiny, "_predict_window", no_memory)
    ref = tiny.prepare_reference(astronaut)
    motion = tiny.prepare_driving([astronaut] * 4)
    with pytest.raises(MemoryError) as info:
        list(tiny.generate(ref, motion, window=4, overlap=1, steps=1))
    message, anticipated = describe_error(info.value)
    assert anticipated and message.startswith("out of GPU memory at 64 px with a 4-frame window")
    assert "a smaller window (e.g. 2 frames)" in message and "bf16" in message  # the tiny model runs in fp32


def test_gpu_memory_advice_only_suggests_settings_that_are_allowed_and_help():
    import torch

    from vivid.pipeline import gpu_memory_advice

    assert "e.g. 16 frames" in gpu_memory_advice(512, 24, 4, torch.float16)
    assert "e.g. 5 frames" in gpu_memory_advice(512, 6, 4, torch.float16)  # still more than the overlap
    assert "less overlap (now 4)" in gpu_memory_advice(512, 5, 4, torch.float16)  # the window cannot shrink
    assert "bf16" not in gpu_memory_advice(512, 24, 4, torch.bfloat16)  # already 16-bit
    assert gpu_memory_advice(512, 1, 0, torch.float16).endswith("use a GPU with more memory")


# -- no pickle of untrusted files -------------------------------------------------------------------
#: Training checkpoints (`accelerate`'s `save_state` / `load_state`, for --resume) are the user's
#: own files, written by the same run; accelerate 1.x reads their optimizer, scheduler and RNG
#: states with torch.load(weights_only=True) (model weights as safetensors). The one
#: weights_only=False path in accelerate is for objects registered with
#: `register_for_checkpointing`, which our code must never use (checked below).
ALLOWED = {("vivid", "training"): "load_state"}  # folder -> the one call allowed there, for the reason above
SCANNED = ["vivid", "train", "app.py", "bench", "tests"]


def _python_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
    return None


def unsafe_loads(source: str) -> list[str]:
    """Calls in `source` that could unpickle a file: pickle-family loaders, torch.load without
    weights_only=True, numpy loads with allow_pickle=True, diffusers/transformers loads with
    use_safetensors=False."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                                             "marshal") for n in names):
                found.append(f"line {node.lineno}: imports a pickle-family module")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
        where = f"line {node.lineno}: {ast.unparse(func)}"
        if name in ("read_pickle", "Unpickler", "load_checkpoint_in_model") or (name in ("load", "loads") and owner in (
                "pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve")):
            found.append(where)
        if name == "load" and owner == "torch" and _keyword(node, "weights_only") is not True:
            found.append(where + " without weights_only=True")
        if name == "load" and owner in ("np", "numpy") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(where + " with allow_pickle")
        if _keyword(node, "use_safetensors") is False or _keyword(node, "weights_only") is False:
            found.append(where + " that allows pickle")
        if name == "register_for_checkpointing":
            found.append(where + " (accelerate would unpickle it on resume)")
        if name == "load_state" and not node.args[1:] and not node.keywords and owner not in ("", "self"):
            found.append(where + " load_state: an accelerate checkpoint")
    for marker in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD=0"):
        if marker in source:
            found.append(f"sets {marker}")
    return found


def test_the_scan_finds_unsafe_loads():
    bad = ("import pickle\nimport torch, numpy as np\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\npd.read_pickle(p)\nM.from_pretrained(p, use_safetensors=False)\n"
           "acc.register_for_checkpointing(obj)\n")
    assert {int(p.split(":")[0].split()[1]) for p in unsafe_loads(bad)} == {1, 3, 4, 5, 6, 7, 8}  # every line but 2
    assert unsafe_loads("acc.load_state(folder)\n") == ["line 1: acc.load_state load_state: an accelerate checkpoint"]
    assert unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p, allow_pickle=False)\n") == []


def test_no_code_unpickles_a_file():
    problems, resumes = [], []
    for path in _python_files():
        if path.name == Path(__file__).name:
            continue  # this file names the unsafe calls in order to find them
        for problem in unsafe_loads(path.read_text(encoding="utf-8")):
            where = path.relative_to(ROOT)
            allowed = ALLOWED.get(where.parts[:2])
            (resumes if allowed and problem.endswith(f"{allowed}: an accelerate checkpoint") else problems).append(
                f"{where} {problem}")
    assert problems == []
    assert resumes, "the scan should see training's resume (accelerate load_state); has it moved?"


def test_torch_and_accelerate_refuse_pickled_code_by_default(tmp_path):
    """Libraries we call that read torch files (facer's FaRL weights, accelerate's resume)
    use torch.load's default or accelerate's `load`: both refuse pickled code with our pins."""
    import pickle
    import torch
    from accelerate.utils import load as accelerate_load

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    for load in (torch.load, accelerate_load):
        with pytest.raises(pickle.UnpicklingError):
            load(path)


# -- the app's callbacks ----------------------------------------------------------------------------
PREVIEW = "Preview (fast, no model weights)"


@pytest.fixture
def web(monkeypatch, tmp_path):
    """app.py with its results in a fresh folder."""
    import app

    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "app_out")
    return app


def run_job(app, reference, driving=None, template=None, engine=PREVIEW, steps=25, guidance=3.5, seed=0, window=24,
            overlap=4) -> list:
    return list(app.animate(str(reference), driving and str(driving), template and str(template), engine, False, False,
                            False, steps, guidance, seed, window, overlap, True))


def test_app_refuses_requests_beyond_its_limits_before_processing(web, files, tmp_path, monkeypatch):
    import gradio as gr

    def no_work(*args, **kwargs):
        raise AssertionError("processing began before the request was checked")

    monkeypatch.setattr("vivid.face.FaceAnalyzer.analyze", no_work)
    template = ROOT / "assets" / "templates" / "talking.npz"
    cases = [
        (dict(video_side=200), dict(driving=files / "driving.mp4"), "256x256; the limit is 200 px"),
        (dict(video_seconds=1.0), dict(driving=files / "driving.mp4"), "lasts 2 s; the limit is 1 s"),
        (dict(video_seconds=1.0), dict(template=template), "This motion template lasts"),
        (dict(), dict(driving=files / "cut20.mp4"), "cut short or damaged"),
    ]
    for limits, kwargs, needle in cases:
        monkeypatch.setattr(web, "LIMITS", web.AppLimits(**limits))
        with pytest.raises(gr.Error, match=re.escape(needle)):
            run_job(web, files / "portrait.png", **kwargs)
    monkeypatch.setattr(web, "LIMITS", web.AppLimits(image_pixels=1_000_000))
    for picture, needle in ((huge_png(tmp_path / "bomb.png", 40000, 40000), "far too large"),
                            (huge_png(tmp_path / "big.png", 2000, 2000), "(4 MP); the limit is 1 MP")):
        with pytest.raises(gr.Error, match=re.escape(needle)):
            run_job(web, picture, template=template)
        with pytest.raises(gr.Error, match=re.escape(needle)):
            web.parse_image(str(picture))
    assert "/" not in str(web.visitor_text(f"{tmp_path}/big.png is 2000x2000 px"))  # no server paths shown


def test_app_checks_diffusion_settings_like_the_cli(web, files, monkeypatch):
    import gradio as gr

    from vivid.model_host import ModelHost

    monkeypatch.setattr(web, "HOST", ModelHost("tiny"))
    monkeypatch.setattr(web.HOST, "pipeline", lambda: pytest.fail("the model loaded before the settings were checked"))
    template = ROOT / "assets" / "templates" / "talking.npz"
    for settings, needle in ((dict(seed=-5), "seed must be between 0"), (dict(steps=0), "steps must be between 1"),
                             (dict(guidance=float("nan")), "guidance must be between 0 and 30"),
                             (dict(window=40, overlap=4), "window must be between 1 and 32")):
        with pytest.raises(gr.Error, match=re.escape(needle)):
            run_job(web, files / "portrait.png", template=template, engine="Diffusion model", **settings)


def test_app_time_limit_stops_a_job_and_leaves_nothing(web, files, monkeypatch, tmp_path, astronaut):
    import threading

    import gradio as gr

    long_clip = make_clip(tmp_path / "long.mp4", [np.roll(astronaut[::2, ::2], i, axis=1) for i in range(400)], gop=50)
    monkeypatch.setattr(web, "LIMITS", web.AppLimits(job_seconds=0.5))
    with pytest.raises(gr.Error, match=r"longer than its time limit of 0\.5 s"):  # the CLI's words too (issue 20)
        run_job(web, files / "portrait.png", long_clip)
    assert not list((web.OUTPUT_DIR).rglob("*.mp4"))
    assert not any(t.name == "vivid-animate" for t in threading.enumerate())


def test_app_caps_the_output_size_and_warns_about_a_cut_short_clip(web, files, monkeypatch):
    shown = []
    monkeypatch.setattr(web.gr, "Warning", lambda message, *a, **k: shown.append(message))
    monkeypatch.setattr(web.gr, "Info", lambda message, *a, **k: shown.append(message))
    monkeypatch.setattr(web, "LIMITS", web.AppLimits(output_side=256))
    *_, last = run_job(web, files / "portrait.png", files / "cut70.mp4")
    info = probe_video(last[1])
    assert max(info.width, info.height) <= 256 and info.frames == len(list(read_video(files / "cut70.mp4")))
    assert any("cut short" in m and "of its 40 frames" in m for m in shown)
    assert any("so the video plays in browsers" in m for m in shown)


def test_gradio_never_opens_an_uploaded_portrait_itself(tmp_path):
    """Gradio's own preprocessing opens every image upload with PIL, which turns a bomb into an
    opaque error; the portrait inputs hand the path over unopened, so our header check speaks."""
    import gradio as gr
    from gradio.data_classes import ImageData

    import app

    bomb = huge_png(tmp_path / "bomb.png", 40000, 40000)
    images = [b for b in app.build().blocks.values() if isinstance(b, gr.Image) and b.type == "filepath"]
    assert len(images) == 5  # portraits on Animate, Edit, Live and Parsing, and Animate's driving photo
    for image in images:
        assert image.preprocess(ImageData(path=str(bomb), orig_name="bomb.png")) == str(bomb)


def test_requests_are_checked_on_arrival_before_they_join_the_queue(web, files, tmp_path, monkeypatch):
    monkeypatch.setattr(web, "LIMITS", web.AppLimits(video_seconds=1.0, image_pixels=1_000_000))
    args = dict(reference=str(huge_png(tmp_path / "bomb.png", 40000, 40000)), driving=str(files / "driving.mp4"),
                template=None, engine="Diffusion model", crop_only=False, absolute=False, want_side=False, steps=25,
                guidance=3.5, seed=-1, window=24, overlap=4, cyclic=True)
    answers = dict(zip(web.ANIMATE_INPUTS, web.check_request(**args)))
    refused = {name: a["message"] for name, a in answers.items() if not a["is_valid"]}
    assert set(refused) == {"reference", "driving", "seed"}
    assert "far too large" in refused["reference"] and "the limit is 1 s" in refused["driving"]
    assert "seed must be between 0" in refused["seed"] and str(tmp_path) not in str(refused)
    good = dict(args, reference=str(files / "portrait.png"), seed=0, engine=PREVIEW,
                template=str(ROOT / "assets" / "templates" / "talking.npz"))
    monkeypatch.setattr(web, "LIMITS", web.AppLimits())
    assert all(a["is_valid"] for a in web.check_request(**good))
