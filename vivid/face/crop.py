"""Square face crops for the model, one fixed crop per video, and pasting results back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .analysis import FaceAnalysis


@dataclass(frozen=True)
class CropConfig:
    """How much of the head and its surroundings the model sees."""

    scale: float = 2.0  # crop side in face-box sizes (room for hair and head motion)
    lift: float = 0.1  # move the crop up by this many face sizes (include the hair)
    feather: float = 0.08  # width of the blended border when pasting back, in crop sizes


@dataclass(frozen=True)
class SquareBox:
    """A square region of an image, which may extend past the image border."""

    cx: float
    cy: float
    size: float

    def matrix(self, out_size: int) -> np.ndarray:
        """2x3 affine mapping image pixels to crop pixels of an `out_size` square."""
        s = out_size / self.size
        return np.array(
            [[s, 0, out_size / 2 - s * self.cx], [0, s, out_size / 2 - s * self.cy]], np.float64
        )


def face_square(box: Sequence[float], config: CropConfig = CropConfig()) -> SquareBox:
    """The square crop around one face box."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    return SquareBox((x0 + x1) / 2, (y0 + y1) / 2 - config.lift * side, config.scale * side)


def video_square(boxes: Sequence[Sequence[float] | None], config: CropConfig = CropConfig()) -> SquareBox:
    """One crop for a whole video: centred on the typical face position and large enough
    for the face wherever it goes (robust to a few bad frames), so head motion stays visible
    as motion inside the crop instead of being cancelled by a moving crop."""
    valid = np.array([b for b in boxes if b is not None], np.float64)
    if len(valid) == 0:
        raise ValueError("no face boxes to place a crop around")
    # The outermost 2% on each side may be bad frames; of fewer than 50 boxes none is dropped
    # (interpolated percentiles cut into the outermost box of a short list).
    lo = np.percentile(valid[:, :2], 2, axis=0, method="lower")
    hi = np.percentile(valid[:, 2:], 98, axis=0, method="higher")
    side = float(np.median(np.maximum(valid[:, 2] - valid[:, 0], valid[:, 3] - valid[:, 1])))
    cx, cy = (lo + hi) / 2
    span = float(max(hi - lo))
    size = max(config.scale * side, span + (config.scale - 1) * side)
    return SquareBox(float(cx), float(cy - config.lift * side), size)


#: Below this scale a crop is shrunk by averaging pixels first: OpenCV's warpAffine treats
#: INTER_AREA as bilinear, which samples (and aliases) instead of averaging.
AVERAGE_BELOW_SCALE = 0.75


def crop_image(image: np.ndarray, square: SquareBox, out_size: int, nearest: bool = False,
               fill: int | None = None) -> np.ndarray:
    """Cut `square` out of `image` and resize it to out_size x out_size; outside the image
    the border pixels are repeated, or set to `fill` when given (labels and masks: pass
    `nearest=True`). A large square shrunk to a small crop is area-averaged, not sampled, so
    fine detail does not alias."""
    m = square.matrix(out_size)
    scale = out_size / square.size
    if nearest:
        return cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    if scale < AVERAGE_BELOW_SCALE:
        # Only the part under the square is averaged (with a margin for the interpolation):
        # a small window of a large image, or the many tiles of a search, cost their own area.
        image, (x0, y0) = _part_under(image, square, margin=int(np.ceil(2 / scale)) + 1)
        m = SquareBox(square.cx - x0, square.cy - y0, square.size).matrix(out_size)
        h, w = image.shape[:2]
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = image.shape[1] / w, image.shape[0] / h
        # resize maps x to (x + 0.5) * sx - 0.5: the same square in the shrunk image's pixels.
        m = np.array([[m[0, 0] / sx, 0, m[0, 2] + m[0, 0] * (0.5 / sx - 0.5)],
                      [0, m[1, 1] / sy, m[1, 2] + m[1, 1] * (0.5 / sy - 0.5)]])
    border = (dict(borderMode=cv2.BORDER_REPLICATE) if fill is None
              else dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4))
    return cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, **border)


def _part_under(image: np.ndarray, square: SquareBox, margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The part of `image` that `square` covers, `margin` px wider each way, clipped to the
    image (the whole image when the square lies outside it), and where that part starts."""
    h, w = image.shape[:2]
    half = square.size / 2
    x0, y0 = max(int(np.floor(square.cx - half)) - margin, 0), max(int(np.floor(square.cy - half)) - margin, 0)
    x1, y1 = min(int(np.ceil(square.cx + half)) + margin, w), min(int(np.ceil(square.cy + half)) + margin, h)
    if x1 <= x0 or y1 <= y0:
        return image, (0, 0)
    return image[y0:y1, x0:x1], (x0, y0)


def crop_analysis(analysis: FaceAnalysis, square: SquareBox, out_size: int) -> FaceAnalysis:
    """The same analysis in crop coordinates (maps resampled, points moved)."""
    m = square.matrix(out_size)

    def move(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)

    def move_box(box) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = move(np.array([box[:2], box[2:]], np.float64))
        return float(x0), float(y0), float(x1), float(y1)

    s = m[0, 0]
    return analysis.replace(
        labels=crop_image(analysis.labels, square, out_size, nearest=True),
        foreground=crop_image(analysis.foreground.astype(np.uint8), square, out_size, nearest=True) > 0,
        iris=move(analysis.iris),
        iris_radius=(analysis.iris_radius * s).astype(np.float32),
        eye_points=move(analysis.eye_points),
        landmarks=None if analysis.landmarks is None else move(analysis.landmarks),
        backend_points=None if analysis.backend_points is None else move(analysis.backend_points),
        box=move_box(analysis.box),
        notes=list(analysis.notes),
        other_faces=[move_box(b) for b in analysis.other_faces],
    )


def paste_crop(
    frame: np.ndarray, crop: np.ndarray, square: SquareBox, config: CropConfig = CropConfig()
) -> np.ndarray:
    """Put a (processed) crop back where it came from, blending its border into the frame. A
    crop larger than its square (a small face animated at the model's resolution) is
    area-averaged down to the square's size first, not sampled, so its detail does not alias."""
    h, w = frame.shape[:2]
    n = crop.shape[0]
    ramp = max(1, int(round(config.feather * n)))
    alpha = np.zeros((n, n), np.float32)
    alpha[ramp:-ramp, ramp:-ramp] = 1
    alpha = cv2.GaussianBlur(alpha, (0, 0), ramp / 2)
    m = square.matrix(n)
    if square.size < AVERAGE_BELOW_SCALE * n:
        k = max(2, int(round(square.size)))
        crop = cv2.resize(crop, (k, k), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, (k, k), interpolation=cv2.INTER_AREA)
        # resize maps crop pixel u to (u + 0.5) * k / n - 0.5: the same square at k pixels.
        f = k / n
        m = m * f
        m[:, 2] += 0.5 * f - 0.5
    inverse = cv2.invertAffineTransform(m)
    back = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    out = frame.astype(np.float32) * (1 - alpha) + back.astype(np.float32) * alpha
    return np.clip(out.round(), 0, 255).astype(frame.dtype)
