"""What an evaluation writes: table.md (the paper's Table 1 layout, then offline columns),
per_clip.csv, per_frame.csv and plots/."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .learned_metrics import ARCFACE, DEEP3D, QALIGN, Unavailable
from .scoring import FRAME_COLUMNS, OPEN_MOUTH, SUMMARY_COLUMNS


@dataclass(frozen=True)
class Column:
    """One column of table.md."""

    header: str
    kind: str  # "self", "cross" or "all"
    key: str  # per-clip column, or "no_face" / "fps"
    higher_is_better: bool | None  # None: a count, no arrow
    digits: int = 2
    paper: bool = False
    missing: Unavailable | None = None  # the paper metric we cannot compute here


COLUMNS = (
    Column("Self SSIM", "self", "ssim", True, 3, paper=True),
    Column("Self PSNR (dB)", "self", "psnr", True, 2, paper=True),
    Column("Self LPIPS", "self", "lpips", False, 3, paper=True),
    Column("Cross ID (ArcFace cos)", "cross", "arcface", True, paper=True, missing=ARCFACE),
    Column("Cross expression (Deep3D L1)", "cross", "deep3d", False, paper=True, missing=DEEP3D),
    Column("Cross quality (Q-Align)", "cross", "qalign", True, paper=True, missing=QALIGN),
    Column("Self expression err. (% face)", "self", "expression_error", False),
    Column("Self pose err. (°)", "self", "pose_error", False),
    Column("Self gaze err. (% eye)", "self", "gaze_error", False),
    Column("Self flicker", "self", "flicker", False),
    Column("Self open-mouth PSNR (dB)", "self", "mouth_psnr", True, 2),
    Column("Self no-face frames", "self", "no_face", None),
    Column("Cross ID (dlib cos)", "cross", "id_dlib_cos", True, 3),
    Column("Cross ID leakage", "cross", "identity_leakage", False, 3),
    Column("Cross expression err. (% face)", "cross", "expression_error", False),
    Column("Cross pose err. (°)", "cross", "pose_error", False),
    Column("Cross gaze err. (% eye)", "cross", "gaze_error", False),
    Column("Cross flicker", "cross", "flicker", False),
    Column("Cross no-face frames", "cross", "no_face", None),
    Column("fps", "all", "fps", True, 1),
)

DEFINITIONS = """\
How the columns are computed (see `vivid/evaluation/`; every score can be recomputed from the
saved videos with `vivid.evaluation.rescore(DIR)`):

