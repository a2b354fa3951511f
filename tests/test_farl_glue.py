"""The FaRL backend's glue, with stand-ins of facer's models (tests/farl_standins.py)."""
from __future__ import annotations

import numpy as np
import pytest

from vivid.face import FaceAnalyzer, label_mask
from vivid.face import farl_backend
from vivid.face.farl_backend import FarlModels
from vivid.face.labels import LABEL_INDEX


def test_farl_parts_land_on_the_real_face(farl_models, astronaut, astronaut_analysis):
    fa = FaceAnalyzer("farl", farl_models=farl_models)
    assert fa.backend == "farl"
    a = fa.analyze(astronaut)
    assert a.backend == "farl" and a.labels.shape == astronaut.shape[:2]
    mesh = astronaut_analysis
    # The eyes FaRL labels are where MediaPipe sees them, image-left first.
    for side, name in enumerate(("left_eye", "right_eye")):
        x, y = np.round(mesh.iris[side]).astype(int)
        assert (a.labels[y - 2 : y + 3, x - 2 : x + 3] == LABEL_INDEX[name]).any(), name
        assert np.linalg.norm(a.iris[side] - mesh.iris[side]) < 0.08 * mesh.face_size
    assert a.iris[0, 0] < a.iris[1, 0] and len(a.eye_points) == 16
    ys = {n: np.nonzero(label_mask(a.labels, n))[0].mean() for n in ("left_brow", "left_eye", "nose", "upper_lip", "lower_lip")}
    assert ys["left_brow"] < ys["left_eye"] < ys["nose"] < ys["upper_lip"] < ys["lower_lip"]
    # The fg mask still comes from selfie segmentation.
    assert a.foreground[mesh.foreground].mean() > 0.95


def test_auto_uses_farl_only_when_weights_are_on_disk_and_a_gpu_runs_it(monkeypatch, tmp_path, farl_models):
    import torch

    monkeypatch.setenv("VIVID_FARL_DIR", str(tmp_path))
    fa = FaceAnalyzer("auto")
    assert fa.backend == "mesh" and str(tmp_path) in fa.backend_note
    for name in (farl_backend.PARSER_FILES["lapa/448"], farl_backend.ALIGNER_FILE):
        (tmp_path / name).write_bytes(b"stand-in")
    loads = []
    monkeypatch.setattr(FarlModels, "load", classmethod(lambda cls, **kw: loads.append(kw) or farl_models))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fa = FaceAnalyzer("auto")
    assert fa.backend == "mesh" and "GPU" in fa.backend_note and not loads  # ~30 s a frame on a CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert FaceAnalyzer("auto").backend == "farl" and loads[-1]["device"] == "cuda"
    assert FaceAnalyzer("farl").backend == "farl"  # asked for by name, it runs anywhere


def test_missing_farl_weights_error_names_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("VIVID_FARL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        FarlModels.load(download=False)
