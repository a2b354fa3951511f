"""Motion edits made on a face mesh: the one place both engines edit motion (the preview warps
to the edited mesh, the diffusion engine draws its maps and its warp guidance from it).

`EditRig(neutral)` applies `MotionEdits` to any mesh of that face (`apply`): the portrait's own
mesh for a still, or each frame's target mesh (the driver's motion already moved onto the
portrait) for a clip. Everything happens in the face's own upright frame (x from the
subject's right outer eye corner to the left one, y towards the chin, unit their distance),
found from the points expression does not move, so a turned or tilted head is edited the same
way. Each edit moves a few handle points (lids, irises, brows, lips, jaw) and spreads their
motion to the points around them, while the parts it must not move are held. Head turns
(yaw, pitch) move the points in depth, taken from an average face (`mean_face`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from . import mesh_topology as mt
from .mean_face import mean_face
from .motion_edits import MotionEdits
from .motion_transfer import EYES, STABLE_POINTS, Target, apply, eye_opening, similarity

#: How far an iris moves within its eye at gaze 1, in eye widths (along, across the eye).
GAZE_REACH = (0.2, 0.15)
#: Where the iris sits in its eye when a frontal face looks at the camera, in eye widths from the
#: corners' middle (a little above the line between them: measured 0.046-0.092, mean 0.065, on
#: the sample portraits): gaze 0.
GAZE_CENTRE = (0.0, -0.065)
#: How much of a look up or down the upper and lower lids follow.
LID_FOLLOW = (0.4, 0.2)
#: How far the mouth corners drop as the mouth opens, in shares of the opening.
MOUTH_CORNER_DROP = 0.15
#: How much narrower the mouth gets as it opens, in shares of its half width per eye-corner distance of opening.
MOUTH_NARROWING = 0.35
#: Brow lift at brows 1 and drop at brows -1, in eye-corner distances (a brow comes down less
#: far than it goes up before it sits on the lid).
BROW_LIFT, BROW_DROP = 0.12, 0.07
#: Mouth-corner lift and widening at smile 1, in eye-corner distances.
SMILE_LIFT, SMILE_WIDEN = 0.1, 0.05
#: Narrowing of the mouth and thickening of the lips at pout 1 (share of the width, eye-corner distances).
POUT_NARROW, POUT_FULLER = 0.25, 0.035
#: Share of the lips' red pressed out of sight at purse 1, and the narrowing with it.
PURSE_THIN, PURSE_NARROW = 0.6, 0.08
#: What the head turns about, in the mean face's coordinates: below the eyes, a little behind
#: them (deeper pivots slide the features across a face whose outline holds: tried 0.3-0.8).
HEAD_PIVOT = np.array([0.0, 0.5, 0.3])


# -- the face's frame and what is read from it ------------------------------------------------
#: Lip points without the corners, each list from one corner to the other.
_CORNERS = (61, 291, 78, 308)
_OUTER_UPPER, _OUTER_LOWER = mt.OUTER_UPPER_LIP[1:-1], mt.OUTER_LOWER_LIP[1:-1]
_INNER_UPPER, _INNER_LOWER = mt.INNER_UPPER_LIP[1:-1], mt.INNER_LOWER_LIP[1:-1]
_LIPS = tuple(sorted(set(mt.OUTER_UPPER_LIP + mt.OUTER_LOWER_LIP + mt.INNER_UPPER_LIP + mt.INNER_LOWER_LIP)))
_BROWS = mt.SUBJECT_RIGHT_BROW + mt.SUBJECT_LEFT_BROW
_EYE_PARTS = tuple(i for eye in EYES for part in eye for i in part)
_IRISES = mt.SUBJECT_RIGHT_IRIS + mt.SUBJECT_LEFT_IRIS
_NOSE = mt.NOSE
#: The mouth's middle: the inner-lip points whose gap is the mouth's opening.
_MOUTH_GAP = ((82, 87), (13, 14), (312, 317))
#: Each eye's lids: upper lid (contour indices 1-7) and lower lid (9-15), corners at 0 and 8.
_UPPER_LID, _LOWER_LID = tuple(range(1, 8)), tuple(range(9, 16))
#: The lid points whose gap is the eye's opening (contour indices, upper and lower).
_EYE_GAP = ((3, 13), (4, 12), (5, 11))


@dataclass(frozen=True)
class Frame:
    """A face's upright frame in image pixels: origin between the outer eye corners, axes (rows:
    x from the subject's right eye to the left one, y towards the chin), unit: their distance."""

    origin: np.ndarray
    axes: np.ndarray  # (2, 2)
    unit: float

    def local(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - self.origin) @ self.axes.T / self.unit

    def image(self, local: np.ndarray) -> np.ndarray:
        return self.origin + (local * self.unit) @ self.axes

    @property
    def mirrored(self) -> bool:
        """The subject's right eye is on the image's right (a mirrored picture)."""
        return bool(self.axes[0, 0] < 0)

    @classmethod
    def of(cls, points: np.ndarray) -> "Frame":
        p = np.asarray(points, np.float64)
        a, b = p[mt.SUBJECT_RIGHT_EYE[0]], p[mt.SUBJECT_LEFT_EYE[0]]
        unit = max(float(np.linalg.norm(b - a)), 1e-6)
        x = (b - a) / unit
        y = np.array([-x[1], x[0]])
        origin = (a + b) / 2
        if (p[mt.CHIN] - origin) @ y < 0:
            y = -y
        return cls(origin, np.stack([x, y]), unit)

    def moved(self, m: np.ndarray) -> "Frame":
        """This frame carried by the 2x3 similarity `m`."""
        scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
        return Frame(apply(m, self.origin[None])[0], (self.axes @ m[:, :2].T) / scale, self.unit * scale)


