"""The offline backend: MediaPipe face mesh (478 points with irises) and selfie segmentation.

Both models ship inside the mediapipe 0.10.14 wheel, so this works with no download.
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from ..deferred_imports import defer

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
defer()  # MediaPipe imports pyplot and sounddevice for helpers never called here: 0.5 s of start-up
import mediapipe as mp  # noqa: E402

log = logging.getLogger(__name__)

#: Selfie-segmentation probability above which a pixel counts as the person.
PERSON_THRESHOLD = 0.5


class MeshRunner:
    """Runs the face mesh on RGB frames and returns every face's points in pixels.

    `tracking=True` uses MediaPipe's video mode: the face found in one frame seeds the
    next, which is faster and steadier than detecting from scratch on every frame.
    """

    def __init__(self, *, tracking: bool = False, max_faces: int = 4, min_confidence: float = 0.5):
        self.tracking = tracking
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not tracking,
            max_num_faces=max_faces,
            refine_landmarks=True,  # adds the 10 iris points (468-477)
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        self._segmenter = None

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(478, 2) float32 pixel coordinates of each face found, in MediaPipe's order."""
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return []
        scale = np.array([w, h], np.float32)
        return [_xy(face) * scale for face in result.multi_face_landmarks]

    def faces_anywhere(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Like `faces`, but when the whole image shows none, also look in overlapping zoomed
        tiles: MediaPipe's detector sees the image at 128 px, so a face under ~10% of the
        image width (a full-body photo, a group) is missed otherwise."""
        found = self.faces(rgb)
        if found or self.tracking:
            return found
        h, w = rgb.shape[:2]
        for tiles in (2, 3):
            side = int(min(h, w) * 2 / (tiles + 1))
            if side < 96:
                break
            for y in np.linspace(0, h - side, max(tiles, round(h / side * 1.5))).astype(int):
                for x in np.linspace(0, w - side, max(tiles, round(w / side * 1.5))).astype(int):
                    for pts in self.faces(rgb[y : y + side, x : x + side]):
                        pts = pts + np.array([x, y], np.float32)
                        if not any(_overlap(pts, f) > 0.3 for f in found):
                            found.append(pts)
            if found:
                return found
        return found

    def person_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Boolean mask of the person (face, hair, neck, body) from selfie segmentation."""
        if self._segmenter is None:
            self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        result = self._segmenter.process(np.ascontiguousarray(rgb))
        return result.segmentation_mask > PERSON_THRESHOLD

    def close(self) -> None:
        self._mesh.close()
        if self._segmenter is not None:
            self._segmenter.close()

    def __enter__(self) -> "MeshRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A serialised NormalizedLandmark with only x, y, z set: field tag 1 (length 15), then
# tags 0x0d/0x15/0x1d each followed by a little-endian float32.
_LANDMARK_BYTES = 17
_TAG_OFFSETS = {0: 0x0A, 1: 0x0F, 2: 0x0D, 7: 0x15, 12: 0x1D}
_XY_BYTES = [3, 4, 5, 6, 8, 9, 10, 11]


def _xy(face) -> np.ndarray:
    """(N, 2) normalised x, y of a landmark list. Reads the serialised protobuf in one go
    (ten times faster than attribute access per point, which matters at video rate) and
    falls back to attribute access whenever the layout is not the expected one."""
    raw = np.frombuffer(face.SerializeToString(), np.uint8)
    n = len(face.landmark)
    if raw.size == n * _LANDMARK_BYTES:
        rows = raw.reshape(n, _LANDMARK_BYTES)
        if all((rows[:, i] == v).all() for i, v in _TAG_OFFSETS.items()):
            return rows[:, _XY_BYTES].copy().view("<f4").reshape(n, 2).astype(np.float32)
    return np.array([(p.x, p.y) for p in face.landmark], np.float32)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the boxes of two landmark sets."""
    lo = np.maximum(a.min(axis=0), b.min(axis=0))
    hi = np.minimum(a.max(axis=0), b.max(axis=0))
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = lambda p: float(np.prod(p.max(axis=0) - p.min(axis=0)))  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-6)
