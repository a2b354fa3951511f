"""Issue 20: one animation job and one set of engines for the CLI, the app and evaluate.

The same job through the command line and through the app gives the same frames; a stop
from another thread ends a preview and a diffusion job within a second; the time limit
reads the same everywhere; the shipped model is the diffusion engine's default, with the
sampling settings it recommends; the Parsing tab takes motion templates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from conftest import ROOT
from test_cli import make_clip
from vivid.animation import AnimationJob, AnimationRequest, Cancelled, TimeLimitExceeded
from vivid.engines import DiffusionEngine, make_engine
from vivid.errors import OptionError, flag_message
from vivid.face import MotionTemplate
from vivid.media import probe_video, read_video
from vivid.model_host import ModelHost, load_pipeline
from vivid.models.shipped import model_available, resolve_weights
from vivid.options import AnimateOptions, choose_engine
from vivid.sampling import Sampling

PREVIEW, DIFFUSION = app.PREVIEW_ENGINE, app.DIFFUSION_ENGINE


def vivid(*args) -> subprocess.CompletedProcess:
    """The command line in its own process, with torch on one thread as in this one (conftest):
    sums split over threads round differently."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vivid", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut, grace_hopper):
    """A portrait, a short talking clip with sound, and a long one (far from done in a second)."""
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(grace_hopper).save(folder / "portrait.png")
    small = np.ascontiguousarray(astronaut[::2, ::2])
    make_clip(folder / "short.mp4", [np.roll(small, 3 * i, axis=1) for i in range(12)], fps=12, audio_seconds=1.0)
    make_clip(folder / "long.mp4", [np.roll(small, i % 40, axis=1) for i in range(600)], fps=25)
    return folder


@pytest.fixture
def web(monkeypatch, tmp_path):
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "app_out")
    monkeypatch.setattr(app, "HOST", ModelHost())  # a fresh host: nothing loaded yet
    return app


@pytest.fixture
def no_shipped_model(monkeypatch, tmp_path):
    import vivid.models.shipped as shipped

    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", tmp_path / "no-mini")


@pytest.fixture(scope="module")
def mini_folder(tmp_path_factory):
    """A stand-in for assets/mini: the tiny model saved as a folder, recommending 3 steps,
    guidance 2 and the Euler scheduler."""
    from vivid import VividPipeline

    folder = tmp_path_factory.mktemp("assets") / "mini"
    pipe = VividPipeline.tiny()
    pipe.register_to_config(sampling_defaults={"steps": 3, "guidance": 2.0, "scheduler": "EulerDiscreteScheduler"})
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture
def shipped(monkeypatch, mini_folder):
    import vivid.models.shipped as shipped

    monkeypatch.setattr(shipped, "MINI_MODEL_DIR", mini_folder)
    return mini_folder


# -- one job, every front end ----------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["preview", "diffusion"])
def test_the_cli_and_the_app_make_the_same_frames(engine, inputs, web, monkeypatch, tmp_path):
    monkeypatch.setattr(web, "HOST", ModelHost("tiny"))
    settings = dict(steps=2, guidance=3.5, seed=0, window=4, overlap=1)
    flags = ["--engine", "diffusion", "--weights", "tiny"] + [f"--{k}={v}" for k, v in settings.items()] \
        if engine == "diffusion" else []
    cli_out = tmp_path / "cli.mp4"
    result = vivid("animate", inputs / "portrait.png", inputs / "short.mp4", "-o", cli_out, *flags)
    assert result.returncode == 0, result.stderr
    updates = list(web.animate(str(inputs / "portrait.png"), str(inputs / "short.mp4"), None,
                               PREVIEW if engine == "preview" else DIFFUSION, False, False, False,
                               settings["steps"], settings["guidance"], settings["seed"], settings["window"],
                               settings["overlap"], True))
    app_out = updates[-1][1]
    cli_frames, app_frames = list(read_video(cli_out)), list(read_video(app_out))
    assert len(cli_frames) == len(app_frames) == 12
    for a, b in zip(cli_frames, app_frames):
        np.testing.assert_array_equal(a, b)
    assert probe_video(cli_out).has_audio and probe_video(app_out).has_audio


def test_the_cli_writes_a_side_by_side_video_like_the_app(inputs, tmp_path):
    out, side = tmp_path / "out.mp4", tmp_path / "side.mp4"
    result = vivid("animate", inputs / "portrait.png", inputs / "short.mp4", "-o", out, "--side-by-side", side)
    assert result.returncode == 0, result.stderr
    info = probe_video(side)
    assert info.frames == 12 and info.height == 384 and info.width > 2.5 * info.height and info.has_audio
    assert vivid("animate", inputs / "portrait.png", inputs / "short.mp4", "-o", out, "--side-by-side",
                 out).returncode == 2  # one file cannot be both


