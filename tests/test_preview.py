"""The CPU preview engine on real faces: it follows the driving motion, eyes and mouth included."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from conftest import shared_file
from vivid.face import TrackConfig
from vivid.face.measures import eye_openness, mouth_openness
from vivid.media import read_video
from vivid.preview import PreviewAnimator, PreviewConfig, delaunay


@pytest.fixture(scope="module")
def animator():
    return PreviewAnimator()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def test_output_has_reference_size_and_follows_head_translation(animator, astronaut, analyzer):
    driving = [np.roll(astronaut, (0, 2 * i), axis=(0, 1)) for i in range(10)]
    out = list(animator.stream(astronaut, driving))
    assert len(out) == 10 and all(f.shape == astronaut.shape and f.dtype == np.uint8 for f in out)
    assert np.abs(out[0].astype(int) - astronaut.astype(int)).mean() < 1.0  # frame 0: no motion
    moved = analyzer.analyze(out[-1])
    still = analyzer.analyze(astronaut)
    assert (moved.iris.mean(axis=0)[0] - still.iris.mean(axis=0)[0]) == pytest.approx(18, abs=4)
    # The background far from the face is untouched.
    assert np.array_equal(out[-1][:, :60], astronaut[:, :60])


def test_crop_only_and_absolute_modes(astronaut, grace_hopper):
    crop = PreviewAnimator(PreviewConfig(size=256, crop_only=True))
    frames = list(crop.stream(astronaut, [grace_hopper] * 3))
    assert all(f.shape == (256, 256, 3) for f in frames)
    absolute = PreviewAnimator(PreviewConfig(relative=False))
    assert len(list(absolute.stream(astronaut, [grace_hopper] * 2))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["d0.mp4", "d9.mp4", "d10.mp4", "d12.mp4"])
def test_self_reenactment_beats_the_still_frame(animator, clip):
    frames = list(read_video(shared_file("driving", clip), max_frames=120))
    out = list(animator.stream(frames[0], frames))
    ours = [psnr(o, f) for o, f in zip(out[1:], frames[1:])]
    still = [psnr(frames[0], f) for f in frames[1:]]
    assert np.mean(ours) > np.mean(still) + 0.5
    pick = slice(1, None, 10)
    ssim_ours = [structural_similarity(o, f, channel_axis=2) for o, f in zip(out[pick], frames[pick])]
    ssim_still = [structural_similarity(frames[0], f, channel_axis=2) for f in frames[pick]]
    assert np.mean(ssim_ours) > np.mean(ssim_still)


def _track(analyzer, frames):
    return np.stack([a.landmarks for a in analyzer.track(frames, TrackConfig(max_missing=0.2))])


@pytest.mark.slow
def test_eyes_close_where_the_driving_eyes_close(animator, analyzer, astronaut):
    frames = list(read_video(shared_file("driving", "d9.mp4"), max_frames=300))
    drive = eye_openness(_track(analyzer, frames))
    out = eye_openness(_track(analyzer, list(animator.stream(astronaut, frames))))
    closed = drive < 0.5 * np.median(drive)
    assert closed.sum() >= 5
    assert out[closed].mean() < 0.6 * out[~closed].mean()


@pytest.mark.slow
def test_mouth_opens_where_the_driving_mouth_opens(animator, analyzer, grace_hopper):
    frames = list(read_video(shared_file("driving", "d10.mp4"), max_frames=300))
    drive = mouth_openness(_track(analyzer, frames))
    out = mouth_openness(_track(analyzer, list(animator.stream(grace_hopper, frames))))
    assert np.corrcoef(drive, out)[0, 1] > 0.7
    wide = drive > np.percentile(drive, 80)
    shut = drive < np.percentile(drive, 20)
    assert out[wide].mean() > 2 * out[shut].mean()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 300), st.sampled_from([1.0, 0.02]))
def test_triangulation_tiles_the_hull_of_any_points_with_every_point(seed, n, flat):
    """Also for nearly collinear hull points (`flat` squeezes the cloud), where OpenCV's
    triangulation can miss slivers: a missing triangle would leave pixels unwarped."""
    import cv2

    points = np.random.default_rng(seed).uniform(-50, 600, (n, 2)) * (1.0, flat)
    triangles = delaunay(points)
    a, b, c = (points[triangles[:, k]] for k in range(3))
    area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]).sum() / 2
    assert area == pytest.approx(cv2.contourArea(cv2.convexHull(points.astype(np.float32))), rel=1e-4)
    assert set(np.unique(triangles)) == set(range(n))


def test_points_on_one_line_are_refused_rather_than_left_untriangulated():
    from scipy.spatial import QhullError

    with pytest.raises(QhullError):
        delaunay(np.c_[np.arange(10.0), 2 * np.arange(10.0)])


def test_triangulation_of_real_faces_is_scipys_delaunay(animator, astronaut, grace_hopper):
    from scipy.spatial import Delaunay

    for image in (astronaut, grace_hopper):
        ref = animator.prepare(image)
        points = np.concatenate([ref.points, *ref.rings, ref.border])
        ours = {tuple(sorted(t)) for t in ref.triangles.tolist()}
        assert ours == {tuple(sorted(t)) for t in Delaunay(points).simplices.tolist()}


def test_triangulation_of_the_reference_tiles_the_crop_with_every_point(animator, astronaut):
    """The warp's mesh: the face points, both support rings and the still border, with no
    triangle missing (a hole would leave pixels unwarped) and none overlapping."""
    ref = animator.prepare(astronaut)
    points = np.concatenate([ref.points, *ref.rings, ref.border])
    a, b, c = (points[ref.triangles[:, k]] for k in range(3))
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    side = ref.size - 1
    assert np.abs(cross).sum() / 2 == pytest.approx(side * side)  # the border square is the hull
    assert set(np.unique(ref.triangles)) == set(range(len(points)))


def test_warp_changes_only_what_moves(animator, astronaut):
    """A target equal to the reference leaves the crop as it is; a nudged eyebrow changes
    pixels near the brow only, however large the crop."""
    from vivid.face import mesh_topology as mt
    from vivid.face.motion_transfer import Target

    ref = animator.prepare(astronaut)
    still = Target(ref.points.copy(), np.eye(2, 3), np.ones(2))
    out, moved = animator.warp(ref, still)
    assert np.array_equal(out, ref.crop) and not moved.any()

    points = ref.points.copy()
    brow = list(mt.SUBJECT_RIGHT_BROW)
    points[brow] += (0, -3)  # raise one brow by 3 px
    out, moved = animator.warp(ref, Target(points, np.eye(2, 3), np.ones(2)))
    ys, xs = np.nonzero(moved)
    assert len(ys) > 0
    near = points[brow]
    assert xs.min() >= near[:, 0].min() - 40 and xs.max() <= near[:, 0].max() + 40
    assert ys.min() >= near[:, 1].min() - 40 and ys.max() <= near[:, 1].max() + 40
    # Outside the mask pixels moved by under 0.05 px: at most a rounding step apart.
    assert np.abs(out[~moved].astype(int) - ref.crop[~moved]).max() <= 2


def brute_force_maps(src: np.ndarray, dst: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference for the warp's maps: every pixel centre, one triangle at a time, through the
    affine map of the last triangle (those turned over by the motion first) that holds it;
    pixels no triangle holds stay where they are."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    map_x, map_y = xs.copy(), ys.copy()

    def cross(p, q, r):  # twice the signed area of p, q, r; r may be every pixel at once
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    area = np.array([cross(*t) for t in dst])
    flipped = np.sign(area) != np.sign([cross(*t) for t in src])
    valid = np.abs(area) > 1e-6
    for k in [*np.nonzero(valid & flipped)[0], *np.nonzero(valid & ~flipped)[0]]:
        a, b, c = dst[k]
        weights = [cross(b, c, (xs, ys)), cross(c, a, (xs, ys)), cross(a, b, (xs, ys))]  # barycentric x area
        inside = np.all([wt * np.sign(area[k]) >= -1e-9 for wt in weights], axis=0)
        source = sum(wt[..., None] * s for wt, s in zip(weights, src[k])) / area[k]  # (h, w, 2)
        map_x[inside], map_y[inside] = source[inside, 0], source[inside, 1]
    return map_x, map_y


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([0.5, 4.0, 15.0]))
def test_warp_maps_equal_a_per_pixel_reference(seed, n, motion):
    """The mesh rasterised in one go maps every pixel exactly as the brute-force reference does:
    no pixel between two triangles left behind, folds (large `motion`) resolved the same way,
    slivers never drawn beyond their own area."""
    from types import SimpleNamespace

    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    h, w = 40, 56
    points = np.r_[rng.uniform(0, (w - 1, h - 1), (n, 2)), [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]]
    triangles = Delaunay(points).simplices
    moved = points + rng.normal(0, motion, points.shape) * (np.arange(len(points)) < n)[:, None]  # corners stay
    src, dst = points[triangles], moved[triangles]
    ref = SimpleNamespace(grid=np.mgrid[0:h, 0:w].astype(np.float32))
    map_x, map_y = PreviewAnimator._backward_maps(ref, src, dst, 0, 0, w, h)
    want_x, want_y = brute_force_maps(src, dst, h, w)
    assert np.abs(map_x - want_x).max() < 1e-3 and np.abs(map_y - want_y).max() < 1e-3
    # A window of the crop gives the same maps as the whole crop there.
    part_x, part_y = PreviewAnimator._backward_maps(ref, src, dst, 9, 5, 40, 31)
    assert np.abs(part_x - want_x[5:31, 9:40]).max() < 1e-3 and np.abs(part_y - want_y[5:31, 9:40]).max() < 1e-3


@settings(max_examples=60, deadline=None)
@given(st.integers(-40, 40), st.integers(-40, 40), st.integers(1, 70), st.integers(1, 70), st.booleans())
def test_a_whole_pixel_shift_copies_what_warp_affine_draws(dx, dy, w, h, replicate):
    """The blend's fast path for a crop at the portrait's own scale gives OpenCV's pixels."""
    import cv2

    from vivid.preview import _shifted, _whole_pixel_shift

    image = np.random.default_rng((dx + 40) * 100 + dy + 40).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    m = np.float64([[1, 0, dx], [0, 1, dy]])
    assert _whole_pixel_shift(m) == (dx, dy) and _whole_pixel_shift(m + [[0, 0, 0.5], [0, 0, 0]]) is None
    border = dict(borderMode=cv2.BORDER_REPLICATE) if replicate else dict(borderValue=0)
    want = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, **border)
    np.testing.assert_array_equal(_shifted(image, (dx, dy), (w, h), replicate), want)