@dataclass(frozen=True)
class Levels:
    """What the level edits are measured in, read from a face in its upright frame: each eye's
    opening (image-left first), the gaze (x: + to the viewer's right, y: + down, 1 = `GAZE_REACH`)
    and the mouth's opening."""

    eyes: np.ndarray  # (2,)
    gaze: np.ndarray  # (2,)
    mouth: float


def _eye_axes(local: np.ndarray, contour: tuple) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """An eye's along axis (pointing to +x), across axis (+y), width and middle, in local coordinates."""
    a, b = local[contour[0]], local[contour[8]]
    width = max(float(np.linalg.norm(b - a)), 1e-6)
    along = (b - a) / width
    if along[0] < 0:
        along = -along
    return along, np.array([-along[1], along[0]]), width, (a + b) / 2


def _eye_gap(local: np.ndarray, contour: tuple) -> float:
    _, across, width, _ = _eye_axes(local, contour)
    gaps = [(local[contour[lo]] - local[contour[up]]) @ across for up, lo in _EYE_GAP]
    return max(float(np.mean(gaps)), 0.0) / width


def read_levels(local: np.ndarray, mirrored: bool = False) -> Levels:
    """The levels of a face given in its upright frame (`Frame.local`)."""
    eyes = [_eye_gap(local, eye[0]) for eye in EYES]  # subject's right eye first
    gaze = []
    for contour, iris in EYES:
        along, across, width, middle = _eye_axes(local, contour)
        offset = local[iris[0]] - middle
        gaze.append([(offset @ along / width - GAZE_CENTRE[0]) / GAZE_REACH[0],
                     (offset @ across / width - GAZE_CENTRE[1]) / GAZE_REACH[1]])
    gaze = np.mean(gaze, axis=0)
    if mirrored:  # local x runs to the image's left
        gaze[0] = -gaze[0]
    image_left_first = np.array(eyes[::-1] if mirrored else eyes)
    mouth = max(float(np.mean([local[lo, 1] - local[up, 1] for up, lo in _MOUTH_GAP])), 0.0)
    return Levels(image_left_first, gaze, mouth)


