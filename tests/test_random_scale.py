"""Random scaling (the paper's augmentation): factors measured back from the output on a
drawn face whose parts have exactly known sizes and places, and properties on a real face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vivid.face import FaceAnalysis, component_centres, random_scale, scale_components
from vivid.face.labels import COMPONENTS, LABEL_INDEX

factor = st.floats(0.8, 1.2)
slow_ok = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def areas(analysis):
    return {
        c: int(np.isin(analysis.labels, [LABEL_INDEX[p] for p in parts]).sum()) for c, parts in COMPONENTS.items()
    }


@slow_ok
@given(scales=st.fixed_dictionaries({c: factor for c in COMPONENTS}))
def test_part_scaling_keeps_centres_and_scales_areas(big_face, scales):
    a = big_face[1]
    b = scale_components(a, scales, face_scale=1.0)
    before, after = component_centres(a), component_centres(b)
    area_a, area_b = areas(a), areas(b)
    for comp, s in scales.items():
        assert np.linalg.norm(after[comp] - before[comp]) < 2.5, comp
        expected = area_a[comp] * s * s
        assert abs(area_b[comp] - expected) < 0.12 * expected + 40, (comp, s, area_a[comp], area_b[comp])


@slow_ok
@given(face=st.floats(0.7, 1.3))
def test_face_scaling_scales_spacing_and_keeps_the_face_in_place(big_face, face):
    a = big_face[1]
    b = scale_components(a, 1.0, face_scale=face)
    before, after = component_centres(a), component_centres(b)
    names = sorted(before)
    for i, p in enumerate(names):
        for q in names[i + 1 :]:
            d0 = np.linalg.norm(before[p] - before[q])
            d1 = np.linalg.norm(after[p] - after[q])
            assert abs(d1 - face * d0) < 3.0, (p, q, d0, d1)
    centre0 = np.mean([before[n] for n in names], axis=0)
    centre1 = np.mean([after[n] for n in names], axis=0)
    assert np.linalg.norm(centre1 - centre0) < 2.0


@slow_ok
@given(seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_map_and_eyes_move_with_their_eye(big_face, seed):
    a = big_face[1]
    b1, b2 = random_scale(a, seed), random_scale(a, seed)
    assert np.array_equal(b1.labels, b2.labels) and np.array_equal(b1.iris, b2.iris)
    assert not np.array_equal(b1.labels, random_scale(a, seed + 1).labels)
    for side, name in enumerate(("left_eye", "right_eye")):
        x, y = np.round(b1.iris[side]).astype(int)
        assert (b1.labels[y - 2 : y + 3, x - 2 : x + 3] == LABEL_INDEX[name]).any()
        ys, xs = np.nonzero(b1.labels == LABEL_INDEX[name])
        assert abs(b1.eye_contour(side)[:, 0].mean() - xs.mean()) < 4


# -- a drawn face with known parts -------------------------------------------------------------
L = LABEL_INDEX
EYES = ((176, 200), (336, 200))  # image-left, image-right eye centres
EYE_AXES = (40, 14)


def drawn_face(gaze=(0.0, 0.0)) -> FaceAnalysis:
    """A 512 px face: rectangles and ellipses for the parts, spaced so that no two parts
    touch for any factors in the paper's ranges; eye contours on the eye outlines."""
    labels = np.zeros((512, 512), np.uint8)
    labels[:70], labels[470:] = L["hair"], L["body"]
    cv2.ellipse(labels, (256, 260), (170, 215), 0, 0, 360, L["skin"], -1)
    labels[140:160, 136:216], labels[140:160, 296:376] = L["left_brow"], L["right_brow"]
    contours = []
    for (cx, cy), name in zip(EYES, ("left_eye", "right_eye")):
        cv2.ellipse(labels, (cx, cy), EYE_AXES, 0, 0, 360, L[name], -1)
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        contours.append(np.stack([cx + EYE_AXES[0] * np.cos(t), cy + EYE_AXES[1] * np.sin(t)], axis=1))
    labels[245:295, 242:270] = L["nose"]
    labels[330:344, 196:316], labels[344:352, 196:316], labels[352:368, 196:316] = (
        L["upper_lip"], L["inner_mouth"], L["lower_lip"])
    return FaceAnalysis(
        labels=labels, iris=(np.array(EYES) + gaze).astype(np.float32),
        eye_points=np.concatenate(contours).astype(np.float32), box=(86.0, 45.0, 426.0, 475.0),
        foreground=labels > 0, iris_radius=np.array([9.0, 9.0], np.float32),
    )


@pytest.fixture(scope="module")
def face():
    return drawn_face(gaze=(12.0, 3.0))


