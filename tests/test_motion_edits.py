"""Motion edits on a face mesh (vivid/face/edit_rig.py, motion_edits.py, edit_reading.py): pure geometry, on the astronaut's mesh."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vivid.errors import OptionError
from vivid.face import mesh_topology as mt
from vivid.face.edit_reading import read_edits
from vivid.face.edit_rig import EditRig, Frame, apply_edits, read_levels
from vivid.face.motion_edits import LEVEL, MotionEdits, edit_list
from vivid.face.motion_transfer import apply, transfer_motion


def placed(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


placements = st.builds(placed, st.floats(-0.5, 0.5), st.floats(0.5, 2.0), st.floats(-300, 300), st.floats(-300, 300))


def edit_values(name: str):
    spec = MotionEdits.spec(name)
    return st.floats(spec["low"], spec["high"], allow_nan=False)


#: Every edit at some value in its range (levels sometimes left out).
some_edits = st.fixed_dictionaries({}, optional={name: edit_values(name) for name in MotionEdits.names()}).map(
    lambda values: MotionEdits(**values))


@pytest.fixture(scope="module")
def face(astronaut_analysis) -> np.ndarray:
    return astronaut_analysis.landmarks.astype(np.float64)


def levels(points: np.ndarray):
    frame = Frame.of(points)
    return read_levels(frame.local(points), frame.mirrored)


@settings(max_examples=30, deadline=None)
@given(m=placements)
def test_no_edit_and_no_amount_change_nothing(face, m):
    points = apply(m, face)
    rig = EditRig(points)
    assert np.array_equal(rig.apply(points, MotionEdits()), points)
    everything = MotionEdits(smile=0.5, yaw=10, mouth_open=0.3, gaze_x=0.5, left_eye_open=0.1, mouth_motion=0)
    assert np.abs(rig.apply(points, everything, amount=0.0) - points).max() < 1e-9


@settings(max_examples=25, deadline=None)
@given(m=placements, edits=some_edits)
def test_edits_move_with_the_face(face, m, edits):
    """Edits are made in the face's own frame: editing a moved, turned and scaled face is
    the same as editing it where it was and moving the result."""
    moved = apply(m, face)
    assert np.allclose(apply_edits(moved, moved, edits), apply(m, apply_edits(face, face, edits)),
                       atol=1e-6 * max(1.0, np.abs(moved).max()))


@pytest.mark.parametrize("name, values", [
    ("left_eye_open", [0.0, 0.1, 0.25, 0.4, 0.5]), ("right_eye_open", [0.0, 0.2, 0.5]),
    ("gaze_x", [-1.0, -0.3, 0.0, 0.6, 1.0]), ("gaze_y", [-1.0, 0.0, 1.0]), ("mouth_open", [0.0, 0.15, 0.4]),
])
def test_a_level_edit_puts_the_face_where_it_asks(face, name, values):
    for value in values:
        got = levels(apply_edits(face, face, MotionEdits(**{name: value})))
        read = {"left_eye_open": got.eyes[0], "right_eye_open": got.eyes[1], "gaze_x": got.gaze[0],
                "gaze_y": got.gaze[1], "mouth_open": got.mouth}[name]
        assert read == pytest.approx(value, abs=0.01), (name, value)


def test_each_offset_leaves_the_levels_it_does_not_name(face):
    own = levels(face)
    for edits in (MotionEdits(smile=1), MotionEdits(smile=-1), MotionEdits(brows=1), MotionEdits(brows=-1),
                  MotionEdits(pout=1), MotionEdits(purse=1), MotionEdits(gaze_x=1), MotionEdits(roll=20),
                  MotionEdits(scale=1.3), MotionEdits(shift_x=0.3)):
        got = levels(apply_edits(face, face, edits))
        assert np.abs(got.eyes - own.eyes).max() < 0.01, edits
        assert got.mouth == pytest.approx(own.mouth, abs=0.01), edits


@pytest.mark.parametrize("edits", [MotionEdits(smile=0.6), MotionEdits(smile=-0.5), MotionEdits(brows=0.7),
                                   MotionEdits(brows=-0.6), MotionEdits(pout=0.6), MotionEdits(yaw=15),
                                   MotionEdits(pitch=-12), MotionEdits(roll=20), MotionEdits(mouth_open=0.3),
                                   MotionEdits(gaze_x=-0.5, left_eye_open=0.1)])
def test_a_face_is_read_back_as_the_edits_that_made_it(face, edits):
    """`read_edits` (what a driving photo does) reads an edited face as its edits."""
    read = read_edits(face, apply_edits(face, face, edits))
    tolerance = {"yaw": 2.5, "pitch": 2.5, "roll": 1.0}
    for name, value in edits.changed().items():
        assert getattr(read, name) == pytest.approx(value, abs=tolerance.get(name, 0.12)), (name, read.describe())


def test_head_turns_read_as_turns(face):
    for yaw in (-20, -10, 10, 20):
        assert read_edits(face, apply_edits(face, face, MotionEdits(yaw=yaw))).yaw == pytest.approx(yaw, abs=2.5)


def test_a_mirrored_face_is_edited_as_the_viewer_sees_it(face):
    """gaze_x and shift_x are the viewer's directions, left_eye_open the image-left eye, also
    on a mirrored picture (where the subject's right eye is on the image's right)."""
    mirror = np.array([[-1.0, 0, 1000], [0, 1, 0]])
    for points in (face, apply(mirror, face)):
        right = apply_edits(points, points, MotionEdits(gaze_x=1)) - points
        assert right[mt.SUBJECT_RIGHT_IRIS[0], 0] > 0 and right[mt.SUBJECT_LEFT_IRIS[0], 0] > 0
        moved = apply_edits(points, points, MotionEdits(shift_x=0.2)) - points
        assert moved[:, 0].mean() > 0
        got = levels(apply_edits(points, points, MotionEdits(left_eye_open=0.0)))
        assert got.eyes[0] < 0.01 < got.eyes[1]


def test_shares_of_the_drivers_motion(face, grace_hopper, analyzer):
    """Over a clip: mouth_motion=0 keeps the portrait's mouth as it rests while the driver
    talks; gaze_motion=0 keeps its irises in its eyes; 2 doubles the driver's change."""
    first = analyzer.analyze(grace_hopper).landmarks.astype(np.float64)
    talking = apply_edits(first, first, MotionEdits(mouth_open=0.35, gaze_x=0.8))  # the driver opens and looks
    goal = transfer_motion(face, first, talking).points
    rig = EditRig(face)
    own = levels(face)
    driven = levels(goal)
    assert driven.mouth > own.mouth + 0.15
    held = levels(rig.apply(goal, MotionEdits(mouth_motion=0, gaze_motion=0)))
    assert held.mouth == pytest.approx(own.mouth, abs=0.01)
    assert held.gaze[0] == pytest.approx(own.gaze[0], abs=0.05)
    doubled = levels(rig.apply(goal, MotionEdits(mouth_motion=2)))
    assert doubled.mouth - own.mouth == pytest.approx(2 * (driven.mouth - own.mouth), rel=0.1)
    # "Keep the lips closed": mouth_open=0 with mouth_motion=0, whatever the driver does.
    assert levels(rig.apply(goal, MotionEdits(mouth_open=0, mouth_motion=0))).mouth < 0.01


