"""The preview's C passes (vivid/native_warp.c) give the very frames the NumPy passes give, and
the engine runs without them (no compiler, or VIVID_NO_NATIVE)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_file
from vivid import native_warp
from vivid.media import read_video
from vivid.preview import PreviewAnimator

pytestmark = pytest.mark.skipif(native_warp.library() is None, reason="no C compiler here: NumPy passes only")


@pytest.fixture
def numpy_only(monkeypatch):
    """The engine as it runs where the C passes cannot be built."""
    monkeypatch.setattr(native_warp, "_library", None)
    monkeypatch.setattr(native_warp, "_tried", True)


def maps(src, dst, window, h, w):
    ref = SimpleNamespace(grid=np.mgrid[0:h, 0:w].astype(np.float32))
    return PreviewAnimator._backward_maps(ref, src, dst, *window)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([0.5, 4.0, 15.0]))
def test_maps_are_the_numpy_maps_to_the_bit(seed, n, motion):
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    h, w = 40, 56
    points = np.r_[rng.uniform(-3, (w + 2, h + 2), (n, 2)), [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]]
    triangles = Delaunay(points).simplices
    moved = points + rng.normal(0, motion, points.shape)
    src, dst = points[triangles], moved[triangles]
    for window in ((0, 0, w, h), (9, 5, 40, 31)):
        native = maps(src, dst, window, h, w)
        lib = native_warp._library
        try:
            native_warp._library = None
            plain = maps(src, dst, window, h, w)
        finally:
            native_warp._library = lib
        np.testing.assert_array_equal(native[0], plain[0])
        np.testing.assert_array_equal(native[1], plain[1])


def rendered(animator, ref, goals):
    return [animator.render(ref, g) for g in goals]


def test_frames_are_the_numpy_frames(astronaut, request):
    clip = list(read_video(shared_file("driving", "d12.mp4"), max_frames=40))
    animator = PreviewAnimator()
    ref = animator.prepare(astronaut)
    goals = [g for g in animator.targets(ref, clip, 25) if g is not None]
    native = rendered(animator, ref, goals)
    request.getfixturevalue("numpy_only")
    plain = rendered(animator, ref, goals)
    assert all(np.array_equal(a, b) for a, b in zip(native, plain))


def test_a_missing_compiler_leaves_the_numpy_passes(monkeypatch, tmp_path):
    monkeypatch.setattr(native_warp, "_library", None)
    monkeypatch.setattr(native_warp, "_tried", False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native_warp.shutil, "which", lambda name: None)
    try:
        assert native_warp.library() is None
    except OSError:
        pytest.fail("a missing compiler must not be an error")
