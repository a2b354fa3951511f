"""Faces wherever a person would see one: small faces in wide shots (made by shrinking the
sample portraits and clips into large frames), animals refused, several people, and the
same face followed all through a clip."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from conftest import shared_file
from vivid.face import FaceAnalyzer, NoFaceError, TrackConfig, paste_crop
from vivid.face.finding import FaceFinder, FaceTracker
from vivid.face.mediapipe_models import FaceDetectors
from vivid.media import load_image, read_video

FULL_HD = (1080, 1920)  # (height, width)
PORTRAIT_HD = (1920, 1080)

#: "Within a few pixels": mean distance of the 478 mesh points from where the unpadded
#: original's points land in the wide frame.
MEAN_ERROR_PX = 3.0


def backdrop(shape: tuple[int, int]) -> np.ndarray:
    """A soft grey-blue gradient with mild noise, like an out-of-focus wall."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 90 + 60 * (xx / w) + 30 * (yy / h)
    noise = np.random.default_rng(0).normal(0, 4, (h, w)).astype(np.float32)
    return np.clip(np.stack([base + noise, base + 10 + noise, base + 25 + noise], axis=2), 0, 255).astype(np.uint8)


def place(image: np.ndarray, face_side: float, share: float, shape: tuple[int, int], at: tuple[float, float],
          face_centre: np.ndarray, canvas: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """`image` shrunk so that a face `face_side` px wide becomes `share` of the frame's shorter
    side, pasted so that the face centre lands at `at` (fractions of width, height). Returns
    the frame, the scale and the offset (a point p of `image` is at p * scale + offset)."""
    h, w = shape
    scale = share * min(h, w) / face_side
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    offset = np.array([at[0] * w, at[1] * h]) - face_centre * scale
    frame = backdrop(shape) if canvas is None else canvas.copy()
    m = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    # The shrunk picture is drawn with its exact sub-pixel offset, onto the backdrop.
    warped = cv2.warpAffine(small, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    inside = cv2.warpAffine(np.ones(small.shape[:2], np.float32), m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame = (frame * (1 - inside) + warped * inside).round().astype(np.uint8)
    return frame, scale, offset


def face_of(points: np.ndarray) -> tuple[float, np.ndarray]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(max(hi - lo)), (lo + hi) / 2


def mean_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected, axis=1).mean())


@pytest.fixture(scope="module")
def finder():
    f = FaceFinder()
    yield f
    f.close()


def portrait(name: str) -> np.ndarray:
    return load_image(shared_file("source", name)).rgb


# -- stills ------------------------------------------------------------------------------------
def check_wide_shot(analyzer, image: np.ndarray, share: float, shape, at) -> float:
    original = analyzer.analyze(image).landmarks
    side, centre = face_of(original)
    frame, scale, offset = place(image, side, share, shape, at, centre)
    found = analyzer.analyze(frame)
    error = mean_error(found.landmarks, original * scale + offset)
    assert error < MEAN_ERROR_PX, f"face at {share:.0%} of {shape}: mean error {error:.2f} px"
    return error


@pytest.mark.parametrize("share", [0.05, 0.08, 0.15, 0.3])
@pytest.mark.parametrize("at", [(0.5, 0.45), (0.12, 0.75), (0.9, 0.2)])
def test_small_faces_in_a_wide_shot_are_found_where_the_original_puts_them(analyzer, astronaut, share, at):
    check_wide_shot(analyzer, astronaut, share, FULL_HD, at)


@pytest.mark.parametrize("name", ["s1.jpg", "s9.jpg", "d9.jpg", "s0.jpg"])
def test_photos_and_paintings_at_five_percent_of_a_tall_frame(analyzer, name):
    check_wide_shot(analyzer, portrait(name), 0.05, PORTRAIT_HD, (0.4, 0.3))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s0.jpg", "s1.jpg", "s2.jpg", "s4.jpg", "s5.jpg", "s9.jpg", "s10.jpg", "s12.jpg",
                                  "d8.jpg", "d9.jpg", "d12.jpg", "d19.jpg"])