# -- stop and time limit -----------------------------------------------------------------------------
def _stop_midway(job: AnimationJob, started: threading.Event, engine=None) -> tuple[BaseException | None, float]:
    """Run `job` (with `engine`) in this thread, stop it from another once `started` is set;
    (error, seconds from the stop to the job's end)."""
    asked: list[float] = []

    def stopper() -> None:
        started.wait(60)
        asked.append(time.monotonic())
        job.stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    error = None
    try:
        job.run(engine)
    except BaseException as exc:  # what the job ended with
        error = exc
    ended = time.monotonic()
    thread.join()
    return error, ended - asked[0]


def test_a_stop_from_another_thread_ends_a_preview_job_within_a_second(inputs, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    started = threading.Event()
    job = AnimationJob(AnimationRequest(inputs / "portrait.png", inputs / "long.mp4", out),
                       on_event=lambda e: getattr(e, "done", 0) >= 5 and started.set())
    error, took = _stop_midway(job, started)
    assert isinstance(error, Cancelled) and took < 1.0
    assert out.read_bytes() == b"an earlier result" and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_stop_from_another_thread_ends_a_diffusion_job_within_a_second(inputs, tmp_path):
    from vivid import VividPipeline

    out = tmp_path / "out.mp4"
    options = AnimateOptions(engine="diffusion", weights="tiny", steps=500, window=4, overlap=1, max_frames=8)
    started, steps = threading.Event(), []

    def seen(event) -> None:
        if getattr(event, "stage", "") == "denoising":
            steps.append(event.done)
            started.set()

    job = AnimationJob(AnimationRequest(inputs / "portrait.png", inputs / "long.mp4", out, options), on_event=seen)
    engine = DiffusionEngine(VividPipeline.tiny(), Sampling(steps=500, window=4, overlap=1))
    error, took = _stop_midway(job, started, engine)
    assert isinstance(error, Cancelled) and took < 1.0 and len(steps) < 500
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_time_limit_reads_the_same_in_the_cli_and_the_app(inputs, web, monkeypatch, tmp_path):
    said = str(TimeLimitExceeded(0.5))
    assert said.startswith("the animation ran longer than its time limit of 0.5 s")
    result = vivid("animate", inputs / "portrait.png", inputs / "long.mp4", "-o", tmp_path / "o.mp4",
                   "--time-limit", "0.5")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].split("\r")[-1] == f"vivid: error: {said}"
    assert not (tmp_path / "o.mp4").exists()
    monkeypatch.setattr(web, "LIMITS", web.AppLimits(job_seconds=0.5))
    with pytest.raises(gr.Error) as info:
        list(web.animate(str(inputs / "portrait.png"), str(inputs / "long.mp4"), None, PREVIEW, False, False, False,
                         25, 3.5, 0, 24, 4, True))
    assert info.value.message == said


def test_refusals_read_the_same_in_the_cli_the_app_and_python(inputs, web, no_shipped_model):
    """No model: the app, the options and the command line say it with the same words (the
    command line spells the option as its flag)."""
    with pytest.raises(OptionError) as python:
        AnimateOptions(engine="diffusion").check()
    cli = vivid("animate", inputs / "portrait.png", inputs / "short.mp4", "-o", inputs / "o.mp4", "--engine",
                "diffusion")
    assert cli.stderr.strip() == f"vivid: error: {flag_message(python.value)}" and "needs --weights" in cli.stderr
    assert web.HOST.weights is None
    with pytest.raises(gr.Error) as shown:
        list(web.animate(str(inputs / "portrait.png"), str(inputs / "short.mp4"), None, DIFFUSION, False, False, False,
                         25, 3.5, 0, 24, 4, True))
    assert shown.value.message == str(python.value) and "not installed" in shown.value.message


# -- the shipped model ---------------------------------------------------------------------------------
def test_without_a_shipped_model_the_diffusion_engine_needs_weights(no_shipped_model):
    assert not model_available(None) and model_available("tiny") and choose_engine("auto", None) == "preview"
    with pytest.raises(OptionError, match="needs weights"):
        resolve_weights(None)
    with pytest.raises(OptionError, match="shipped model .*mini.* is not installed"):
        resolve_weights("mini")
    assert ModelHost().sampling_defaults.steps == 25


