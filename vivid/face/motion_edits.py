"""Motion edits: what a user can change of a face's motion, each edit with its range, kind and
help (the CLI's `--set`/`--edit` names and `edit --list`, the app's sliders), checked in one
place. `vivid.face.edit_rig` makes them on a face mesh, the one place both engines edit motion.

Three kinds:

- levels (`left_eye_open`, `right_eye_open`, `gaze_x`, `gaze_y`, `mouth_open`), None unless
  given: where the portrait's face at rest should be, in units read from the mesh. On a
  still they are the result's values; over a clip the driver's motion moves from there (the
  change from the portrait's own value is added to every frame).
- offsets (`brows`, `smile`, `pout`, `purse`, `yaw`, `pitch`, `roll`, `shift_x`, `shift_y`,
  `scale`): changes of the face, the same on a still and on every frame of a clip.
- shares of the driver's motion (`eye_motion`, `gaze_motion`, `brow_motion`,
  `mouth_motion`): 1 keeps it, 0 leaves the part at rest ("keep the lips closed":
  mouth_open=0 and mouth_motion=0), above 1 exaggerates it. No effect on a still.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping

import numpy as np

from ..errors import OptionError

LEVEL, OFFSET, SHARE = "level", "offset", "share"


def _edit(default: float | None, low: float, high: float, kind: str, help: str, unit: str = ""):
    return field(default=default, metadata={"low": low, "high": high, "kind": kind, "help": help, "unit": unit})


@dataclass(frozen=True)
class MotionEdits:
    """Edits of a face's motion (see the module docstring); the defaults change nothing."""

    left_eye_open: float | None = _edit(None, 0.0, 0.5, LEVEL, "how open the image-left eye is: eyelid gap over eye "
                                        "width (0 closed, about 0.3 open, 0.5 wide open)")
    right_eye_open: float | None = _edit(None, 0.0, 0.5, LEVEL, "how open the image-right eye is (as left_eye_open)")
    gaze_x: float | None = _edit(None, -1.0, 1.0, LEVEL, "where the eyes look, across: -1 far to the viewer's left, "
                                 "0 at the camera, 1 far right")
    gaze_y: float | None = _edit(None, -1.0, 1.0, LEVEL, "where the eyes look, up and down: -1 up, 0 at the camera, "
                                 "1 down")
    mouth_open: float | None = _edit(None, 0.0, 0.4, LEVEL, "gap between the lips in eye-corner distances (0 closed, "
                                     "about 0.1 talking, 0.4 wide open)")
    brows: float = _edit(0.0, -1.0, 1.0, OFFSET, "raise (above 0) or lower (below 0) both eyebrows")
    smile: float = _edit(0.0, -1.0, 1.0, OFFSET, "lift and widen the mouth corners (above 0) or turn them down (below 0)")
    pout: float = _edit(0.0, 0.0, 1.0, OFFSET, "push the lips out: a narrower, fuller mouth")
    purse: float = _edit(0.0, 0.0, 1.0, OFFSET, "press the lips thin")
    yaw: float = _edit(0.0, -25.0, 25.0, OFFSET, "turn the head, degrees (above 0: the face turns to the viewer's left)",
                       "°")
    pitch: float = _edit(0.0, -20.0, 20.0, OFFSET, "nod, degrees (above 0: the face tilts down)", "°")
    roll: float = _edit(0.0, -30.0, 30.0, OFFSET, "tilt the head in the picture, degrees clockwise", "°")
    shift_x: float = _edit(0.0, -0.5, 0.5, OFFSET, "move the head to the right (above 0) or left, in face widths")
    shift_y: float = _edit(0.0, -0.5, 0.5, OFFSET, "move the head down (above 0) or up, in face widths")
    scale: float = _edit(1.0, 0.7, 1.4, OFFSET, "head size: above 1 nearer the camera, below 1 further")
    eye_motion: float = _edit(1.0, 0.0, 2.0, SHARE, "over a driving clip: share of the driver's eyelid motion (blinks) "
                              "kept (0 none, above 1 exaggerated)")
    gaze_motion: float = _edit(1.0, 0.0, 2.0, SHARE, "over a driving clip: share of the driver's eye movements kept "
                               "(0: the eyes stay where gaze_x/gaze_y put them)")
    brow_motion: float = _edit(1.0, 0.0, 2.0, SHARE, "over a driving clip: share of the driver's eyebrow motion kept")
    mouth_motion: float = _edit(1.0, 0.0, 2.0, SHARE, "over a driving clip: share of the driver's mouth and jaw motion "
                                "kept (0 with mouth_open=0: the lips stay closed)")

    # -- reading and checking ---------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def spec(cls, name: str) -> Mapping:
        """The range, kind, help and unit of the edit `name`."""
        return next(f.metadata for f in fields(cls) if f.name == name)

    @classmethod
    def parse(cls, pairs: Iterable[str]) -> "MotionEdits":
        """Edits from `NAME=VALUE` words (the CLI's), checked; an OptionError says what is wrong."""
        values: dict[str, float] = {}
        for pair in pairs:
            name, sep, text = pair.partition("=")
            name = name.strip().replace("-", "_")
            if not sep:
                raise OptionError(f"edit {pair!r}: write NAME=VALUE, e.g. smile=0.5")
            _known(name)
            try:
                values[name] = float(text)
            except ValueError:
                raise OptionError(f"edit {name}={text!r}: the value must be a number") from None
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, float | None]) -> "MotionEdits":
        """Edits from a name -> value mapping (the app's sliders, a script), checked."""
        for name in values:
            _known(name)
        return cls(**values).check()

    def check(self) -> "MotionEdits":
        """The edits as floats, each within its range; else an OptionError naming it."""
        checked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                if f.default is not None:
                    raise OptionError(f"edit {f.name} needs a number, got None")
                continue
            low, high = f.metadata["low"], f.metadata["high"]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise OptionError(f"edit {f.name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or not low <= value <= high:
                raise OptionError(f"edit {f.name}={value:g} is out of range: {f.name} goes from {low:g} to {high:g}")
            checked[f.name] = value
        return replace(self, **checked)

    def changed(self) -> dict[str, float]:
        """The edits that differ from their defaults, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def __bool__(self) -> bool:
        """Whether any edit is made."""
        return bool(self.changed())

    def describe(self) -> str:
        """`name=value ...` of the edits made ("none" without any)."""
        return " ".join(f"{k}={v:g}" for k, v in self.changed().items()) or "none"


def _known(name: str) -> None:
    if name not in MotionEdits.names():
        close = difflib.get_close_matches(name, MotionEdits.names(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise OptionError(f"unknown edit {name!r}{hint}; `python -m vivid edit --list` lists the edits")


def edit_list() -> str:
    """One edit a line: name, lowest value, highest value, default ("keep": the face's own),
    then its help; what `python -m vivid edit --list` prints."""
    lines = []
    for f in fields(MotionEdits):
        meta = f.metadata
        default = "keep" if f.default is None else f"{f.default:g}"
        lines.append(f"{f.name} {meta['low']:g} {meta['high']:g} {default} {meta['help']}")
    return "\n".join(lines)


__all__ = ["LEVEL", "OFFSET", "SHARE", "MotionEdits", "edit_list"]
