"""Square crops: the face ends up centred, points and pixels agree, paste-back restores."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from vivid.face import CropConfig, SquareBox, crop_analysis, crop_image, face_square, paste_crop, video_square

coord = st.floats(-200, 700)


@settings(max_examples=50, deadline=None)
@given(x=st.integers(0, 399), y=st.integers(0, 299), out=st.sampled_from([64, 128, 256]),
       zoom=st.floats(1.5, 4), u=st.floats(3, 60), v=st.floats(3, 60))
def test_points_and_pixels_move_together(x, y, out, zoom, u, v):
    """A marked pixel lands where crop_analysis' point transform says it lands (every
    example checks: the crop is placed so that the mark falls at (u, v) inside it)."""
    u, v = u / 64 * out, v / 64 * out
    size = out / zoom  # upsampling, so the mark survives nearest sampling (at 1x a pixel
    # half a pixel off the grid can fall between two samples and vanish)
    square = SquareBox(x - (u - out / 2) / zoom, y - (v - out / 2) / zoom, size)
    assert np.allclose(square.matrix(out) @ np.array([x, y, 1.0]), (u, v))
    image = np.zeros((300, 400), np.uint8)
    image[y, x] = 255
    crop = crop_image(image, square, out, nearest=True)
    ys, xs = np.nonzero(crop)
    assert len(xs) and abs(xs.mean() - u) <= zoom / 2 + 1 and abs(ys.mean() - v) <= zoom / 2 + 1


def blob(shape: tuple[int, int], x: float, y: float, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    spot = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(spot[..., None], 3, axis=2).astype(np.float32)  # (H, W, 3) like a frame


def centroid(img: np.ndarray) -> np.ndarray:
    img = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(xx * img).sum(), (yy * img).sum()]) / img.sum()


@pytest.mark.parametrize("square", [SquareBox(210.3, 140.7, 120.0), SquareBox(60.0, 250.0, 200.0), SquareBox(350.5, 20.25, 90.0)])
def test_a_crop_pasted_back_lands_where_it_came_from(square):
    """Known answers both ways: an image spot appears in the crop where the crop matrix
    puts it, and a spot drawn in the crop is pasted back at the inverse position."""
    shape, n = (300, 400), 256
    m = square.matrix(n)
    x, y = square.cx + 0.21 * square.size, square.cy - 0.13 * square.size  # inside the crop, off centre
    x, y = float(np.clip(x, 20, 379)), float(np.clip(y, 20, 279))  # spot away from the image border
    crop = crop_image(blob(shape, x, y), square, n)
    assert np.abs(centroid(crop) - m @ (x, y, 1)).max() < 0.3
    pasted = paste_crop(np.zeros(shape + (3,), np.float32), crop, square)
    assert np.abs(centroid(pasted) - (x, y)).max() < 0.3
    # A spot drawn in the crop lands at the inverse of the crop matrix.
    u, v = 0.3 * n, 0.62 * n
    back = paste_crop(np.zeros(shape + (3,), np.float32), blob((n, n), u, v, sigma=6.0), square)
    expected = (np.array([u, v]) - m[:, 2]) / m[0, 0]
    assert np.abs(centroid(back) - expected).max() < 0.3


def test_paste_replaces_the_inside_of_the_crop_and_nothing_outside_it():
    frame = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    square = SquareBox(180.0, 160.0, 160.0)  # x 100..260, y 80..240
    out = paste_crop(frame, np.full((128, 128, 3), 7, np.uint8), square, CropConfig(feather=0.08))
    # Feather: 8% of 128 px = 10 crop px (12.5 image px), blurred by half that.
    assert (out[115:205, 135:225] == 7).all()  # the crop, minus its feathered border
    outside = np.ones((300, 400), bool)
    outside[79:241, 99:261] = False
    assert np.array_equal(out[outside], frame[outside])  # the frame, untouched
    # Across the border the crop's weight rises from 0 to 1.
    before, after = frame[160, 95:135, 0].astype(float), out[160, 95:135, 0].astype(float)
    usable = np.abs(before - 7) > 40  # pixels where the weight can be read off
    weight = ((before - after) / (before - 7))[usable]
    assert weight[0] < 0.05 and weight[-1] > 0.95 and np.all(np.diff(weight) > -0.05)


def test_face_square_known_answer():
    sq = face_square((100, 200, 300, 360), CropConfig(scale=2.0, lift=0.1))
    assert (sq.cx, sq.cy, sq.size) == (200, 280 - 0.1 * 200, 400)  # side 200: the wider of 200 x 160
    m = sq.matrix(512)
    assert np.allclose(m @ (200, 260, 1), (256, 256))  # the square's centre is the crop's centre
    assert np.allclose(m @ (0, 60, 1), (0, 0)) and np.allclose(m @ (400, 460, 1), (512, 512))


@settings(max_examples=30, deadline=None)
@given(boxes=st.lists(st.tuples(st.floats(0, 400), st.floats(0, 400), st.floats(30, 150)), min_size=1, max_size=30))
@example(boxes=[(0.0, 0.0, 30.0)] * 3 + [(0.0, 183.0, 30.0), (180.0, 0.0, 38.0)])  # two far faces in a short list
def test_video_square_contains_every_face(boxes):
    rects = [(x, y, x + s, y + s) for x, y, s in boxes]
    sq = video_square(rects)
    lo, hi = sq.cx - sq.size / 2, sq.cx + sq.size / 2
    top, bottom = sq.cy - sq.size / 2, sq.cy + sq.size / 2
    # All boxes except possibly the outermost 2% on each side fit inside the crop.
    inside = [lo <= r[0] and r[2] <= hi and top <= r[1] and r[3] <= bottom for r in rects]
    assert np.mean(inside) >= 0.9 or len(rects) < 10 and sum(inside) >= len(rects) - 1


def test_face_crop_centres_the_face(astronaut, astronaut_analysis):
    sq = face_square(astronaut_analysis.box)
    c = crop_analysis(astronaut_analysis, sq, 256)
    x0, y0, x1, y1 = c.box
    assert abs((x0 + x1) / 2 - 128) < 3
    assert 128 < (y0 + y1) / 2 < 128 + 0.15 * 256  # lifted a little to keep the hair
    assert 0.35 < (x1 - x0) / 256 < 0.6
    # The parsing map moved with the points: irises still inside their eyes.
    for side, label in enumerate((4, 5)):
        x, y = np.round(c.iris[side]).astype(int)
        assert (c.labels[y - 1 : y + 2, x - 1 : x + 2] == label).any()


def test_paste_back_restores_the_frame(astronaut, astronaut_analysis):
    sq = face_square(astronaut_analysis.box)
    crop = crop_image(astronaut, sq, 512)  # upsampled: little is lost on the way back
    restored = paste_crop(astronaut, crop, sq)
    diff = np.abs(restored.astype(int) - astronaut.astype(int))
    assert diff.mean() < 2.0
    # A changed crop shows up inside the crop region and nowhere else.
    dark = paste_crop(astronaut, np.zeros_like(crop), sq)
    x0, y0 = int(sq.cx), int(sq.cy)
    assert dark[y0, x0].max() < 10
    assert np.array_equal(dark[:, :20], astronaut[:, :20])


def test_a_crop_larger_than_its_square_is_averaged_on_the_way_back(astronaut):
    """A small face animated at the model's resolution: the crop is 8x its square's size in
    the frame, and pasting it back averages its pixels instead of sampling every 8th."""
    square = SquareBox(230.0, 130.0, 64.0)
    restored = paste_crop(astronaut, crop_image(astronaut, square, 512), square)
    inner = (slice(110, 150), slice(210, 250))
    assert np.abs(restored[inner].astype(int) - astronaut[inner].astype(int)).mean() < 5  # averaging softens a little
    checker = np.repeat(((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    pasted = paste_crop(astronaut, checker, square)[inner].astype(float)
    assert abs(pasted.mean() - 127.5) < 4 and pasted.std() < 4  # grey, not a sampled pattern


@settings(max_examples=40, deadline=None)
@given(cx=st.floats(-300, 1900), cy=st.floats(-300, 1500), size=st.floats(120, 2400), fill=st.sampled_from([None, 0]))
def test_a_shrunk_crop_shows_the_same_picture_as_shrinking_the_whole_image(astronaut, cx, cy, size, fill):
    """Crops shrunk by averaging only the part under the square (cheap on large images) look
    like the square cut from the whole image shrunk at once: same place, same borders."""
    image = cv2.resize(astronaut, (1600, 1200), interpolation=cv2.INTER_CUBIC)
    square = SquareBox(cx, cy, size)
    out = 128
    scale = out / size
    small = cv2.resize(image, (round(1600 * scale), round(1200 * scale)), interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / 1600, small.shape[0] / 1200
    m = square.matrix(out)
    m = np.array([[m[0, 0] / sx, 0, m[0, 2] + m[0, 0] * (0.5 / sx - 0.5)], [0, m[1, 1] / sy, m[1, 2] + m[1, 1] * (0.5 / sy - 0.5)]])
    border = (dict(borderMode=cv2.BORDER_REPLICATE) if fill is None
              else dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4))
    whole = cv2.warpAffine(small, m, (out, out), flags=cv2.INTER_LINEAR, **border).astype(float)
    crop = crop_image(image, square, out, fill=fill).astype(float)
    # Averaging cells start where the part starts, not at the image's corner: the same picture
    # in the same place, sampled at another phase (under half an output pixel's worth of change).
    inner = crop[2:-2, 2:-2]
    offsets = {(dx, dy): np.abs(inner - whole[2 + dy : out - 2 + dy, 2 + dx : out - 2 + dx]).mean()
               for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert offsets[0, 0] <= min(offsets.values()) + 0.05  # lined up best as it is
    one_pixel = np.mean([offsets[d] for d in ((1, 0), (-1, 0), (0, 1), (0, -1))])
    assert offsets[0, 0] <= 0.6 * one_pixel + 0.5
