"""Where to look for faces: the geometry of mesh regions, detector windows and face choice."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from vivid.face.regions import (
    WINDOW_FACE, MeshRegion, box_side, iou, main_face, region_from_detection, region_from_landmarks, same_face,
    tile_windows, whole_image_window, window_around,
)


@pytest.fixture(scope="module")
def mesh(astronaut_analysis) -> np.ndarray:
    """A real face's 478 mesh points."""
    return astronaut_analysis.landmarks.astype(np.float64)


def turn(points: np.ndarray, angle: float, about: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return (points - about) @ np.array([[c, -s], [s, c]]).T + about


def angle_gap(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


@settings(max_examples=60, deadline=None)
@given(dx=st.floats(-500, 500), dy=st.floats(-500, 500), zoom=st.floats(0.1, 8), angle=st.floats(-3.1, 3.1))
def test_landmark_region_moves_scales_and_turns_with_the_face(mesh, dx, dy, zoom, angle):
    base = region_from_landmarks(mesh)
    about = np.array([256.0, 256.0])
    moved = turn(mesh * zoom, angle, about * zoom) + (dx, dy)
    r = region_from_landmarks(moved)
    centre = turn(np.array([[base.cx, base.cy]]) * zoom, angle, about * zoom)[0] + (dx, dy)
    assert r.cx == pytest.approx(centre[0], abs=1e-6 * zoom * 1000) and r.cy == pytest.approx(centre[1], abs=1e-6 * zoom * 1000)
    assert r.size == pytest.approx(base.size * zoom, rel=1e-6)
    assert angle_gap(r.angle, base.angle + angle) < 1e-6


def test_landmark_region_holds_the_face_upright(mesh):
    r = region_from_landmarks(mesh)
    assert abs(r.angle) < 0.15  # the astronaut's head is nearly upright
    x0, y0, x1, y1 = r.bounds()
    assert x0 < mesh[:, 0].min() and x1 > mesh[:, 0].max() and y0 < mesh[:, 1].min() and y1 > mesh[:, 1].max()
    assert r.size == pytest.approx(1.5 * box_side((*mesh.min(axis=0), *mesh.max(axis=0))), rel=0.1)


@settings(max_examples=60, deadline=None)
@given(x=st.floats(0, 1000), y=st.floats(0, 1000), side=st.floats(8, 600), angle=st.floats(-1.2, 1.2),
       detector=st.sampled_from(["full", "short"]))
def test_detection_region_holds_the_box_and_follows_the_eyes(x, y, side, angle, detector):
    box = (x, y, x + side, y + side)
    centre = np.array([x + side / 2, y + side / 2])
    eyes = turn(np.array([[-0.2, -0.1], [0.2, -0.1]]) * side + centre, angle, centre)
    r = region_from_detection(box, eyes, detector)
    assert angle_gap(r.angle, angle) < 1e-6
    assert r.size > 1.5 * side
    # The whole detection box lies inside the (turned) region.
    corners = np.array([[x, y], [x + side, y], [x, y + side], [x + side, y + side]])
    upright = turn(corners, -r.angle, np.array([r.cx, r.cy])) - (r.cx, r.cy)
    assert np.abs(upright).max() <= r.size / 2


@settings(max_examples=40, deadline=None)
@given(a=st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(1, 100), st.floats(1, 100)),
       b=st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(1, 100), st.floats(1, 100)))
def test_iou_is_symmetric_and_bounded(a, b):
    a = (a[0], a[1], a[0] + a[2], a[1] + a[3])
    b = (b[0], b[1], b[0] + b[2], b[1] + b[3])
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0 <= iou(a, b) <= 1
    assert iou(a, a) == pytest.approx(1)


