"""Finding faces: one path for still images and videos, used by every part of the program.

A detector that sees small faces (MediaPipe's full-range BlazeFace; the short-range one for
close-ups) says where faces are; the face mesh then runs on a square around each detection
at the mesh's own working resolution (192 px, whatever the face's size in the image), and
again on the squares its own points give (`MESH_PASSES`), so that a face found by detection
and a face followed from frame to frame are measured the same way. What the mesh found is
kept only if it is a human face (`human_check`).

In a video, `FaceTracker` follows one face: each frame's mesh runs on the square the last
frame's points give (no detection while the face is held), the detector looks again when
the face is lost and every few frames around the face, and a face found again must continue
the one followed (near it, of a similar size) instead of jumping to another person.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np

from .found import FoundFace
from .human_check import HumanCheck
from .mediapipe_models import Detection, FaceDetectors, FaceMeshModel
from ..errors import OptionError
from .regions import (
    WINDOW_FACE, MeshRegion, box_side, face_weight, faces_from_left, iou, main_face,
    region_from_detection, region_from_landmarks, same_face, tile_windows, whole_image_window, window_around,
)

#: Mesh runs per face found by detection: on the detection's square, then twice on the square
#: the previous run's points give. The third run settles it: expression measures of the
#: astronaut turned by 20 degrees and shrunk to 0.7 differ from the upright ones by 1.1% of
#: the face size after two runs, 0.6% after three (0.5% after four).
MESH_PASSES = 3


@dataclass(frozen=True)
class FinderConfig:
    """How faces are looked for (defaults measured on the sample portraits and clips)."""

    smallest_face: float = 0.05  # look for faces down to this fraction of the image's shorter side
    # Faces under both of these are not kept: too few pixels to animate, and what the detector
    # takes for a face at that size in a wide picture is mostly not one.
    min_face_share: float = 0.025  # of the image's shorter side
    min_face_px: float = 24.0
    min_detection: float = 0.5  # detector score to consider a face at all
    min_presence: float = 0.5  # the mesh model's face-presence score to keep a face
    max_faces: int = 8  # at most this many faces are measured in one image
    duplicate_iou: float = 0.4  # two faces overlapping more than this are one face
    check_every: int = 30  # while following a face, the detector looks around it every N frames (~1 s)
    forget_after: int = 25  # lost for more frames than this, the tracker takes any face again


class FaceFinder:
    """Finds the human faces in still images; also the per-face steps the tracker uses.

    Holds MediaPipe graphs: not thread-safe (use one per thread, or a lock), `close()` frees them.
    """

    def __init__(self, config: FinderConfig = FinderConfig(), memory: "LookMemory | None" = None):
        self.config = config
        self.detectors = FaceDetectors(config.min_detection)
        self.mesh = FaceMeshModel()
        self.human = HumanCheck(self.mesh)
        self.memory = memory or LookMemory()  # the last pictures looked at (shared by an analyser's finders)

    # -- one face ---------------------------------------------------------------------------
    def measure(self, rgb: np.ndarray, region: MeshRegion, passes: int = MESH_PASSES,
                detection: Detection | None = None) -> FoundFace | None:
        """The mesh on `region`, then (`passes` - 1 times) on the region its own points give;
        None when the result is not a human face."""
        points, presence = self.mesh.run(rgb, region)
        first_presence = presence
        for _ in range(passes - 1):
            points, presence = self.mesh.run(rgb, region_from_landmarks(points))
        if presence < self.config.min_presence:
            return None
        face = FoundFace(points, presence, detection)
        if not self.human.accepts(rgb, face, first_presence):
            return None
        return face

    # -- every face of an image ---------------------------------------------------------------
    def find(self, rgb: np.ndarray, every_face: bool = True) -> list[FoundFace]:
        """The human faces in `rgb` (all of them unless `every_face` is False), the one to use
        (largest, most central) first.

        The detectors look at the whole image (both ranges), then through overlapping tiles
        for faces down to `smallest_face` (a wide shot, a group, a small face in a big photo);
        only when neither shows a face, at the image shrunk into a frame twice its size (a
        face that fills the whole picture). `every_face=False` wants the face to use alone:
        the tiles are skipped when the whole image already shows a face that no face the
        whole look could have missed would outweigh (`_settled`). The last pictures' answers
        are remembered (`memory`): asked again for the same picture, nothing is looked at twice."""
        key = _picture_key(rgb, every_face)
        faces = self.memory.get(key)  # the same picture asked for again (a job's check, then its tracker)
        if faces is None:
            faces = self._find(rgb, every_face)
            self.memory.put(key, faces)
        return list(faces)

    def _find(self, rgb: np.ndarray, every_face: bool) -> list[FoundFace]:
        h, w = rgb.shape[:2]
        faces: list[FoundFace] = []
        tried: list[Detection] = []
        whole = whole_image_window(w, h)
        self._add_faces(rgb, self._at_own_scale(rgb, self.detectors.detect(rgb, whole), whole.size), faces, tried)
        tiles = tile_windows(w, h, self.config.smallest_face * min(w, h))
        if every_face or not _settled(faces, _largest_unseen_face(tiles[0].size, whole.size), w, h):
            in_tiles = [d for tile in tiles for d in self.detectors.detect(rgb, tile, ranges=("full",))
                        if box_side(d.box) < tile.size / 2]  # larger ones may be cut by the tile's edge
            self._add_faces(rgb, in_tiles, faces, tried)
        if not faces:
            self._add_faces(rgb, self.detectors.detect(rgb, whole_image_window(w, h, zoom_out=2.0)), faces, tried)
        if faces:
            first = main_face([f.box for f in faces], w, h)
            faces.insert(0, faces.pop(first))
        return faces

    def _add_faces(self, rgb: np.ndarray, detections: list[Detection], faces: list[FoundFace],
                   tried: list[Detection]) -> None:
        """Measure the detections that are new (not tried before, not on a face already
        found) and add the human faces among them that are not under both size floors."""
        fresh = [d for d in _distinct(detections, self.config.duplicate_iou)
                 if all(iou(d.box, t.box) < self.config.duplicate_iou for t in tried)
                 and not any(_inside(d.box, f.box) for f in faces)]
        tried += fresh
        c = self.config
        floor = min(c.min_face_px, c.min_face_share * min(rgb.shape[:2]))
        for face in self._measured(rgb, fresh):
            if face.size >= floor and all(iou(face.box, f.box) < c.duplicate_iou for f in faces):
                faces.append(face)

    def _at_own_scale(self, rgb: np.ndarray, detections: list[Detection], window: float) -> list[Detection]:
        """Detections from a `window`-wide view, each small one (under `WINDOW_FACE` of the
        view) replaced by what the detectors see looking again at its own scale: seen from too
        far, a face a few % of the view comes with a box several times its size or eyes at a
        wrong angle, and the mesh then fits a wrong face there."""
        out: list[Detection] = []
        for d in detections:
            out += [d] if box_side(d.box) >= WINDOW_FACE * window else self.detect_around(rgb, d.box)
        return out

    def detect_around(self, rgb: np.ndarray, box, face_fraction: float = 0.25,
                      ranges: tuple[str, ...] = ("full", "short")) -> list[Detection]:
        """Detections near `box`: the detectors look through one window in which a face of
        that size is at their best scale (cheap, whatever the face's size in the image)."""
        window = window_around(box, face_fraction)
        return _distinct(self.detectors.detect(rgb, window, ranges), self.config.duplicate_iou)

    def _measured(self, rgb: np.ndarray, detections: list[Detection]) -> list[FoundFace]:
        faces: list[FoundFace] = []
        for d in sorted(detections, key=lambda d: -d.score)[: self.config.max_faces]:
            face = self.measure(rgb, region_from_detection(d.box, d.eyes, d.detector), detection=d)
            if face is not None and all(iou(face.box, f.box) < self.config.duplicate_iou for f in faces):
                faces.append(face)
        return faces

    def close(self) -> None:
        self.detectors.close()
        self.mesh.close()
        self.human.close()

    def __enter__(self) -> "FaceFinder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LookMemory:
    """The faces found in the last few pictures, by picture (thread-safe): finders that share
    one answer a picture any of them has looked at without looking again."""

    def __init__(self, size: int = 4):
        self.size = size
        self._answers: dict[tuple, list[FoundFace]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[FoundFace] | None:
        """The faces remembered for `key`; asked for the face to use alone, every face found
        in the same picture answers too (the face to use comes first in both)."""
        every_face, *picture = key
        with self._lock:
            found = self._answers.get(key)
            return self._answers.get((True, *picture)) if found is None and not every_face else found

    def put(self, key: tuple, faces: list[FoundFace]) -> None:
        with self._lock:
            self._answers.pop(key, None)
            self._answers[key] = list(faces)
            while len(self._answers) > self.size:
                del self._answers[next(iter(self._answers))]  # the oldest

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


def chosen_first(faces: list[FoundFace], face: int | None, name: str = "the picture") -> list[FoundFace]:
    """`faces` (as `FaceFinder.find` orders them) with the one a user chose first: `face` counts
    from the image's left, from 1 (None: the finder's choice, the largest, most central). An
    OptionError when the picture has fewer faces."""
    if face is None or not faces:
        return faces
    if isinstance(face, bool) or not float(face).is_integer() or not 1 <= face <= len(faces):
        shown = f"{len(faces)} faces" if len(faces) > 1 else "one face"
        raise OptionError(f"face {face!r}: {name} shows {shown}; choose 1 to {len(faces)}, counted from the left", "face")
    order = faces_from_left([f.box for f in faces])
    k = order[int(face) - 1]
    return [faces[k]] + [f for i, f in enumerate(faces) if i != k]


#: How much larger than its detection box a face's mesh box can be (measured up to 1.18 on a
#: tilted face; `DETECTION_TO_FACE` holds the medians): the margin `_settled` keeps.
MESH_OVER_DETECTION = 1.5


#: The look at the whole image misses no face whose mesh box is at least this share of the
#: window's side (the image's longer side). Measured: nine sample portraits shrunk into 1080p
#: frames, landscape and portrait, were each found by the whole look from 8% of the window up
#: (some from 3%); this keeps a margin above that.
WHOLE_LOOK_SEES = 0.1


def _largest_unseen_face(tile: float, whole: float) -> float:
    """The largest mesh box a face only the tiles find can have: the tiles keep detections under
    half a tile (`MESH_OVER_DETECTION` larger as a mesh box), and the whole look (a window
    `whole` px wide) already saw every face from `WHOLE_LOOK_SEES` of it up."""
    return min(tile / 2 * MESH_OVER_DETECTION, WHOLE_LOOK_SEES * whole)


def _settled(faces: list[FoundFace], largest_unseen: float, width: int, height: int) -> bool:
    """Whether the main face is already known: a face the tiles could add is at most
    `largest_unseen` px (`_largest_unseen_face`), so none of them outweighs (`face_weight`) a
    face found already that weighs more than such a face would at the image centre."""
    return any(face_weight(f.box, width, height) > largest_unseen for f in faces)


def _picture_key(rgb: np.ndarray, every_face: bool) -> tuple:
    """What identifies a look at a picture: its shape, a hash of its pixels, and what was asked."""
    # SHA-1 runs in the CPU's own instructions here: 5 ms for a 1080p frame, blake2b's 12.
    return every_face, rgb.shape, hashlib.sha1(np.ascontiguousarray(rgb).data).digest()


def _inside(box, outer) -> bool:
    """The centre of `box` lies within `outer`."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def _distinct(detections: list[Detection], max_iou: float) -> list[Detection]:
    """One detection per face: the highest-scoring of those that overlap."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        if all(iou(d.box, k.box) < max_iou for k in kept):
            kept.append(d)
    return kept


class FaceTracker:
    """Follows one face through the frames of a video (`step` per frame, in order).

    The first face is the one `FaceFinder.find` puts first (largest, most central); from
    then on the same person is followed, and a face found after a loss must be near the last
    place and size of the followed one, unless it was lost for more than `forget_after` frames.
    `faces_seen` is the most faces one detection found (for "several faces" messages).
    """

    def __init__(self, finder: FaceFinder, first_face: int | None = None):
        self.finder = finder
        self.first_face = first_face  # the face to follow, counted from the left in the first frame (None: the main one)
        self.config = finder.config
        self.faces_seen = 0
        self._last: FoundFace | None = None  # the followed face, as last seen
        self._held = False  # the last frame showed it
        self._since_check = 0
        self._lost_for = 0

    def step(self, rgb: np.ndarray) -> FoundFace | None:
        """The followed face in this frame, or None."""
        face = self._follow(rgb) if self._held else None
        if face is None:
            face = self._search(rgb)
        if face is None:
            self._held = False
            self._lost_for += 1
            return None
        self._last, self._held, self._lost_for = face, True, 0
        return face

    def _follow(self, rgb: np.ndarray) -> FoundFace | None:
        """The mesh where the face was (no detection). Every `check_every` frames, and when
        the mesh loses the face, the detectors look around it: a detection of the same face
        away from where the mesh went (drift) re-seeds the mesh there."""
        last = self._last
        points, presence = self.finder.mesh.run(rgb, region_from_landmarks(last.points3d))
        face = FoundFace(points, presence) if presence >= self.config.min_presence else None
        self._since_check += 1
        if face is not None and self._since_check < self.config.check_every:
            return face
        self._since_check = 0
        # The full-range detector alone: the face is at a quarter of the window, well within its
        # range, and the periodic look is what the tracker pays over the bare mesh.
        around = self.finder.detect_around(rgb, last.box, ranges=("full",))
        regions = [region_from_detection(d.box, d.eyes, d.detector) for d in around]
        k = same_face(last.box, [r.box() for r in regions])
        if k is None or (face is not None and iou(regions[k].box(), face.box) >= 0.5):
            return face  # the detector agrees with the mesh, or does not see the face (a profile)
        return self.finder.measure(rgb, regions[k], detection=around[k]) or face

    def _search(self, rgb: np.ndarray) -> FoundFace | None:
        # At the start (or once the followed face is forgotten) the face to use is all that
        # matters; a lost face may be a small one beside a larger person, so then look at all.
        starting = self._last is None or self._lost_for > self.config.forget_after
        choosing = self._last is None and self.first_face is not None  # every face counts when one is chosen
        faces = self.finder.find(rgb, every_face=not starting or choosing)
        self.faces_seen = max(self.faces_seen, len(faces))
        if not faces:
            return None
        if self._last is None and self.first_face is not None:
            return chosen_first(faces, self.first_face, "the first frame with a face")[0]
        if self._last is None or self._lost_for > self.config.forget_after:
            return faces[0]
        k = same_face(self._last.box, [f.box for f in faces])
        return None if k is None else faces[k]

