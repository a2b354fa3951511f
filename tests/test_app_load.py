"""The public app under load, through `gradio_client` as visitors reach it: several visitors
at once with a few jobs each, and requests beyond the limits at the same time. Every job
completes or is refused with a message, the server stays up, and its resident memory comes
back to its baseline. (Small inputs, so it fits the default run; bench/app_load.py measures
a larger load.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.app_load import AppServer, LoadRun, MemorySampler, load, make_inputs, request, settled_rss  # noqa: E402

pytest.importorskip("gradio_client")
if not Path("/proc/self/status").is_file():
    pytest.skip("resident memory is read from /proc (Linux)", allow_module_level=True)

#: How far above its baseline the server's resident memory may settle after the load, MB.
#: (A leak of one set of face models per job, as there was, adds ~40 MB per job.)
MEMORY_SLACK_MB = 64
CLIENTS, JOBS = 3, 2


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A server, a warm-up job (the face models load), then the load; what happened and the
    memory figures."""
    tmp = tmp_path_factory.mktemp("app_load")
    inputs = make_inputs(tmp / "inputs", side=256, frames=24, upload_mb=1, video_seconds=10)
    with AppServer(tmp, VIVID_MAX_UPLOAD_MB="1", VIVID_MAX_VIDEO_SECONDS="10", VIVID_MAX_IMAGE_PIXELS="4000000") as server:
        warm = LoadRun()
        request(server.url, "job", inputs.portrait, inputs.clip, warm)
        assert warm.outcomes[0].completed, warm.outcomes[0].message
        baseline = settled_rss(server)
        with MemorySampler(server) as memory:
            run = load(server.url, inputs, CLIENTS, JOBS)
        after = settled_rss(server)
        alive = server.alive()
        upload_status = _raw_upload(server.url, inputs.too_big)
        still_serving = LoadRun()
        request(server.url, "job", inputs.portrait, inputs.clip, still_serving)
    return dict(run=run, baseline=baseline, peak=memory.peak, after=after, alive=alive, upload_status=upload_status,
                still_serving=still_serving.outcomes[0])


def _raw_upload(url: str, path: Path) -> int:
    """POST a file to Gradio's upload route directly (a client that skips the size check)."""
    import httpx

    with open(path, "rb") as f:
        response = httpx.post(url + "gradio_api/upload", files={"files": (path.name, f)}, timeout=60)
    return response.status_code


def test_every_job_of_every_visitor_completes(loaded):
    jobs = [o for o in loaded["run"].outcomes if o.kind == "job"]
    assert len(jobs) == CLIENTS * JOBS
    for job in jobs:
        assert job.completed and job.message.startswith("done: 24 frames"), job.message
    assert loaded["alive"] and loaded["still_serving"].completed


def test_requests_beyond_the_limits_are_refused_politely(loaded):
    refused = {o.kind: o for o in loaded["run"].outcomes if o.kind != "job"}
    assert set(refused) == {"video too long", "image bomb", "upload too large"}
    assert not any(o.completed for o in refused.values())
    for kind in ("video too long", "image bomb"):  # answered on arrival, not after waiting in the queue
        assert refused[kind].message.startswith("ValidationError: 1 parameter(s) failed validation"), refused[kind]
    assert "too_long.mp4 lasts 13 s; the limit is 10 s" in refused["video too long"].message
    assert "bomb.png is far too large" in refused["image bomb"].message and "the limit is 4 MP" in refused["image bomb"].message
    assert "exceeds the maximum file size" in refused["upload too large"].message  # the client knows the limit
    assert loaded["upload_status"] == 413  # and the server enforces it for clients that do not
    for o in refused.values():
        assert "Traceback" not in o.message and "has raised an exception" not in o.message


def test_memory_returns_to_its_baseline(loaded):
    print(f"resident memory: baseline {loaded['baseline']:.0f} MB, peak {loaded['peak']:.0f} MB, "
          f"after {loaded['after']:.0f} MB")
    assert loaded["peak"] > loaded["baseline"]  # the sampler saw the jobs run
    assert loaded["after"] - loaded["baseline"] < MEMORY_SLACK_MB


@pytest.mark.slow
def test_a_crowd_mixing_diffusion_preview_and_cancels_ends_every_job(tmp_path):
    """Issue 32: visitors at once mixing preview and diffusion jobs (the tiny random model) and a
    cancel storm: every job finishes, is refused with a message or is cancelled, none hangs;
    the diffusion model works for one job at a time and a waiting visitor is shown its place;
    memory returns to its baseline. (bench/app_crowd.py measures 8 visitors.)"""
    from bench.app_crowd import DIFFUSION, PREVIEW, CrowdJob, diffusion_overlaps, measure

    inputs = make_inputs(tmp_path / "inputs", side=256, frames=24, upload_mb=1, video_seconds=10)
    plan = [[CrowdJob(0, PREVIEW, None)], [CrowdJob(1, DIFFUSION, None)], [CrowdJob(2, DIFFUSION, None)],
            [CrowdJob(3, DIFFUSION, 0.5, "button"), CrowdJob(3, PREVIEW, 0.3, "leaving"),
             CrowdJob(3, DIFFUSION, 1.5, "leaving")]]
    result = measure(tmp_path / "server", inputs, plan)
    assert result.alive
    for job in result.jobs:
        assert job.outcome in ("done", "cancelled") or (job.outcome == "refused" and job.message), vars(job)
        if job.cancel_after is None:
            assert job.outcome == "done", vars(job)
    assert result.count("hung") == 0
    assert diffusion_overlaps(result.jobs) == 0
    assert result.queue_shown
    assert result.after_mb - result.baseline_mb < MEMORY_SLACK_MB, (result.baseline_mb, result.after_mb)
