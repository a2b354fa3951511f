"""The evaluation harness: known answers on real faces, scores recomputable from the saved
videos, nothing half-written on failure, and the tiny diffusion model through the whole run."""
from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import shared_file
from vivid.evaluation import EvaluationConfig, FunctionEngine, evaluate, rescore
from vivid.evaluation.face_geometry import expression_features, identity_leakage, identity_shape, still_face
from vivid.evaluation.pixel_metrics import psnr
from vivid.evaluation.report import read_csv
from vivid.evaluation.videos import read_frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """An ordinary (lossy) H.264 mp4, like a user's clip."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def turning_head(image: np.ndarray, analysis, frames: int = 8, degrees: float = 24.0) -> list[np.ndarray]:
    """A real face whose head tilts steadily (the whole image turns about the face centre)."""
    x0, y0, x1, y1 = analysis.box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    h, w = image.shape[:2]
    return [cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, degrees * i / (frames - 1), 1.0), (w, h),
                           borderMode=cv2.BORDER_REFLECT) for i in range(frames)]


def copy_driver(reference, driving, fps):
    """The 'ground truth' engine: returns the driving frames themselves."""
    yield from driving


@pytest.fixture(scope="module")
def tilt_clip(tmp_path_factory, astronaut, astronaut_analysis) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "tilt.mp4", turning_head(astronaut, astronaut_analysis))


@pytest.fixture(scope="module")
def self_run(tmp_path_factory, tilt_clip) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    config = EvaluationConfig(output=out, self_clips=[tilt_clip], engines=("still", "preview", "diffusion"),
                              resolution=128)
    return evaluate(config, extra_engines=[FunctionEngine("truth", copy_driver)])


def clip_rows(folder: Path) -> dict[str, dict]:
    return {r["engine"]: r for r in read_csv(folder / "per_clip.csv")}


def test_ground_truth_engine_scores_perfectly(self_run):
    truth = clip_rows(self_run)["truth"]
    assert truth["psnr"] == math.inf
    assert truth["ssim"] == pytest.approx(1.0)
    assert truth["expression_error"] == 0.0 and truth["pose_error"] == 0.0
    assert truth["no_face_frames"] == 0 and truth["frames"] == 7  # frame 0 is the reference
    row = next(line for line in (self_run / "table.md").read_text().splitlines() if line.startswith("| truth "))
    assert "| 1.000 | inf |" in row


def test_still_frame_has_a_larger_pose_error_than_truth_and_preview_on_a_turning_head(self_run):
    rows = clip_rows(self_run)
    # The head turns 24 degrees over 8 frames: roll off by 3.4..24, about 14 on average (/3 angles).
    assert rows["still"]["pose_error"] > 3.0
    assert rows["still"]["roll_error"] == pytest.approx(13.7, abs=2.0)
    assert rows["preview"]["pose_error"] < 0.5 * rows["still"]["pose_error"]
    assert rows["preview"]["psnr"] > rows["still"]["psnr"]


def test_diffusion_without_weights_is_a_skipped_row_with_a_note(self_run):
    table = (self_run / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| diffusion "))
    from vivid.evaluation.report import COLUMNS

    assert row.count("skipped") == len(COLUMNS)
    assert "diffusion: skipped: the diffusion engine needs --weights" in table
    assert "diffusion" not in {r["engine"] for r in read_csv(self_run / "per_clip.csv")}


def test_saved_videos_are_what_was_scored(self_run):
    """Same frame count and size for real crops and every engine; an independent PSNR from
    the saved files matches the table's; `rescore` recomputes every per-clip value."""
    gt = list(read_frames(self_run / "videos" / "gt" / "tilt.mp4"))
    assert len(gt) == 7 and gt[0].shape == (128, 128, 3)
    for engine in ("still", "preview", "truth"):
        out = list(read_frames(self_run / "videos" / engine / "tilt.mp4"))
        assert len(out) == len(gt) and out[0].shape == gt[0].shape
        if engine == "preview":
            from skimage.metrics import peak_signal_noise_ratio

            independent = np.mean([peak_signal_noise_ratio(g, o, data_range=255) for g, o in zip(gt, out)])
            assert clip_rows(self_run)["preview"]["psnr"] == pytest.approx(independent, rel=1e-9)
    table = clip_rows(self_run)
    for row in rescore(self_run):
        saved = table[row["engine"]]
        for key, value in row.items():
            if isinstance(value, float):
                assert saved[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
    frames = read_csv(self_run / "per_frame.csv")
    assert len([r for r in frames if r["engine"] == "preview"]) == 7
    for name in ("table.md", "per_clip.csv", "per_frame.csv", "cases.json", "plots/table.png", "plots/tilt.png",
                 "videos/side_by_side/tilt.mp4", "videos/reference/tilt.png"):
        assert (self_run / name).is_file(), name
    assert (self_run / "table.md").read_text().splitlines()[3].startswith("python -m vivid evaluate --self ")


def test_identity_leakage_is_larger_when_the_output_copies_the_driver(astronaut, grace_hopper, analyzer):
    from vivid.preview import PreviewAnimator, PreviewConfig

    driver = turning_head(grace_hopper, analyzer.analyze(grace_hopper), frames=5, degrees=8)
    reference = identity_shape(still_face(astronaut))
    driver_shape = np.mean([identity_shape(still_face(f)) for f in driver], axis=0)

    def leakage(frames) -> float:
        return identity_leakage(reference, driver_shape, np.mean([identity_shape(still_face(f)) for f in frames], axis=0))

    kept = leakage(list(PreviewAnimator(PreviewConfig(relative=True)).stream(astronaut, driver)))
    copied = leakage(driver)
    assert copied == pytest.approx(1.0)
    assert kept < 0.3
    assert leakage([astronaut] * 3) == pytest.approx(0.0, abs=1e-9)


def test_mesh_measures_ignore_head_pose_and_size(astronaut):
    face = still_face(astronaut)
    h, w = astronaut.shape[:2]
    turned = still_face(cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.7), (w, h),
                                       borderMode=cv2.BORDER_REFLECT))
    assert turned.pose[2] - face.pose[2] == pytest.approx(-20, abs=2.0)  # roll follows the image
    assert np.abs(expression_features(turned) - expression_features(face)).mean() < 1.0  # % of face size