def test_the_shipped_model_is_the_default_with_its_own_sampling_settings(shipped, tmp_path):
    assert model_available(None) and choose_engine("auto", None) == "diffusion"
    assert resolve_weights(None) == resolve_weights("mini") == resolve_weights("VividPortraits-mini") == str(shipped)
    options = AnimateOptions(engine="diffusion").check()
    assert options.weights == str(shipped) and options.steps is None
    recommended = ModelHost().sampling_defaults  # read from the folder, before the model loads
    assert (recommended.steps, recommended.guidance, recommended.scheduler) == (3, 2.0, "EulerDiscreteScheduler")
    engine = make_engine(options)
    assert type(engine.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    settings = engine.pipeline.check_inputs(engine.sampling)
    assert (settings.steps, settings.guidance) == (3, 2.0)  # what the model recommends ...
    given = make_engine(AnimateOptions(engine="diffusion", weights="mini", steps=2, guidance=1.0).check(),
                        host=engine.host)
    settings = given.pipeline.check_inputs(given.sampling)
    assert (settings.steps, settings.guidance) == (2, 1.0)  # ... unless the user says
    plain = load_pipeline("tiny")
    settings = plain.check_inputs(DiffusionEngine(plain).sampling)
    assert (settings.steps, settings.guidance) == (25, 3.5)  # a model that says nothing


def test_the_app_offers_the_diffusion_engine_with_the_shipped_model(shipped, web, monkeypatch):
    demo = web.build()
    radio = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "animate-engine")
    assert [c[0] for c in radio.choices] == [PREVIEW, DIFFUSION]
    values = {b.elem_id: b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) in
              ("animate-steps", "animate-guidance")}
    assert values == {"animate-steps": 3, "animate-guidance": 2.0}  # the model's recommendation


def test_the_app_offers_only_the_preview_without_a_model(no_shipped_model, web, monkeypatch):
    radio = next(b for b in web.build().blocks.values() if getattr(b, "elem_id", None) == "animate-engine")
    assert [c[0] for c in radio.choices] == [PREVIEW]


def test_a_bad_sampling_defaults_entry_is_refused_naming_the_file(tmp_path, mini_folder):
    import shutil

    from vivid.errors import WeightsError
    from vivid.models.saved import check_weights_folder

    folder = tmp_path / "model"
    shutil.copytree(mini_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["sampling_defaults"] = {"steps": 0}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=r"model_index.json: sampling_defaults steps must be between 1"):
        check_weights_folder(folder)


def test_evaluate_takes_the_shipped_model_by_default(shipped):
    from vivid.evaluation.engines import build_engines, diffusion_problem

    assert diffusion_problem(None) is None
    skipped: dict[str, str] = {}
    engines = build_engines(["still", "preview", "diffusion"], None, Sampling(), skipped)
    assert [e.name for e in engines] == ["still", "preview", "diffusion"] and not skipped
    assert engines[2].pipeline.check_inputs(engines[2].sampling).steps == 3


# -- the Parsing tab takes motion templates --------------------------------------------------------------
class NoProgress:
    def tqdm(self, iterable, **kwargs):
        return iterable


def test_the_parsing_tab_shows_a_templates_motion_maps_sound_and_faceless_frames(web, tmp_path):
    template = MotionTemplate.load(ROOT / "assets" / "templates" / "speech.npz")
    template.points[4:10] = np.nan  # frames 4-9 without a face
    path = template.save(tmp_path / "gappy.npz")
    video, info = web.parse_video(None, str(path), progress=NoProgress())
    maps = probe_video(video)
    assert (maps.frames, maps.fps, maps.has_audio) == (len(template), template.fps, True)
    assert "motion template" in info and "with sound" in info and "Frames without a face: 4-9" in info
    frames = list(read_video(video))
    assert frames[5].mean() < 0.5 < frames[20].mean()  # black where there is no face (H.264 leaves a trace)
    with pytest.raises(gr.Error, match="Upload a driving video or a motion template"):
        web.parse_video(None, None, progress=NoProgress())


def test_parse_takes_a_motion_template_on_the_command_line_too(tmp_path):
    template = MotionTemplate.load(ROOT / "assets" / "templates" / "speech.npz")
    template.points[4:10] = np.nan
    path = template.save(tmp_path / "gappy.npz")
    result = vivid("parse", path, "-o", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    maps = probe_video(tmp_path / "maps" / "motion_maps.mp4")
    assert (maps.frames, maps.has_audio) == (len(template), True)
    assert (tmp_path / "maps" / "frames_without_face.txt").read_text().split() == [str(i) for i in range(4, 10)]
