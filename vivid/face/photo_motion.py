"""A photo as the driver: a short clip from the portrait's own face to the photo's expression
and head pose, as a motion template every engine takes like any other.

The photo's face is read as motion edits (`read_edits`: how open its eyes and mouth are,
where it looks, its brows, smile, pout and purse and its head's turn, compared with the
portrait's), so only its expression and pose come along, never its face shape. The clip
eases from the portrait's face (no edit) to all of the edits and holds there; one frame
(`seconds` 0) is the photo's expression at once. Its rest mesh is the portrait's own, so
the motion is measured from the portrait's face, not from the clip's first frame.
"""
from __future__ import annotations

import numpy as np

from .edit_reading import read_edits
from .edit_rig import EditRig
from .motion_edits import MotionEdits
from .template import MotionTemplate

#: Frame rate of a driving photo's clip.
PHOTO_FPS = 25.0
#: Share of the clip spent changing; the rest holds the photo's expression.
RAMP_SHARE = 0.7
#: Longest clip a photo makes, seconds.
MAX_PHOTO_SECONDS = 10.0


def _ease(t: float) -> float:
    """Smooth start and stop (0 -> 0, 1 -> 1)."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def photo_template(portrait: np.ndarray, photo: np.ndarray, frame_size: tuple[int, int], seconds: float = 1.5,
                   fps: float = PHOTO_FPS) -> tuple[MotionTemplate, MotionEdits]:
    """The clip a driving photo makes (see the module docstring), and the edits read from it.
    `portrait` and `photo`: the two faces' meshes (478, 2), the portrait's in its own pixels
    (`frame_size` (h, w)), which the clip's meshes are in too."""
    portrait = np.asarray(portrait, np.float64)
    edits = read_edits(portrait, photo)
    rig = EditRig(portrait)
    count = max(1, int(round(seconds * fps)))
    ramp = max(2, int(round(count * RAMP_SHARE)))
    amounts = [1.0] if count == 1 else [_ease(k / (ramp - 1)) for k in range(count)]
    points = np.stack([rig.apply(portrait, edits, amount) for amount in amounts]).astype(np.float32)
    return MotionTemplate(points, frame_size, fps, rest=portrait), edits


__all__ = ["MAX_PHOTO_SECONDS", "PHOTO_FPS", "photo_template"]
