"""Data preparation: videos -> prepared clips, rejections with reasons, the reader, reruns and shards."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, shared_file
from vivid.face import SquareBox, crop_image
from vivid.face.mesh_backend import MeshRunner
from vivid.media import write_video
from vivid.training.clip_maker import PrepareConfig
from vivid.training.clips import DataError, PreparedClip, read_index
from vivid.training.prepare import Source, find_sources, in_shard, parse_shard, prepare, rebuild_index, video_id
from vivid.training.shots import face_pieces, shot_starts, split_evenly
from vivid.training.video_frames import resample_indices

SCRIPT = ROOT / "train" / "prepare_data.py"
RES = 128
CONFIG = PrepareConfig(resolution=RES, fps=25.0)
CLI_SETTINGS = ["--resolution", str(RES), "--fps", "25", "--quiet"]


# -- synthetic inputs ---------------------------------------------------------------------
def moving(face: np.ndarray, n: int) -> list[np.ndarray]:
    """The portrait drifting right by 2 px a frame, like a slow head motion."""
    return [np.roll(face, 2 * i, axis=1) for i in range(n)]


def with_second_face(img: np.ndarray) -> np.ndarray:
    """The astronaut with a smaller copy of her face just beside her own, inside her crop."""
    out = img.copy()
    small = cv2.resize(img[50:200, 160:290], None, fx=0.8, fy=0.8)
    out[60 : 60 + small.shape[0], 290 : 290 + small.shape[1]] = small
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut) -> Path:
    folder = tmp_path_factory.mktemp("videos") / "videos"
    (folder / "bad").mkdir(parents=True)
    (folder / "talking").mkdir()  # prepared last (sources go in name order)
    write_video(folder / "talking" / "astronaut30.mp4", moving(astronaut, 40), 30)  # 40 frames at 30 fps: 34 at 25
    write_video(folder / "bad" / "short.mp4", moving(astronaut, 12), 25)
    rng = np.random.default_rng(0)
    write_video(folder / "bad" / "noface.mp4", [rng.integers(0, 255, (256, 256, 3), np.uint8)] * 30, 25)
    write_video(folder / "bad" / "two.mp4", moving(with_second_face(astronaut), 30), 25)
    (folder / "bad" / "broken.mp4").write_bytes(b"this is not a video" * 100)
    (folder / "notes.txt").write_text("not a video: ignored in folders")
    return folder


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory) -> Path:
    """One uninterrupted run over the synthetic inputs."""
    data = tmp_path_factory.mktemp("clean") / "data"
    prepare([inputs], data, CONFIG, progress=False)
    return data


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- the run: what is kept and what is rejected -------------------------------------------
def test_index_and_rejections(clean, inputs):
    index = read_index(clean)
    assert [e["source"] for e in index] == [str(inputs / "talking" / "astronaut30.mp4")]
    entry = index[0]
    assert entry["frames"] == 34 and entry["fps"] == 25.0 and entry["resolution"] == RES
    assert entry["path"] == f"clips/{entry['id']}" and Path(entry["folder"]).is_dir()
    reasons = {Path(r["source"]).name: r["reason"] for r in lines(clean / "rejected.jsonl")}
    assert reasons == {"short.mp4": "too short", "noface.mp4": "no face", "two.mp4": "several faces",
                       "broken.mp4": "unreadable"}
    assert len(list((clean / "sources").glob("*.json"))) == 5  # notes.txt is not a video


def test_small_face_is_rejected(inputs, tmp_path):
    config = PrepareConfig(resolution=RES, min_face_ratio=1.0)  # a face of at least 128 source px
    summary = prepare([inputs / "talking" / "astronaut30.mp4"], tmp_path / "data", config, progress=False)
    (rejected,) = lines(tmp_path / "data" / "rejected.jsonl")
    assert rejected["reason"] == "face too small" and "below 1 x 128 = 128 px" in rejected["detail"]
    assert summary.clips == 0 and summary.rejected == {"face too small": 1}


# -- the reader -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def astro_clip(clean) -> PreparedClip:
    return PreparedClip(read_index(clean)[0]["folder"])


def test_reader_round_trip(astro_clip, astronaut):
    clip = astro_clip
    assert len(clip) == 34 and clip.fps == 25.0 and clip.resolution == RES
    # 30 -> 25 fps by timestamp: clip frame k shows the source frame nearest k * 30 / 25.
    expected = [min(round(k * 1.2), 39) for k in range(34)]
    assert clip.source_frames.tolist() == expected
    square = SquareBox(*clip.square)
    source = moving(astronaut, 40)
    frames = clip.frames(range(len(clip)))
    assert frames.shape == (34, RES, RES, 3) and frames.dtype == np.uint8
    for k in (0, 17, 33):
        cropped = crop_image(source[clip.source_frames[k]], square, RES)
        # JPEG (q95) of an H.264 (crf 18) frame: small differences only
        assert np.abs(frames[k].astype(int) - cropped).mean() < 4
        assert np.array_equal(clip.frame(k), frames[k])
    assert clip.found.all() and clip.reference_frames.tolist() == list(range(0, 34, 8))


def test_landmarks_match_the_face_in_the_crop(astro_clip):
    clip = astro_clip
    with MeshRunner(max_faces=1) as runner:
        for k in (3, 20):
            (detected,) = runner.faces(clip.frame(k))
            error = np.linalg.norm(clip.landmarks[k] - detected, axis=1)
            assert np.median(error) < 1.5, f"frame {k}: landmarks {np.median(error):.2f} px from the face"
    assert clip.landmarks.dtype == np.float32 and clip.landmarks.shape == (34, 478, 2)


def test_person_masks_cover_the_face(astro_clip):
    clip = astro_clip
    for k in clip.reference_frames:
        mask = clip.person(k)
        assert mask.shape == (RES, RES) and mask.dtype == bool
        x, y = np.round(clip.landmarks[k]).astype(int).clip(0, RES - 1).T
        assert mask[y, x].mean() > 0.95
        assert 0.1 < mask.mean() < 0.9  # a person, not the whole crop
    with pytest.raises(KeyError, match="not a reference frame"):
        clip.person(1)
    with pytest.raises(IndexError):
        clip.frame(34)


def test_read_index_errors(clean, tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        read_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no index.jsonl"):
        read_index(tmp_path / "empty")
    (tmp_path / "empty" / "index.jsonl").write_text("")
    with pytest.raises(DataError, match="lists no clips"):
        read_index(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(clean, copy)
    (entry,) = lines(copy / "index.jsonl")
    shutil.rmtree(copy / entry["path"])
    with pytest.raises(DataError, match=f"index.jsonl:1: clip {entry['id']} points to .*missing"):
        read_index(copy)
    (copy / "index.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="index.jsonl:1: not a JSON line"):
        read_index(copy)
    # --reindex drops the record of the deleted clip, so the next run prepares that video again
    assert rebuild_index(copy).clips == 0 and not list((copy / "sources").glob("astronaut30-*.json"))


# -- reruns, kills and shards ---------------------------------------------------------------
def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def cli(monkeypatch, capsys):
    """train/prepare_data.py's main() in this process: (exit code, stdout, stderr)."""
    import importlib.util

    import vivid.native_log

    monkeypatch.setattr(vivid.native_log, "filter_native_stderr", lambda: None)  # keep pytest's capture
    spec = importlib.util.spec_from_file_location("prepare_data_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def run(*args: str) -> tuple[int, str, str]:
        code = script.main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def snapshot(data: Path) -> dict:
    """Everything a rerun must reproduce: index, rejections, and every clip's bytes."""
    clips = {p.name: ((p / "frames.bin").read_bytes(), dict(np.load(p / "clip.npz"))) for p in (data / "clips").iterdir()}
    return {"index": (data / "index.jsonl").read_text(), "rejected": (data / "rejected.jsonl").read_text(), "clips": clips}


def assert_same(a: dict, b: dict) -> None:
    assert a["index"] == b["index"] and a["rejected"] == b["rejected"]
    assert a["clips"].keys() == b["clips"].keys()
    for name, (frames, arrays) in a["clips"].items():
        assert frames == b["clips"][name][0], name
        for key, value in arrays.items():
            assert np.array_equal(value, b["clips"][name][1][key]), (name, key)


def start_and_kill_while_writing(data: Path, *args: str) -> list[int]:
    """Run the CLI and SIGKILL it as soon as a clip is being written (a temporary clip
    folder exists); returns the pids of its worker processes at that moment."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args, "-o", str(data), *CLI_SETTINGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # generous: the machine may be busy
    writing = False
    while not writing and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.003)
        writing = (data / "clips").is_dir() and any(p.name.startswith(".") for p in (data / "clips").iterdir())
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert writing, "the run ended before it could be killed mid-clip"
    return [int(pid) for pid in children]


def test_killed_run_then_rerun_equals_a_clean_run(inputs, clean, tmp_path):
    data = tmp_path / "data"
    start_and_kill_while_writing(data, str(inputs))
    assert len(list((data / "sources").glob("*.json"))) == 4  # the rejected videos were finished first
    visible = [p for p in (data / "clips").iterdir() if not p.name.startswith(".")]
    assert all((p / "clip.npz").is_file() for p in visible), "a visible clip folder must be complete"
    done = run_cli(str(inputs), "-o", str(data), *CLI_SETTINGS)
    assert done.returncode == 0, done.stderr
    assert "kept 1 clips" in done.stdout and "rejected 4" in done.stdout
    assert_same(snapshot(data), snapshot(clean))
    again = prepare([inputs], data, CONFIG, progress=False)  # nothing left to do
    assert (again.prepared, again.skipped) == (0, 5) and not list((data / "clips").glob(".*"))
    assert_same(snapshot(data), snapshot(clean))


def test_shards_are_disjoint_cover_everything_and_merge(inputs, clean, tmp_path, cli):
    keys = [f"vfhq/clip_{i:05d}.mp4" for i in range(2000)]
    owners = [[k for k in range(1, 4) if in_shard(Source(Path(key), key), (k, 3))] for key in keys]
    assert all(len(o) == 1 for o in owners)  # every video in exactly one shard
    assert min(sum(o == [k] for o in owners) for k in (1, 2, 3)) > 600  # and shares are even
    parts = [tmp_path / f"part{k}" for k in (1, 2)]
    for k, part in enumerate(parts, start=1):
        prepare([inputs], part, CONFIG, shard=(k, 2), progress=False)
    ids = [{p.name for p in (part / "sources").glob("*.json")} for part in parts]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == {p.name for p in (clean / "sources").glob("*.json")}
    merged = tmp_path / "merged"  # the README's merge: copy the shards' folders together, reindex
    for part in parts:
        shutil.copytree(part, merged, dirs_exist_ok=True)
    code, out, err = cli("--reindex", "-o", str(merged))
    assert code == 0 and "kept 1 clips" in out, err
    assert_same(snapshot(merged), snapshot(clean))


def test_settings_of_an_existing_data_folder_must_match(inputs, clean, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    code, _, err = cli(str(inputs), "-o", str(data), "--resolution", "256", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "prepared with resolution 128 (now 256)" in err


def test_cli_usage_errors(tmp_path, cli):
    for args, message in [
        (["nowhere.mp4", "-o", str(tmp_path / "d")], "nowhere.mp4: no such file or folder"),
        ([str(tmp_path), "-o", str(tmp_path / "d"), "--shard", "0/2"], "--shard must be K/N"),
        (["--reindex", "-o", str(tmp_path / "none")], "no such data folder"),
        (["-o", str(tmp_path / "d")], "give at least one video"),
    ]:
        code, _, err = cli(*args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert parse_shard("2/4") == (2, 4)


# -- pieces of the run ---------------------------------------------------------------------
def test_resampling_by_timestamp():
    t30 = [j / 30 for j in range(30)]
    assert resample_indices(t30, 25, 30) == [round(k * 1.2) for k in range(25)]  # nearest in time
    assert resample_indices([j / 25 for j in range(50)], 25, 25) == list(range(50))  # same rate: every frame
    assert resample_indices([j / 20 for j in range(4)], 40, 20) == [0, 0, 1, 1, 2, 2, 3, 3]  # doubled
    # a stretch with no frames (VFR, dropped frames): the nearest frame in time is repeated
    assert resample_indices([0.0, 0.04, 0.2, 0.24], 25, 25) == [0, 1, 1, 1, 2, 2, 3]
    assert resample_indices(t30, 0, 30) == list(range(30))  # fps 0 keeps the source rate


def test_pieces_split_at_gaps_cuts_and_length():
    present = [True] * 10 + [False] * 3 + [True] * 30
    assert face_pieces(present, [], 0, 0) == [(0, 10), (13, 43)]
    assert face_pieces(present, [25], 2, 0) == [(0, 10), (13, 23), (27, 43)]
    assert face_pieces(present, [25], 0, 0) == [(0, 10), (13, 25), (25, 43)]
    assert split_evenly(0, 100, 30) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    points = np.zeros((4, 3, 2))
    points[:, :, 0] = [0, 10, 20]
    points[3] += 30  # the face jumps by more than its size between frames 2 and 3
    assert shot_starts([0, 0.01, 0.9, 0.02], points, [True] * 4) == [2, 3]


def test_ids_are_stable_and_folder_safe(inputs):
    sources = find_sources([inputs, inputs / "talking" / "astronaut30.mp4"])  # the same file twice counts once
    assert [s.key for s in sources] == ["videos/bad/broken.mp4", "videos/bad/noface.mp4", "videos/bad/short.mp4",
                                        "videos/bad/two.mp4", "videos/talking/astronaut30.mp4"]
    assert video_id("videos/bad/two.mp4") == video_id("videos/bad/two.mp4") != video_id("other/bad/two.mp4")
    assert video_id("a b/ü?.mp4").startswith("a_b-") and "/" not in video_id("../x/.y.mp4")


def test_crops_shrunk_a_lot_are_averaged_not_aliased(astronaut):
    """Clips are cut with the pipeline's own crop, which averages pixels when it shrinks."""
    sampled = lambda img, sq, n: cv2.warpAffine(img, sq.matrix(n), (n, n), flags=cv2.INTER_LINEAR,  # noqa: E731
                                                borderMode=cv2.BORDER_REPLICATE)
    smooth = cv2.GaussianBlur(astronaut, (0, 0), 6)  # nothing to alias: both crops must agree
    square = SquareBox(250.0, 200.0, 400.0)
    assert np.abs(crop_image(smooth, square, 128).astype(int) - sampled(smooth, square, 128)).mean() < 1.0
    assert np.array_equal(crop_image(astronaut, square, 350), sampled(astronaut, square, 350))
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), np.uint8)  # shrunk 4x: averaged, not sampled
    big = SquareBox(400.0, 400.0, 512.0)
    assert crop_image(noise, big, 128).std() < 0.5 * sampled(noise, big, 128).std()


