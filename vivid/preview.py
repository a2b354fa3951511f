"""The CPU preview engine: animates the reference by warping it with the driving face's
motion. Needs no downloaded weights; runs in real time on two cores.

Per driving frame: the head's motion (a similarity transform of stable face points
relative to the first driving frame) and the expression (what remains of the mesh motion
once the head motion is removed) are moved onto the reference face, normalised for size
and in-plane rotation; the reference is then warped piecewise-affinely from its own mesh to
that target mesh. A dark mouth interior is painted where the mouth opens wider than in the
reference, and the warped face is blended back into the whole reference image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np

from .face import FaceAnalyzer, NoFaceError, TrackConfig, crop_image, face_square
from .face import mesh_topology as mt
from .face.crop import CropConfig, SquareBox
from .face.edit_rig import EditRig
from .face.motion_edits import MotionEdits
from .face.motion_transfer import EYES, Target, apply, polygon_area, transfer_motion
from .face.template import MotionTemplate
from . import native_warp
from .media import checked_frames, to_rgb

@dataclass(frozen=True)
class PreviewConfig:
    """Options of the preview engine (defaults are what the app and CLI use)."""

    size: int | None = None  # side of the animated face crop in px; None: the reference's own
    max_size: int = 1024  # ... but at most this (a large photo is animated at this size)
    crop_scale: float = 2.6  # crop side in face-box sizes: room for head motion
    relative: bool = True  # motion relative to the first driving frame (False: absolute)
    crop_only: bool = False  # output the animated crop instead of the whole image
    head_ring: float = 1.2  # ring (in face radii) that moves with the face outline: hair, ears
    falloff_ring: float = 2.0  # outer ring: between the two rings the background stretches
    falloff_follow: float = 0.0  # share of the face outline's motion the outer ring follows
    neck_follow: float = 0.0  # ... and the share ring points below the chin follow (the neck)
    mouth_color: tuple[int, int, int] = (45, 14, 18)  # inside of an open mouth
    teeth_color: tuple[int, int, int] = (200, 192, 180)  # upper teeth, shown under the upper lip
    teeth_depth: float = 0.35  # teeth band height, in mouth-opening heights
    eyelid_start: float = 0.55  # below this eye opening (vs the first frame) lids start to cover
    eyelid_full: float = 0.2  # at or below this the eye is fully covered by the lids
    lash_color: tuple[int, int, int] = (40, 30, 30)
    mouth_opacity: float = 0.9
    edits: MotionEdits = MotionEdits()  # made on every frame's target mesh (`vivid.face.edit_rig`)
    face: int | None = None  # the portrait's face to animate, counted from the left (None: the main one)


@dataclass
class PreparedReference:
    """The reference, its animated crop, mesh and triangulation (built once per video)."""

    image: np.ndarray  # whole reference, RGB
    square: SquareBox
    crop: np.ndarray  # (size, size, 3)
    points: np.ndarray  # (478, 2) mesh in crop pixels
    rings: tuple[np.ndarray, np.ndarray]  # head ring, falloff ring (crop pixels)
    ring_follow: tuple[np.ndarray, np.ndarray]  # how much each ring point follows the head (0-1)
    border: np.ndarray  # still points on the crop border
    triangles: np.ndarray  # (T, 3) indices into [points, head ring, falloff ring, border]
    mouth_area: float  # inner-mouth area of the reference, px^2
    grid: np.ndarray  # (2, size, size) pixel coordinates y, x of the crop

    @property
    def size(self) -> int:
        return self.crop.shape[0]


def delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of (N, 2) points as (T, 3) indices; repeated points share the
    first one's index. OpenCV's, since cv2 is loaded anyway and scipy.spatial alone takes
    a third of a second to import, a quarter of the preview CLI's start-up; scipy's when
    OpenCV's misses a sliver on the hull (it can, with nearly collinear hull points)."""
    lo = np.floor(points.min(axis=0)) - 1
    hi = np.ceil(points.max(axis=0)) + 1
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    index: dict[tuple[float, float], int] = {}
    for i, p in enumerate(points.astype(np.float32)):
        key = (float(p[0]), float(p[1]))
        if key not in index:
            index[key] = i
            subdiv.insert(key)
    corners = np.asarray(subdiv.getTriangleList(), np.float32).reshape(-1, 3, 2)
    # Triangles touching the subdivision's outer helper vertices are not ours: drop them.
    found = [[index.get((float(x), float(y)), -1) for x, y in tri] for tri in corners]
    triangles = np.array(found, np.int32).reshape(-1, 3)
    triangles = triangles[(triangles >= 0).all(axis=1)]
    hull_area = cv2.contourArea(cv2.convexHull(points.astype(np.float32)))
    if len(triangles) == 0 or not np.isclose(_triangle_areas(points, triangles).sum(), hull_area, rtol=1e-5, atol=1e-3):
        from scipy.spatial import Delaunay

        return Delaunay(points).simplices.astype(np.int32)
    return triangles


