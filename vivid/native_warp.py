"""The preview engine's per-frame pixel passes in C (`native_warp.c`), built with the system's C
compiler on first use and kept in the user's cache; None when there is no compiler (the engine
then runs the same passes in NumPy, with the same frames).

In NumPy the warp's maps and the blend were over half of a frame's warping time and held
Python's GIL between their many array operations, so the face mesh's thread waited; the C
passes take a fraction of the time and run without the GIL (ctypes lets go of it).
`VIVID_NO_NATIVE=1` turns them off.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_warp.c")
#: No fused multiply-add and no fast-math: the C passes compute exactly what NumPy computes.
FLAGS = ("-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vivid" / "native"


def _build(source: bytes) -> Path | None:
    """The shared library of `source`, compiled once per source text (None: cannot be built)."""
    target = _cache_dir() / f"native_warp-{hashlib.sha256(source + ' '.join(FLAGS).encode()).hexdigest()[:16]}.so"
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            log.info("the preview's C passes could not be built (NumPy is used): %s", done.stderr.strip()[-500:])
            return None
        os.replace(built, target)  # atomic: another process building at once finds a whole file
    return target


def library() -> ctypes.CDLL | None:
    """The loaded C passes, built on first use; None when they cannot be (or are turned off)."""
    global _library, _tried
    if _tried:
        return _library
    with _lock:
        if not _tried:
            if os.environ.get("VIVID_NO_NATIVE"):
                _library = None
            else:
                try:
                    path = _build(SOURCE.read_bytes())
                    _library = None if path is None else _declare(ctypes.CDLL(str(path)))
                except OSError as exc:  # a read-only cache, a library that does not load
                    log.info("the preview's C passes are not available (NumPy is used): %s", exc)
                    _library = None
            _tried = True
    return _library


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, n = ctypes.c_void_p, ctypes.c_long
    lib.backward_maps.argtypes = [p, p, n, n, n, n, n, p, p]
    lib.backward_maps.restype = None
    lib.moved_pixels.argtypes = [p, p, n, n, n, n, p, n]
    lib.moved_pixels.restype = None
    lib.blend.argtypes = [p, n, p, p, n, n]
    lib.blend.restype = None
    return lib


def backward_maps(lib: ctypes.CDLL, corners: np.ndarray, affine: np.ndarray, x0: int, y0: int,
                  map_x: np.ndarray, map_y: np.ndarray) -> None:
    """Fill `map_x`, `map_y` ((h, w) float32, C order, holding each pixel's own crop
    coordinates) from triangles `corners` ((n, 3, 2) window pixels, drawing order) and their
    maps `affine` ((n, 6): a00 a01 a10 a11 shift_x shift_y), as `PreviewAnimator._backward_maps`."""
    corners = np.ascontiguousarray(corners, np.float64)
    affine = np.ascontiguousarray(affine, np.float64)
    h, w = map_x.shape
    assert map_x.flags.c_contiguous and map_y.flags.c_contiguous and map_x.dtype == map_y.dtype == np.float32
    lib.backward_maps(corners.ctypes.data, affine.ctypes.data, len(corners), h, w, x0, y0, map_x.ctypes.data,
                      map_y.ctypes.data)


def moved_pixels(lib: ctypes.CDLL, map_x: np.ndarray, map_y: np.ndarray, x0: int, y0: int, moved: np.ndarray) -> None:
    """moved = |map_x - x| + |map_y - y| > 0.05 over a window at (x0, y0) of the crop, written
    into `moved` ((h, w) bool view, rows may be strided): the pixels the warp changed."""
    h, w = map_x.shape
    assert moved.shape == (h, w) and moved.dtype == np.bool_ and moved.strides[1] == 1
    assert map_x.flags.c_contiguous and map_y.flags.c_contiguous
    lib.moved_pixels(map_x.ctypes.data, map_y.ctypes.data, h, w, x0, y0, moved.ctypes.data, moved.strides[0])


def blend(lib: ctypes.CDLL, out: np.ndarray, back: np.ndarray, alpha: np.ndarray) -> None:
    """out = round(out * (1 - a) + back * a), a = alpha / 255, in place: `out` an (h, w, 3) uint8
    view whose rows may be strided, `back` (h, w, 3) and `alpha` (h, w) uint8."""
    back = np.ascontiguousarray(back)
    alpha = np.ascontiguousarray(alpha)
    h, w = alpha.shape
    assert out.shape == back.shape == (h, w, 3) and out.dtype == np.uint8 and out.strides[1:] == (3, 1)
    lib.blend(out.ctypes.data, out.strides[0], back.ctypes.data, alpha.ctypes.data, h, w)