# -- spreading handle motion ------------------------------------------------------------------
def spread(local: np.ndarray, moving: Mapping[int, np.ndarray] | tuple[np.ndarray, np.ndarray], held: Iterable[int],
           sigma: float) -> np.ndarray:
    """(N, 2) displacements of every point: handle points (`moving`: indices and their (k, 2)
    displacements) move as given, `held` points stay, and every other point moves as a blend of
    the handles nearest to it, fading to nothing away from them (Gaussian of width `sigma`)."""
    idx, disp = moving if isinstance(moving, tuple) else (np.array(list(moving)), np.array(list(moving.values())))
    idx = np.asarray(idx, np.intp)
    disp = np.asarray(disp, np.float64).reshape(-1, 2)
    held = np.setdiff1d(np.fromiter(held, np.intp), idx)
    handles = np.r_[idx, held]
    values = np.r_[disp, np.zeros((len(held), 2))]
    d2 = ((local[:, None, :] - local[handles][None, :, :]) ** 2).sum(axis=-1)  # (N, H)
    near = d2.min(axis=1)
    # Inverse-distance weights of a high power, relative to the nearest handle: the handles
    # right beside a point decide how it moves (many handles further off must not outvote a
    # held part next to it, or a point beside the nose would follow the jaw through the nose).
    weights = (np.maximum(near, 1e-12)[:, None] / np.maximum(d2, 1e-12)) ** 2
    out = (weights @ values) / weights.sum(axis=1, keepdims=True) * np.exp(-near / (2 * sigma**2))[:, None]
    out[handles] = values
    return out


def _part_weights(local: np.ndarray, part: Iterable[int], others: Iterable[int], sigma: float) -> np.ndarray:
    """(N,) how much each point belongs to a part: 1 on its points, 0 on `others`, blended between."""
    part = np.fromiter(part, np.intp)
    return spread(local, (part, np.ones((len(part), 2))), others, sigma)[:, 0]


