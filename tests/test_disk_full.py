"""A full disk (issue 32), on a real small filesystem each test mounts and removes: the CLI,
prepare_data and training stop with one line naming the output and the space it needs, the
earlier output of the same name is intact, and the space the failed write took is given back."""
from __future__ import annotations

import errno
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from small_disk import fill, free_kb, listing, small_disk
from test_reliability import lines, make_clip

#: The figure a disk-full line must carry.
SIZE = re.compile(r"\d+(\.\d+)? (KB|MB|GB)")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, grace_hopper, astronaut) -> Path:
    folder = tmp_path_factory.mktemp("disk_inputs")
    Image.fromarray(grace_hopper).save(folder / "portrait.png")
    make_clip(folder / "driving.mp4", [np.roll(astronaut[::2, ::2], 2 * i, axis=1) for i in range(40)])
    return folder


def vivid_animate(inputs: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vivid", "animate", str(inputs / "portrait.png"),
                           str(inputs / "driving.mp4"), "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def disk_full_line(stderr: str, prog: str, names: str) -> str:
    """The run's one error line: a plain refusal naming `names` with a size figure."""
    errors = [x for x in lines(stderr) if x.startswith(f"{prog}: error:")]
    assert len(errors) == 1, stderr[-2000:]
    line = errors[0]
    assert line.startswith(f"{prog}: error: no space left on the disk for "), stderr[-2000:]
    assert names in line and SIZE.search(line) and "Traceback" not in stderr and "Errno" not in line, line
    return line


@pytest.mark.parametrize("leave_kb", [16, 260], ids=["refused before work", "full while writing"])
def test_cli_on_a_full_disk_names_the_output_keeps_the_earlier_one_and_gives_space_back(inputs, leave_kb):
    with small_disk(2048) as disk:
        out = disk / "out.mp4"
        out.write_bytes(b"an earlier result" * 100)
        before = digest(out)
        fill(disk, leave_kb)
        free = free_kb(disk)
        result = vivid_animate(inputs, out)
        assert result.returncode == 2
        line = disk_full_line(result.stderr, "vivid", str(out))
        assert ("at least" in line) == (leave_kb == 16)  # the estimate before work; after, more than what was free
        assert digest(out) == before
        assert listing(disk) == ["filler.bin", "out.mp4"] and free_kb(disk) == free


# -- prepare_data -------------------------------------------------------------------------------
PREPARE = [sys.executable, str(ROOT / "train" / "prepare_data.py")]
PREPARE_SETTINGS = ["--resolution", "128", "--fps", "25", "--quiet"]


def test_prepare_data_on_a_full_disk_stops_non_zero_with_one_line_and_no_leftovers(tmp_path, astronaut):
    from vivid.media import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", [np.roll(astronaut, 2 * i, axis=1) for i in range(12)], 25)  # too short: rejected
    with small_disk(4096) as disk:
        data = disk / "data"
        first = subprocess.run([*PREPARE, str(videos), "-o", str(data), *PREPARE_SETTINGS], capture_output=True,
                               text=True, timeout=600)
        assert first.returncode == 0, first.stderr
        index = digest(data / "index.jsonl")
        before_files = listing(disk)
        write_video(videos / "b.mp4", [np.roll(astronaut, 2 * i, axis=1) for i in range(60)], 25)  # long enough: clips
        fill(disk, 24)
        free = free_kb(disk)
        result = subprocess.run([*PREPARE, str(videos), "-o", str(data), *PREPARE_SETTINGS], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode != 0
        disk_full_line(result.stderr, "prepare_data", str(data / "clips"))
        assert digest(data / "index.jsonl") == index
        assert listing(disk) == sorted(before_files + ["filler.bin"]) and free_kb(disk) == free


def test_prepare_data_exits_non_zero_when_videos_failed_for_another_reason_than_their_content(tmp_path, astronaut,
                                                                                              monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "train"))
    import prepare_data as script
    from vivid.media import write_video
    from vivid.training import prepare as prepare_module

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", [astronaut] * 12, 25)

    def unreadable(self, path, *args):  # the disk under the video fails (EIO), not the video itself
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(prepare_module.ClipMaker, "make", unreadable)
    code = script.main([str(videos), "-o", str(tmp_path / "data"), *PREPARE_SETTINGS])
    err = capsys.readouterr().err
    assert code == 1 and "1 videos failed for a reason other than their content" in err
    assert prepare_module.failure_cause(ValueError("not a video")) == "content"
    assert prepare_module.failure_cause(OSError(errno.ENOSPC, "full")) == "disk full"
    assert prepare_module.failure_cause(MemoryError()) == "system"


# -- training -----------------------------------------------------------------------------------
TRAIN = [sys.executable, str(ROOT / "train" / "train.py")]
QUICK = ["--stage", "1", "--tiny", "--batch-size", "2", "--set", "num_workers=0", "--set", "val_samples=2",
         "--set", "sample_frames=4", "--set", "sample_steps=1", "--val-every", "100", "--save-every", "2"]


@pytest.mark.slow
def test_training_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(data):
    with small_disk(64 * 1024) as disk:
        run = disk / "run"
        done = subprocess.run([*TRAIN, *QUICK, "--data", str(data), "--output", str(run), "--max-steps", "2"],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        checkpoint = {p.name: digest(p) for p in (run / "checkpoints" / "step-2").rglob("*") if p.is_file()}
        filler = fill(disk, 200)
        free = free_kb(disk)
        full = subprocess.run([*TRAIN, *QUICK, "--data", str(data), "--output", str(run), "--max-steps", "4",
                               "--resume"], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert full.returncode == 1
        line = disk_full_line(full.stderr, "train.py", str(run / "checkpoints" / "step-4"))
        assert "at least" in line and "--resume" in line  # the earlier checkpoint's size; what to do next
        assert {p.name: digest(p) for p in (run / "checkpoints" / "step-2").rglob("*") if p.is_file()} == checkpoint
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2"]
        assert free_kb(disk) >= free - 16  # a few metric lines at most
        filler.unlink()
        resumed = subprocess.run([*TRAIN, *QUICK, "--data", str(data), "--output", str(run), "--max-steps", "4",
                                  "--resume"], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert resumed.returncode == 0 and "resumed from" in resumed.stderr and "step 2" in resumed.stderr
        assert (run / "checkpoints" / "step-4" / "training_state.json").is_file()


def test_a_full_disk_anywhere_else_is_still_one_line_with_the_figures(tmp_path):
    """A write that no output check named (a log, a report, a library's own file) reaches the
    front ends as the system's "[Errno 28] ...: '/x/.tmp'" or a library's own error class; they
    still say it in one line naming the file and the free space."""
    from vivid.cli import describe_error
    from vivid.disk_space import as_disk_full

    raw = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    message, anticipated = describe_error(raw)
    assert anticipated and message.startswith(f"no space left on the disk for {tmp_path / 'metrics.jsonl'}: it needs "
                                              "more than the ") and SIZE.search(message)

    class LibraryError(Exception):  # as safetensors words it
        pass

    try:
        try:
            raise raw
        except OSError as inner:
            raise LibraryError("Error while serializing: I/O error: No space left on device (os error 28)") from inner
    except LibraryError as wrapped:
        assert "metrics.jsonl" in str(as_disk_full(wrapped))
    assert as_disk_full(LibraryError("I/O error: No space left on device (os error 28)")) is not None
    assert as_disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert as_disk_full(ValueError("no space for this face")) is None