def test_levels_over_a_clip_are_where_the_face_rests(face):
    """Over a clip a level is the face at rest: the driver's change is added to it."""
    rig = EditRig(face)
    opened = rig.apply(face, MotionEdits(mouth_open=0.25))  # a driven frame: the mouth opened by 0.25 - own
    change = levels(opened).mouth - levels(face).mouth
    got = levels(rig.apply(opened, MotionEdits(mouth_open=0.05)))
    assert got.mouth == pytest.approx(0.05 + change, abs=0.01)


# -- names, ranges and refusals ----------------------------------------------------------------
def test_edits_are_parsed_and_checked_with_one_clear_line():
    assert MotionEdits.parse(["smile=0.6", "gaze-x=-0.3"]) == MotionEdits(smile=0.6, gaze_x=-0.3)
    cases = {
        "smil=0.6": "unknown edit 'smil' (did you mean smile?)",
        "smile=1.5": "edit smile=1.5 is out of range: smile goes from -1 to 1",
        "mouth_open=-0.1": "mouth_open goes from 0 to 0.4",
        "yaw=ten": "edit yaw='ten': the value must be a number",
        "smile": "write NAME=VALUE",
        "yaw=nan": "out of range",
    }
    for pair, message in cases.items():
        with pytest.raises(OptionError) as refused:
            MotionEdits.parse([pair])
        assert message in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(OptionError, match="unknown edit 'grin'"):
        MotionEdits.from_values({"grin": 1})


def test_the_edit_list_gives_every_edit_its_range_default_and_help():
    lines = edit_list().splitlines()
    assert [line.split()[0] for line in lines] == list(MotionEdits.names())
    for line in lines:
        name, low, high, default, *help_words = line.split()
        spec = MotionEdits.spec(name)
        assert (float(low), float(high)) == (spec["low"], spec["high"])
        assert default == "keep" if spec["kind"] == LEVEL else float(default) == getattr(MotionEdits(), name)
        assert " ".join(help_words) == spec["help"]
