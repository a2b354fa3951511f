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


#: facer's download of the parser, standing in for the network (none here): in a process set
#: up as the CLI sets it up (`configure`), with a download function that prints as facer's
#: does (torch.hub's progress bar on stderr) plus a line on stdout, while another thread
#: writes to stderr (which must always get through).
DOWNLOAD = """
import sys, threading, urllib.error
sys.path.insert(0, "tests")
verbose, fail = sys.argv[1] == "verbose", sys.argv[2] == "fail"
from vivid.terminal import configure
configure(verbose=verbose)
import facer, facer.util, torch
from tqdm import tqdm
from farl_standins import StandInAligner, StandInParser
from vivid.face.farl_backend import FarlModels

def chatty_download(url, dst, **kwargs):
    print(f"stand-in fetching {url}")
    for _ in tqdm(range(3), desc="stand-in progress"):
        pass
    other = threading.Thread(target=lambda: sys.stderr.write("another thread speaks\\n"))
    other.start()
    other.join()
    if fail:
        raise urllib.error.URLError("no network here")
    torch.jit.save(torch.jit.script(StandInParser()), dst)

facer.util.download_url_to_file = chatty_download
facer.face_aligner = lambda name, device, **kw: StandInAligner()  # the parser's download is the one heard
try:
    models = FarlModels.load(download=True)
except FileNotFoundError as exc:
    sys.stderr.write(f"refused: {exc}\\n")
    sys.exit(3)
print("loaded", type(models.parser).__name__)
"""


def _download(tmp_path, *args: str):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "VIVID_FARL_DIR"}
    env["TORCH_HOME"] = str(tmp_path / "torch")  # an empty hub cache: facer downloads
    return subprocess.run([sys.executable, "-c", DOWNLOAD, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("verbose", [False, True], ids=["normal", "verbose"])
def test_facers_download_chatter_only_with_verbose(tmp_path, verbose):
    done = _download(tmp_path, "verbose" if verbose else "normal", "succeed")
    assert done.returncode == 0, done.stderr
    assert "loaded FaRLFaceParser" in done.stdout
    assert "another thread speaks" in done.stderr  # other threads are never silenced
    chatter = ["Downloading: " in done.stderr, "stand-in progress" in done.stderr, "stand-in fetching" in done.stdout]
    assert chatter == [verbose] * 3, (done.stdout, done.stderr)
    assert "face_parsing.farl.lapa" in done.stderr if verbose else "http" not in done.stdout + done.stderr


def test_a_failed_farl_download_is_one_line_saying_where_the_files_go(tmp_path):
    done = _download(tmp_path, "normal", "fail")
    assert done.returncode == 3, done.stderr
    assert "failed downloading" not in done.stderr and "stand-in progress" not in done.stderr
    refusal = [line for line in done.stderr.splitlines() if line.startswith("refused: ")]
    assert len(refusal) == 1, done.stderr
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in refusal[0] and "no network here" in refusal[0]
    assert farl_backend.PARSER_FILES["lapa/448"] in refusal[0] and "VIVID_FARL_DIR" in refusal[0]