- Scores are taken in one fixed face crop per case at the evaluation resolution (the
  pipeline's crop: 2 face sizes wide), the same pixels for the real video and every engine.
  Self-reenactment scores frames 1..N-1 (frame 0 is the reference). Each value is the mean
  over a case's frames, then the mean over cases.
- SSIM / PSNR: `skimage.metrics.structural_similarity(channel_axis=2, data_range=255)` and
  `peak_signal_noise_ratio(data_range=255)` per frame (PSNR is inf for identical frames).
  LPIPS: the `lpips` package, AlexNet v0.1.
- Expression err.: mean absolute difference of 7 MediaPipe face-mesh measures (both eye
  openings, both brow heights, mouth opening, width and corner lift), taken after rotating
  the 3-D mesh to face the camera and given in % of face size (outer eye-corner distance).
  Self: output vs real frame; cross: change since the first frame, output vs driver.
- Pose err.: mean of |yaw|, |pitch|, |roll| differences in degrees (head rotation read from
  the mesh); cross: as changes since the first frame.
- Gaze err.: mean absolute difference of where each iris sits in its eye (along and across
  the line between the eye's corners, frontalised mesh), in % of the eye's width; cross: as
  changes since the first frame.
- Open-mouth PSNR: PSNR inside the real frame's inner-lip outline (face mesh), on the frames
  whose real mouth opening is at least OPEN_MOUTH% of face size (teeth, tongue: what a warp cannot
  show); per_clip.csv counts those frames (`open_mouth_frames`).
- Flicker: mean absolute grey-level change between consecutive output frames where nothing
  should move (away from the head, and for self-reenactment where the real video is still).
- ID (dlib cos): cosine between dlib's 128-D face embeddings (face_recognition_models) of
  the portrait and each output frame; per_clip.csv also has the Euclidean distance
  (dlib's same-person threshold is 0.6).
- ID leakage: how far the output's frontalised face shape (points expression does not move)
  moved from the portrait's toward the driver's: 0 kept the portrait's, 1 took the driver's.
- no-face frames: output frames where the face mesh found no face (left out of the face
  measures, counted here). fps: output frames per second of wall time inside each engine.
- `n/a` without a reason: the measure had nothing to use (e.g. no face in any output frame).
""".replace("OPEN_MOUTH", f"{OPEN_MOUTH:g}")


def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _arrow(col: Column) -> str:
    return "" if col.higher_is_better is None else (" ↑" if col.higher_is_better else " ↓")


def aggregate(rows: list[dict], engine: str, kind: str, key: str) -> float:
    """Mean over the cases of one engine and kind (NaN cases left out)."""
    values = [r[key] for r in rows if r["engine"] == engine and r["kind"] == kind and key in r]
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def table_cells(rows: list[dict], engines: Sequence[str], skipped: dict[str, str], fps: dict[str, float],
                unavailable: dict[str, Unavailable], kinds: set[str]) -> dict[str, list[str]]:
    """The text of every cell of table.md, per engine."""
    cells: dict[str, list[str]] = {}
    for engine in engines:
        row: list[str] = []
        for col in COLUMNS:
            if engine in skipped:
                row.append("skipped")
            elif col.missing is not None:
                row.append(col.missing.cell)
            elif col.kind != "all" and col.kind not in kinds:
                row.append("–")
            elif col.key in unavailable:
                row.append(unavailable[col.key].cell)
            elif col.key == "no_face":
                mine = [r for r in rows if r["engine"] == engine and r["kind"] == col.kind]
                row.append(f"{sum(r['no_face_frames'] for r in mine)}/{sum(r['frames'] for r in mine)}")
            elif col.key == "fps":
                row.append(_fmt(fps.get(engine, float("nan")), col.digits))
            else:
                row.append(_fmt(aggregate(rows, engine, col.kind, col.key), col.digits))
        cells[engine] = row
    return cells


def write_table(path: Path, command: str, summary: str, cells: dict[str, list[str]], notes: list[str],
                unavailable: dict[str, Unavailable]) -> None:
    """table.md: the command, the table (paper columns first), notes and definitions."""
    headers = ["engine"] + [c.header + _arrow(c) for c in COLUMNS]
    lines = [
        "# Evaluation", "", "```", command, "```", "", summary, "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|",
    ]
    lines += ["| " + " | ".join([engine] + row) + " |" for engine, row in cells.items()]
    lines += ["", "The first six columns are the paper's Table 1; the rest are offline measures that need no downloads.", ""]
    missing = {c.missing.need: c.missing.how for c in COLUMNS if c.missing is not None}
    missing.update({u.need: u.how for u in unavailable.values()})
    if missing:
        lines += ["## n/a: what each missing metric needs", ""]
        lines += [f"- **{need}**: {how}" for need, how in missing.items()]
        lines += [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Definitions", "", DEFINITIONS]
    path.write_text("\n".join(lines))


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    """A CSV with `columns` (missing values left empty; floats in full precision)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


PER_CLIP_COLUMNS = ("engine", "case", "kind", *SUMMARY_COLUMNS, "fps", "note")
PER_FRAME_COLUMNS = ("engine", "case", "kind", *FRAME_COLUMNS)


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by `write_csv`, numbers parsed back (inf and nan included)."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                except ValueError:
                    parsed[k] = {"True": True, "False": False}.get(v, v)
            out.append(parsed)
    return out


def plot_case(path: Path, case: str, kind: str, frames: dict[str, list[dict]]) -> None:
    """Per-frame PSNR (self) or pose error (cross) and expression error of each engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = ("psnr", "PSNR (dB)") if kind == "self" else ("pose_error", "pose error (°)")
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for ax, (key, label) in zip(axes, (top, ("expression_error", "expression error (% face)"))):
        for engine, rows in frames.items():
            xs = [r["frame"] for r in rows if key in r and math.isfinite(r[key])]
            ys = [r[key] for r in rows if key in r and math.isfinite(r[key])]
            if xs:
                ax.plot(xs, ys, label=engine, linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{case} ({kind}-reenactment)")
    axes[-1].set_xlabel("frame")
    axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_table(path: Path, rows: list[dict], engines: Sequence[str], fps: dict[str, float]) -> None:
    """Bar chart of the table's numeric columns, one panel per column, one bar per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for col in COLUMNS:
        if col.missing is not None or col.higher_is_better is None:
            continue
        values = [fps.get(e, float("nan")) if col.key == "fps" else aggregate(rows, e, col.kind, col.key) for e in engines]
        if all(not math.isfinite(v) for v in values):
            continue
        panels.append((col.header + _arrow(col), values))
    if not panels:
        return
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, values) in zip(axes.flat, panels):
        shown = [v if math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(range(len(engines)), shown, color=[colours[i % len(colours)] for i in range(len(engines))])
        for bar, v in zip(bars, values):
            ax.annotate(_fmt(v, 2), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(range(len(engines)), engines, fontsize=8)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
