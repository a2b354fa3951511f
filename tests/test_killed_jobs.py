"""Runs killed outright (SIGKILL: no clean-up code runs) mid-write (issue 32): the CLI while it
writes its video, a training run while it writes a checkpoint. The earlier output stays as it
was, nothing half-written is ever taken as a result (or by --resume), and the next run sweeps
what the killed one left. (prepare_data killed mid-clip: tests/test_prepare_data.py; the app:
tests/test_app_faults.py.)"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from test_reliability import make_clip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_when(proc: subprocess.Popen, condition, seconds: float = 600) -> bool:
    """SIGKILL `proc` (and its process group) as soon as `condition()` holds; whether it did."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return False


def test_cli_killed_while_writing_keeps_the_earlier_output_and_the_next_run_sweeps(tmp_path, grace_hopper, astronaut):
    Image.fromarray(grace_hopper).save(tmp_path / "portrait.png")
    clip = make_clip(tmp_path / "driving.mp4", [np.roll(astronaut[::2, ::2], i, axis=1) for i in range(300)], gop=50)
    out = tmp_path / "results" / "out.mp4"
    out.parent.mkdir()
    out.write_bytes(os.urandom(4096))
    earlier = digest(out)
    args = [sys.executable, "-m", "vivid", "animate", str(tmp_path / "portrait.png"), str(clip), "-o", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = lambda: [p for p in out.parent.iterdir() if p.name.endswith(".partial.mp4")]  # noqa: E731
    assert kill_when(proc, lambda: any(p.stat().st_size > 0 for p in partial())), "the run ended before the kill"
    assert digest(out) == earlier and partial()  # the kill left its partial file, and the earlier output

    again = subprocess.run([*args[:-3], str(tmp_path / "driving.mp4"), "--max-frames", "10", "-o", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"] and digest(out) != earlier  # swept, replaced


@pytest.mark.slow
def test_cli_killed_while_loading_the_diffusion_model_leaves_nothing_the_next_run_keeps(tmp_path, grace_hopper,
                                                                                      astronaut):
    """Killed while it converts the model's weights for streaming from disk (its offload
    folder exists): the next run removes the dead process's folder and animates."""
    from vivid import VividPipeline

    weights = tmp_path / "weights"
    VividPipeline.tiny(seed=0).save_pretrained(weights)
    Image.fromarray(grace_hopper).save(tmp_path / "portrait.png")
    make_clip(tmp_path / "driving.mp4", [np.roll(astronaut[::2, ::2], i, axis=1) for i in range(12)])
    out, offload = tmp_path / "out.mp4", tmp_path / "offload"
    args = [sys.executable, "-m", "vivid", "animate", str(tmp_path / "portrait.png"), str(tmp_path / "driving.mp4"),
            "-o", str(out), "--engine", "diffusion", "--weights", str(weights), "--disk-offload", "--steps", "1",
            "--window", "8", "--overlap", "2"]
    env = {**os.environ, "VIVID_OFFLOAD_DIR": str(offload)}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    assert kill_when(proc, lambda: offload.is_dir() and any(offload.iterdir())), "the model loaded before the kill"
    dead = list(offload.iterdir())
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.is_file() and not any(p.exists() for p in dead)  # the killed run's folder is gone
    assert not any(offload.iterdir())  # and the finished run removed its own


@pytest.mark.slow
def test_training_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(data, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train" / "train.py"), "--stage", "1", "--tiny", "--data", str(data),
            "--output", str(run), "--batch-size", "2", "--set", "num_workers=0", "--set", "val_samples=2",
            "--val-every", "100", "--save-every", "2", "--max-steps", "6"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    unfinished = run / "checkpoints" / ".step-4.tmp"
    assert kill_when(proc, unfinished.is_dir), "the run wrote step 4 before it could be killed"
    assert (run / "checkpoints" / "step-2" / "training_state.json").is_file()
    model = {p.relative_to(run).as_posix(): digest(p) for p in (run / "model").rglob("*") if p.is_file()}

    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "(step 2)" in resumed.stderr  # not the unfinished step 4
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not any(n.startswith(".") for n in names) and "step-6" in names
    assert model  # the model exported at step 2 was complete while the kill happened


def test_a_restarted_server_sweeps_what_dead_processes_left_and_nothing_else(tmp_path):
    """What `sweep_dead_jobs` removes at start: the unfinished jobs of processes that are gone,
    including one that had this process's PID before (a restarted container's app is often
    PID 1 again), and the partial files beside the finished results of dead processes; it keeps
    finished results, living processes' jobs and this process's own."""
    from vivid.job_folders import sweep_dead_jobs
    from vivid.paths import PROCESS_STARTED, host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, me = host_tag(), os.getpid()

    def job(owner: int, name: str, *files: str, old: bool = False) -> Path:
        folder = tmp_path / f"animate_{host}-{owner}_{name}"
        folder.mkdir()
        for f in files:
            (folder / f).write_bytes(b"x")
        if old:
            for p in [*folder.iterdir(), folder]:
                os.utime(p, (PROCESS_STARTED - 100, PROCESS_STARTED - 100))
        return folder

    partial = lambda owner: f".animation.mp4.{host}-{owner}-0123abcd.partial.mp4"  # noqa: E731
    killed = job(gone.pid, "killed", partial(gone.pid))
    finished = job(gone.pid, "finished", "animation.mp4", partial(gone.pid))
    same_pid_before = job(me, "before", partial(me), old=True)
    mine_now = job(me, "now", partial(me))
    living = job(1, "living", partial(1))
    assert sweep_dead_jobs(tmp_path) == 2
    assert not killed.exists() and not same_pid_before.exists()
    assert [p.name for p in finished.iterdir()] == ["animation.mp4"]
    assert mine_now.exists() and living.exists() and len(list(living.iterdir())) == 1