def _triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (points[triangles[:, k]] for k in range(3))
    return np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) / 2


def _inner_mouth(points: np.ndarray) -> np.ndarray:
    return points[list(mt.INNER_UPPER_LIP + mt.INNER_LOWER_LIP[-2:0:-1])]


def prepare_crop(image: np.ndarray, square: SquareBox, crop: np.ndarray, points: np.ndarray,
                 config: PreviewConfig = PreviewConfig()) -> PreparedReference:
    """The warp's reference from a face crop whose mesh is known: `crop` (n, n, 3) cut from
    `image` at `square`, `points` (478, 2) its mesh in crop pixels. The support rings (hair
    and ears, then the stretching background) and still border points are triangulated with
    the mesh. Training prepares its clip frames this way (`vivid.warp_guidance`)."""
    c, size = config, crop.shape[0]
    points = np.asarray(points, np.float64)
    oval = points[list(mt.FACE_OVAL)]
    centre = oval.mean(axis=0)
    rings = (centre + c.head_ring * (oval - centre), centre + c.falloff_ring * (oval - centre))
    # Hair and ears move with the face outline; the neck and shoulders much less.
    up = points[mt.FOREHEAD_TOP] - points[mt.CHIN]
    up /= max(np.linalg.norm(up), 1e-6)
    mouth_level = points[list(mt.MOUTH_CORNERS)].mean(axis=0) @ up
    chin_level = points[mt.CHIN] @ up

    def follow(ring: np.ndarray, top: float) -> np.ndarray:
        t = np.clip((ring @ up - chin_level) / max(mouth_level - chin_level, 1e-6), 0, 1)
        return top * (c.neck_follow + (1 - c.neck_follow) * t)

    ring_follow = (follow(rings[0], 1.0), follow(rings[1], c.falloff_follow))
    k = np.linspace(0, size - 1, 9)
    # Still points on the crop border, so the animated crop joins the image seamlessly.
    border = np.r_[np.c_[k, np.zeros(9)], np.c_[k, np.full(9, size - 1)],
                   np.c_[np.zeros(7), k[1:-1]], np.c_[np.full(7, size - 1), k[1:-1]]]
    triangles = delaunay(np.concatenate([points, *rings, border]))
    return PreparedReference(
        image=image, square=square, crop=crop, points=points, rings=rings, ring_follow=ring_follow,
        border=border, triangles=triangles, mouth_area=polygon_area(_inner_mouth(points)),
        grid=np.mgrid[0:size, 0:size].astype(np.float32),
    )


