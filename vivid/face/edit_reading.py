"""A face read as motion edits: what a driving photo does (`photo_motion`) and `edit --like`.

`read_edits(portrait, photo)` gives the edits that make the portrait's face take the photo's
expression and head pose: the photo's levels as they are (eyes, gaze, mouth open), its brows,
smile, pout and purse and its head's turn as differences from the portrait's, all read on
the 2-D meshes (the head's turn by laying an average face over the points a turn edit moves
rigidly; horizontal lengths read as if the face looked at the camera).
"""
from __future__ import annotations

import math

import numpy as np

from . import mesh_topology as mt
from .edit_rig import (
    BROW_DROP, BROW_LIFT, MOUTH_CORNER_DROP, POUT_NARROW, PURSE_NARROW, PURSE_THIN, SMILE_LIFT, Frame, _BROWS,
    _INNER_LOWER, _INNER_UPPER, _OUTER_LOWER, _OUTER_UPPER, read_levels,
)
from .head_pose import pose_angles
from .mean_face import fit_rotation
from .motion_edits import MotionEdits

#: Points a head's turn is read from in 2-D (`read_edits`): eye corners and lids, the nose, the
#: brows' inner ends; not the outline, which a turn edit holds (on 14 portraits their reading
#: is within 1.3/1.7/0.5 degrees of yaw/pitch/roll of MediaPipe's 3-D pose on average).
POSE_POINTS = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 64, 294, 55, 285, 65, 295, 159, 386, 145,
               374)


def read_edits(portrait: np.ndarray, photo: np.ndarray) -> MotionEdits:
    """The edits that give the face of `portrait` (478, 2) the expression and head pose of the
    face in `photo` (478, 2): its levels as they are, its brows, smile, pout and purse and its
    head's turn as differences from the portrait's. What a driving photo does (`photo_motion`)."""
    a, b = _reading(portrait), _reading(photo)
    pose = b["pose"] - a["pose"]
    values = {
        "left_eye_open": b["levels"].eyes[0], "right_eye_open": b["levels"].eyes[1],
        "gaze_x": b["levels"].gaze[0], "gaze_y": b["levels"].gaze[1], "mouth_open": b["levels"].mouth,
        "brows": (b["brow_gap"] - a["brow_gap"]) / (BROW_LIFT if b["brow_gap"] > a["brow_gap"] else BROW_DROP),
        "smile": (b["lift"] - a["lift"]) / SMILE_LIFT,
        "purse": max((1 - b["red"] / max(a["red"], 1e-6)) / PURSE_THIN, 0.0),
        "yaw": pose[0], "pitch": pose[1], "roll": pose[2],
    }
    # Pursing narrows the mouth a little too; the rest of the narrowing is a pout.
    values["pout"] = (1 - b["width"] / a["width"] - PURSE_NARROW * min(values["purse"], 1.0)) / POUT_NARROW
    clipped = {}
    for name, value in values.items():
        spec = MotionEdits.spec(name)
        clipped[name] = float(np.clip(value, spec["low"], spec["high"]))
    return MotionEdits(**clipped).check()


def _reading(points: np.ndarray) -> dict:
    """What `read_edits` compares of one face: levels, brow gap, corner lift, mouth width, lip
    red and head pose (yaw, pitch, roll in degrees, the signs `MotionEdits` uses)."""
    points = np.asarray(points, np.float64)
    frame = Frame.of(points)
    local = frame.local(points)
    rotation = fit_rotation(points, POSE_POINTS)
    yaw, pitch, roll = pose_angles(rotation)
    # Horizontal lengths shrink as the head turns; read them as if it faced the camera.
    facing = local * np.array([1 / max(math.cos(math.radians(yaw)), 0.5), 1.0])
    levels = read_levels(facing, frame.mirrored)
    # The corners' lift over the lips' middle, less what opening the mouth adds to it (the
    # middle goes down with the lower lip, the corners less): a smile, not an open mouth.
    lips = facing[[13, 14]].mean(axis=0)[1] - (0.5 - MOUTH_CORNER_DROP) * levels.mouth
    corners = facing[list(mt.MOUTH_CORNERS)].mean(axis=0)[1]
    eyes = facing[list(mt.SUBJECT_RIGHT_EYE[:1] + mt.SUBJECT_LEFT_EYE[:1])].mean(axis=0)[1]
    red = sum(float(np.linalg.norm(facing[o] - facing[i])) for o, i in zip(_OUTER_UPPER + _OUTER_LOWER,
                                                                             _INNER_UPPER + _INNER_LOWER))
    return {
        "levels": levels,
        "brow_gap": eyes - facing[list(_BROWS)].mean(axis=0)[1],
        "lift": lips - corners,
        "width": max(float(abs(facing[291, 0] - facing[61, 0])), 1e-6),
        "red": red,
        "pose": np.array([yaw, pitch, roll]),
    }


__all__ = ["POSE_POINTS", "read_edits"]
