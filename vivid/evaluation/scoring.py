"""Scores from the saved videos of an evaluation folder, so anyone can recompute them.

`score_saved_videos(folder, case, engine)` reads `videos/ENGINE/CASE.mp4` and what it is
compared with (`videos/gt/CASE.mp4` for self-reenactment; `videos/driving/CASE.mp4` and
`videos/reference/CASE.png` for cross-reenactment) and returns per-frame rows and the
case's means. The harness scores through this same function after writing the videos (which
are lossless), and `rescore(folder)` redoes every case of a finished evaluation.

Faces are measured on every frame on its own (MediaPipe's image mode, no tracking state),
so a frame scores the same whichever video it is in: the still engine's frames measure
exactly like the reference.

Per frame (self-reenactment, real frame t vs output frame t, t >= 1):
  psnr, ssim (scikit-image), lpips (when its weights are there), face_found,
  expression_error (mean |difference| of the 7 mesh expression features, % of face size),
  yaw/pitch/roll_error and pose_error (their mean), degrees; flicker (grey levels);
  gaze_error, mean |difference| of where the irises sit in their eyes (% of eye width);
  mouth_psnr, PSNR inside the real frame's inner-lip outline, on frames where the real mouth
  is open (the mouth opening at least OPEN_MOUTH % of face size): teeth and tongue, what a warp
  cannot show.
Cross-reenactment has no ground truth: expression and pose are compared as changes since
the first frame (the output starts from the portrait's own expression and pose, the driver
from its own), identity as dlib-embedding cosine/distance to the portrait, and
identity_leakage from the frontalised face shapes of portrait, driver and output.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .face_geometry import (
    EXPRESSION_FEATURES, FaceGeometry, MeshTracker, expression_features, gaze_features, identity_leakage, identity_shape,
    still_face,
)
from .learned_metrics import DlibIdentity, Lpips, MetricWeights, Unavailable, cosine, dlib_status, lpips_status
from ..face import mesh_topology as mt
from .pixel_metrics import STILL_THRESHOLD, flicker, grey, head_region, psnr, region_psnr, ssim
from .protocol import EvaluationError
from .videos import read_frames

#: Per-clip summary columns, in CSV order (after engine, case, kind).
SUMMARY_COLUMNS = (
    "frames", "no_face_frames", "psnr", "ssim", "lpips", "expression_error", "pose_error",
    "yaw_error", "pitch_error", "roll_error", "flicker", "id_dlib_cos", "id_dlib_dist", "identity_leakage",
    "gaze_error", "mouth_psnr", "open_mouth_frames",
)
#: Per-frame columns, in CSV order (after engine, case, kind).
FRAME_COLUMNS = (
    "frame", "face_found", "psnr", "ssim", "lpips", "expression_error", "pose_error", "yaw_error",
    "pitch_error", "roll_error", "flicker", "id_dlib_cos", "id_dlib_dist", "gaze_error", "mouth_psnr",
)
#: A real mouth at least this open (lip gap, % of face size: `expression_features`) shows its
#: inside, and the frame counts for mouth_psnr.
OPEN_MOUTH = 10.0
#: The inner-lip outline, around the mouth.
INNER_LIP = tuple(mt.INNER_UPPER_LIP + mt.INNER_LOWER_LIP[-2:0:-1])
_MOUTH_OPENING = EXPRESSION_FEATURES.index("mouth_opening")


@dataclass
class Scorers:
    """The metric networks that are available, built once per evaluation."""

    lpips: Lpips | None = None
    dlib: DlibIdentity | None = None
    unavailable: dict[str, Unavailable] = field(default_factory=dict)  # metric -> why not
    _faces: dict[str, list[FaceGeometry | None]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, weights: MetricWeights = MetricWeights()) -> "Scorers":
        """Every learned metric whose weights are here; the rest listed in `unavailable`."""
        out = cls()
        if (why := lpips_status(weights)) is None:
            out.lpips = Lpips(weights)
        else:
            out.unavailable["lpips"] = why
        if (why := dlib_status()) is None:
            out.dlib = DlibIdentity()
        else:
            out.unavailable["id_dlib_cos"] = out.unavailable["id_dlib_dist"] = why
        return out

    def faces(self, path: Path) -> list[FaceGeometry | None]:
        """The tracked faces of a reference video (real frames or driver), cached."""
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
        if key not in self._faces:
            with MeshTracker(tracking=False) as tracker:
                self._faces[key] = [tracker(f) for f in read_frames(path)]
        return self._faces[key]


@dataclass
class CaseScores:
    """One engine on one case: a row per scored frame and the case's means."""

    frames: list[dict]
    summary: dict


