"""Face analysis on real faces: parts where they are, in the right order, of plausible size."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import shared_file
from vivid.face import LABELS, NoFaceError, label_mask
from vivid.face.labels import LABEL_INDEX
from vivid.media import InputError, load_image

PHOTOS = ["s1.jpg", "s2.jpg", "s12.jpg", "d8.jpg", "d9.jpg", "d12.jpg", "d19.jpg"]
PAINTINGS = ["s0.jpg", "s4.jpg", "s5.jpg", "s9.jpg", "s10.jpg"]


def centroid_y(analysis, *names):
    ys, _ = np.nonzero(label_mask(analysis.labels, *names))
    assert len(ys), f"no pixels of {names}"
    return ys.mean()


def check_face(a):
    """The checks every real face must pass."""
    # Irises inside their own eye regions, image-left eye first.
    assert a.iris[0, 0] < a.iris[1, 0]
    for side, name in enumerate(("left_eye", "right_eye")):
        x, y = np.round(a.iris[side]).astype(int)
        eye = a.labels == LABEL_INDEX[name]
        assert eye[y - 1 : y + 2, x - 1 : x + 2].any(), f"iris {side} not in {name}"
        assert a.eye_contour(side)[:, 0].mean() == pytest.approx(np.nonzero(eye)[1].mean(), abs=a.face_size * 0.05)
    # Vertical order of the parts.
    brows = centroid_y(a, "left_brow", "right_brow")
    eyes = centroid_y(a, "left_eye", "right_eye")
    nose = centroid_y(a, "nose")
    lips = centroid_y(a, "upper_lip", "lower_lip")
    assert brows < eyes < nose < lips
    assert centroid_y(a, "upper_lip") < centroid_y(a, "lower_lip")
    # Areas relative to the face box.
    x0, y0, x1, y1 = a.box
    box_area = (x1 - x0) * (y1 - y0)
    frac = {n: label_mask(a.labels, n).sum() / box_area for n in LABELS}
    for eye in ("left_eye", "right_eye"):
        assert 0.002 < frac[eye] < 0.05, (eye, frac[eye])
    for brow in ("left_brow", "right_brow"):
        assert 0.002 < frac[brow] < 0.06, (brow, frac[brow])
    assert 0.01 < frac["nose"] < 0.15
    assert 0.01 < frac["upper_lip"] + frac["lower_lip"] + frac["inner_mouth"] < 0.15
    assert frac["skin"] > 0.3
    # The face box sits on the face and the person mask covers the face.
    assert a.foreground[label_mask(a.labels, "skin", "nose")].mean() > 0.99


def test_astronaut(astronaut_analysis, astronaut):
    a = astronaut_analysis
    check_face(a)
    assert a.labels.shape == astronaut.shape[:2] and a.labels.dtype == np.uint8
    # Known position of her face in the 512 x 512 image.
    x0, y0, x1, y1 = a.box
    assert 150 < x0 < 200 and 250 < x1 < 300 and 50 < y0 < 100 and 150 < y1 < 200
    # Background of the photo (top-right corner, the flag/space) is background; her hair is hair.
    assert not a.foreground[:40, 440:].any()
    assert a.labels[int(y0) + 5, int((x0 + x1) / 2)] in (LABEL_INDEX["hair"], LABEL_INDEX["skin"])
    assert label_mask(a.labels, "hair").sum() > 2000


def test_grace_hopper(analyzer, grace_hopper):
    check_face(analyzer.analyze(grace_hopper))


def test_mirrored_image_swaps_sides(analyzer, astronaut, astronaut_analysis):
    m = analyzer.analyze(astronaut[:, ::-1])
    check_face(m)
    w = astronaut.shape[1]
    assert m.iris[0, 0] == pytest.approx(w - 1 - astronaut_analysis.iris[1, 0], abs=3)


@pytest.mark.parametrize("name", PHOTOS + PAINTINGS)
def test_shared_portraits(analyzer, name):
    a = analyzer.analyze(load_image(shared_file("source", name)).rgb, name)
    check_face(a)


@pytest.mark.parametrize("image", [np.full((256, 256, 3), 127, np.uint8), "noise"])
def test_no_face_raises(analyzer, image):
    if isinstance(image, str):
        image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no face"):
        analyzer.analyze(image)
    assert issubclass(NoFaceError, ValueError)


def test_a_dog_has_no_human_face(analyzer):
    rgb = load_image(shared_file("source", "s33.jpg")).rgb
    with pytest.raises(NoFaceError, match="no face"):
        analyzer.analyze(rgb, "s33.jpg")


def test_the_other_dog_has_no_human_face_either(analyzer):
    """MediaPipe's detector and mesh take this dog for a face; the human check refuses it."""
    with pytest.raises(NoFaceError):
        analyzer.analyze(load_image(shared_file("source", "s25.jpg")).rgb, "s25.jpg")


def test_several_faces_uses_largest_and_says_so(analyzer, big_face, grace_hopper):
    small = np.asarray(Image.fromarray(grace_hopper).resize((300, 384)))
    canvas = np.full((512, 812, 3), 255, np.uint8)
    canvas[:, :512] = big_face[0]
    canvas[64:448, 512:] = small
    a = analyzer.analyze(canvas)
    assert any("2 faces" in n for n in a.notes)
    assert a.box[2] < 512  # the big face, on the left


