"""FaceAnalyzer: one interface over the face backends, for single images and for videos."""
from __future__ import annotations

import copy
import hashlib
import logging
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal

import cv2
import numpy as np

from ..media import to_rgb
from .crop import SquareBox, crop_image
from .analysis import FaceAnalysis, NoFaceError
from .finder_pool import FinderPool
from .finding import FaceTracker, FinderConfig, chosen_first
from .regions import faces_from_left
from .found import FoundFace
from .gaps import fill_gaps
from .mediapipe_models import PersonSegmenter
from .mesh_parsing import analysis_from_mesh, face_box
from .part_warp import warp_parts
from .smoothing import SmoothingConfig, smooth_stream

log = logging.getLogger(__name__)

Backend = Literal["auto", "mesh", "farl"]
#: The face parsers a motion map can be drawn with: the choices of the `parser` setting of a
#: model and of the animate options, and of `FaceAnalyzer(backend=...)`.
PARSERS: tuple[str, ...] = ("auto", "mesh", "farl")

#: Around a face smaller than a sixth of the image, the person mask is made again in a window
#: this many face sizes wide (the animation's crops are 2-2.6 face sizes).
PERSON_WINDOW = 3.0

#: Still pictures whose analysis an analyser remembers (a server's visitors upload theirs, then
#: press Animate; each analysis holds two picture-sized maps).
REMEMBERED_ANALYSES = 3

NO_FACE_HINT = "use a photo where one face is clearly visible, roughly frontal and at least 64 px wide"


@dataclass(frozen=True)
class TrackConfig:
    """How a driving video is tracked."""

    fps: float = 25.0  # frame rate, for the smoothing filter's time constants
    smoothing: SmoothingConfig | None = SmoothingConfig()  # None: raw landmarks
    max_gap: int = 12  # longest run of faceless frames filled from its neighbours
    max_missing: float = 0.5  # more faceless frames than this fraction is an error
    parse: bool = True  # run the backend's parser on every frame (False: mesh only, e.g. for warping)
    face: int | None = None  # the face to follow, counted from the left in the first frame (None: the main one)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def several_faces_note(faces: list[FoundFace], chosen: int | None = None) -> str:
    """What the user is told when an image shows several faces (the first is the one used;
    `chosen`: the number the user chose it by, counted from the left)."""
    x0, y0, x1, y1 = faces[0].box
    which = f"face {chosen}, as chosen" if chosen is not None else "the largest, most central one"
    return (f"found {len(faces)} faces; using {which} (x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f}; "
            "choose another with face N, counted from the left)")


