"""Every path that works with the mesh parser works with FaRL (stand-in models, see
tests/farl_standins.py): the diffusion engine, the preview engine, the CLI; and FaRL's
driving maps are interchangeable with the mesh's (same labels, palette, eye drawing,
smoothing, random scaling)."""
from __future__ import annotations

import os
import json
from pathlib import Path

import numpy as np
import pytest

from vivid import VividPipeline
from vivid.face import FaceAnalyzer, TrackConfig, label_mask, random_scale, render_motion_map
from vivid.face.farl_backend import FarlModels
from vivid.face.labels import EXPRESSION_PARTS, EYELID_COLOR, IRIS_COLOR, MOTION_PALETTE
from vivid.media import write_video

FAST = dict(window=4, overlap=1, steps=2)


@pytest.fixture(scope="module")
def farl(farl_models):
    return FaceAnalyzer("farl", farl_models=farl_models, segment=False)


@pytest.fixture(scope="module")
def small(astronaut):
    """The astronaut's head and shoulders at 256 px (facer's warps cost ~1 s a frame at 512 px)."""
    import cv2

    return cv2.resize(astronaut[:320, 60:380], (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def moving(small):
    """The astronaut's head moving right by 2 px a frame."""
    return [np.roll(small, 2 * i, axis=1) for i in range(6)]


def test_diffusion_engine_runs_on_farl_maps(farl, small, moving):
    pipe = VividPipeline.tiny(seed=0)
    pipe.analyzer = farl
    ref = pipe.prepare_reference(small)
    assert ref.points.shape == (478, 2)  # the mesh, whatever parses the face
    motion = pipe.prepare_driving(moving, reference=ref)
    assert motion.parser == "farl" and len(motion) == len(moving)
    frames = [e.frame for e in pipe.generate(ref, motion, **FAST) if e.kind == "frame"]
    assert len(frames) == len(moving) and frames[0].shape == (64, 64, 3)
    # The maps come from FaRL's parse, not from mesh polygons.
    mesh_pipe = VividPipeline.tiny(seed=0)
    mesh_motion = mesh_pipe.prepare_driving(moving, reference=mesh_pipe.prepare_reference(small))
    assert not np.array_equal(motion.motion_maps([0]), mesh_motion.motion_maps([0]))


def test_farl_driving_maps_agree_with_the_mesh_maps(farl, analyzer, moving):
    """Same parts in the same places: each part's FaRL region overlaps the mesh's (the
    stand-in parser draws a generic face, so the agreement is rough but must be there)."""
    farl_track = farl.track(moving, TrackConfig(fps=25))
    mesh_track = analyzer.track(moving, TrackConfig(fps=25))
    for f, m in zip(farl_track, mesh_track):
        assert f.backend == "farl"
        assert np.allclose(f.landmarks, m.landmarks, atol=1e-3)  # one smoothed mesh for both
        for part in ("left_eye", "right_eye", "nose", "upper_lip", "lower_lip"):
            fa, ma = label_mask(f.labels, part), label_mask(m.labels, part)
            assert fa.any(), part
            ys, xs = np.nonzero(fa)
            my, mx = np.nonzero(ma)
            assert abs(xs.mean() - mx.mean()) < 0.08 * m.face_size and abs(ys.mean() - my.mean()) < 0.08 * m.face_size, part
        # Image-left stays image-left through the warp.
        assert f.iris[0, 0] < f.iris[1, 0]


def test_farl_maps_use_the_palette_and_eye_drawing(farl, astronaut):
    import cv2

    a = farl.track([astronaut], TrackConfig(fps=25))[0]  # full size: the parts must have room
    picture = render_motion_map(a)
    # Anti-aliased eyelid lines blend with what is under them; every other pixel is a palette colour.
    lines = np.zeros(a.labels.shape, np.uint8)
    for side in (0, 1):
        cv2.polylines(lines, [np.round(a.eye_contour(side)).astype(np.int32)], True, 1, 5)
    colours = {tuple(c) for c in picture[lines == 0]}
    allowed = {(0, 0, 0), IRIS_COLOR, *(MOTION_PALETTE[p] for p in EXPRESSION_PARTS)}
    assert colours <= allowed
    assert {MOTION_PALETTE[p] for p in ("left_eye", "right_eye", "nose", "upper_lip", "lower_lip")} <= colours
    assert (picture == EYELID_COLOR).all(axis=-1).any() and (picture == IRIS_COLOR).all(axis=-1).any()


def test_farl_maps_follow_the_smoothed_mesh(farl_models, small):
    """A jittering driver: FaRL's parts are moved to the smoothed landmarks, so the eye
    position in the maps shakes less than the raw frames do."""
    rng = np.random.default_rng(0)
    shifts = rng.integers(-2, 3, size=(10, 2))
    frames = [np.roll(small, tuple(s), axis=(0, 1)) for s in shifts]
    raw = FaceAnalyzer("farl", farl_models=farl_models, segment=False).track(frames, TrackConfig(fps=25, smoothing=None))
    smooth = FaceAnalyzer("farl", farl_models=farl_models, segment=False).track(frames, TrackConfig(fps=25))

    def shake(track):
        iris = np.array([a.iris[0] for a in track])
        return np.abs(np.diff(iris, 2, axis=0)).mean()

    assert shake(smooth) < 0.7 * shake(raw)


def test_random_scaling_applies_to_farl_analyses(farl, astronaut):
    a = farl.track([astronaut], TrackConfig(fps=25))[0]
    scaled = random_scale(a, seed=3)
    assert not np.array_equal(scaled.labels, a.labels)
    for part in ("left_eye", "nose"):
        ys, xs = np.nonzero(label_mask(a.labels, part))
        sy, sx = np.nonzero(label_mask(scaled.labels, part))
        # The face as a whole stays where it is: parts move by at most 30% of the face size.
        assert np.hypot(xs.mean() - sx.mean(), ys.mean() - sy.mean()) < 0.3 * a.face_size


def test_preview_engine_with_the_farl_analyzer(farl, small, moving):
    from vivid.preview import PreviewAnimator, PreviewConfig

    frames = list(PreviewAnimator(PreviewConfig(crop_only=True), analyzer=farl).stream(small, moving[:3]))
    assert len(frames) == 3 and frames[0].ndim == 3


def test_cli_with_the_farl_parser(farl_models, small, moving, tmp_path, monkeypatch):
    from PIL import Image

    from vivid.cli import main

    monkeypatch.setattr(FarlModels, "load", classmethod(lambda cls, **kw: farl_models))
    monkeypatch.setattr("vivid.native_log.filter_native_stderr", lambda: None)  # keep pytest's capture
    Image.fromarray(small).save(tmp_path / "ref.png")
    write_video(tmp_path / "drv.mp4", iter(moving), fps=25)
    out = tmp_path / "out.mp4"
    assert main(["animate", str(tmp_path / "ref.png"), str(tmp_path / "drv.mp4"), "-o", str(out), "--engine", "diffusion",
                 "--weights", "tiny", "--parser", "farl", "--steps", "1", "--window", "4", "--overlap", "1"]) == 0
    assert out.is_file()
    assert main(["parse", str(tmp_path / "ref.png"), "-o", str(tmp_path / "maps"), "--parser", "farl"]) == 0
    assert (tmp_path / "maps" / "motion_map.png").is_file()
    assert main(["parse", str(tmp_path / "drv.mp4"), "-o", str(tmp_path / "vmaps"), "--parser", "farl"]) == 0
    assert (tmp_path / "vmaps" / "motion_maps.mp4").is_file()


def test_auto_picks_farl_for_the_pipeline_when_weights_and_a_gpu_are_there(farl_models, small, moving, tmp_path, monkeypatch):
    from vivid.face import farl_backend

    monkeypatch.setenv("VIVID_FARL_DIR", str(tmp_path))
    for name in (farl_backend.PARSER_FILES["lapa/448"], farl_backend.ALIGNER_FILE):
        (tmp_path / name).write_bytes(b"stand-in")
    monkeypatch.setattr(FarlModels, "load", classmethod(lambda cls, **kw: farl_models))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # auto picks FaRL only where a GPU runs it
    pipe = VividPipeline.tiny(seed=0)
    pipe.register_to_config(face_backend="auto")
    frames = pipe(small, moving[:3], **FAST)
    assert pipe.analyzer.backend == "farl" and len(frames) == 3


@pytest.fixture
def farl_everywhere(farl_models, tmp_path, monkeypatch):
    """FaRL's weights "on disk" and a GPU "there": `FaceAnalyzer("auto")` picks FaRL (stand-ins),
    with the process's shared analysers made afresh."""
    from vivid.face import farl_backend, shared_analyzers

    monkeypatch.setenv("VIVID_FARL_DIR", str(tmp_path))
    for name in (farl_backend.PARSER_FILES["lapa/448"], farl_backend.ALIGNER_FILE):
        (tmp_path / name).write_bytes(b"stand-in")
    monkeypatch.setattr(FarlModels, "load", classmethod(lambda cls, **kw: farl_models))
    monkeypatch.setattr("vivid.face.analyzer._cuda_available", lambda: True)  # the model itself stays on the CPU
    monkeypatch.setattr(shared_analyzers, "_analyzers", {})
    assert FaceAnalyzer("auto", segment=False).backend == "farl"


@pytest.mark.parametrize("parser", ["mesh", "farl"])
def test_the_apps_diffusion_engine_draws_with_the_models_own_parser(parser, farl_everywhere, small, moving, tmp_path,
                                                                    monkeypatch):
    """A model trained on mesh maps is driven with mesh maps even where the app's "auto" would
    take FaRL (and one that says farl with FaRL); the Parsing tab shows that same parser."""
    from PIL import Image

    import app
    from vivid.model_host import ModelHost

    model = tmp_path / "model"
    VividPipeline.tiny(seed=0).save_pretrained(model)
    index = model / "model_index.json"
    old = json.loads(index.read_text())
    assert old["parser"] == "mesh"  # saved under the setting's one name
    index.write_text(json.dumps({**{k: v for k, v in old.items() if k != "parser"}, "face_backend": parser}))  # as before
    monkeypatch.setattr(app, "HOST", ModelHost(str(model)))
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    Image.fromarray(small).save(tmp_path / "ref.png")
    write_video(tmp_path / "drv.mp4", iter(moving), fps=25)
    *_, info = app.parse_image(str(tmp_path / "ref.png"))
    assert info.startswith(f"Parser: {parser}")
    updates = list(app.animate(str(tmp_path / "ref.png"), str(tmp_path / "drv.mp4"), None, app.DIFFUSION_ENGINE, True,
                               False, False, 1, 1.0, 0, 4, 1, True))
    assert updates[-1][3].startswith("done: 6 frames")
    pipe = app.HOST.pipeline()
    assert pipe.parser == parser and pipe.analyzer.backend == parser
    assert pipe.analyzer is app.HOST.analyzer()  # one analyser for the model and the Parsing tab


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/somewhere/th"}, {"XDG_CACHE_HOME": "/xdg"}])
def test_hub_folder_found_without_torch_is_torch_hubs(monkeypatch, env):
    import torch

    from vivid.face.farl_backend import default_hub_dir

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_hub_dir() == Path(torch.hub.get_dir())


def test_auto_without_farl_weights_does_not_import_torch(tmp_path):
    """The mesh is picked after a look at two file names: no 1.2 s torch import for it."""
    import subprocess
    import sys

    code = ("import sys; from vivid.face import FaceAnalyzer; a = FaceAnalyzer('auto', segment=False); "
            "print(a.backend, 'torch' in sys.modules)")
    env = {**os.environ, "VIVID_FARL_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["mesh", "False"], out.stderr[-1500:]