def test_every_sample_portrait_from_five_percent_up(analyzer, name):
    image = portrait(name)
    for shape in (FULL_HD, PORTRAIT_HD):
        for share in (0.05, 0.07, 0.1, 0.2):
            for at in ((0.5, 0.5), (0.15, 0.2), (0.85, 0.8)):
                check_wide_shot(analyzer, image, share, shape, at)


@pytest.mark.parametrize("name", ["s25.jpg", "s33.jpg"])
@pytest.mark.parametrize("share", [None, 0.12])
def test_the_dogs_are_refused_in_close_ups_and_wide_shots(analyzer, name, share):
    image = portrait(name)
    if share is not None:
        h, w = image.shape[:2]
        image = place(image, min(h, w) / 2, share, FULL_HD, (0.3, 0.5), np.array([w / 2, h / 2]))[0]
    with pytest.raises(NoFaceError, match="no face found"):
        analyzer.analyze(image, name)


def test_a_speck_the_detector_takes_for_a_face_in_a_wide_picture_is_not_one(analyzer):
    """scikit-image's rocket shrunk into a wide grey frame: the detector sees a 12x17 px "face"
    on the gantry, under both size floors (2.5% of the shorter side, 24 px)."""
    from skimage import data

    rocket = cv2.resize(data.rocket(), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    wide = cv2.copyMakeBorder(rocket, 300, 300, 500, 500, cv2.BORDER_CONSTANT, value=(120, 120, 120))
    with pytest.raises(NoFaceError, match="no face found"):
        analyzer.analyze(wide, "rocket")


def test_of_two_people_the_larger_is_used_and_the_other_is_reported(analyzer, astronaut, grace_hopper):
    a = analyzer.analyze(astronaut).landmarks
    g = analyzer.analyze(grace_hopper).landmarks
    frame, scale, offset = place(astronaut, face_of(a)[0], 0.12, FULL_HD, (0.7, 0.4), face_of(a)[1])
    frame, *_ = place(grace_hopper, face_of(g)[0], 0.08, FULL_HD, (0.25, 0.45), face_of(g)[1], canvas=frame)
    result = analyzer.analyze(frame)
    assert mean_error(result.landmarks, a * scale + offset) < MEAN_ERROR_PX
    assert result.faces_found == 2 and len(result.other_faces) == 1
    assert result.other_faces[0][2] < 0.4 * 1920  # Grace Hopper, on the left
    assert any("found 2 faces; using the largest, most central one" in n for n in result.notes)


def test_a_face_filling_the_whole_picture_is_found(analyzer, astronaut, astronaut_analysis):
    x0, y0, x1, y1 = (int(v) for v in astronaut_analysis.box)
    close_up = cv2.resize(astronaut[y0:y1, x0:x1], (600, 600), interpolation=cv2.INTER_CUBIC)
    found = analyzer.analyze(close_up)
    assert found.face_size > 450


# -- crops at small sizes ----------------------------------------------------------------------------
def test_reference_crop_and_paste_back_of_a_small_face(astronaut, astronaut_analysis, caplog):
    from vivid import VividPipeline

    side, centre = face_of(astronaut_analysis.landmarks)
    frame, scale, offset = place(astronaut, side, 0.05, FULL_HD, (0.3, 0.4), centre)
    pipe = VividPipeline.tiny(resolution=256)
    with caplog.at_level(logging.WARNING, logger="vivid"):
        ref = pipe.prepare_reference(frame)
    assert "face in the reference is small" in caplog.text
    # The crop is centred on the face, about two face sizes wide.
    face_centre = np.array(centre) * scale + offset
    assert abs(ref.square.cx - face_centre[0]) < 0.15 * ref.square.size
    assert 1.6 * 0.05 * 1080 < ref.square.size < 2.6 * 0.05 * 1080
    # Pasting the crop back changes nothing outside its square and little inside it.
    back = paste_crop(frame, ref.image, ref.square, pipe.crop)
    x0, y0 = int(ref.square.cx - ref.square.size / 2) - 2, int(ref.square.cy - ref.square.size / 2) - 2
    x1, y1 = int(x0 + ref.square.size) + 5, int(y0 + ref.square.size) + 5
    outside = np.ones(frame.shape[:2], bool)
    outside[max(y0, 0) : y1, max(x0, 0) : x1] = False
    assert np.array_equal(back[outside], frame[outside])
    assert np.abs(back[y0:y1, x0:x1].astype(int) - frame[y0:y1, x0:x1]).mean() < 4


def test_the_preview_engine_animates_a_small_face_in_a_wide_shot(astronaut, astronaut_analysis):
    from vivid.preview import PreviewAnimator

    side, centre = face_of(astronaut_analysis.landmarks)
    frame, *_ = place(astronaut, side, 0.06, FULL_HD, (0.6, 0.4), centre)
    driving = [np.roll(astronaut, 3 * i, axis=1) for i in range(5)]
    out = list(PreviewAnimator().stream(frame, driving))
    assert len(out) == 5 and out[-1].shape == frame.shape
    changed = np.abs(out[-1].astype(int) - frame).max(axis=2) > 10
    ys, xs = np.nonzero(changed)
    assert len(xs) and abs(xs.mean() - 0.6 * 1920) < 2 * side and abs(ys.mean() - 0.4 * 1080) < 2 * side


# -- videos ------------------------------------------------------------------------------------
def padded_clip(frames: list[np.ndarray], share: float, shape, start: tuple[float, float], pan: float,
                face_side: float, face_centre: np.ndarray):
    """The clip shrunk into a larger frame, panning `pan` px per frame to the right."""
    h, w = shape
    out, moves = [], []
    for i, f in enumerate(frames):
        at = (start[0] + pan * i / w, start[1])
        frame, scale, offset = place(f, face_side, share, shape, at, face_centre)
        out.append(frame)
        moves.append((scale, offset))
    return out, moves


@pytest.fixture(scope="module")
def d0():
    return list(read_video(shared_file("driving", "d0.mp4"), max_frames=40))


@pytest.mark.parametrize("share, shape, pan", [(0.05, FULL_HD, 3.0), (0.06, PORTRAIT_HD, 0.0), (0.2, FULL_HD, -4.0)])
def test_a_talking_head_in_a_wide_shot_is_tracked_like_the_original(analyzer, d0, share, shape, pan):
    config = TrackConfig(fps=25, smoothing=None)
    original = [a.landmarks for a in analyzer.track(d0, config)]
    side, centre = face_of(original[0])
    wide, moves = padded_clip(d0, share, shape, (0.45, 0.4), pan, side, centre)
    tracked = analyzer.track(wide, config)
    assert all(a is not None and not a.interpolated for a in tracked)
    errors = [mean_error(a.landmarks, p * s + o) for a, p, (s, o) in zip(tracked, original, moves)]
    assert max(errors) < MEAN_ERROR_PX, f"mean error per frame up to {max(errors):.2f} px"


def test_tracking_runs_the_detector_only_when_needed(d0, monkeypatch):
    frame = [0]
    looked = set()  # frames on which a detector ran
    detect = FaceDetectors.detect

    def counted(self, rgb, window, ranges=("full", "short")):
        looked.add(frame[0])
        return detect(self, rgb, window, ranges)

    monkeypatch.setattr(FaceDetectors, "detect", counted)
    with FaceFinder() as finder:
        tracker = FaceTracker(finder)
        for k, f in enumerate(d0):
            frame[0] = k
            assert tracker.step(f) is not None
    # The first frame, then a look around the face every check_every frames.
    every = finder.config.check_every
    assert looked == {0, *range(every, len(d0), every)}


def test_two_people_in_a_clip_the_larger_is_followed_all_through(analyzer, d0):
    other = list(read_video(shared_file("driving", "d12.mp4"), max_frames=len(d0)))
    config = TrackConfig(fps=25, smoothing=None)
    first = analyzer.track(d0[:1], config)[0].landmarks
    side, centre = face_of(first)
    second = analyzer.track(other[:1], config)[0].landmarks
    frames = []
    for a, b in zip(d0, other):
        frame, *_ = place(a, side, 0.14, FULL_HD, (0.7, 0.45), centre)  # larger, right
        frame, *_ = place(b, face_of(second)[0], 0.09, FULL_HD, (0.3, 0.45), face_of(second)[1], canvas=frame)
        frames.append(frame)
    # The followed person's face is hidden for a few frames: the tracker waits for it
    # instead of jumping to the other person.
    hidden = range(15, 19)
    for k in hidden:
        cv2.rectangle(frames[k], (1150, 250), (1550, 750), (90, 100, 115), -1)
    tracked = analyzer.track(frames, TrackConfig(fps=25, smoothing=None, max_gap=0, max_missing=0.5))
    for k, a in enumerate(tracked):
        if k in hidden:
            assert a is None, f"frame {k}: jumped to the other person"
        else:
            assert a is not None and (a.box[0] + a.box[2]) / 2 > 0.55 * 1920, f"frame {k}: not the larger face"


#: A monkey's photo available offline: OpenCV's mandrill (Debian's opencv-doc, or the folder
#: $OPENCV_SAMPLES_DATA_PATH names, as OpenCV's own samples look for it).
MANDRILL_PLACES = ["/usr/share/doc/opencv-doc/examples/data/baboon.jpg",
                   os.path.join(os.environ.get("OPENCV_SAMPLES_DATA_PATH", "/nonexistent"), "baboon.jpg")]


def mandrill() -> np.ndarray:
    for place in MANDRILL_PLACES:
        if os.path.isfile(place):
            return load_image(place).rgb
    pytest.skip("no monkey picture here: install Debian's opencv-doc (OpenCV's sample images)")


def test_a_monkeys_face_is_not_taken_for_a_human_one(analyzer):
    """Issue 32: at 256 px the mandrill passes every view of the human check but one (the mesh,
    its presence score and the person mask all take it for a person); BlazePose finds a person
    with its face elsewhere, which alone refuses it. Every size and turn at which the detector
    fires on it is refused; the sample people still pass (test_every_sample_portrait_...)."""
    face = mandrill()
    refused = 0
    for side in (160, 200, 256, 320):
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        for variant in (small, small[:, ::-1], cv2.warpAffine(small, cv2.getRotationMatrix2D((side / 2, side / 2), 15,
                                                                                              1), (side, side))):
            with pytest.raises(NoFaceError, match="no face found"):
                analyzer.analyze(np.ascontiguousarray(variant), "monkey.jpg")
            refused += 1
    assert refused == 12


def test_a_dog_clip_has_no_face(analyzer):
    dog = portrait("s25.jpg")
    frames = [np.roll(dog, 3 * i, axis=1) for i in range(8)]
    with pytest.raises(NoFaceError, match="no face in 8 of 8 frames"):
        analyzer.track(frames)


def test_mesh_runner_and_evaluation_use_the_same_faces(astronaut, astronaut_analysis):
    from vivid.evaluation.face_geometry import still_face
    from vivid.face.mesh_backend import MeshRunner

    with MeshRunner() as runner:
        (points,) = runner.faces(astronaut)
    np.testing.assert_allclose(points, astronaut_analysis.landmarks, atol=1e-4)
    geometry = still_face(astronaut)
    np.testing.assert_allclose(geometry.points[:, :2], astronaut_analysis.landmarks, atol=1e-3)
    assert np.ptp(geometry.points[:, 2]) > 0.3 * astronaut_analysis.face_size  # depth kept, in pixel scale


def test_finder_lists_every_face_main_first(finder, astronaut, grace_hopper):
    frame = np.full((512, 768, 3), 128, np.uint8)
    frame[100:400, :256] = cv2.resize(grace_hopper, (256, 300))  # her face about 70 px
    frame[:, 256:] = astronaut  # hers about 100 px
    faces = finder.find(frame)
    assert len(faces) == 2
    assert faces[0].box[0] > 256  # the astronaut: larger and nearer the centre
    assert all(f.presence > 0.9 for f in faces)


def test_the_face_to_use_alone_skips_the_tiles_only_when_no_small_face_could_outweigh_it(
        finder, astronaut, grace_hopper, monkeypatch):
    windows = []  # sides of the windows the detectors looked through
    detect = FaceDetectors.detect

    def counted(self, rgb, window, ranges=("full", "short")):
        windows.append(window.size)
        return detect(self, rgb, window, ranges)

    monkeypatch.setattr(FaceDetectors, "detect", counted)
    # A close-up: the whole-image look settles it, no tile is looked through.
    side, centre = face_of(finder.find(astronaut)[0].points)
    close_up = place(astronaut, side, 0.45, (512, 512), (0.5, 0.45), centre)[0]
    windows.clear()
    (alone,) = finder.find(close_up, every_face=False)
    assert min(windows) >= 512  # the whole image and the look around the face at its own scale (tiles: 205 px)
    np.testing.assert_allclose(alone.points, finder.find(close_up)[0].points, atol=1e-3)
    # Two people, both small: the tiles are needed, and the same face comes first either way.
    g_side, g_centre = face_of(finder.find(grace_hopper)[0].points)
    frame, *_ = place(astronaut, side, 0.07, FULL_HD, (0.75, 0.4), centre)
    frame, *_ = place(grace_hopper, g_side, 0.05, FULL_HD, (0.3, 0.5), g_centre, canvas=frame)
    windows.clear()
    first = finder.find(frame, every_face=False)[0]
    assert len(windows) > 10  # the tiles
    assert (first.box[0] + first.box[2]) / 2 > 0.6 * 1920  # the astronaut, the larger face


@pytest.mark.parametrize("width", [10.0, 100.0, 300.0])
@pytest.mark.parametrize("whole", [512.0, 1920.0])
def test_no_face_that_only_the_tiles_find_outweighs_a_settled_one(width, whole):
    """`_settled`'s bound, at its edge: a tile face's detection is under half a tile, its mesh
    box at most `MESH_OVER_DETECTION` times that, and under `WHOLE_LOOK_SEES` of the whole
    look's window (larger ones that look saw), at the very centre."""
    from vivid.face.finding import MESH_OVER_DETECTION, WHOLE_LOOK_SEES, FoundFace, _largest_unseen_face, _settled
    from vivid.face.regions import main_face

    def face(cx: float, cy: float, side: float) -> FoundFace:
        points = np.zeros((478, 3), np.float32)
        points[:239, :2], points[239:, :2] = (cx - side / 2, cy - side / 2), (cx + side / 2, cy + side / 2)
        return FoundFace(points, 1.0)

    tile = 2 * width
    w, h = 1920, 1080
    unseen = _largest_unseen_face(tile, whole)
    assert unseen == min(tile / 2 * MESH_OVER_DETECTION, WHOLE_LOOK_SEES * whole)
    worst = face(w / 2, h / 2, unseen * 0.999)  # the largest a face only the tiles find can be
    for corner in ((0.02 * w, 0.03 * h), (0.5 * w, 0.6 * h), (0.97 * w, 0.9 * h)):
        for side in np.linspace(tile / 4, 3 * tile, 12):
            found = face(*corner, side)
            if _settled([found], unseen, w, h):
                assert main_face([found.box, worst.box], w, h) == 0


def test_an_empty_region_gives_no_face_instead_of_stopping_the_program(finder, astronaut):
    from vivid.face.regions import MeshRegion

    points, presence = finder.mesh.run(astronaut, MeshRegion(200.0, 200.0, 0.0))
    assert presence == 0.0 and not points.any()


def test_no_face_in_a_blank_wide_frame(finder):
    assert finder.find(backdrop(FULL_HD)) == []