@settings(max_examples=80, deadline=None)
@given(w=st.integers(64, 4000), h=st.integers(64, 4000), share=st.floats(0.02, 0.25), data=st.data())
def test_tiles_hold_every_small_face_at_a_size_the_detector_sees(w, h, share, data):
    smallest = share * min(w, h)
    tiles = tile_windows(w, h, smallest)
    side = tiles[0].size
    assert all(t.size == side for t in tiles)
    # A face from the smallest size up to half a tile, anywhere in the image, lies wholly
    # inside some tile, where it is at least WINDOW_FACE of the tile's side.
    face = data.draw(st.floats(min(smallest, side / 2), side / 2))
    assume(face <= min(w, h))
    x = data.draw(st.floats(0, w - face))
    y = data.draw(st.floats(0, h - face))
    inside = [t for t in tiles if t.cx - side / 2 <= x + 1e-6 and x + face <= t.cx + side / 2 + 1e-6
              and t.cy - side / 2 <= y + 1e-6 and y + face <= t.cy + side / 2 + 1e-6]
    assert inside
    assert face / side >= WINDOW_FACE * 0.999 or side == max(w, h)


def test_whole_image_and_face_windows():
    w = whole_image_window(1920, 1080)
    assert (w.cx, w.cy, w.size) == (960, 540, 1920)
    assert whole_image_window(1920, 1080, zoom_out=2).size == 3840
    around = window_around((100, 200, 140, 240), face_fraction=0.25)
    assert (around.cx, around.cy, around.size) == (120, 220, 160)


boxes = st.lists(st.tuples(st.floats(0, 900), st.floats(0, 500), st.floats(10, 300)), min_size=1, max_size=6)


def as_boxes(items) -> list[tuple[float, float, float, float]]:
    return [(x, y, x + s, y + s) for x, y, s in items]


@settings(max_examples=60, deadline=None)
@given(items=boxes, order=st.randoms(use_true_random=False))
def test_main_face_does_not_depend_on_the_order(items, order):
    b = as_boxes(items)
    chosen = b[main_face(b, 1200, 800)]
    shuffled = list(b)
    order.shuffle(shuffled)
    assert shuffled[main_face(shuffled, 1200, 800)] == chosen


@settings(max_examples=60, deadline=None)
@given(items=boxes, grow=st.floats(1.01, 3))
def test_a_face_made_larger_in_place_stays_chosen(items, grow):
    b = as_boxes(items)
    k = main_face(b, 1200, 800)
    x0, y0, x1, y1 = b[k]
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, grow * (x1 - x0) / 2
    b[k] = (cx - half, cy - half, cx + half, cy + half)
    assert main_face(b, 1200, 800) == k


def test_of_equal_faces_the_most_central_is_chosen_and_size_beats_position():
    b = [(0, 0, 100, 100), (550, 350, 650, 450), (1100, 700, 1200, 800)]
    assert main_face(b, 1200, 800) == 1
    b[0] = (0, 0, 250, 250)  # much larger, at a corner
    assert main_face(b, 1200, 800) == 0


@settings(max_examples=60, deadline=None)
@given(x=st.floats(0, 1000), y=st.floats(0, 1000), s=st.floats(10, 300), dx=st.floats(-0.3, 0.3),
       dy=st.floats(-0.3, 0.3), grow=st.floats(0.8, 1.25), zoom=st.floats(0.2, 5))
def test_same_face_follows_the_nearest_consistent_box(x, y, s, dx, dy, grow, zoom):
    last = (x, y, x + s, y + s)
    followed = (x + dx * s, y + dy * s, x + dx * s + grow * s, y + dy * s + grow * s)
    other_near_but_small = (x, y, x + 0.4 * s, y + 0.4 * s)
    far = (x + 5 * s, y, x + 6 * s, y + s)
    candidates = [far, other_near_but_small, followed]
    assert same_face(last, candidates) == 2
    # The same scene at another scale and place: the same answer.
    scaled = [tuple(zoom * v + 7 for v in b) for b in candidates]
    assert same_face(tuple(zoom * v + 7 for v in last), scaled) == 2
    assert same_face(last, [far, other_near_but_small]) is None


def test_region_corners_and_bounds():
    r = MeshRegion(50, 60, 20, 0.0)
    assert r.bounds() == pytest.approx((40, 50, 60, 70))
    turned = MeshRegion(50, 60, 20, math.pi / 4)
    x0, y0, x1, y1 = turned.bounds()
    assert x1 - x0 == pytest.approx(20 * math.sqrt(2))
    assert turned.corners().mean(axis=0) == pytest.approx((50, 60))
