"""The motion map shows the expression parts in their fixed colours and the eye landmarks,
and nothing else: exact colours on a drawn face, properties on real faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from test_random_scale import drawn_face
from vivid.face import EXPRESSION_PARTS, LABELS, label_mask, render_motion_map
from vivid.face.labels import EYELID_COLOR, IRIS_COLOR, LABEL_INDEX, MOTION_PALETTE
from vivid.face.motion_map import eyelid_width_px


def moved(a, dx: int, dy: int):
    """The same face moved by (dx, dy) pixels."""
    d = np.array([dx, dy], np.float32)
    x0, y0, x1, y1 = a.box
    return a.replace(labels=np.roll(a.labels, (dy, dx), axis=(0, 1)), iris=a.iris + d, eye_points=a.eye_points + d,
                     box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), foreground=np.roll(a.foreground, (dy, dx), axis=(0, 1)))


def widened(a, left: int):
    """The same face in a wider image, `left` pixels further right (a non-square frame)."""
    pad = lambda m: np.pad(m, ((0, 0), (left, 0)))
    d = np.array([left, 0], np.float32)
    x0, y0, x1, y1 = a.box
    return a.replace(labels=pad(a.labels), iris=a.iris + d, eye_points=a.eye_points + d,
                     box=(x0 + left, y0, x1 + left, y1), foreground=pad(a.foreground))


def eye_drawings(a) -> np.ndarray:
    """Where eyelid lines and irises may be drawn: near the eye contours and the iris points."""
    near = np.zeros(a.labels.shape, np.uint8)
    for side in range(2):
        cv2.polylines(near, [np.round(a.eye_contour(side)).astype(np.int32)], True, 1, 2 * eyelid_width_px(a) + 3)
        cv2.circle(near, tuple(int(v) for v in np.round(a.iris[side])), int(a.iris_radius[side]) + 2, 1, -1)
    return near.astype(bool)


def test_palette_is_the_one_models_are_trained_with():
    """Changing a colour silently invalidates every trained model: these values are fixed."""
    assert MOTION_PALETTE == {
        "left_brow": (255, 170, 0), "right_brow": (255, 85, 0), "left_eye": (0, 170, 255), "right_eye": (0, 85, 255),
        "nose": (0, 200, 80), "upper_lip": (255, 0, 128), "inner_mouth": (120, 0, 60), "lower_lip": (200, 0, 255),
    }
    assert EYELID_COLOR == (255, 255, 255) and IRIS_COLOR == (255, 255, 0)
    colours = list(MOTION_PALETTE.values()) + [EYELID_COLOR, IRIS_COLOR, (0, 0, 0)]
    assert len(set(colours)) == len(colours)
    assert set(MOTION_PALETTE) == set(EXPRESSION_PARTS)


@pytest.mark.parametrize("offset", [(0, 0), (70, -40), (-60, 30), "wide"])
def test_each_part_has_exactly_its_colour_and_everything_else_is_black(offset):
    face = drawn_face(gaze=(12.0, 3.0))
    a = widened(face, 388) if offset == "wide" else moved(face, *offset)
    m = render_motion_map(a)
    assert m.shape == a.labels.shape + (3,) and m.dtype == np.uint8
    free = ~eye_drawings(a)
    for name in LABELS:
        pixels = m[(a.labels == LABELS.index(name)) & free]
        if name in EXPRESSION_PARTS:
            assert len(pixels) > 100 and (pixels == MOTION_PALETTE[name]).all(), name
        else:  # skin, hair, body, background: they would show the driver's face shape
            assert (pixels == 0).all(), name


def test_iris_is_drawn_where_the_eye_looks_and_only_inside_the_eye():
    centres = []
    for gaze in [(-10.0, 0.0), (10.0, 0.0), (0.0, 14.0)]:  # the last looks down, past the eyelid
        a = drawn_face(gaze=gaze)
        m = render_motion_map(a)
        iris = (m == IRIS_COLOR).all(axis=2)
        eyes = label_mask(a.labels, "left_eye", "right_eye")
        assert iris.any() and not (iris & ~eyes).any()  # clipped to the eye
        for side, name in enumerate(("left_eye", "right_eye")):
            mine = iris & (a.labels == LABEL_INDEX[name])
            ys, xs = np.nonzero(mine)
            assert len(xs) > (40 if gaze[1] == 0 else 15), (gaze, name)
            centres.append(np.array([xs.mean(), ys.mean()]))
            if gaze[1] == 0:  # fully inside the eye: centred on the iris point, of the iris' size
                assert np.abs(centres[-1] - a.iris[side]).max() < 0.6, (gaze, name)
                drawn_radius = np.sqrt(len(xs) / np.pi)
                assert 0.8 * 9 - 2.5 < drawn_radius < 0.8 * 9 + 1, drawn_radius  # less where the eyelid covers it
    # Looking right moves both irises right by the gaze difference.
    for side in range(2):
        assert centres[2 + side][0] - centres[side][0] == pytest.approx(20, abs=0.6)


def test_eyelid_lines_follow_the_eye_contours():
    a = drawn_face()
    m = render_motion_map(a)
    lines = (m >= 200).all(axis=2)
    for x, y in np.round(a.eye_points).astype(int):
        assert lines[y - 1 : y + 2, x - 1 : x + 2].any(), (x, y)
    near = np.zeros(a.labels.shape, np.uint8)
    for side in range(2):
        cv2.polylines(near, [np.round(a.eye_contour(side)).astype(np.int32)], True, 1, 2 * eyelid_width_px(a) + 1)
    white = (m == EYELID_COLOR).all(axis=2)
    assert white.sum() > 100 and not (white & ~near.astype(bool)).any()


def test_nothing_drawn_away_from_expression_parts(big_face, astronaut_analysis):
    for a in (big_face[1], astronaut_analysis):
        m = render_motion_map(a)
        assert m.shape == a.labels.shape + (3,) and m.dtype == np.uint8
        outside = (~label_mask(a.labels, *EXPRESSION_PARTS)).astype(np.uint8)
        distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)  # px to the nearest part
        drawn = m.any(axis=2)
        assert drawn.any()
        # Only the (anti-aliased) eyelid line may reach a little past the eye outline.
        assert distance[drawn].max() <= eyelid_width_px(a) + 1.5
        colours = {tuple(c) for c in m[drawn & (distance == 0)].reshape(-1, 3)}
        present = {MOTION_PALETTE[p] for p in EXPRESSION_PARTS if label_mask(a.labels, p).any()}
        assert present <= colours


def test_each_part_has_its_colour_and_eyes_show_the_iris(big_face):
    a = big_face[1]
    m = render_motion_map(a)
    for part in ("left_brow", "right_brow", "nose", "upper_lip", "lower_lip"):
        inside = label_mask(a.labels, part)
        share = (m[inside] == MOTION_PALETTE[part]).all(axis=1).mean()
        assert share > 0.5, part
    for side in range(2):
        x, y = np.round(a.iris[side]).astype(int)
        assert tuple(m[y, x]) == IRIS_COLOR
    # Eyelid contour drawn along the eye landmarks.
    for x, y in np.round(a.eye_points).astype(int):
        patch = m[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
        assert (patch >= 200).all(axis=1).any()


def test_closed_eye_shows_no_eyeball(big_face):
    a = big_face[1]
    closed = a.labels.copy()
    closed[label_mask(closed, "left_eye")] = 1  # eyelids shut: no visible eye region
    m = render_motion_map(a.replace(labels=closed))
    x, y = np.round(a.iris[0]).astype(int)
    assert not (m[y - 3 : y + 4, x - 3 : x + 4] == IRIS_COLOR).all(axis=2).any()


def test_motion_map_follows_the_face(astronaut, analyzer):
    """Shifting the photo shifts the map by the same amount."""
    a = analyzer.analyze(astronaut)
    shifted = np.roll(astronaut, (20, -30), axis=(0, 1))
    b = analyzer.analyze(shifted)
    ya, xa = np.nonzero(render_motion_map(a).any(axis=2))
    yb, xb = np.nonzero(render_motion_map(b).any(axis=2))
    assert abs((yb.mean() - ya.mean()) - 20) < 2 and abs((xb.mean() - xa.mean()) + 30) < 2