# -- real clips -----------------------------------------------------------------------------
def test_real_clips(tmp_path):
    videos = [shared_file("driving", name) for name in ("d3.mp4", "d12.mp4")]
    summary = prepare(videos, tmp_path / "data", PrepareConfig(resolution=RES, max_frames=40), progress=False)
    index = read_index(tmp_path / "data")
    assert summary.clips == 2 and [Path(e["source"]).name for e in index] == ["d12.mp4", "d3.mp4"]
    with MeshRunner(max_faces=1) as runner:
        for entry in index:
            clip = PreparedClip(entry["folder"])
            assert len(clip) == entry["frames"] and clip.found.mean() > 0.9
            k = len(clip) // 2
            (detected,) = runner.faces(clip.frame(k))
            assert np.median(np.linalg.norm(clip.landmarks[k] - detected, axis=1)) < 2.0
    d3 = PreparedClip(index[1]["folder"])
    assert len(d3) == 34 and d3.source_frames[-1] == 39  # 40 frames at 30 fps -> 34 at 25


def test_a_scene_cut_splits_the_video(tmp_path):
    from vivid.media import read_video

    a = list(read_video(shared_file("driving", "d0.mp4"), 40))  # both 512x512 at 25 fps
    b = list(read_video(shared_file("driving", "d12.mp4"), 40))
    write_video(tmp_path / "two_shots.mp4", a + b, 25)
    prepare([tmp_path / "two_shots.mp4"], tmp_path / "data", PrepareConfig(resolution=RES), progress=False)
    first, second = (PreparedClip(e["folder"]) for e in read_index(tmp_path / "data"))
    # two frames are left out on each side of the cut, while the tracker settles
    assert first.source_frames.tolist() == list(range(38)) and second.source_frames.tolist() == list(range(42, 80))
    assert abs(first.square[2] - second.square[2]) > 1 or abs(first.square[0] - second.square[0]) > 1  # own crops


@pytest.mark.slow
def test_workers_give_the_same_data_as_one_process(inputs, clean, tmp_path):
    data = tmp_path / "data"
    out = run_cli(str(inputs), "-o", str(data), "--workers", "2", *CLI_SETTINGS)
    assert out.returncode == 0, out.stderr
    assert_same(snapshot(data), snapshot(clean))


@pytest.mark.slow
def test_killing_the_parent_stops_its_workers(inputs, clean, tmp_path):
    data = tmp_path / "data"
    workers = start_and_kill_while_writing(data, str(inputs), "--workers", "2")
    assert workers
    time.sleep(1.0)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    assert not alive, f"workers {alive} outlived their parent"
    assert run_cli(str(inputs), "-o", str(data), *CLI_SETTINGS).returncode == 0
    assert_same(snapshot(data), snapshot(clean))
