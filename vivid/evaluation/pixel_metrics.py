"""Pixel metrics of self-reenactment (scikit-image) and temporal flicker."""
from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(truth: np.ndarray, output: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 images (inf when they are identical)."""
    if np.array_equal(truth, output):
        return float("inf")  # scikit-image returns inf too, after a divide-by-zero warning
    return float(peak_signal_noise_ratio(truth, output, data_range=255))


def ssim(truth: np.ndarray, output: np.ndarray) -> float:
    """SSIM of two RGB uint8 images (scikit-image defaults: 7x7 window, channels averaged)."""
    return float(structural_similarity(truth, output, channel_axis=2, data_range=255))


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def head_region(shape: tuple[int, int], boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """Pixels where a head may move: each face box widened by 40% of its width on each
    side and 70% of its height upwards (hair), down to the bottom of the image (neck)."""
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        c0, c1 = int(max(0, np.floor(x0 - 0.4 * w))), int(min(shape[1], np.ceil(x1 + 0.4 * w)))
        r0 = int(max(0, np.floor(y0 - 0.7 * h)))
        mask[r0:, c0:c1] = True
    return mask


#: A pixel of the real video that changes by more than this (grey levels) between two frames
#: is not "still": the camera or the scene moved there.
STILL_THRESHOLD = 3.0
#: Flicker is not measured when fewer pixels than this share of the frame are still.
MIN_STILL_SHARE = 0.01


def flicker(previous: np.ndarray, current: np.ndarray, still: np.ndarray) -> float:
    """Mean absolute grey-level change between two consecutive output frames over the
    pixels where nothing should move (`still`); NaN when there are too few of them."""
    if still.mean() < MIN_STILL_SHARE:
        return float("nan")
    return float(np.abs(grey(current) - grey(previous))[still].mean())


def region_psnr(truth: np.ndarray, output: np.ndarray, polygon: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 images over the pixels inside `polygon` ((N, 2) x, y);
    NaN when it covers no pixel, inf when they agree there exactly."""
    mask = np.zeros(truth.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    inside = mask.astype(bool)
    if not inside.any():
        return float("nan")
    mse = float(np.mean((truth[inside].astype(np.float64) - output[inside].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