def _mean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf inside nanmean
        return float(np.nanmean(arr))


def _angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def _pair(a: Path, b: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ia, ib = read_frames(a), read_frames(b)
    for x in ia:
        y = next(ib, None)
        if y is None:
            raise EvaluationError(f"{b} has fewer frames than {a}")
        if x.shape != y.shape:
            raise EvaluationError(f"{a} and {b} have different frame sizes: {x.shape} vs {y.shape}")
        yield x, y
    if next(ib, None) is not None:
        raise EvaluationError(f"{b} has more frames than {a}")


def _boxes(*faces: FaceGeometry | None) -> list[tuple[float, float, float, float]]:
    return [f.box for f in faces if f is not None]


def score_self(truth: Path, output: Path, scorers: Scorers) -> CaseScores:
    """Self-reenactment scores of `output` against the real frames `truth` (same count and size)."""
    truth_faces = scorers.faces(truth)
    rows: list[dict] = []
    prev: tuple[np.ndarray, np.ndarray, FaceGeometry | None, FaceGeometry | None] | None = None
    with MeshTracker(tracking=False) as tracker:
        for t, (g, o) in enumerate(_pair(truth, output)):
            gf, of = truth_faces[t], tracker(o)
            row: dict = {"frame": t + 1, "face_found": of is not None, "psnr": psnr(g, o), "ssim": ssim(g, o)}
            if scorers.lpips is not None:
                row["lpips"] = scorers.lpips(g, o)
            if gf is not None and of is not None:
                row["expression_error"] = float(np.abs(expression_features(of) - expression_features(gf)).mean())
                row["gaze_error"] = float(np.abs(gaze_features(of) - gaze_features(gf)).mean())
                row.update(_pose_errors(of.pose, gf.pose))
            if gf is not None and expression_features(gf)[_MOUTH_OPENING] >= OPEN_MOUTH:
                row["mouth_psnr"] = region_psnr(g, o, gf.points[list(INNER_LIP), :2])
            if prev is not None:
                pg, po, pgf, pof = prev
                still = ~head_region(g.shape[:2], _boxes(gf, of, pgf, pof)) & (np.abs(grey(g) - grey(pg)) < STILL_THRESHOLD)
                row["flicker"] = flicker(po, o, still)
            prev = g, o, gf, of
            rows.append(row)
    return CaseScores(rows, _summarise(rows))


def _pose_errors(a: np.ndarray, b: np.ndarray) -> dict:
    """|a - b| per angle (yaw, pitch, roll; wrapped to 180 degrees) and their mean."""
    err = _angle_error(a, b)
    return {"yaw_error": float(err[0]), "pitch_error": float(err[1]), "roll_error": float(err[2]),
            "pose_error": float(err.mean())}


def score_cross(reference: Path, driving: Path, output: Path, scorers: Scorers) -> CaseScores:
    """Cross-reenactment scores of `output` (the portrait `reference` driven by `driving`)."""
    ref = np.asarray(Image.open(reference).convert("RGB"))
    ref_face = still_face(ref)
    if ref_face is None:
        raise EvaluationError(f"{reference}: no face in the reference crop")
    ref_embedding = scorers.dlib.embed(ref, ref_face.box) if scorers.dlib is not None else None
    driver_faces = scorers.faces(driving)
    out_faces: list[FaceGeometry | None] = []
    rows: list[dict] = []
    prev: tuple[np.ndarray, FaceGeometry | None] | None = None
    with MeshTracker(tracking=False) as tracker:
        for t, (d, o) in enumerate(_pair(driving, output)):
            of = tracker(o)
            out_faces.append(of)
            row: dict = {"frame": t, "face_found": of is not None}
            if of is not None and ref_embedding is not None:
                e = scorers.dlib.embed(o, of.box)
                row["id_dlib_cos"] = cosine(ref_embedding, e)
                row["id_dlib_dist"] = float(np.linalg.norm(ref_embedding - e))
            if prev is not None:
                po, pof = prev
                still = ~head_region(o.shape[:2], _boxes(ref_face, of, pof))
                row["flicker"] = flicker(po, o, still)
            prev = o, of
            rows.append(row)
    # Expression and pose as changes since each video's first frame with a face.
    d0 = next((f for f in driver_faces if f is not None), None)
    o0 = next((f for f in out_faces if f is not None), None)
    if d0 is not None and o0 is not None:
        ed0, eo0 = expression_features(d0), expression_features(o0)
        gd0, go0 = gaze_features(d0), gaze_features(o0)
        for row, df, of in zip(rows, driver_faces, out_faces):
            if df is not None and of is not None:
                change_out, change_drv = expression_features(of) - eo0, expression_features(df) - ed0
                row["expression_error"] = float(np.abs(change_out - change_drv).mean())
                row["gaze_error"] = float(np.abs((gaze_features(of) - go0) - (gaze_features(df) - gd0)).mean())
                row.update(_pose_errors(of.pose - o0.pose, df.pose - d0.pose))
    summary = _summarise(rows)
    found_d = [identity_shape(f) for f in driver_faces if f is not None]
    found_o = [identity_shape(f) for f in out_faces if f is not None]
    summary["identity_leakage"] = (
        identity_leakage(identity_shape(ref_face), np.mean(found_d, axis=0), np.mean(found_o, axis=0))
        if found_d and found_o else float("nan")
    )
    return CaseScores(rows, summary)


def _summarise(rows: list[dict]) -> dict:
    summary: dict = {"frames": len(rows), "no_face_frames": sum(not r["face_found"] for r in rows)}
    for column in SUMMARY_COLUMNS[2:]:
        if any(column in r for r in rows):
            summary[column] = _mean(r.get(column) for r in rows)
    if any("mouth_psnr" in r for r in rows):
        summary["open_mouth_frames"] = sum("mouth_psnr" in r for r in rows)
    return summary


def video_paths(folder: Path, kind: str, case: str, engine: str) -> dict[str, Path]:
    """Where an evaluation folder keeps the videos of one case and engine."""
    v = Path(folder) / "videos"
    paths = {"output": v / engine / f"{case}.mp4", "reference": v / "reference" / f"{case}.png"}
    paths["truth" if kind == "self" else "driving"] = v / ("gt" if kind == "self" else "driving") / f"{case}.mp4"
    return paths


def score_saved_videos(folder: Path, case: str, engine: str, kind: str, scorers: Scorers | None = None) -> CaseScores:
    """Scores of one engine on one case, from the videos saved in an evaluation folder
    (`kind`: "self" or "cross"). `scorers` defaults to every metric available here."""
    scorers = scorers or Scorers.create()
    p = video_paths(folder, kind, case, engine)
    if kind == "self":
        return score_self(p["truth"], p["output"], scorers)
    return score_cross(p["reference"], p["driving"], p["output"], scorers)


def rescore(folder: Path, scorers: Scorers | None = None) -> list[dict]:
    """Recompute the per-clip rows of a finished evaluation from its saved videos (and its
    `cases.json`); the result matches `per_clip.csv` apart from fps, which is timed."""
    manifest = json.loads((Path(folder) / "cases.json").read_text())
    scorers = scorers or Scorers.create()
    rows = []
    for run in manifest["runs"]:
        scores = score_saved_videos(Path(folder), run["case"], run["engine"], run["kind"], scorers)
        rows.append({"engine": run["engine"], "case": run["case"], "kind": run["kind"], **scores.summary})
    return rows