def measured_factors(before: FaceAnalysis, after: FaceAnalysis) -> tuple[dict[str, float], float]:
    """Each component's scale (sqrt of its area ratio) and the spacing scale (distance
    between the eyes and from the brows to the mouth), read off the label maps."""
    a0, a1 = areas(before), areas(after)
    parts = {c: float(np.sqrt(a1[c] / a0[c])) for c in COMPONENTS}
    c0, c1 = component_centres(before), component_centres(after)
    brows0, brows1 = (c0["left_brow"] + c0["right_brow"]) / 2, (c1["left_brow"] + c1["right_brow"]) / 2
    across = np.linalg.norm(c1["right_eye"] - c1["left_eye"]) / np.linalg.norm(c0["right_eye"] - c0["left_eye"])
    down = np.linalg.norm(c1["mouth"] - brows1) / np.linalg.norm(c0["mouth"] - brows0)
    return parts, float((across + down) / 2)


def test_measuring_factors_on_the_drawn_face_is_accurate(face):
    """The ruler the range tests rely on: known factors are read back within 0.015."""
    for parts, spacing in [(0.8, 0.7), (1.2, 0.7), (0.8, 1.3), (1.2, 1.3), (1.0, 1.0)]:
        got_parts, got_spacing = measured_factors(face, scale_components(face, parts, spacing))
        assert all(abs(s - parts) < 0.015 for s in got_parts.values()), (parts, got_parts)
        assert abs(got_spacing - spacing) < 0.015, (spacing, got_spacing)


def test_random_factors_cover_the_papers_ranges_and_never_leave_them(face):
    """Paper: each component by its own factor in [0.8, 1.2], the spacing by one in [0.7, 1.3]."""
    parts, spacings = [], []
    for seed in range(20):
        p, f = measured_factors(face, random_scale(face, seed))
        parts.append(list(p.values()))
        spacings.append(f)
        assert max(p.values()) - min(p.values()) > 0.05, f"seed {seed}: components share one factor {p}"
    parts, spacings = np.array(parts), np.array(spacings)
    assert 0.785 < parts.min() < 0.85 and 1.15 < parts.max() < 1.215, (parts.min(), parts.max())
    assert 0.685 < spacings.min() < 0.8 and 1.2 < spacings.max() < 1.315, (spacings.min(), spacings.max())


def test_scaling_moves_centres_about_the_face_centre_and_scales_each_part_about_its_own(face):
    factors = {"left_brow": 0.85, "right_brow": 1.15, "left_eye": 1.2, "right_eye": 0.8, "nose": 0.9, "mouth": 1.1}
    spacing = 0.75
    out = scale_components(face, factors, spacing)
    before, after = component_centres(face), component_centres(out)
    centre = np.mean(list(before.values()), axis=0)
    got, _ = measured_factors(face, out)
    for comp, s in factors.items():
        assert np.linalg.norm(after[comp] - (centre + spacing * (before[comp] - centre))) < 0.75, comp
        assert abs(got[comp] - s) < 0.015, comp
    assert np.linalg.norm(np.mean(list(after.values()), axis=0) - centre) < 0.5  # the face stays put
    # The mouth keeps its layers in order, and vacated places become skin, not background.
    ys = {p: np.nonzero(out.labels == L[p])[0].mean() for p in ("upper_lip", "inner_mouth", "lower_lip")}
    assert ys["upper_lip"] < ys["inner_mouth"] < ys["lower_lip"]
    assert (out.labels == L["background"]).sum() == (face.labels == L["background"]).sum()


def test_eye_points_iris_and_its_radius_move_with_their_own_eye(face):
    factors = {"left_eye": 1.2, "right_eye": 0.8}
    out = scale_components(face, factors, 1.25)
    before, after = component_centres(face), component_centres(out)
    for side, name in enumerate(("left_eye", "right_eye")):
        s = factors[name]
        expected = after[name] + s * (face.eye_contour(side) - before[name])
        assert np.abs(out.eye_contour(side) - expected).max() < 0.75, name
        assert np.abs(out.iris[side] - (after[name] + s * (face.iris[side] - before[name]))).max() < 0.75, name
        assert out.iris_radius[side] == pytest.approx(face.iris_radius[side] * s, rel=1e-4)
        # Each contour point still lies on its eye's outline.
        eye = (out.labels == L[name]).astype(np.uint8)
        edge = cv2.dilate(eye, np.ones((3, 3), np.uint8)) - cv2.erode(eye, np.ones((3, 3), np.uint8))
        for x, y in np.round(out.eye_contour(side)).astype(int):
            assert edge[y - 1 : y + 2, x - 1 : x + 2].any(), (name, x, y)


def test_same_seed_same_scaling_and_unit_factors_change_nothing(face):
    a, b = random_scale(face, 3), random_scale(face, 3)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.eye_points, b.eye_points)
    unit = scale_components(face, 1.0, 1.0)
    assert np.array_equal(unit.labels, face.labels) and np.allclose(unit.eye_points, face.eye_points)
    assert np.array_equal(random_scale(face, 3, (1.0, 1.0), (1.0, 1.0)).labels, face.labels)
