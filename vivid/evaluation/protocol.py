"""The evaluation protocol: which cases are run and in which crop they are scored.

Self-reenactment (the paper's protocol): the first frame of a clip is the reference, the
whole clip drives it, and output frame t is compared with real frame t for t >= 1 (frame 0
is the reference itself, which every engine reproduces, so it is left out of both the scores
and the saved videos). Cross-reenactment: every portrait with every driving clip; there is
no ground truth, so only identity, expression, pose and flicker are measured.

Scores are taken in the model's face-crop space at the evaluation resolution: one fixed
square per case, placed like the pipeline places its crops (`vivid.face.CropConfig()`:
2 face sizes wide, lifted by 0.1 face size). For self-reenactment the square is
`video_square` of the face boxes tracked over the clip, so it holds the face wherever it
goes and head motion stays motion inside the crop; for cross-reenactment it is
`face_square` of the portrait's face. The same square is cut out of the real frames and out
of every engine's output.

Why whole frames and not each engine's own crop: the engines crop differently (the preview
engine animates a 2.6-face-size crop at the reference's own scale, the diffusion engine a
crop around the reference's face box at the model's resolution), so their native crops are
not pixel-aligned with each other or with any one crop of the real video. Every engine
therefore returns whole frames the size of the reference (preview with `crop_only=False`,
diffusion with `paste_back=True`) and the harness cuts the one fixed square out of them, so
ground truth and outputs are pixel-aligned by construction. The cost is one more resampling
of the diffusion output (crop -> paste back -> crop), which a scoring crop at or above the
model's resolution keeps small.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..face import CropConfig, SquareBox, crop_image, face_square, video_square
from ..media import InputError, load_image, probe_video, read_video
from .face_geometry import FaceGeometry, still_face, track_faces

Kind = Literal["self", "cross"]
#: The crop the pipeline places around a face; scores are taken in the same kind of crop.
SCORING_CROP = CropConfig()


class EvaluationError(InputError):
    """Evaluation inputs or options that cannot be used; the message says which and why."""


@dataclass
class Case:
    """One reference animated by one driving clip."""

    name: str
    kind: Kind
    driving: Path
    portrait: Path | None = None  # cross-reenactment only


@dataclass
class PreparedCase:
    """A case ready to run: the reference, the scoring crop and the clip's timing."""

    case: Case
    reference: np.ndarray  # whole reference image (self: the clip's first frame)
    square: SquareBox  # scoring crop in reference (= output) coordinates
    driver_square: SquareBox  # crop of the driving frames (self: the same square)
    fps: float
    frames: int  # driving frames used
    notes: list[str] = field(default_factory=list)


def plan_cases(self_clips: list[Path], portraits: list[Path], driving: list[Path]) -> list[Case]:
    """Self cases (one per clip) then cross cases (every portrait with every clip), with
    unique names: the clip's stem, or portrait-stem_clip-stem."""
    cases = [Case(p.stem, "self", p) for p in self_clips]
    cases += [Case(f"{q.stem}_{d.stem}", "cross", d, q) for q in portraits for d in driving]
    seen: dict[str, int] = {}
    for c in cases:
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        if n:
            c.name = f"{c.name}-{n + 1}"
    return cases


def _clipped(face: FaceGeometry, shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = face.box
    h, w = shape[:2]
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))


def scan_clip(path: Path, max_frames: int | None) -> tuple[np.ndarray, SquareBox, int]:
    """First frame, fixed crop (where the face goes over the whole clip) and frame count of
    a driving clip, read once without keeping its frames."""
    first: list[np.ndarray] = []

    def frames():
        for frame in read_video(path, max_frames=max_frames):
            if not first:
                first.append(frame)
            yield frame

    boxes = [None if f is None else _clipped(f, first[0].shape) for f in track_faces(frames())]
    if all(b is None for b in boxes):
        raise EvaluationError(f"{path.name}: no face found in any of its {len(boxes)} frames")
    return first[0], video_square(boxes, SCORING_CROP), len(boxes)


def prepare(case: Case, max_frames: int | None) -> PreparedCase:
    """Read the case's inputs and place its scoring crop; EvaluationError/InputError when
    they cannot be used (the harness then skips the case with that note)."""
    info = probe_video(case.driving)
    first, drv_square, count = scan_clip(case.driving, max_frames)
    if case.kind == "self":
        if count < 2:
            raise EvaluationError(f"{case.driving.name}: self-reenactment needs at least 2 frames, it has {count}")
        return PreparedCase(case, first, drv_square, drv_square, info.fps, count)
    assert case.portrait is not None
    reference = load_image(case.portrait).rgb
    face = still_face(reference)
    if face is None:
        raise EvaluationError(f"{case.portrait.name}: no face found in the portrait")
    square = face_square(_clipped(face, reference.shape), SCORING_CROP)
    return PreparedCase(case, reference, square, drv_square, info.fps, count)


def crop(frame: np.ndarray, square: SquareBox, resolution: int) -> np.ndarray:
    """The scoring crop of one frame."""
    return crop_image(frame, square, resolution)