class PreviewAnimator:
    """Warps a reference portrait with the motion of a driving video, frame by frame."""

    def __init__(self, config: PreviewConfig = PreviewConfig(), analyzer: FaceAnalyzer | None = None):
        self.config = config
        self._analyzer = analyzer

    @property
    def analyzer(self) -> FaceAnalyzer:
        """The face mesh that finds and tracks faces, made on first use (warping a crop whose
        mesh is given needs none)."""
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer("mesh", segment=False)
        return self._analyzer

    def prepare(self, reference: np.ndarray) -> PreparedReference:
        """Analyse and crop the reference and triangulate its mesh with the support rings."""
        rgb = to_rgb(reference, "reference").rgb
        analysis = self.analyzer.analyze(rgb, "the reference image", self.config.face)
        if analysis.landmarks is None or len(analysis.landmarks) < mt.NUM_POINTS:
            raise NoFaceError("the preview engine needs the face mesh of the reference")
        return self.prepare_known(rgb, analysis.landmarks, self.crop_square(rgb.shape[:2], analysis.box))

    def crop_square(self, shape: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[SquareBox, int]:
        """The square animated around a face box in an image of `shape` (h, w), and its side in px."""
        c = self.config
        square = face_square(box, CropConfig(scale=c.crop_scale, lift=0.05))
        if c.crop_only:  # the crop is the output: keep it inside the image, no smeared borders
            square = _inside(square, shape)
        size = c.size or min(int(round(square.size)), c.max_size)
        size += size % 2
        if c.size is None and size < c.max_size:
            # Whole-pixel crop at the reference's own scale: cropping and pasting back are
            # exact copies, so the untouched parts of the face stay sharp.
            square = SquareBox(float(round(square.cx)), float(round(square.cy)), float(size))
        return square, size

    def prepare_known(self, rgb: np.ndarray, landmarks: np.ndarray, where: tuple[SquareBox, int]) -> PreparedReference:
        """The warp's reference from an image whose face mesh (478, 2, image pixels) is known,
        cropped at `where` (`crop_square`): a portrait, or each frame of a source video."""
        square, size = where
        m = square.matrix(size)
        return prepare_crop(rgb, square, crop_image(rgb, square, size), apply(m, np.asarray(landmarks, np.float64)),
                            self.config)

    @staticmethod
    def still(ref: PreparedReference) -> Target:
        """The reference's own face as a target (no motion): what edits of a still start from."""
        return Target(ref.points.copy(), np.eye(2, 3), np.ones(2))

    # -- warping --------------------------------------------------------------------------
    def warp(self, ref: PreparedReference, goal: Target) -> tuple[np.ndarray, np.ndarray]:
        """Warped crop and the mask of pixels that changed (for blending back)."""
        n = ref.size
        target = goal.points
        if goal.iris_shift is not None:  # the mesh is warped with each iris where its lids carry it
            target = target.copy()
            for (_, iris), shift in zip(EYES, goal.iris_shift):
                target[list(iris)] -= shift
        # Ring points move like the face-outline point they were drawn from, so the hair and
        # the ears go with the face edge instead of tearing away from it.
        oval = list(mt.FACE_OVAL)
        edge_motion = target[oval] - ref.points[oval]
        moved_rings = [r + f[:, None] * edge_motion for r, f in zip(ref.rings, ref.ring_follow)]
        src = np.concatenate([ref.points, *ref.rings, ref.border])[ref.triangles]  # (T, 3, 2)
        dst = np.concatenate([target, *moved_rings, ref.border])[ref.triangles]
        out = ref.crop.copy()
        moved = np.zeros((n, n), bool)
        # Only pixels under triangles that move can change: the maps are built for their
        # bounding box alone (about half the crop; far less for a large photo).
        changing = (src != dst).any(axis=(1, 2))
        corners = dst[changing].reshape(-1, 2)
        if len(corners):
            (x0, y0), (x1, y1) = np.floor(corners.min(axis=0)) - 2, np.ceil(corners.max(axis=0)) + 3
            x0, y0, x1, y1 = (int(min(max(value, 0), n)) for value in (x0, y0, x1, y1))
        if len(corners) and x1 > x0 and y1 > y0:
            window = (slice(y0, y1), slice(x0, x1))
            map_x, map_y = self._backward_maps(ref, src, dst, x0, y0, x1, y1, _triangle_depths(ref, goal.depth))
            ys, xs = ref.grid[:, y0:y1, x0:x1]
            out[window] = cv2.remap(ref.crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            lib = native_warp.library()
            if lib is not None and map_x.flags.c_contiguous and map_y.flags.c_contiguous:
                native_warp.moved_pixels(lib, map_x, map_y, x0, y0, moved[window])
            else:
                moved[window] = (np.abs(map_x - xs) + np.abs(map_y - ys)) > 0.05
        self._paint_mouth(out, ref, target, moved)
        if goal.iris_shift is not None:
            for eye, shift in zip(EYES, goal.iris_shift):
                self._slide_eyeball(out, target, eye, shift, moved)
        for eye, ratio in zip(EYES, goal.eye_opening):
            self._paint_eyelid(out, target, eye, ratio, moved)
        return out, moved

    @staticmethod
    def _slide_eyeball(out: np.ndarray, target: np.ndarray, eye: tuple, shift: np.ndarray, moved: np.ndarray) -> None:
        """Turn an eye by sliding what shows inside its lids by `shift` (px): the iris keeps its
        round shape and goes under the lids instead of being bent through them."""
        if not np.abs(shift).max() >= 0.25:
            return
        window = _polygon_window(target[list(eye[0])], out.shape, int(np.ceil(np.abs(shift).max())) + 3)
        if window is None:
            return
        (y0, y1, x0, x1), mask = window
        region = out[y0:y1, x0:x1]
        inside = mask > 127
        if inside.sum() < 4:
            return
        # Beyond the lids the eye is continued from its own edge (inpainted), so what slides in
        # looks like more of the eye, not like lid skin or a flat patch.
        core = cv2.erode(inside.view(np.uint8), np.ones((3, 3), np.uint8))
        texture = cv2.inpaint(np.ascontiguousarray(region), (1 - core).astype(np.uint8), 3, cv2.INPAINT_TELEA)
        slid = cv2.warpAffine(texture.astype(np.float32), np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]),
                              (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Inside the lids only, a pixel short of their edge (the lid line itself stays put).
        alpha = cv2.GaussianBlur(cv2.erode(mask, np.ones((3, 3), np.uint8)), (0, 0), 0.7).astype(np.float32)[..., None] / 255
        out[y0:y1, x0:x1] = (region * (1 - alpha) + slid * alpha).round().astype(np.uint8)
        moved[y0:y1, x0:x1] |= inside

    @staticmethod
    def _backward_maps(ref: PreparedReference, src: np.ndarray, dst: np.ndarray,
                       x0: int, y0: int, x1: int, y1: int, depths: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """For each output pixel of the window [x0, x1) x [y0, y1): where in the reference
        crop it comes from, through the affine map of the triangle that covers it. The whole
        mesh is rasterised at once: its triangles cut into runs of pixels along rows
        (`_row_runs`), and along a run the source point moves by a constant step, so both maps
        are written in a handful of array operations, not one call per triangle. With `depths`
        (per triangle), the triangles facing the viewer are drawn farthest first, so where a
        turned head's parts overlap the nearer one shows."""
        lin, shift, order = triangle_affines(src, dst, depths)
        h, w = y1 - y0, x1 - x0
        lib = native_warp.library()
        if lib is not None:  # the same maps, in C, without the GIL
            ys, xs = ref.grid[:, y0:y1, x0:x1]
            map_x, map_y = np.ascontiguousarray(xs), np.ascontiguousarray(ys)
            affine = np.concatenate([lin.reshape(-1, 4), shift], axis=1)[order]
            native_warp.backward_maps(lib, dst[order] - (x0, y0), affine, x0, y0, map_x, map_y)
            return map_x, map_y
        row, first, length, k = _row_runs(dst[order] - (x0, y0), h, w)  # runs in drawing order
        tri = order[k]
        a = lin[tri]  # (R, 2, 2)
        px, py = first + x0, row + y0  # crop coordinates of each run's first pixel
        start_x = a[:, 0, 0] * px + a[:, 0, 1] * py + shift[tri, 0]
        start_y = a[:, 1, 0] * px + a[:, 1, 1] * py + shift[tri, 1]
        # Every pixel of every run at once: its offset along its run and its place in the window.
        run_start = (np.cumsum(length) - length).astype(np.float32)
        along = np.arange(int(length.sum()), dtype=np.float32) - np.repeat(run_start, length)
        place = np.repeat(row * w + first, length) + along.astype(np.intp)

        def per_pixel(values: np.ndarray) -> np.ndarray:  # (R,) per run -> (P,) per pixel
            return np.repeat(values.astype(np.float32), length)

        ys, xs = ref.grid[:, y0:y1, x0:x1]
        map_x, map_y = xs.flatten(), ys.flatten()  # pixels no triangle covers stay where they are
        # Later runs overwrite earlier ones where they share pixels (an edge, a fold).
        map_x[place] = per_pixel(start_x) + per_pixel(a[:, 0, 0]) * along
        map_y[place] = per_pixel(start_y) + per_pixel(a[:, 1, 0]) * along
        return map_x.reshape(h, w), map_y.reshape(h, w)

    def _paint_eyelid(self, out: np.ndarray, target: np.ndarray, eye: tuple, ratio: float, moved: np.ndarray) -> None:
        """Cover a (nearly) closed eye with eyelid skin and a lash line: squeezing the eye's
        pixels alone leaves a thin line of eyeball that still reads as open."""
        c = self.config
        strength = float(np.clip((c.eyelid_start - ratio) / (c.eyelid_start - c.eyelid_full), 0, 1))
        if strength <= 0:
            return
        contour = target[list(eye[0])]
        width = np.linalg.norm(contour[0] - contour[8])
        x, y, w, h = cv2.boundingRect(np.round(contour).astype(np.int32))
        pad = int(0.4 * width) + 2
        y0, x0 = max(y - pad, 0), max(x - 2, 0)
        y1, x1 = min(y + h + 2, out.shape[0]), min(x + w + 2, out.shape[1])
        if y0 >= y1 or x0 >= x1:
            return
        local = contour - (x0, y0)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round(local * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        above = np.zeros_like(mask)  # the lid skin just above the eye gives the colour
        cv2.fillPoly(above, [np.round((local - (0, 0.35 * width)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        skin_pixels = out[y0:y1, x0:x1][(above > 0) & (mask == 0)]
        if len(skin_pixels) == 0:
            return
        skin = np.median(skin_pixels, axis=0).astype(np.float32)
        alpha = cv2.GaussianBlur(mask, (0, 0), 0.8).astype(np.float32)[..., None] / 255 * strength
        region = out[y0:y1, x0:x1].astype(np.float32)
        region = region * (1 - alpha) + skin * alpha
        # Lashes where the lids meet: the middle line between upper and lower lid.
        lid_line = (local[:9] + local[[0, 15, 14, 13, 12, 11, 10, 9, 8]]) / 2
        lashes = np.zeros_like(mask)
        cv2.polylines(lashes, [np.round(lid_line * 16).astype(np.int32)], False, 255, max(1, int(width / 14)), cv2.LINE_AA, 4)
        la = lashes.astype(np.float32)[..., None] / 255 * strength * 0.8
        region = region * (1 - la) + np.array(c.lash_color, np.float32) * la
        out[y0:y1, x0:x1] = region.round().astype(np.uint8)
        moved[y0:y1, x0:x1] |= mask > 0

    def _paint_mouth(self, out: np.ndarray, ref: PreparedReference, target: np.ndarray, moved: np.ndarray) -> None:
        """Paint a mouth interior where the target mouth opens wider than the reference's:
        only the newly opened share is painted, so a reference that already shows its teeth
        keeps them."""
        c = self.config
        inner = _inner_mouth(target)
        area = polygon_area(inner)
        face_area = polygon_area(target[list(mt.FACE_OVAL)])
        opened = area - ref.mouth_area
        strength = float(np.clip(opened / (0.004 * face_area + 1e-6), 0, 1)) * (opened / max(area, 1e-6))
        strength *= c.mouth_opacity
        if strength <= 0.02:
            return
        window = _polygon_window(inner, out.shape, 4)
        if window is None:
            return
        (y0, y1, x0, x1), mask = window
        h = cv2.boundingRect(np.round(inner).astype(np.int32))[3]
        # Interior colour: dark, with a soft band of upper teeth under the upper lip.
        upper = target[list(mt.INNER_UPPER_LIP)]
        top = np.interp(np.arange(x0, x1), upper[:, 0][np.argsort(upper[:, 0])], upper[:, 1][np.argsort(upper[:, 0])])
        depth = (np.arange(y0, y1)[:, None] - top[None, :]) / max(h, 1)  # 0 at the upper lip
        teeth = np.clip(1.0 - depth / c.teeth_depth, 0, 1)[..., None] * min(1.0, h / (0.06 * np.sqrt(face_area)))
        colour = np.array(c.mouth_color, np.float32) * (1 - teeth) + np.array(c.teeth_color, np.float32) * teeth
        alpha = cv2.GaussianBlur(mask, (0, 0), 1.2).astype(np.float32)[..., None] / 255 * strength
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = (region * (1 - alpha) + colour * alpha).round().astype(np.uint8)
        moved[y0:y1, x0:x1] |= mask > 0

    def compose_output(self, ref: PreparedReference, crop: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """The whole reference image with the animated crop blended in where it changed."""
        if self.config.crop_only:
            return crop
        out = ref.image.copy()
        x0, y0, x1, y1 = _bounds(moved)
        if x0 >= x1:
            return out
        pad = 8  # room for the soft edge
        # The soft edge, computed in a window with room for the dilation, the blur and its
        # mirrored border: the same alpha as over the whole crop, for far fewer pixels.
        n = moved.shape[0]
        window = (slice(max(y0 - 2 * pad, 0), y1 + 2 * pad), slice(max(x0 - 2 * pad, 0), x1 + 2 * pad))
        alpha = np.zeros((n, n), np.uint8)
        alpha[window] = cv2.GaussianBlur(cv2.dilate(moved[window].view(np.uint8) * np.uint8(255), np.ones((5, 5), np.uint8)), (0, 0), 2)
        # Only the image region under the changed part of the crop is resampled and blended.
        inverse = cv2.invertAffineTransform(ref.square.matrix(ref.size))
        corners = np.array([[x0 - pad, y0 - pad], [x1 + pad, y1 + pad]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
        h, w = out.shape[:2]
        ix0, iy0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [w, h])
        ix1, iy1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [w, h])
        if ix0 >= ix1 or iy0 >= iy1:
            return out
        roi = inverse.copy()
        roi[:, 2] -= (ix0, iy0)  # image -> ROI coordinates, composed into the crop -> image map
        size = (int(ix1 - ix0), int(iy1 - iy0))
        shift = _whole_pixel_shift(roi)
        if shift is not None:  # the crop at the portrait's own scale (the default): plain copies
            back, a = _shifted(crop, shift, size, replicate=True), _shifted(alpha, shift, size, replicate=False)
        else:
            back = cv2.warpAffine(crop, roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            a = cv2.warpAffine(alpha, roi, size, flags=cv2.INTER_LINEAR, borderValue=0)
        lib = native_warp.library()
        if lib is not None:  # the same blend, in C, without the GIL
            native_warp.blend(lib, out[iy0:iy1, ix0:ix1], back, a)
            return out
        a = a[..., None].astype(np.float32) / 255
        region = out[iy0:iy1, ix0:ix1].astype(np.float32)
        out[iy0:iy1, ix0:ix1] = (region * (1 - a) + back.astype(np.float32) * a).round().astype(np.uint8)
        return out

    # -- whole videos ---------------------------------------------------------------------
    def stream(self, reference: np.ndarray, driving_frames: "Iterable[np.ndarray] | MotionTemplate",
               fps: float = 25.0) -> Iterator[np.ndarray]:
        """Animated frames, one per driving frame (or motion-template frame), produced lazily
        (memory stays flat). A template brings its own fps. Driving frames of different
        sizes, none at all, or float images outside [0, 1] are refused (`vivid.media.InputError`)."""
        if not isinstance(driving_frames, MotionTemplate):
            driving_frames = checked_frames(driving_frames)
        ref = self.prepare(reference)
        last: np.ndarray | None = None
        for goal in self.targets(ref, driving_frames, fps):
            # A frame without a face repeats the last animated frame (the reference at first).
            last = self.render(ref, goal) if goal is not None or last is None else last.copy()
            yield last

    def targets(self, ref: PreparedReference, driving_frames: "Iterable[np.ndarray] | MotionTemplate",
                fps: float = 25.0) -> Iterator[Target | None]:
        """The driving motion moved onto the reference's mesh, one target per driving frame
        (None: no face in that frame), lazily: tracking and motion transfer, no pixels; the
        config's edits made on each (`vivid.face.edit_rig`)."""
        first: np.ndarray | None = None
        if isinstance(driving_frames, MotionTemplate):
            meshes = driving_frames.landmarks()
            if driving_frames.rest is not None:
                first = driving_frames.rest.astype(np.float64)
        else:
            meshes = self.analyzer.iter_landmarks(driving_frames, TrackConfig(fps=fps, parse=False))
        edits = self.config.edits
        rig = EditRig(ref.points) if edits else None
        for points in meshes:
            if points is None:
                yield None
                continue
            current = points.astype(np.float32).astype(np.float64)  # the precision analyses keep
            first = current if first is None else first
            goal = transfer_motion(ref.points, first, current, self.config.relative)
            yield goal if rig is None else rig.target(goal, edits)

    def render(self, ref: PreparedReference, goal: Target | None) -> np.ndarray:
        """One output frame: the reference warped to `goal` (None: unchanged) and composed.
        Depends on nothing but its arguments, so frames can be rendered in parallel."""
        if goal is None:
            return self.compose_output(ref, ref.crop, np.zeros(ref.crop.shape[:2], bool))
        return self.compose_output(ref, *self.warp(ref, goal))


def triangle_affines(src: np.ndarray, dst: np.ndarray, depths: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The affine map of each triangle from target (T, 3, 2) to source (T, 3, 2), in closed form
    for all at once: (T, 2, 2) source offsets per unit of target x and y, (T, 2) shifts, and
    the order to draw them in: triangles turned over by the motion (a cheek folding behind the
    nose as the head turns) face away from the viewer and come first, so the visible surface
    wins; triangles of no area are left out."""
    u, v = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
    su, sv = src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]
    area = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]  # twice the signed area
    valid = np.abs(area) > 1e-6
    inv = 1.0 / np.where(valid, area, 1.0)
    lin = np.empty((len(dst), 2, 2))
    lin[:, :, 0] = (su * v[:, 1:2] - sv * u[:, 1:2]) * inv[:, None]
    lin[:, :, 1] = (sv * u[:, 0:1] - su * v[:, 0:1]) * inv[:, None]
    shift = src[:, 0] - np.einsum("tij,tj->ti", lin, dst[:, 0])
    flipped = np.sign(area) != np.sign(su[:, 0] * sv[:, 1] - su[:, 1] * sv[:, 0])
    back, front = np.nonzero(valid & flipped)[0], np.nonzero(valid & ~flipped)[0]
    if depths is not None:  # within each, farthest first
        back, front = (part[np.argsort(-depths[part], kind="stable")] for part in (back, front))
    return lin, shift, np.r_[back, front]


def _polygon_window(polygon: np.ndarray, shape: tuple, pad: int
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The window (y0, y1, x0, x1) of an image of `shape` around a polygon (N, 2) with `pad`
    pixels to spare, and the polygon's anti-aliased mask in it (uint8); None when outside."""
    x, y, w, h = cv2.boundingRect(np.round(polygon).astype(np.int32))
    y0, x0 = max(y - pad, 0), max(x - pad, 0)
    y1, x1 = min(y + h + pad, shape[0]), min(x + w + pad, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((polygon - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return (y0, y1, x0, x1), mask


def _triangle_depths(ref: PreparedReference, depth: np.ndarray | None) -> np.ndarray | None:
    """Each triangle's mean depth from the mesh points' (the rings and border, which carry the
    hair and background, count as farther than any point of the face), or None."""
    if depth is None:
        return None
    extra = len(ref.triangles) and int(ref.triangles.max()) + 1 - len(depth)
    far = float(np.max(depth)) + 1.0
    return np.r_[depth, np.full(extra, far)][ref.triangles].mean(axis=1)


def _row_runs(triangles: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scan conversion of (T, 3, 2) triangles in an h x w image (pixel centres at integer x, y):
    for every row a triangle crosses, the run of pixel centres inside it or on its edges,
    clipped to the image, as (row, first x, length, triangle) arrays, triangles in the given
    order, runs of no pixel left out. Both triangles sharing an edge compute it from the same
    two points in the same order, so their runs meet without a gap and share only the pixels
    exactly on it."""
    by_y = np.argsort(triangles[:, :, 1], axis=1, kind="stable")
    (xa, ya), (xb, yb), (xc, yc) = np.take_along_axis(triangles, by_y[:, :, None], axis=1).transpose(1, 2, 0)
    top = np.maximum(np.ceil(ya), 0).astype(np.intp)
    rows = np.maximum(np.minimum(np.floor(yc), h - 1).astype(np.intp) - top + 1, 0)
    k = np.repeat(np.arange(len(triangles)), rows)  # the triangle of each (triangle, row) pair
    y = top[k] + np.arange(len(k)) - np.repeat(np.cumsum(rows) - rows, rows)
    xa, ya, xb, yb, xc, yc = xa[k], ya[k], xb[k], yb[k], xc[k], yc[k]
    # Rows cross the long edge (lowest to highest point) and one of the two short ones.
    long = xa + (y - ya) * (xc - xa) / (yc - ya)
    upper = (y < yb) | (yb == yc)
    x_lo, y_lo = np.where(upper, xa, xb), np.where(upper, ya, yb)
    x_hi, y_hi = np.where(upper, xb, xc), np.where(upper, yb, yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        short = np.where(y_hi == y_lo, x_hi, x_lo + (y - y_lo) * (x_hi - x_lo) / (y_hi - y_lo))
    first = np.maximum(np.ceil(np.minimum(long, short)), 0).astype(np.intp)
    length = np.minimum(np.floor(np.maximum(long, short)), w - 1).astype(np.intp) - first + 1
    keep = length > 0
    return y[keep], first[keep], length[keep], k[keep]


def _whole_pixel_shift(m: np.ndarray) -> tuple[int, int] | None:
    """(dx, dy) when the 2x3 affine `m` moves by whole pixels only; None otherwise."""
    if m[0, 0] == 1 and m[1, 1] == 1 and m[0, 1] == 0 and m[1, 0] == 0 and (m[:, 2] == np.round(m[:, 2])).all():
        return int(m[0, 2]), int(m[1, 2])
    return None


def _shifted(image: np.ndarray, shift: tuple[int, int], size: tuple[int, int], replicate: bool) -> np.ndarray:
    """`cv2.warpAffine(image, [[1, 0, dx], [0, 1, dy]], size)` for a whole-pixel shift, by copying:
    pixels from beyond the image repeat its edge (`replicate`) or are 0."""
    (dx, dy), (w, h) = shift, size
    rows, cols = np.arange(h) - dy, np.arange(w) - dx
    if rows[0] >= 0 and cols[0] >= 0 and rows[-1] < image.shape[0] and cols[-1] < image.shape[1]:
        return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    inside_rows, inside_cols = (rows >= 0) & (rows < image.shape[0]), (cols >= 0) & (cols < image.shape[1])
    out = image[np.clip(rows, 0, image.shape[0] - 1)][:, np.clip(cols, 0, image.shape[1] - 1)]
    if not replicate:
        out[~inside_rows] = 0
        out[:, ~inside_cols] = 0
    return out


def _inside(square: SquareBox, shape: tuple[int, int]) -> SquareBox:
    """`square` moved, and shrunk if it is larger than the image, to lie inside the image."""
    h, w = shape
    side = min(square.size, h, w)
    half = side / 2
    return SquareBox(min(max(square.cx, half), w - half), min(max(square.cy, half), h - half), side)


def _bounds(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.nonzero(alpha.any(axis=1))[0]
    xs = np.nonzero(alpha.any(axis=0))[0]
    if len(xs) == 0:
        return 0, 0, 0, 0
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