def test_failure_leaves_nothing_behind(tmp_path, tilt_clip):
    def broken(reference, driving, fps):
        for i, frame in enumerate(driving):
            if i == 3:
                raise RuntimeError("engine bug")
            yield frame

    out = tmp_path / "result"
    with pytest.raises(RuntimeError, match="engine bug"):
        evaluate(EvaluationConfig(output=out, self_clips=[tilt_clip], engines=("still",), resolution=64),
                 extra_engines=[FunctionEngine("broken", broken)])
    assert list(tmp_path.iterdir()) == []


def test_cli_one_line_errors_and_skipped_cases(tmp_path, tilt_clip, capsys):
    from PIL import Image

    from vivid.cli import main

    wall = tmp_path / "wall.png"  # a portrait with no face in it
    Image.fromarray(np.tile(np.linspace(60, 200, 256, dtype=np.uint8)[:, None, None], (1, 256, 3))).save(wall)
    assert main(["evaluate", "--cross", str(wall), "--driving", str(tilt_clip), "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no case could be evaluated" in err and "wall.png: no face found in the portrait" in err
    assert not (tmp_path / "a").exists()
    assert main(["evaluate", "--self", str(tilt_clip), "--engines", "still,warp", "-o", str(tmp_path / "b")]) == 2
    assert "unknown engine 'warp'" in capsys.readouterr().err
    assert main(["evaluate", "--cross", str(wall), "-o", str(tmp_path / "c")]) == 2
    assert "needs both --cross" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep me")
    assert main(["evaluate", "--self", str(tilt_clip), "-o", str(tmp_path / "d")]) == 2
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep me"


def test_skipped_case_is_listed_and_an_earlier_evaluation_is_replaced(tmp_path, tilt_clip, capsys):
    # capsys also keeps the CLI's native-stderr filter off pytest's own stderr
    from PIL import Image

    from vivid.cli import main

    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(wall)
    out = tmp_path / "run"
    out.mkdir()
    (out / "table.md").write_text("an earlier evaluation")
    (out / "old.csv").write_text("stale")
    assert main(["evaluate", "--self", str(tilt_clip), "--cross", str(wall), "--driving", str(tilt_clip),
                 "--engines", "still", "--frames", "3", "--resolution", "64", "--no-side-by-side", "-o", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "case wall_tilt skipped: wall.png: no face found in the portrait" in table
    assert not (out / "old.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "wall.png"]  # no temporary folders left


def test_tiny_diffusion_through_the_whole_harness(tmp_path, tilt_clip, astronaut, capsys):
    """CLI, cross- and self-reenactment, the tiny random model: its scores are real numbers
    (random output: low PSNR) and its faceless frames are counted."""
    from PIL import Image

    from vivid.cli import main

    portrait = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(portrait)
    out = tmp_path / "run"
    code = main(["evaluate", "--self", str(tilt_clip), "--cross", str(portrait), "--driving", str(tilt_clip),
                 "--engines", "still,diffusion", "--weights", "tiny", "--steps", "2", "--frames", "6",
                 "--resolution", "96", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = {(r["engine"], r["kind"]): r for r in read_csv(out / "per_clip.csv")}
    assert set(rows) == {("still", "self"), ("diffusion", "self"), ("still", "cross"), ("diffusion", "cross")}
    diffusion = rows["diffusion", "self"]
    assert 0 < diffusion["psnr"] < rows["still", "self"]["psnr"] and diffusion["frames"] == 5
    assert 0 <= diffusion["no_face_frames"] <= 5 and diffusion["fps"] > 0
    assert len(list(read_frames(out / "videos" / "diffusion" / "astronaut_tilt.mp4"))) == 6
    assert "| diffusion |" in (out / "table.md").read_text()
    assert "| diffusion |" in capsys.readouterr().out


def test_lpips_loads_a_given_backbone_and_says_what_it_needs_otherwise(tmp_path, astronaut):
    """The loading path, with a random AlexNet saved to disk (the real ImageNet weights are a
    download); the harness would show the real network's scores."""
    pytest.importorskip("lpips")
    import torch
    import torchvision

    from vivid.evaluation.learned_metrics import Lpips, MetricWeights, lpips_status

    missing = lpips_status(MetricWeights(lpips_backbone=tmp_path / "none.pth"))
    assert missing is not None and missing.cell == "n/a (needs AlexNet weights)"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pth")
    weights = MetricWeights(lpips_backbone=tmp_path / "alexnet.pth")
    assert lpips_status(weights) is None
    metric = Lpips(weights)
    crop = np.ascontiguousarray(astronaut[:128, 128:256])
    assert metric(crop, crop) == pytest.approx(0.0, abs=1e-6)
    assert metric(crop, np.ascontiguousarray(crop[::-1])) > 0


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["d0.mp4", "d3.mp4", "d9.mp4", "d12.mp4"])
def test_preview_beats_the_still_frame_on_real_clips(tmp_path, clip):
    """Over 200 frames (8 s): in a 60-frame stretch where the head barely moves (d9) the
    still frame's pose error (0.2 degrees) is below the measurement noise, and the
    comparison says nothing."""
    out = evaluate(EvaluationConfig(output=tmp_path / "run", self_clips=[shared_file("driving", clip)],
                                    engines=("still", "preview"), frames=200, resolution=256, side_by_side=False))
    rows = clip_rows(out)
    assert rows["preview"]["psnr"] > rows["still"]["psnr"]
    assert rows["preview"]["expression_error"] < rows["still"]["expression_error"]
    assert rows["preview"]["pose_error"] < rows["still"]["pose_error"]


def test_psnr_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255^2 / 192
    assert psnr(a, a) == math.inf
    assert psnr(a, b) == pytest.approx(10 * math.log10(192))


def test_open_mouth_psnr_sees_a_painted_mouth_that_whole_frame_psnr_hardly_notices(tmp_path):
    """Frames of a real talking clip whose open mouths are painted dark (what a warp shows):
    the whole-frame PSNR stays high, the open-mouth PSNR falls; closed mouths do not count."""
    from itertools import islice

    from vivid.evaluation.face_geometry import MeshTracker
    from vivid.evaluation.scoring import INNER_LIP, OPEN_MOUTH, Scorers, score_self
    from vivid.media import read_video

    clip = shared_file("driving", "d10.mp4")
    truth = list(islice(read_video(clip), 60, 72))
    painted, opened = [], []
    with MeshTracker(tracking=False) as tracker:
        for frame in truth:
            face = tracker(frame)
            out = frame.copy()
            if face is not None:
                cv2.fillPoly(out, [np.round(face.points[list(INNER_LIP), :2]).astype(np.int32)], (45, 14, 18))
                opened.append(expression_features(face)[4] >= OPEN_MOUTH)
            painted.append(out)
    assert sum(opened[1:]) >= 3, "the clip's frames should show an open mouth"
    gt = write_clip(tmp_path / "gt.mp4", truth)
    rows = score_self(gt, write_clip(tmp_path / "painted.mp4", painted), Scorers()).frames
    scored = [r for r in rows if "mouth_psnr" in r]
    assert 3 <= len(scored) <= sum(opened)
    assert np.mean([r["mouth_psnr"] for r in scored]) < 20 < np.mean([r["psnr"] for r in scored]) - 10
    same = score_self(gt, gt, Scorers()).summary
    assert same["open_mouth_frames"] == len(scored) and same["mouth_psnr"] == float("inf")


def test_gaze_follows_the_iris_not_the_head(astronaut, astronaut_analysis):
    """Turning the head leaves where the irises sit in their eyes unchanged; moving an iris
    along its eye by a tenth of the eye's width moves its gaze figure by 10."""
    from vivid.evaluation.face_geometry import FaceGeometry, gaze_features

    faces = [still_face(f) for f in turning_head(astronaut, astronaut_analysis, frames=3, degrees=20)]
    base = gaze_features(faces[0])
    assert max(np.abs(gaze_features(f) - base).max() for f in faces[1:]) < 3
    points = faces[0].points.copy()
    corners = points[133] - points[33]
    points[468:473] += 0.1 * corners  # the right iris, a tenth of its eye's width towards the inner corner
    moved = gaze_features(FaceGeometry(points))
    assert moved[0] - base[0] == pytest.approx(10, abs=0.5)
    assert np.abs(moved[1:] - base[1:]).max() < 0.5
