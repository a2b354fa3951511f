"""Random scaling (the paper's augmentation): properties on a real face."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from vivid.face import component_centres, random_scale, scale_components
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


def test_factors_stay_in_the_paper_ranges(big_face):
    a = big_face[1]
    area_a = areas(a)
    for seed in range(5):
        b = random_scale(a, seed)
        for comp, n in areas(b).items():
            # Each component's area changes by at most 1.2^2 (part) -- spacing does not change areas.
            assert 0.55 * area_a[comp] < n < 1.6 * area_a[comp]
    assert random_scale(a, 0).labels.shape == a.labels.shape
