"""The app when its machine misbehaves (issue 32), as a real server process: killed with
SIGKILL while writing a video or while loading the diffusion model, it serves again at once
after a restart, with the killed job's half-written files swept and earlier results intact;
on a full disk (a real small filesystem) a visitor is told so in one line with the figures,
other visitors are still served, and the space is given back."""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from small_disk import fill, free_kb, listing, small_disk

sys.path.insert(0, str(ROOT))
from bench.app_load import AppServer, LoadRun, make_inputs, request  # noqa: E402

pytest.importorskip("gradio_client")
DIFFUSION = "Diffusion model"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def results(folder: Path) -> dict[str, str]:
    """Every finished result under the app's output folder, with its checksum."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted((folder / "vivid_app").glob("*/*.mp4"))}


def hidden(folder: Path) -> list[Path]:
    """Partial files and scratch folders in the app's job folders."""
    return [p for p in (folder / "vivid_app").glob("*/.*")]


def submit(url: str, inputs, engine: str = "Preview (fast, no model weights)", steps: int = 2):
    """A visitor's Animate, left running (the server may be killed under it)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.submit(handle_file(str(inputs.portrait)), handle_file(str(inputs.clip)), None, engine, False, False,
                         False, steps, 3.5, 0, 8, 2, True, api_name="/animate")


def wait_for(condition, seconds: float = 240.0, every: float = 0.005) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def completes(server: AppServer, inputs) -> str:
    run = LoadRun()
    request(server.url, "job", inputs.portrait, inputs.clip, run)
    assert run.outcomes[0].completed, run.outcomes[0].message
    return run.outcomes[0].message


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("fault_inputs"), side=256, frames=24)


@pytest.fixture(scope="module")
def long_inputs(tmp_path_factory):
    """A driving clip long enough that a kill lands while its video is written."""
    return make_inputs(tmp_path_factory.mktemp("fault_long"), side=256, frames=240)


@pytest.mark.slow
def test_app_killed_while_writing_a_video_restarts_serving_with_the_half_written_file_swept(
        tmp_path, inputs, long_inputs):
    server = AppServer(tmp_path)
    first_start = server.start_seconds
    completes(server, inputs)
    earlier = results(tmp_path)
    submit(server.url, long_inputs)
    writing = wait_for(lambda: any(p.name.endswith(".partial.mp4") for p in hidden(tmp_path)))
    server.kill()
    assert writing, "the job ended before the server could be killed mid-video"
    assert hidden(tmp_path)  # what the kill left

    with AppServer(tmp_path) as again:
        assert again.start_seconds < first_start + 30  # nothing to wait for: it serves at once
        assert hidden(tmp_path) == [] and results(tmp_path) == earlier  # swept; the earlier result intact
        assert len(list((tmp_path / "vivid_app").iterdir())) == 1  # the killed job's folder is gone
        completes(again, inputs)


@pytest.mark.slow
def test_app_killed_while_loading_the_diffusion_model_restarts_serving(tmp_path, inputs):
    from vivid import VividPipeline

    weights = tmp_path / "weights"
    VividPipeline.tiny(seed=0).save_pretrained(weights)
    offload = tmp_path / "offload"
    env = {"VIVID_OFFLOAD_DIR": str(offload)}
    server = AppServer(tmp_path, "--weights", str(weights), "--disk-offload", **env)
    submit(server.url, inputs, DIFFUSION)
    loading = wait_for(lambda: offload.is_dir() and any(offload.iterdir()))  # weights being converted for streaming
    server.kill()
    assert loading, "the model loaded before the server could be killed"

    with AppServer(tmp_path, "--weights", str(weights), "--disk-offload", **env) as again:
        assert not any(offload.iterdir())  # the killed server's converted weights are swept at start
        assert hidden(tmp_path) == []
        job = submit(again.url, inputs, DIFFUSION)
        assert job.result(timeout=600)[3].startswith("done")


def test_app_on_a_full_disk_says_so_keeps_serving_and_gives_the_space_back(tmp_path, inputs):
    with small_disk(4096) as disk:
        with AppServer(tmp_path, TMPDIR=str(disk)) as server:  # results on the small disk, uploads elsewhere
            completes(server, inputs)
            earlier = results(disk)
            filler = fill(disk, 48)
            free = free_kb(disk)
            before = listing(disk)
            full = LoadRun()
            request(server.url, "job", inputs.portrait, inputs.clip, full)
            message = full.outcomes[0].message
            assert not full.outcomes[0].completed
            assert "The server's disk is full: the result needs" in message and " KB" in message, message
            assert "Traceback" not in message and "/" not in message.split("disk is full")[1]  # no server paths
            assert listing(disk) == before and free_kb(disk) == free  # nothing left behind
            assert server.alive()
            filler.unlink()
            completes(server, inputs)  # served again once there is room
            assert all(results(disk)[name] == value for name, value in earlier.items())
