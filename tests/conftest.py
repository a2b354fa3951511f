"""Shared fixtures: real faces (packaged with scikit-image/matplotlib, or ../shared/data)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parents[1]
# Tests run as a copy of the project without the shipped mini model (the CLI's and the app's
# refusals without weights stay testable); tests of the shipped model name its folder
# (vivid.models.shipped.PROJECT_MINI_MODEL_DIR) or monkeypatch MINI_MODEL_DIR. Subprocesses inherit it.
os.environ.setdefault("VIVID_SHIPPED_MODEL", str(ROOT / "tests" / "no-shipped-model"))

SHARED = ROOT.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (sample data lives in ../shared/data)")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall when the CPU is shared (two
    threads per process on two busy cores made tiny-model tests up to 10x slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def tiny_frames(pipe, scene) -> np.ndarray:
    """The frames `pipe` makes of `tiny_scene` with a short schedule (window 4, overlap 1, 2 steps)."""
    ref, motion = scene
    return np.stack([e.frame for e in pipe.generate(ref, motion, window=4, overlap=1, steps=2) if e.kind == "frame"])


def weights_in_memory(module) -> int:
    """Parameters that hold values (a network streamed from disk holds none between its calls)."""
    return sum(p.numel() for p in module.parameters() if not p.is_meta)


@pytest.fixture(scope="session")
def tiny_scene(analyzer, astronaut):
    """A tiny pipeline's prepared reference and an 8-frame driving motion (the astronaut moving)."""
    from vivid import VividPipeline

    pipe = VividPipeline.tiny()
    pipe.analyzer = analyzer
    driving = [np.roll(astronaut, 6 * i, axis=1) for i in range(8)]
    return pipe.prepare_reference(astronaut), pipe.prepare_driving(driving)


@pytest.fixture(scope="session")
def analyzer():
    from vivid.face import FaceAnalyzer

    a = FaceAnalyzer("mesh")
    yield a
    a.close()


@pytest.fixture(scope="session")
def astronaut_analysis(analyzer, astronaut):
    return analyzer.analyze(astronaut)


@pytest.fixture(scope="session")
def big_face(astronaut, astronaut_analysis):
    """The astronaut's face cropped and enlarged to 512 px, so small parts have many pixels."""
    from vivid.face import crop_analysis, crop_image, face_square

    square = face_square(astronaut_analysis.box)
    return crop_image(astronaut, square, 512), crop_analysis(astronaut_analysis, square, 512)


@pytest.fixture(scope="session")
def farl_models(tmp_path_factory):
    """Stand-ins of facer's FaRL parser and aligner (see tests/farl_standins.py)."""
    pytest.importorskip("facer")
    from farl_standins import standin_models

    return standin_models(tmp_path_factory.mktemp("farl"))


# -- prepared training data ---------------------------------------------------------------------
def talking(image: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """A head that moves: the picture shifted and slightly zoomed along a random path."""
    rng = np.random.default_rng(seed)
    path = np.cumsum(rng.normal(0, 2, size=(n, 2)), axis=0)
    h, w = image.shape[:2]
    frames = []
    for dx, dy in path:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), dx * 0.3, 1 + dy * 0.003)
        m[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT101))
    return frames


@pytest.fixture(scope="session")
def data(tmp_path_factory, astronaut, grace_hopper) -> Path:
    """Three prepared training clips at 64 px made from the packaged portraits."""
    from vivid.media import write_video
    from vivid.training import read_index

    root = tmp_path_factory.mktemp("training")
    videos = root / "videos"
    videos.mkdir()
    sources = [cv2.resize(astronaut[:320, 80:400], (256, 256)), cv2.resize(grace_hopper[:500, 50:550], (256, 256)),
               cv2.resize(astronaut[:320, 80:400][:, ::-1], (256, 256))]
    for i, image in enumerate(sources):
        write_video(videos / f"talk{i}.mp4", iter(talking(np.ascontiguousarray(image), 40, i)), fps=25)
    out = root / "data"
    done = subprocess.run([sys.executable, str(ROOT / "train" / "prepare_data.py"), str(videos), "-o", str(out),
                           "--resolution", "64", "--min-frames", "16", "--reference-every", "4", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(read_index(out)) == 3
    return out
