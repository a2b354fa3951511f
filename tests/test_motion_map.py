"""The motion map shows the expression parts and eye landmarks, and nothing else."""
from __future__ import annotations

import cv2
import numpy as np

from vivid.face import EXPRESSION_PARTS, label_mask, render_motion_map
from vivid.face.labels import IRIS_COLOR, MOTION_PALETTE
from vivid.face.motion_map import eyelid_width_px


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
