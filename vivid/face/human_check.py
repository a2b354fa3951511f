"""Is a face the mesh found a human one? Dogs, cats and drawings of animals that the detector
takes for faces are refused; photos, paintings, sketches and statues of people are kept.

The face mesh always answers with a human face shape, so its shape alone cannot tell: on a
dog it lays a plausible human mesh over eyes, nose and muzzle. What gives an animal away is
how that mesh fits, seen four ways, each a "doubt" from 0 to 1:

- pose: the muzzle makes the mesh read a head tilted far back (pitch beyond -24 degrees,
  full doubt at -34; both sample dogs read -30 to -42, people at most -35 in rare frames);
- steadiness: the mesh model's face-presence score on squares moved a little around the face
  (0.8x and 1.3x the size, shifted by 12% each way, turned by 0.3 rad) stays high on a human
  face and drops on an animal's (doubt from a mean of 0.9 down to 0.5);
- person: selfie segmentation, a model of people, does not count the face as a person
  (doubt from 0.6 of the face outline covered down to 0.1);
- first look: the presence score on the detector's square, before the mesh re-centres
  itself (doubt from 0.5 down to 0.05; half weight: a hand or a camera in front of a face
  lowers it too).

A face is refused when its doubts add up to `REFUSE_AT` or more. Measured on 851 faces of the
sample portraits, paintings and clip frames (and their grey, mirrored, turned, shrunk,
pencil-sketched and cartoon versions): the highest sum of a real face was 1.32 (a pencil
sketch; the cameraman behind his camera 1.32), while the two dogs, their variants and the
cats the detector fired on summed 1.5 to 3.0. See tests/test_face_finding.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import mesh_topology as mt
from .crop import SquareBox, crop_image
from .head_pose import head_rotation, pose_angles
from .mediapipe_models import PersonSegmenter
from .regions import MeshRegion, box_centre, box_side, region_from_landmarks

if TYPE_CHECKING:
    from .finding import FoundFace
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


def _ramp(value: float, no_doubt: float, full_doubt: float) -> float:
    """0 at `no_doubt`, 1 at `full_doubt`, linear in between (either direction)."""
    return float(np.clip((value - no_doubt) / (full_doubt - no_doubt), 0.0, 1.0))


@dataclass
class Doubts:
    """How much each view doubts that a face is human (0 = none, 1 = full)."""

    pose: float = 0.0
    first_look: float = 0.0
    person: float = 0.0
    steadiness: float = 0.0
    body: float = 0.0

    @property
    def total(self) -> float:
        return self.pose + 0.5 * self.first_look + self.person + self.steadiness + self.body


class HumanCheck:
    """Judges the faces `FaceFinder` measures; the cheap views first, the costly ones (eight
    more mesh runs) only while the face could still be refused."""

    def __init__(self, mesh: "FaceMeshModel"):
        self.mesh = mesh
        self._segmenter: PersonSegmenter | None = None
        self._pose = None

    def doubts(self, rgb: np.ndarray, face: "FoundFace", first_presence: float) -> Doubts:
        d = Doubts()
        pitch = float(pose_angles(head_rotation(face.points3d))[1])
        d.pose = _ramp(pitch, -24.0, -34.0)
        d.first_look = _ramp(first_presence, 0.5, 0.05)
        d.person = _ramp(self._person_cover(rgb, face.points), 0.6, 0.1)
        d.body = _ramp(self._body_disagreement(rgb, face.points), 0.5, 0.8)
        if d.total + 1.0 >= REFUSE_AT:  # steadiness could still tip it
            d.steadiness = _ramp(self._steadiness(rgb, face), 0.9, 0.5)
        return d

    def accepts(self, rgb: np.ndarray, face: "FoundFace", first_presence: float) -> bool:
        return self.doubts(rgb, face, first_presence).total < REFUSE_AT

    def _person_cover(self, rgb: np.ndarray, points: np.ndarray) -> float:
        """Mean person probability over the face outline (selfie segmentation at its own
        resolution, on a square around the face)."""
        if self._segmenter is None:
            self._segmenter = PersonSegmenter()
        box = (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())
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
        """How far BlazePose (a person detector and body-landmark model) puts the nose and eyes
        from the mesh's, in eye distances, on a square around the face and shoulders; 9.9 when
        it finds no person there."""
        if self._pose is None:
            from .mediapipe_models import mp

            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.3)
        box = (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())
        side = box_side(box)
        c = box_centre(box)
        square = SquareBox(float(c[0]), float(c[1]) + BODY_DROP * side, BODY_VIEW * side)
        n = BODY_INPUT
        result = self._pose.process(np.ascontiguousarray(crop_image(rgb, square, n, fill=0)))
        if not result.pose_landmarks:
            return 9.9
        lm = result.pose_landmarks.landmark
        m = square.matrix(n)
        mesh = points[[mt.NOSE_TIP, mt.SUBJECT_RIGHT_IRIS[0], mt.SUBJECT_LEFT_IRIS[0]]] @ m[:, :2].T + m[:, 2]
        body = np.array([(lm[i].x * n, lm[i].y * n) for i in (0, 2, 5)])  # nose, eyes
        eye_distance = max(float(np.linalg.norm(mesh[1] - mesh[2])), 1e-6)
        eyes = min(np.linalg.norm(body[1:] - mesh[1:], axis=1).mean(), np.linalg.norm(body[1:][::-1] - mesh[1:], axis=1).mean())
        return float((np.linalg.norm(body[0] - mesh[0]) + eyes) / 2 / eye_distance)

    def _steadiness(self, rgb: np.ndarray, face: "FoundFace") -> float:
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
        if self._pose is not None:
            self._pose.close()
            self._pose = None

