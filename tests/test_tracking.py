"""Tracking a driving video: one result per frame, gaps filled, jitter smoothed."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from vivid.face import NoFaceError, TrackConfig
from vivid.media import read_video


def moving_clip(face: np.ndarray, n: int) -> list[np.ndarray]:
    """The face drifting slowly to the right, like a small head motion."""
    return [np.roll(face, 2 * i, axis=1) for i in range(n)]


def test_track_keeps_length_through_blank_frames(analyzer, astronaut):
    frames = moving_clip(astronaut, 20)
    blank = np.zeros_like(astronaut)
    frames[5] = frames[6] = blank  # a short dropout: filled from neighbours
    for i in range(10, 18):  # a long one: reported as missing
        frames[i] = blank
    out = analyzer.track(frames, TrackConfig(max_gap=3, max_missing=0.6))
    assert len(out) == len(frames)
    assert out[5] is not None and out[5].interpolated and out[6].interpolated
    assert not out[4].interpolated and not out[7].interpolated
    # Filled frames sit between their neighbours.
    assert out[4].iris[0, 0] < out[5].iris[0, 0] < out[6].iris[0, 0] < out[7].iris[0, 0]
    assert all(out[i] is None for i in range(10, 18))
    assert out[18] is not None and out[19] is not None


def test_mostly_faceless_video_is_an_error(analyzer, astronaut):
    frames = [astronaut] * 3 + [np.zeros_like(astronaut)] * 7
    with pytest.raises(NoFaceError, match="7 of 10 frames"):
        analyzer.track(frames)


def test_track_follows_motion(analyzer, astronaut):
    out = analyzer.track(moving_clip(astronaut, 12), TrackConfig(smoothing=None))
    xs = [a.iris.mean(axis=0)[0] for a in out]
    assert np.allclose(np.diff(xs), 2, atol=1.0)


def jitter(tracked) -> float:
    pts = np.stack([a.landmarks for a in tracked])
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=2).mean())


def test_smoothing_reduces_jitter_on_a_still_noisy_clip(analyzer, astronaut):
    rng = np.random.default_rng(0)
    frames = [np.clip(astronaut + rng.normal(0, 6, astronaut.shape), 0, 255).astype(np.uint8) for _ in range(30)]
    raw = analyzer.track(frames, TrackConfig(smoothing=None))
    smooth = analyzer.track(frames)
    assert jitter(smooth[5:]) < 0.6 * jitter(raw[5:])


def test_real_clip(analyzer):
    path = shared_file("driving", "d0.mp4")
    frames = list(read_video(path, max_frames=60))
    out = analyzer.track(frames, TrackConfig(fps=25))
    assert len(out) == 60 and all(a is not None and not a.interpolated for a in out)
    # The man's face stays in the middle part of the 512x512 frame.
    for a in out:
        x0, y0, x1, y1 = a.box
        assert 64 < (x0 + x1) / 2 < 448 and 32 < (y0 + y1) / 2 < 448
        assert a.iris[0, 0] < a.iris[1, 0]


def test_landmarks_alone_are_the_meshes_of_the_full_analyses(analyzer, astronaut):
    """The preview's landmarks-only tracking skips the parsing maps, not the gap filling,
    smoothing or the refusal of a mostly faceless clip."""
    frames = moving_clip(astronaut, 14)
    frames[4] = np.zeros_like(astronaut)  # filled from its neighbours
    for i in range(9, 14):
        frames[i] = np.zeros_like(astronaut)  # too long a gap: no face
    config = TrackConfig(max_gap=2, max_missing=0.5)
    full = analyzer.track(frames, config)
    alone = list(analyzer.iter_landmarks(frames, config))
    assert [a is None for a in alone] == [f is None for f in full] == [False] * 9 + [True] * 5
    for points, analysis in zip(alone[:9], full[:9]):
        np.testing.assert_array_equal(points.astype(np.float32), analysis.landmarks)
    with pytest.raises(NoFaceError, match="of 10 frames"):
        list(analyzer.iter_landmarks(frames[:3] + [np.zeros_like(astronaut)] * 7))