class FaceAnalyzer:
    """Finds the face in images and videos and returns parsing maps with eye landmarks.

    backend: "mesh" (MediaPipe, offline), "farl" (facer's FaRL parser and WFLW landmarks,
    the paper's choice; needs its weights), or "auto" (farl when its weights are on disk
    and a GPU runs it, mesh otherwise).
    `self.backend` says which one runs and `self.backend_note` why.
    """

    def __init__(
        self,
        backend: Backend = "auto",
        *,
        segment: bool = True,
        device: str = "cpu",
        farl_models=None,
        finder: FinderConfig = FinderConfig(),
    ):
        if backend not in PARSERS:
            raise ValueError(f"backend must be 'auto', 'mesh' or 'farl', not {backend!r}")
        self.segment = segment
        self.finder_config = finder
        self._lock = threading.Lock()  # the remembered analyses (Gradio uses threads)
        self._segmenter_lock = threading.Lock()
        self._finders = FinderPool(finder)  # each look and each video borrows one
        # The last stills analysed, by picture: a job's check, then its engine; an upload, then its job.
        self._remembered: OrderedDict[tuple, FaceAnalysis] = OrderedDict()
        self._making: dict[tuple, Future] = {}  # pictures being analysed now, by key
        self._segmenter: PersonSegmenter | None = None
        self._farl = farl_models
        if backend == "farl" and farl_models is None:
            from .farl_backend import FarlModels

            self._farl = FarlModels.load(device=device, download=True)
        elif backend == "auto" and farl_models is None:
            from .farl_backend import FarlModels, local_weights, weights_dir

            if local_weights() is None:  # looked up without importing torch
                self.backend_note = f"mesh (MediaPipe): FaRL weights not found in {weights_dir()}"
            elif not _cuda_available():
                # FaRL's two ViT-B networks take ~30 s a frame on two CPU cores (bench/farl_parser.py).
                self.backend_note = ("mesh (MediaPipe): FaRL weights found, but without a GPU FaRL takes about "
                                     "30 s a frame; choose the farl parser to use it anyway")
            else:
                self._farl = FarlModels.load(device="cuda")
        self.backend = "farl" if self._farl is not None else "mesh"
        if self.backend == "farl":
            self.backend_note = "farl (FaRL parsing + WFLW eye landmarks)"
        elif backend == "mesh":
            self.backend_note = "mesh (MediaPipe face mesh + selfie segmentation)"
        log.info("face backend: %s", self.backend_note)

    # -- single images ------------------------------------------------------------------
    def _person_mask(self, rgb: np.ndarray, face: FoundFace) -> np.ndarray:
        """Selfie segmentation of the whole image; around a small face (a wide shot) again at
        the model's resolution, so the crops the animation uses get a mask of their own detail."""
        with self._segmenter_lock:  # one graph, not thread-safe
            return self._person_mask_locked(rgb, face)

    def _person_mask_locked(self, rgb: np.ndarray, face: FoundFace) -> np.ndarray:
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        mask = self._segmenter.mask(rgb)
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = face.box
        side = PERSON_WINDOW * max(x1 - x0, y1 - y0)
        if side < min(h, w) / 2:
            window = SquareBox((x0 + x1) / 2, (y0 + y1) / 2, side)
            near = self._segmenter.mask(crop_image(rgb, window, PersonSegmenter.INPUT))
            inverse = cv2.invertAffineTransform(window.matrix(PersonSegmenter.INPUT))
            inside = cv2.warpAffine(np.ones_like(near, np.uint8), inverse, (w, h), flags=cv2.INTER_NEAREST) > 0
            detail = cv2.warpAffine(near.astype(np.uint8), inverse, (w, h), flags=cv2.INTER_LINEAR) > 0
            mask = np.where(inside, detail, mask)
        return mask

    def analyze(self, image: np.ndarray, name: str = "image", face: int | None = None) -> FaceAnalysis:
        """Analyse the largest, most central human face of an RGB image (other forms are
        converted, with a note), or the face the user chose (`face`, counted from the image's
        left, from 1); when there are several, a note says so and `other_faces` holds the
        boxes of the rest. The same picture asked for again (a job's check, then its engine;
        an upload, then its job) is answered from memory, and while it is being analysed, by
        that analysis.

        Raises NoFaceError when there is no human face, media.InputError for unusable images,
        OptionError when `face` counts beyond the faces shown.
        """
        loaded = to_rgb(image, name)
        rgb = loaded.rgb
        key = (self.segment, face, rgb.shape,
               hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).digest())
        analysis = self._remembered_or_made(key, lambda: self._analyze(rgb, name, face))
        analysis.notes = list(loaded.notes) + analysis.notes
        for note in analysis.notes:
            log.info("%s: %s", name, note)
        return analysis

    def _remembered_or_made(self, key: tuple, make: Callable[[], FaceAnalysis]) -> FaceAnalysis:
        """A copy of the analysis remembered for `key`; if another thread is making it (an
        upload's analysis when Animate is pressed), that one, once made; otherwise `make()`,
        remembered. Looks at different pictures run side by side (finders are borrowed)."""
        with self._lock:
            known = self._remembered.get(key)
            if known is not None:
                return copy.deepcopy(known)
            pending = self._making.get(key)
            mine = pending is None
            if mine:
                pending = self._making[key] = Future()
        if not mine:
            try:
                return copy.deepcopy(pending.result())
            except Exception:  # its refusal names its caller's picture: make ours, with our own name
                return make()
        try:
            analysis = make()
        except BaseException as exc:
            with self._lock:
                del self._making[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._making[key]
            self._remembered[key] = analysis
            while len(self._remembered) > REMEMBERED_ANALYSES:
                self._remembered.popitem(last=False)  # the oldest
        pending.set_result(analysis)
        return copy.deepcopy(analysis)

    def _analyze(self, rgb: np.ndarray, name: str, face: int | None = None) -> FaceAnalysis:
        """`analyze` of an RGB picture; its notes are about the faces only (the caller adds what
        converting the picture called for)."""
        # The face to use alone needs no look for small faces once one settles it; a face
        # chosen by its place among the others needs them all.
        with self._finders.lent() as finder:
            faces = finder.find(rgb, every_face=face is not None)
        if not faces:
            raise NoFaceError(f"no face found in {name}: {NO_FACE_HINT}")
        faces = chosen_first(faces, face, name)
        points = faces[0].points
        person = self._person_mask(rgb, faces[0]) if self.segment else None
        if self._farl is not None:  # the mesh found and aligned the face; FaRL parses it
            from .farl_backend import analyze_with_farl

            analysis = analyze_with_farl(self._farl, rgb, points, face_box(points, rgb.shape[:2]), person)
        else:
            analysis = analysis_from_mesh(points, rgb.shape[:2], person)
        analysis.notes = [several_faces_note(faces, face)] if len(faces) > 1 else []
        analysis.other_faces = [f.box for f in faces[1:]]
        return analysis

    def face_boxes(self, image: np.ndarray, name: str = "image") -> list[tuple[float, float, float, float]]:
        """The boxes (x0, y0, x1, y1) of the human faces in an image, from its left to its right:
        face N of `analyze(..., face=N)` is the N-th box (what a picker offers)."""
        rgb = to_rgb(image, name).rgb
        with self._finders.lent() as finder:
            boxes = [f.box for f in finder.find(rgb)]
        return [boxes[i] for i in faces_from_left(boxes)]

    def finds_face(self, image: np.ndarray, name: str = "image") -> bool:
        """Whether `image` shows a human face: `analyze`'s finding alone (no maps, and no look
        for smaller faces once one settles which face it would be)."""
        rgb = to_rgb(image, name).rgb
        with self._finders.lent() as finder:
            return bool(finder.find(rgb, every_face=False))

    # -- videos -------------------------------------------------------------------------
    def iter_track(self, frames: Iterable[np.ndarray], config: TrackConfig = TrackConfig()) -> Iterator[FaceAnalysis | None]:
        """Analyse a driving video frame by frame, lazily: one face followed through the clip
        (`finding.FaceTracker`: the largest, most central face first, then the same person,
        at any size down to `FinderConfig.smallest_face`), then short gaps filled from
        neighbours, then lag-free adaptive smoothing of the landmarks (results come
        `smoothing.radius` frames behind the input).

        With the FaRL backend every frame is also parsed by FaRL, and its parts are moved
        from the raw mesh to the smoothed one (`part_warp`), so both parsers' maps are
        smoothed by the same landmark filter. Yields one item per frame (None where no face
        could be found or filled); raises NoFaceError at the end if more than
        `config.max_missing` of the frames had no face. Person segmentation is skipped (the
        motion map does not use it): `foreground` is the face.
        """
        for tracked in self._tracked(frames, config):
            if tracked is None:
                yield None
                continue
            points, was_filled, detection, shape = tracked
            if detection.parse is None:
                analysis = analysis_from_mesh(points, shape)
            else:  # the parser's parts, moved to the smoothed (or filled-in) mesh
                analysis = warp_parts(detection.parse, detection.parse.landmarks, points, shape)
                analysis.backend = "farl"
            analysis.interpolated = was_filled
            yield analysis

    def iter_landmarks(self, frames: Iterable[np.ndarray], config: TrackConfig = TrackConfig(parse=False)) -> Iterator[np.ndarray | None]:
        """The (478, 2) mesh points `iter_track` would give each frame (None: no face), without
        drawing parsing maps: for the preview's warp, which needs the mesh alone."""
        for tracked in self._tracked(frames, config):
            yield None if tracked is None else tracked[0]

    def _tracked(self, frames: Iterable[np.ndarray], config: TrackConfig) -> Iterator[tuple | None]:
        """(smoothed points, filled in?, detection, frame shape) per frame; None: no face."""
        shapes: list[tuple[int, int]] = []
        counts = {"frames": 0, "missing": 0}
        finder = self._finders.borrow()
        tracker = FaceTracker(finder, config.face)

        def detections() -> Iterator[_Detection | None]:
            for i, frame in enumerate(frames):
                rgb = to_rgb(frame, f"frame {i}").rgb
                shapes.append(rgb.shape[:2])
                counts["frames"] += 1
                face = tracker.step(rgb)
                if face is None:
                    counts["missing"] += 1
                    yield None
                    continue
                parse = None
                if self._farl is not None and config.parse:
                    from .farl_backend import analyze_with_farl

                    parse = analyze_with_farl(self._farl, rgb, face.points, face_box(face.points, rgb.shape[:2]), None)
                yield _Detection(face.points, parse)

        filled = fill_gaps(detections(), config.max_gap, _Detection.blend)
        stream = ((d.points if d else None, (flag, d)) for d, flag in filled)
        if config.smoothing is not None:
            stream = smooth_stream(stream, config.fps, config.smoothing)
        try:
            for i, (points, (was_filled, detection)) in enumerate(stream):
                yield None if points is None else (points, was_filled, detection, shapes[i])
        finally:
            self._finders.give_back(finder)
        if counts["frames"] == 0:
            raise NoFaceError("the video has no frames")
        if counts["missing"] > config.max_missing * counts["frames"]:
            raise NoFaceError(
                f"no face in {counts['missing']} of {counts['frames']} frames of the driving video: "
                "use a clip where the face stays visible"
            )
        if tracker.faces_seen > 1 and config.face is None:
            log.warning("the driving video shows %d faces; following the largest, most central one", tracker.faces_seen)
        if counts["missing"]:
            log.warning("the face was found in %d of %d frames of the driving video; the others take their motion "
                        "from the nearest frames with a face", counts["frames"] - counts["missing"], counts["frames"])

    def track(self, frames: Iterable[np.ndarray], config: TrackConfig = TrackConfig()) -> list[FaceAnalysis | None]:
        """`iter_track` as a list (one entry per frame; None: no face)."""
        return list(self.iter_track(frames, config))

    def close(self) -> None:
        """Free the native MediaPipe graphs now rather than at garbage collection (and the
        remembered analysis with them)."""
        self._remembered.clear()
        self._finders.close()
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # analysers dropped without close() must not keep their graphs
        if sys.is_finalizing():  # the process ends anyway; closing BlazePose's graph now hangs
            return
        try:
            self.close()
        except Exception:  # interpreter shutdown: the native side may already be gone
            pass


@dataclass
class _Detection:
    """One tracked frame: raw mesh points, and the parser's analysis when it is not the mesh."""

    points: np.ndarray
    parse: FaceAnalysis | None = None

    @staticmethod
    def blend(a: "_Detection", b: "_Detection", t: float) -> "_Detection":
        """A filled-in frame: points interpolated, the nearer frame's parse."""
        return _Detection((1 - t) * a.points + t * b.points, a.parse if t < 0.5 else b.parse)