def test_small_face_in_a_large_image_is_found(analyzer, astronaut):
    canvas = np.full((1024, 1536, 3), 200, np.uint8)
    canvas[400:912, 900:1412] = astronaut  # face about 6% of the image width
    a = analyzer.analyze(canvas)
    check_face(a)
    assert 900 + 150 < a.box[0] < a.box[2] < 900 + 300


def test_odd_image_modes_are_converted(analyzer, astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    a = analyzer.analyze(gray)
    assert any("grayscale" in n for n in a.notes)
    check_face(a)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    check_face(analyzer.analyze(rgba))
    deep = astronaut.astype(np.uint16) * 257
    a16 = analyzer.analyze(deep)
    assert any("16-bit" in n for n in a16.notes)
    check_face(a16)


def test_exif_rotated_file_is_turned_upright(analyzer, astronaut, tmp_path):
    # Stored sideways with EXIF orientation 6 ("rotate 90 CW to display"), like phone photos.
    sideways = Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    sideways.save(path, exif=exif)
    loaded = load_image(path)
    assert any("EXIF" in n for n in loaded.notes)
    check_face(analyzer.analyze(loaded.rgb))


def test_bad_images_have_clear_errors(analyzer, tmp_path):
    with pytest.raises(InputError, match="at least 64 px"):
        analyzer.analyze(np.zeros((40, 300, 3), np.uint8))
    with pytest.raises(InputError, match="MP"):
        analyzer.analyze(np.zeros((9000, 6000), np.uint8))
    with pytest.raises(InputError, match="shape"):
        analyzer.analyze(np.zeros((100, 100, 5), np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(bad)
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_palette_image_file(analyzer, astronaut, tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    check_face(analyzer.analyze(load_image(path).rgb))


def test_the_same_picture_twice_is_analysed_once_and_answers_alike(astronaut, big_face, grace_hopper, monkeypatch):
    """A job checks the portrait, then its engine prepares it: the second look is free, and
    what one caller does to its answer does not reach the next."""
    from vivid.face import FaceAnalyzer
    from vivid.face.finding import FaceFinder

    finds = []
    find = FaceFinder.find
    monkeypatch.setattr(FaceFinder, "find", lambda self, rgb, every_face=True: finds.append(1) or find(self, rgb, every_face))
    with FaceAnalyzer("mesh", segment=False) as analyzer, FaceAnalyzer("mesh", segment=False) as fresh:
        first = analyzer.analyze(astronaut, "the portrait")
        first.labels[:] = 0
        first.notes.append("changed by its caller")
        second = analyzer.analyze(astronaut.copy(), "the reference image")
        assert len(finds) == 1
        assert second.labels.any() and second.notes == []
        gray = np.asarray(Image.fromarray(astronaut).convert("L"))
        assert any("grayscale" in n for n in analyzer.analyze(gray).notes)  # another picture: looked at again
        assert len(finds) == 2
        # Two faces: the note says so once, however often the picture is asked for.
        canvas = np.full((512, 812, 3), 255, np.uint8)
        canvas[:, :512] = big_face[0]
        canvas[64:448, 512:] = np.asarray(Image.fromarray(grace_hopper).resize((300, 384)))
        for _ in range(2):
            assert sum("2 faces" in n for n in analyzer.analyze(canvas).notes) == 1
        np.testing.assert_allclose(analyzer.analyze(grace_hopper).landmarks, fresh.analyze(grace_hopper).landmarks,
                                   atol=1e-4)
        # Asked for the person mask now: a new analysis, not the remembered one without it.
        analyzer.segment = True
        labels = analyzer.analyze(grace_hopper).labels
        assert np.isin(labels, [LABEL_INDEX["hair"], LABEL_INDEX["body"]]).any()
        assert len(finds) == 6


def test_finds_face_says_whether_there_is_a_human_face(analyzer, astronaut):
    assert analyzer.finds_face(astronaut)
    assert not analyzer.finds_face(load_image(shared_file("source", "s25.jpg")).rgb)  # the dog
    assert not analyzer.finds_face(np.full((300, 400, 3), 128, np.uint8))


def test_a_picture_asked_for_while_it_is_analysed_is_analysed_once(astronaut, monkeypatch):
    """An upload's analysis still running when Animate asks for the same portrait: the job
    waits for it instead of looking again beside it; both get the same answer, each its own copy."""
    import threading

    from vivid.face import FaceAnalyzer
    from vivid.face.finding import FaceFinder

    finds, started, go = [], threading.Event(), threading.Event()
    find = FaceFinder.find

    def slow_find(self, rgb, every_face=True):
        finds.append(1)
        started.set()
        go.wait(10)
        return find(self, rgb, every_face)

    monkeypatch.setattr(FaceFinder, "find", slow_find)
    with FaceAnalyzer("mesh", segment=False) as analyzer:
        answers = {}
        upload = threading.Thread(target=lambda: answers.setdefault("upload", analyzer.analyze(astronaut)))
        upload.start()
        assert started.wait(10)
        job = threading.Thread(target=lambda: answers.setdefault("job", analyzer.analyze(astronaut.copy())))
        job.start()
        go.set()
        upload.join(30)
        job.join(30)
    assert len(finds) == 1
    np.testing.assert_array_equal(answers["upload"].landmarks, answers["job"].landmarks)
    assert answers["upload"] is not answers["job"] and answers["upload"].labels is not answers["job"].labels
