"""Motion transfer (driving mesh motion -> reference mesh): geometric properties."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from vivid.face.measures import eye_openness, mouth_openness
from vivid.face.motion_transfer import EYES, apply, similarity, transfer_motion


def rotation(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


transforms = st.builds(rotation, st.floats(-0.4, 0.4), st.floats(0.5, 2.0), st.floats(-200, 200), st.floats(-200, 200))


@settings(max_examples=40, deadline=None)
@given(m=transforms)
def test_similarity_recovers_a_known_transform(astronaut_analysis, m):
    pts = astronaut_analysis.landmarks.astype(np.float64)
    assert np.allclose(similarity(pts, apply(m, pts)), m, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(drv=transforms, ref=transforms)
def test_a_still_driver_leaves_the_reference_as_it_is(astronaut_analysis, drv, ref):
    face = astronaut_analysis.landmarks.astype(np.float64)
    first = apply(drv, face)
    reference = apply(ref, face)
    out = transfer_motion(reference, first, first.copy())
    assert np.abs(out.points - reference).max() < 1e-6


@settings(max_examples=25, deadline=None)
@given(placement=transforms, angle=st.floats(-0.3, 0.3), scale=st.floats(0.8, 1.25), shift=st.floats(-0.2, 0.2))
def test_a_rigid_head_motion_moves_the_reference_the_same_way(astronaut_analysis, placement, angle, scale, shift):
    """The driver (placed anywhere, at any size) turns, nods closer and slides by a fraction
    of its face size: the reference turns, scales and slides by the same fraction of its own."""
    face = astronaut_analysis.landmarks.astype(np.float64)
    first = apply(placement, face)
    size_drv = np.ptp(first, axis=0).max()
    c = first.mean(axis=0)
    move = rotation(angle, scale, 0, 0)
    move[:, 2] = c - move[:, :2] @ c + (shift * size_drv, 0)
    out = transfer_motion(face, first, apply(move, first))
    # The same motion seen from the reference: about its own centre, shift in its own size.
    back = np.linalg.inv(np.r_[placement, [[0, 0, 1]]])[:2]
    expected = apply(back, apply(move, apply(placement, face)))
    tolerance = 1e-6 * np.ptp(face, axis=0).max() + 1e-6
    assert np.abs(out.points - expected).max() < tolerance


def test_expressions_transfer_as_ratios(analyzer, astronaut_analysis, grace_hopper):
    """The reference's eyes close and mouth opens like the driver's, whatever its own sizes."""
    ref = astronaut_analysis.landmarks.astype(np.float64)
    first = analyzer.analyze(grace_hopper).landmarks.astype(np.float64)
    current = first.copy()
    for contour, _ in EYES:  # close both eyes: each upper-lid point onto the lower-lid point below it
        upper, lower = list(contour[1:8]), list(contour[15:8:-1])
        current[upper] = current[lower]
    current[14] += (0, 30)  # drop the lower lip: mouth opens
    out = transfer_motion(ref, first, current)
    assert eye_openness(out.points) < 0.25 * eye_openness(ref)
    assert mouth_openness(out.points) > mouth_openness(ref) + 0.05
