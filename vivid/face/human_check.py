"""Is a face the mesh found a human one? Dogs, cats and drawings of animals that the detector
takes for faces are refused; photos, paintings and statues of people are kept.

The face mesh always answers with a human face shape, so its shape alone cannot tell: on a
dog it lays a plausible human mesh over eyes, nose and muzzle. What gives an animal away is
how that mesh fits, and what MediaPipe's models of people make of the same spot. Each view
gives a doubt from 0 to 1:

- body: BlazePose (a person detector and body-landmark model) on the head and shoulders
  finds no person, or puts the nose and eyes elsewhere than the mesh (doubt from 0.5 to 0.8
  eye distances apart; people 0.1-0.5, a cheetah 1.1). A person found with its face 0.9 eye
  distances or more from the mesh's, yet on this face, is decisive alone (`BODY_ELSEWHERE`): a primate's face
  (OpenCV's mandrill at 256 px: 1.03) passes every other view as a human one, since a
  monkey's face is near enough to ours for the mesh, the presence score and the person mask;
  BlazePose fits its own face model elsewhere. Finding no person at all is not decisive:
  paintings and sketches of people give that too.
- person: selfie segmentation, a model of people, does not count the face as a person
  (doubt from 0.6 of the face outline covered down to 0.1);
- pose: the muzzle makes the mesh read a head tilted far back (pitch beyond -24 degrees,
  full doubt at -34; both sample dogs read -30 to -42, people at most -35 in rare frames);
- steadiness: the mesh model's face-presence score on squares moved a little around the face
  (0.8x and 1.3x the size, shifted by 12% each way, turned by 0.3 rad) stays high on a human
  face and drops on an animal's (doubt from a mean of 0.9 down to 0.5);
- first look: the presence score on the detector's square, before the mesh re-centres
  itself (doubt from 0.5 down to 0.05; half weight: a hand or a camera in front of a face
  lowers it too).

The views are looked at cheapest first, and only while the sum could still cross `REFUSE_AT`
either way, so the verdict is the same as if all were looked at.

A face is refused when its doubts add up to `REFUSE_AT` or more (each view's doubt is at most 1,
the body view's when decisive `REFUSE_AT`: so a face every other view takes for human still
costs one BlazePose run). Measured with the finder on
435 images with a human face (the sample portraits and paintings, astronaut, Grace Hopper and
the cameraman, each also grey, mirrored, turned by 20 and -25 degrees, shrunk, cartoon-styled;
5 frames of each driving clip, 3 of each of the 95 training clips): every photo, painting and
clip frame summed at most 1.3 (the cameraman behind his camera; clip frames at most 1.0). The
two dogs and every variant of them the detector fired on summed 2.4-3.0, a cheetah and a cat
2.0-2.5. Pencil-sketched people are kept when at least one of the people-models recognises
them (6 of the 9 the detector found). Known miss: a lion's face 30 px wide (1.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import mesh_topology as mt
from .crop import SquareBox, crop_image
from .found import FoundFace
from .head_pose import head_rotation, pose_angles
from .mediapipe_models import BodyModel, PersonSegmenter
from .regions import MeshRegion, box_centre, box_side, landmark_box, region_from_landmarks

if TYPE_CHECKING:
    from .mediapipe_models import FaceMeshModel

REFUSE_AT = 1.5

#: Squares the mesh runs on to see how steady its presence is: (size factor, shift right,
#: shift down in region sizes, turn in radians), around the face's own square.
STEADINESS_SQUARES = ((0.8, 0, 0, 0), (1.3, 0, 0, 0), (1, 0.12, 0, 0), (1, -0.12, 0, 0),
                      (1, 0, 0.12, 0), (1, 0, -0.12, 0), (1, 0, 0, 0.3), (1, 0, 0, -0.3))
#: The person mask is judged on a square this many face sizes wide around the face.
PERSON_VIEW = 2.5
#: BlazePose looks at a square this many face sizes wide, this many lower than the face
#: centre (head and shoulders), at this resolution.
BODY_VIEW, BODY_DROP, BODY_INPUT = 3.0, 0.25, 256
NO_BODY = 9.9  # the disagreement reported when BlazePose finds no person
#: BlazePose found a person, and put its nose and eyes at least this many eye distances from
#: the mesh's: not a human face (people 0.1-0.5 on the 435 images; a mandrill 1.03, a cheetah 1.1).
BODY_ELSEWHERE = 0.9


def _ramp(value: float, no_doubt: float, full_doubt: float) -> float:
    """0 at `no_doubt`, 1 at `full_doubt`, linear in between (either direction)."""
    return float(np.clip((value - no_doubt) / (full_doubt - no_doubt), 0.0, 1.0))


#: How much each view's doubt counts (a hand or a camera in front of a face also lowers the
#: first look, so it counts half).
WEIGHTS = {"pose": 1.0, "first_look": 0.5, "steadiness": 1.0, "person": 1.0, "body": 1.0}
#: The largest doubt each view can give (the body view's is decisive alone: `BODY_ELSEWHERE`).
LARGEST = {"pose": 1.0, "first_look": 1.0, "steadiness": 1.0, "person": 1.0, "body": REFUSE_AT}


def body_doubt(disagreement: float, on_this_face: bool) -> float:
    """The body view's doubt: a ramp from 0.5 to 0.8 eye distances apart, and `REFUSE_AT` (a
    verdict alone) when BlazePose fitted its face `BODY_ELSEWHERE` or further away but still
    on this face (`on_this_face`: its nose and eyes inside the mesh's box). BlazePose's face on
    another person beside this one (a smaller face next to a larger one) is no verdict."""
    if BODY_ELSEWHERE <= disagreement < NO_BODY and on_this_face:
        return REFUSE_AT
    return _ramp(disagreement, 0.5, 0.8)


@dataclass
class Doubts:
    """How much each view doubts that a face is human (0 = none, 1 = full, the body view's
    `REFUSE_AT` when decisive; None = not looked at, because the verdict was clear without it)."""

    pose: float | None = None
    first_look: float | None = None
    steadiness: float | None = None
    person: float | None = None
    body: float | None = None

    @property
    def total(self) -> float:
        return sum(w * (getattr(self, name) or 0.0) for name, w in WEIGHTS.items())


class HumanCheck:
    """Judges the faces `FaceFinder` measures (holds a segmentation and a BlazePose graph)."""

    def __init__(self, mesh: "FaceMeshModel"):
        self.mesh = mesh
        self._segmenter: PersonSegmenter | None = None
        self._body: BodyModel | None = None

    def doubts(self, rgb: np.ndarray, face: FoundFace, first_presence: float) -> Doubts:
        """The views' doubts, cheapest first, each only while it could still change the
        verdict (a clear human face costs eight mesh runs, one segmentation and one BlazePose run)."""
        views = {
            "pose": lambda: _ramp(float(pose_angles(head_rotation(face.points3d))[1]), -24.0, -34.0),
            "first_look": lambda: _ramp(first_presence, 0.5, 0.05),
            "steadiness": lambda: _ramp(self._steadiness(rgb, face), 0.9, 0.5),
            "person": lambda: _ramp(self._person_cover(rgb, face.points), 0.6, 0.1),
            "body": lambda: body_doubt(*self._body_view(rgb, face.points)),
        }
        d = Doubts()
        still_possible = sum(WEIGHTS[name] * LARGEST[name] for name in WEIGHTS)
        for name, view in views.items():
            if d.total >= REFUSE_AT or d.total + still_possible < REFUSE_AT:
                break
            setattr(d, name, view())
            still_possible -= WEIGHTS[name] * LARGEST[name]
        return d

    def accepts(self, rgb: np.ndarray, face: FoundFace, first_presence: float) -> bool:
        return self.doubts(rgb, face, first_presence).total < REFUSE_AT

    def _person_cover(self, rgb: np.ndarray, points: np.ndarray) -> float:
        """Mean person probability over the face outline (selfie segmentation at its own
        resolution, on a square around the face)."""
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        box = landmark_box(points)
        c = box_centre(box)
        square = SquareBox(float(c[0]), float(c[1]), PERSON_VIEW * box_side(box))
        n = PersonSegmenter.INPUT
        probability = self._segmenter.probability(crop_image(rgb, square, n))
        m = square.matrix(n)
        outline = points[list(mt.FACE_OVAL)] @ m[:, :2].T + m[:, 2]
        inside = np.zeros((n, n), np.uint8)
        cv2.fillPoly(inside, [np.round(outline).astype(np.int32)], 1)
        return float(probability[inside > 0].mean()) if inside.any() else 0.0

    def _body_disagreement(self, rgb: np.ndarray, points: np.ndarray) -> float:
        """How far BlazePose puts the nose and eyes from the mesh's, in eye distances (`_body_view`)."""
        return self._body_view(rgb, points)[0]

    def _body_view(self, rgb: np.ndarray, points: np.ndarray) -> tuple[float, bool]:
        """How far BlazePose puts the nose and eyes from the mesh's, in eye distances, on a
        square around the face and shoulders (`NO_BODY` when it finds no person there), and
        whether they lie on this face (inside the mesh's box)."""
        if self._body is None:
            self._body = BodyModel()
        box = landmark_box(points)
        side = box_side(box)
        c = box_centre(box)
        square = SquareBox(float(c[0]), float(c[1]) + BODY_DROP * side, BODY_VIEW * side)
        body = self._body.head_points(crop_image(rgb, square, BODY_INPUT, fill=0))
        if body is None:
            return NO_BODY, False
        m = square.matrix(BODY_INPUT)
        mesh = points[[mt.NOSE_TIP, mt.SUBJECT_RIGHT_IRIS[0], mt.SUBJECT_LEFT_IRIS[0]]] @ m[:, :2].T + m[:, 2]
        eye_distance = max(float(np.linalg.norm(mesh[1] - mesh[2])), 1e-6)
        eyes = min(np.linalg.norm(body[1:] - mesh[1:], axis=1).mean(),
                   np.linalg.norm(body[:0:-1] - mesh[1:], axis=1).mean())  # either eye order
        face_box = np.array(landmark_box(points[:, :2] @ m[:, :2].T + m[:, 2]))  # in the view's pixels, as `body`
        on_face = bool(np.all((body >= face_box[:2]) & (body <= face_box[2:])))
        return float((np.linalg.norm(body[0] - mesh[0]) + eyes) / 2 / eye_distance), on_face

    def _steadiness(self, rgb: np.ndarray, face: FoundFace) -> float:
        """Mean presence score over the face's own square and the moved ones."""
        r = region_from_landmarks(face.points3d)
        scores = [face.presence]
        for scale, dx, dy, turn in STEADINESS_SQUARES:
            moved = MeshRegion(r.cx + dx * r.size, r.cy + dy * r.size, r.size * scale, r.angle + turn)
            scores.append(self.mesh.run(rgb, moved)[1])
        return float(np.mean(scores))

    def close(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None
        if self._body is not None:
            self._body.close()
            self._body = None