# -- the rig ----------------------------------------------------------------------------------
class EditRig:
    """Applies `MotionEdits` to meshes of one face. `neutral` (478, 2) is the face at rest in
    the same pixels as the meshes edited (the portrait's mesh in its crop): edits are measured
    from it, and the driver's motion of a mesh is its difference from it. `own` overrides the
    rest levels the level edits start from (default: the neutral's)."""

    def __init__(self, neutral: np.ndarray, own: Levels | None = None):
        self.neutral = np.asarray(neutral, np.float64)
        self.frame = Frame.of(self.neutral)
        self.rest = self.frame.local(self.neutral)  # the neutral in its upright frame
        self.own = own or read_levels(self.rest, self.frame.mirrored)
        self._stable = list(STABLE_POINTS)
        # The depth of every point, from the average face, for head turns.
        self.depth = mean_face()[:, 2].astype(np.float64)

    @property
    def parts(self) -> dict[str, np.ndarray]:
        """What each share of the driver's motion acts on, 0-1 per point (made on first use)."""
        if not hasattr(self, "_parts"):
            mouth = set(_LIPS) | set(self._jaw())
            top = set(mt.FACE_OVAL[:9] + mt.FACE_OVAL[-9:])
            eyes = set(_EYE_PARTS)
            self._parts = {
                "eye_motion": _part_weights(self.rest, [i for c, _ in EYES for i in c],
                                            set(_BROWS) | set(_NOSE) | mouth, 0.25),
                "brow_motion": _part_weights(self.rest, _BROWS, eyes | set(_NOSE) | mouth, 0.3),
                "mouth_motion": _part_weights(self.rest, mouth, eyes | set(_NOSE) | set(_BROWS) | top, 0.3),
            }
        return self._parts

    def _jaw(self) -> list[int]:
        """Face-outline points below the mouth corners (the jaw, which opens with the mouth)."""
        corner_y = self.rest[list(mt.MOUTH_CORNERS), 1].mean()
        return [i for i in mt.FACE_OVAL if self.rest[i, 1] > corner_y]

    # -- the whole edit -----------------------------------------------------------------------
    def frame_of(self, points: np.ndarray) -> Frame:
        """The upright frame of a mesh of this face: the neutral's, carried by the head's motion."""
        return self.frame.moved(similarity(self.neutral[self._stable], np.asarray(points, np.float64)[self._stable]))

    def apply(self, points: np.ndarray, edits: MotionEdits, amount: float = 1.0) -> np.ndarray:
        """`points` (478, 2) with `edits` made (`amount` of the way: 0 none, 1 all), same pixels."""
        return self._apply(points, edits, amount)[0]

    def _apply(self, points: np.ndarray, edits: MotionEdits, amount: float
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The edited points, each point's depth when the head turned (else None), and how far
        the gaze edit moved each iris within its eye (subject's right eye first; image px)."""
        points = np.asarray(points, np.float64)
        if not edits:
            return points.copy(), None, None
        frame = self.frame_of(points)
        local = frame.local(points)
        local = self._motion_shares(local, edits, amount)
        now = read_levels(local, self.frame.mirrored)
        local = self._eyes(local, edits, now, amount)
        local, gaze = self._gaze(local, edits, now, amount)
        local = self._brows(local, edits.brows * amount)
        local = self._mouth_open(local, edits, now, amount)
        local = self._smile(local, edits.smile * amount)
        local = self._pout(local, edits.pout * amount)
        local = self._purse(local, edits.purse * amount)
        local, depth, linear = self._head(local, edits, amount)
        iris_shift = None if gaze is None else (gaze @ linear.T) * frame.unit @ frame.axes
        return frame.image(local), depth, iris_shift

    def target(self, goal: Target, edits: MotionEdits, amount: float = 1.0) -> Target:
        """A preview target with `edits` made: its mesh edited and each eye's opening ratio
        (what decides how far the painted lids close) changed as the edit changed it."""
        if not edits:
            return goal
        points, depth, iris_shift = self._apply(goal.points, edits, amount)
        before = np.array([max(eye_opening(goal.points, e), 1e-6) for e in EYES])
        after = np.array([eye_opening(points, e) for e in EYES])
        return Target(points, goal.head, goal.eye_opening * after / before, depth, iris_shift)

    # -- shares of the driver's motion ----------------------------------------------------------
    def _motion_shares(self, local: np.ndarray, edits: MotionEdits, amount: float) -> np.ndarray:
        shares = {name: 1 + amount * (getattr(edits, name) - 1) for name in ("eye_motion", "brow_motion", "mouth_motion")}
        gaze = 1 + amount * (edits.gaze_motion - 1)
        if all(v == 1 for v in shares.values()) and gaze == 1:
            return local
        motion = local - self.rest
        # Each iris moves with its eye (the lids' mean motion) plus the gaze (the rest of it).
        eye_moves = {iris: motion[list(contour)].mean(axis=0) for contour, iris in EYES}
        factor = np.ones(len(local))
        for name, share in shares.items():
            factor += self.parts[name] * (share - 1)
        out = self.rest + motion * factor[:, None]
        for iris, eye_move in eye_moves.items():
            iris = list(iris)
            out[iris] = self.rest[iris] + eye_move * shares["eye_motion"] + (motion[iris] - eye_move) * gaze
        return out

    # -- eyes -------------------------------------------------------------------------------------
    def _eyes(self, local: np.ndarray, edits: MotionEdits, now: Levels, amount: float) -> np.ndarray:
        wanted = (edits.left_eye_open, edits.right_eye_open)  # image-left first
        order = (1, 0) if self.frame.mirrored else (0, 1)  # image-left eye -> subject's eye (EYES order)
        for side, target in enumerate(wanted):
            if target is None:
                continue
            change = amount * (target - self.own.eyes[side])
            change = max(change, -now.eyes[side])  # no further than closed
            if abs(change) < 1e-9:
                continue
            contour, iris = EYES[order[side]]
            local = local + self._lid_motion(local, contour, iris, change)
        return local

    def _lid_motion(self, local: np.ndarray, contour: tuple, iris: tuple, change: float) -> np.ndarray:
        """Displacements that change an eye's opening by `change` eye widths: the upper lid does
        three quarters of it, along a smooth bulge that leaves the corners still."""
        along, across, width, _ = _eye_axes(local, contour)
        start = local[contour[0]] @ along
        end = local[contour[8]] @ along
        s = np.clip((local[list(contour)] @ along - min(start, end)) / max(abs(end - start), 1e-6), 0, 1)
        bulge = np.sin(np.pi * s)
        idx, disp = [], []
        for lid, share, gap_points in ((_UPPER_LID, -0.75, [u for u, _ in _EYE_GAP]),
                                       (_LOWER_LID, 0.25, [lo for _, lo in _EYE_GAP])):
            norm = max(float(np.mean(bulge[gap_points])), 1e-6)
            for k in lid:
                idx.append(contour[k])
                disp.append(share * change * width * bulge[k] / norm * across)
        held = [contour[0], contour[8]] + [i for c, _ in EYES if c is not contour for i in c] + list(_BROWS)
        held += list(_NOSE)
        if change > 0:  # opening: the eyeball stays; closing: it is squeezed with the lids
            held += list(iris)
        return spread(local, (np.array(idx), np.array(disp)), held, 0.35 * width)

    def _gaze(self, local: np.ndarray, edits: MotionEdits, now: Levels, amount: float
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """The irises moved within their eyes; and each one's move (local units, subject's
        right eye first), None without a gaze edit."""
        if edits.gaze_x is None and edits.gaze_y is None:
            return local, None
        change = np.zeros(2)
        for k, target in enumerate((edits.gaze_x, edits.gaze_y)):
            if target is not None:
                change[k] = amount * (target - self.own.gaze[k])
        change = np.clip(now.gaze + change, -1.2, 1.2) - now.gaze  # the iris stays inside the eye
        if self.frame.mirrored:
            change[0] = -change[0]
        out, moves = local.copy(), []
        idx, disp = [], []
        for contour, iris in EYES:
            along, across, width, _ = _eye_axes(local, contour)
            move = (change[0] * GAZE_REACH[0] * along + change[1] * GAZE_REACH[1] * across) * width
            out[list(iris)] += move  # the eyeball slides under the lids: the iris keeps its shape
            moves.append(move)
            # The lids follow a look up or down a little, the upper one more.
            bulge = np.sin(np.pi * np.clip((local[list(contour)] - local[contour[0]]) @ (
                (local[contour[8]] - local[contour[0]]) / max(width, 1e-6) ** 2), 0, 1))
            for k, share in [(k, LID_FOLLOW[0]) for k in _UPPER_LID] + [(k, LID_FOLLOW[1]) for k in _LOWER_LID]:
                idx.append(contour[k])
                disp.append(share * bulge[k] * change[1] * GAZE_REACH[1] * width * across)
        if change[1]:
            held = list(_BROWS) + list(_NOSE) + [c[0] for c, _ in EYES] + [c[8] for c, _ in EYES] + list(_IRISES)
            out = out + spread(local, (np.array(idx), np.array(disp)), held, 0.3)
        return out, np.array(moves)

    # -- brows and mouth ---------------------------------------------------------------------------
    def _brows(self, local: np.ndarray, lift: float) -> np.ndarray:
        if lift == 0:
            return local
        disp = np.tile([0.0, -(BROW_LIFT if lift > 0 else BROW_DROP) * lift], (len(_BROWS), 1))
        held = list(_EYE_PARTS) + list(_NOSE)
        return local + spread(local, (np.array(_BROWS), disp), held, 0.35)

    def _mouth_open(self, local: np.ndarray, edits: MotionEdits, now: Levels, amount: float) -> np.ndarray:
        if edits.mouth_open is None:
            return local
        change = max(amount * (edits.mouth_open - self.own.mouth), -now.mouth)
        if abs(change) < 1e-9:
            return local
        # The jaw drops and the upper lip stays: the lower lip goes down, most in the middle
        # (the opening is pointed at the corners), and the corners a little with it.
        middle, half = self._lip_geometry(local)
        uppers, lowers = list(_INNER_UPPER + _OUTER_UPPER), list(_INNER_LOWER + _OUTER_LOWER)
        idx = uppers + lowers + list(_CORNERS)
        rel = (local[idx, 0] - middle) / half
        opening = np.clip(1 - rel**2, 0, 1) ** 0.7
        corner = MOUTH_CORNER_DROP * (1 - opening)
        down = list(np.r_[corner[:18], corner[18:36] + opening[18:36], [MOUTH_CORNER_DROP] * 4])
        inward = list(-MOUTH_NARROWING * half * rel)  # a wide-open mouth is narrower
        jaw = self._jaw()
        half_jaw = max(float(np.abs(local[jaw, 0]).max()), 1e-6)
        for i in jaw:
            idx.append(i)
            down.append(max(1 - (local[i, 0] / half_jaw) ** 2, 0.0))
            inward.append(0.0)
        disp = np.c_[np.array(inward), np.array(down)] * change
        held = list(_EYE_PARTS) + list(_NOSE) + list(_BROWS)
        return local + spread(local, (np.array(idx), disp), held, 0.3)

    def _lip_geometry(self, local: np.ndarray) -> tuple[float, float]:
        """The mouth's middle (x) and half width, in local coordinates."""
        a, b = local[mt.MOUTH_CORNERS[0]], local[mt.MOUTH_CORNERS[1]]
        return float((a[0] + b[0]) / 2), max(float(abs(b[0] - a[0]) / 2), 1e-6)

    def _lips(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lip points, each one's offset from the mouth's middle (x) and that offset in
        half widths: -1 and 1 at the corners."""
        middle, half = self._lip_geometry(local)
        idx = np.array(_LIPS)
        across = local[idx, 0] - middle
        return idx, across, across / half

    def _move_lips(self, local: np.ndarray, idx: np.ndarray, disp: np.ndarray, sigma: float) -> np.ndarray:
        """The lips moved by `disp` (the cheeks around them following), eyes, nose and chin held."""
        return local + spread(local, (idx, disp), list(_EYE_PARTS) + list(_NOSE) + [mt.CHIN], sigma)

    def _smile(self, local: np.ndarray, smile: float) -> np.ndarray:
        if smile == 0:
            return local
        idx, _, rel = self._lips(local)
        weight = np.clip(rel**2, 0, 1.2)  # nothing in the middle, most at the corners
        up = (-SMILE_LIFT if smile > 0 else 0.8 * SMILE_LIFT) * abs(smile) * weight
        out = SMILE_WIDEN * (smile if smile > 0 else 0.3 * smile) * np.sign(rel) * weight
        return self._move_lips(local, idx, np.c_[out, up], 0.3)

    def _pout(self, local: np.ndarray, pout: float) -> np.ndarray:
        if pout == 0:
            return local
        idx, across, rel = self._lips(local)
        fuller = POUT_FULLER * pout * np.clip(1 - rel**2, 0, 1)  # the lips' red grows most in the middle
        dy = np.where(np.isin(idx, _OUTER_UPPER), -fuller, np.where(np.isin(idx, _OUTER_LOWER), 1.2 * fuller, 0.0))
        return self._move_lips(local, idx, np.c_[-across * POUT_NARROW * pout, dy], 0.25)

    def _purse(self, local: np.ndarray, purse: float) -> np.ndarray:
        if purse == 0:
            return local
        idx, across, _ = self._lips(local)
        disp = np.c_[-across * PURSE_NARROW * purse, np.zeros(len(idx))]
        row = {i: k for k, i in enumerate(idx)}
        # Each outer lip edge moves towards its inner edge (the lists pair up point by point).
        for outer, inner in ((mt.OUTER_UPPER_LIP, mt.INNER_UPPER_LIP), (mt.OUTER_LOWER_LIP, mt.INNER_LOWER_LIP)):
            for o, i in zip(outer[1:-1], inner[1:-1]):
                disp[row[o], 1] = (local[i, 1] - local[o, 1]) * PURSE_THIN * purse
        return self._move_lips(local, idx, disp, 0.25)

    # -- the head -----------------------------------------------------------------------------------
    def _head(self, local: np.ndarray, edits: MotionEdits, amount: float
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The head turned (in depth), tilted, scaled and moved; the points' depths after a turn;
        and the 2x2 tilt and scale, for directions (a turn's change of them is left out)."""
        yaw, pitch, roll = (math.radians(amount * v) for v in (edits.yaw, edits.pitch, edits.roll))
        scale = 1 + amount * (edits.scale - 1)
        shift = amount * np.array([edits.shift_x, edits.shift_y])
        if not (yaw or pitch or roll or scale != 1 or shift.any()):
            return local, None, np.eye(2)
        if self.frame.mirrored:  # local x runs to the image's left: turns and sideways moves mirror
            yaw, roll, shift[0] = -yaw, -roll, -shift[0]
        depth = self.depth.copy()
        # The outline runs along the sides of the head, which turn about as far as the pivot
        # is deep: it narrows as the head turns but does not swing across (a swinging outline
        # drags the warp's hair and background with it).
        depth[list(mt.FACE_OVAL)] = HEAD_PIVOT[2]
        p = np.c_[local, depth] - HEAD_PIVOT
        if yaw or pitch:
            cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            x, z = x * cy + z * sy, -x * sy + z * cy  # about the vertical axis: the nose goes to -x
            y, z = y * cp - z * sp, y * sp + z * cp  # about the left-right axis: the nose goes down
            p = np.c_[x, y, z]
        out = p[:, :2] + HEAD_PIVOT[:2]
        depth = p[:, 2] + HEAD_PIVOT[2] if (yaw or pitch) else None
        if yaw or pitch:
            # Near the outline the points go more and more the outline's way, so the band
            # between the turning face and its outline stretches evenly instead of in teeth.
            nearest, blend = self._outline_blend
            moved = out - local
            out = local + moved * blend[:, None] + moved[nearest] * (1 - blend[:, None])
        centre = self.rest[list(mt.FACE_OVAL)].mean(axis=0)
        c, s = math.cos(roll), math.sin(roll)
        turn = np.array([[c, s], [-s, c]])  # clockwise on the screen, for row vectors
        out = (out - centre) @ turn * scale + centre
        width = float(np.ptp(self.rest[list(mt.FACE_OVAL), 0]))
        return out + shift * width, depth, turn.T * scale

    @property
    def _outline_blend(self) -> tuple[np.ndarray, np.ndarray]:
        """For every point, its nearest face-outline point and how much it moves its own way
        rather than that point's in a head turn (0 on the outline, 1 from 0.4 eye-corner
        distances inside it)."""
        if not hasattr(self, "_blend"):
            oval = np.array(mt.FACE_OVAL)
            d = np.linalg.norm(self.rest[:, None] - self.rest[oval][None], axis=-1)
            t = np.clip(d.min(axis=1) / 0.4, 0, 1)
            self._blend = (oval[d.argmin(axis=1)], t * t * (3 - 2 * t))
        return self._blend


def apply_edits(points: np.ndarray, neutral: np.ndarray, edits: MotionEdits, amount: float = 1.0) -> np.ndarray:
    """`points` (478, 2), a mesh of the face whose rest mesh is `neutral`, with `edits` made."""
    return EditRig(neutral).apply(points, edits, amount)


__all__ = ["BROW_LIFT", "EditRig", "Frame", "GAZE_REACH", "Levels", "apply_edits", "read_levels", "spread"]
