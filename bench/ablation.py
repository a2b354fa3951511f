"""The paper's Table 2 in miniature: diffusion models that differ in one setting (warp guidance,
random scaling, eye landmarks), each put through the same evaluation as bench/evaluation.py
(self-reenactment of the clips of ../shared/data/driving, cross-reenactment of four portraits
with three clips), beside the still and preview engines of the same run.

    python bench/ablation.py --model "full recipe=runs/a/model" --model "random scaling off=runs/b/model" ...

Prints the table and writes it to bench/RESULTS.md ("Table 2 in miniature"), with what each
row changes (its training.json) and how long each model trained.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.evaluation import CROSS_CLIPS, DATA, PORTRAITS, SELF_CLIPS  # noqa: E402
from bench.results import record  # noqa: E402
from vivid.evaluation import EvaluationConfig, evaluate  # noqa: E402
from vivid.evaluation.report import aggregate, read_csv  # noqa: E402
from vivid.sampling import Sampling  # noqa: E402

#: (header, kind, per-clip column, digits): what each ablation is expected to move.
COLUMNS = (
    ("self PSNR (dB)", "self", "psnr", 2),
    ("self expression err. (% face)", "self", "expression_error", 2),
    ("self pose err. (°)", "self", "pose_error", 2),
    ("self gaze err. (% eye)", "self", "gaze_error", 2),
    ("self open-mouth PSNR (dB)", "self", "mouth_psnr", 2),
    ("cross ID (dlib cos)", "cross", "id_dlib_cos", 3),
    ("cross ID leakage", "cross", "identity_leakage", 3),
    ("cross expression err.", "cross", "expression_error", 2),
    ("cross gaze err. (% eye)", "cross", "gaze_error", 2),
    ("self flicker", "self", "flicker", 2),
)
#: Training settings a row is described by.
SETTINGS = ("warp_guidance", "random_scaling", "eye_landmarks", "latent_views", "resolution")


def recommends(folder: Path) -> bool:
    """Whether a saved model names its own sampling settings (a shipped one does; training's exports do not)."""
    return bool(json.loads((folder / "model_index.json").read_text()).get("sampling_defaults"))


def config(out: Path, engines: tuple[str, ...], frames: int, weights: str | None = None,
           sampling: Sampling = Sampling()) -> EvaluationConfig:
    return EvaluationConfig(
        output=out, self_clips=[DATA / "driving" / f"{c}.mp4" for c in SELF_CLIPS],
        portraits=[DATA / "source" / f"{p}.jpg" for p in PORTRAITS],
        driving=[DATA / "driving" / f"{c}.mp4" for c in CROSS_CLIPS], engines=engines, frames=frames, weights=weights,
        diffusion=sampling,
    )


def cells(rows: list[dict], engine: str) -> list[str]:
    out = []
    for _, kind, key, digits in COLUMNS:
        value = aggregate(rows, engine, kind, key)
        out.append("n/a" if math.isnan(value) else f"{value:.{digits}f}")
    return out


def described(folder: Path) -> str:
    """What a model was trained with: its stage, steps and the settings the table varies."""
    path = folder / "training.json"
    if not path.is_file():
        return "no training.json"
    info = json.loads(path.read_text())
    c = info.get("config", {})
    settings = ", ".join(f"{k} {c[k]}" for k in SETTINGS if k in c)
    return f"stage {info.get('stage')} at step {info.get('step')}; {settings}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=FOLDER",
                        help="a row: its label and the saved model folder (repeatable)")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps for rows whose model recommends none (training's exports)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance for those rows")
    parser.add_argument("--note", default="", help="a sentence printed under the table (how the runs compare)")
    args = parser.parse_args()
    models = [item.partition("=")[::2] for item in args.model]
    for label, folder in models:
        if not (Path(folder) / "model_index.json").is_file():
            parser.error(f"--model {label}={folder}: not a saved model folder")
    lines = ["| row | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    notes = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = evaluate(config(Path(tmp) / "baselines", ("still", "preview"), args.frames))
        rows = read_csv(base / "per_clip.csv")
        for engine in ("still", "preview"):
            lines.append(f"| {engine} engine | " + " | ".join(cells(rows, engine)) + " |")
        for k, (label, folder) in enumerate(models):
            own = recommends(Path(folder))
            sampling = Sampling() if own else Sampling(steps=args.steps, guidance=args.guidance)
            out = evaluate(config(Path(tmp) / f"model{k}", ("diffusion",), args.frames, folder, sampling))
            lines.append(f"| {label} | " + " | ".join(cells(read_csv(out / "per_clip.csv"), "diffusion")) + " |")
            how = "its own sampling settings" if own else f"steps {args.steps or 'default'}, guidance {args.guidance or 'default'}"
            notes.append(f"- {label}: `{folder}` ({described(Path(folder))}; sampled with {how})")
            print(lines[-1], flush=True)
    minutes = (time.perf_counter() - start) / 60
    body = (f"{len(SELF_CLIPS)} self-reenactment clips, {len(PORTRAITS)} portraits x {len(CROSS_CLIPS)} clips, "
            f"first {args.frames} frames each, as bench/evaluation.py scores them ({minutes:.0f} min in all).\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(notes) + (f"\n\n{args.note}" if args.note else ""))
    record("Table 2 in miniature (ablations of VividPortraits-mini)", body)


if __name__ == "__main__":
    main()
