"""A driving clip's maps are drawn in the animation's crop only: the same maps as drawn over the
whole frame and then cropped, and the same motion track for the diffusion engine as before."""
from __future__ import annotations

import numpy as np

from conftest import shared_file
from vivid.face import FaceAnalyzer, TrackConfig, render_motion_map
from vivid.face.crop import SquareBox
from vivid.face.mesh_parsing import analysis_from_mesh
from vivid.face.motion_track import MotionTrack
from vivid.media import read_video


def wide_frames(n: int = 12) -> list[np.ndarray]:
    """A talking head shrunk into a 1280x720 frame (its face a few % of the frame)."""
    import cv2

    out = []
    for f in read_video(shared_file("driving", "d0.mp4"), max_frames=n):
        canvas = np.full((720, 1280, 3), 110, np.uint8)
        canvas[200:456, 700:956] = cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


def test_maps_in_the_crop_equal_the_whole_frame_maps_cropped(analyzer):
    for analysis in analyzer.iter_track(wide_frames(6), TrackConfig(fps=25)):
        points = analysis.landmarks
        x0, y0 = np.floor(points.min(axis=0)).astype(int) - 40
        side = int(np.ceil(np.ptp(points, axis=0).max())) + 80
        in_crop = analysis_from_mesh(points - (x0, y0), (side, side))  # drawn in the crop alone
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        np.testing.assert_array_equal(in_crop.labels, analysis.labels[window])
        np.testing.assert_array_equal(render_motion_map(in_crop), render_motion_map(analysis)[window])


def test_the_diffusion_engines_track_draws_nothing_per_frame_and_is_unchanged(analyzer, monkeypatch):
    """From the mesh alone (no full-frame parsing map per frame), the track, its crop and its
    motion maps are those made from the full analyses."""
    import vivid.face.analyzer as analyzer_module

    frames = wide_frames()
    before = MotionTrack.from_analyses(analyzer.iter_track(frames, TrackConfig(fps=25)), 128)
    drawn = []
    real = analyzer_module.analysis_from_mesh
    monkeypatch.setattr(analyzer_module, "analysis_from_mesh", lambda *a, **k: drawn.append(a[1]) or real(*a, **k))
    now = MotionTrack.from_frames(analyzer, frames, 128, fps=25)
    assert drawn == []  # no frame-sized map was drawn
    assert now.square == before.square and now.missing == before.missing
    np.testing.assert_array_equal(np.stack(now.points), np.stack(before.points))
    np.testing.assert_array_equal(now.motion_maps(range(len(frames))), before.motion_maps(range(len(frames))))
