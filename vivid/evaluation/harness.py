"""The evaluation run: animate every case with every engine, save the scored crops, score
them from the saved videos and write the report, all into a temporary folder beside the
output that is renamed into place only when everything succeeded."""
from __future__ import annotations

import json
import logging
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..face import NoFaceError
from ..media import InputError, read_video, write_video
from ..paths import is_inside
from .engines import ENGINE_NAMES, Engine, Sampling, Timed, build_engines, diffusion_problem
from .learned_metrics import MetricWeights
from .protocol import EvaluationError, PreparedCase, crop, plan_cases, prepare
from .report import PER_CLIP_COLUMNS, PER_FRAME_COLUMNS, plot_case, plot_table, table_cells, write_csv, write_table
from .scoring import Scorers, score_saved_videos, video_paths
from .videos import LosslessWriter, read_frames, side_by_side

log = logging.getLogger(__name__)


@dataclass
class EvaluationConfig:
    """One evaluation run (the options of `python -m vivid evaluate`)."""

    output: Path  # folder to write (must not exist, be empty, or hold an earlier evaluation)
    self_clips: list[Path] = field(default_factory=list)  # self-reenactment clips
    portraits: list[Path] = field(default_factory=list)  # cross-reenactment portraits ...
    driving: list[Path] = field(default_factory=list)  # ... each driven by each of these clips
    engines: tuple[str, ...] = ("still", "preview")  # from ENGINE_NAMES
    weights: str | None = None  # diffusion: saved folder, hub id, "tiny", "mini" (None: the shipped model, if any)
    frames: int | None = None  # at most this many frames per clip (None: all)
    resolution: int = 512  # side of the scoring crop in px (the paper's 512)
    diffusion: Sampling = field(default_factory=Sampling)  # steps, guidance None: the model's recommendation
    metric_weights: MetricWeights = field(default_factory=MetricWeights)
    side_by_side: bool = True  # also write videos/side_by_side/CASE.mp4

    def command(self) -> str:
        """The `python -m vivid evaluate` command line for this configuration."""
        parts = ["python", "-m", "vivid", "evaluate"]
        if self.self_clips:
            parts += ["--self", *map(str, self.self_clips)]
        if self.portraits:
            parts += ["--cross", *map(str, self.portraits), "--driving", *map(str, self.driving)]
        parts += ["--engines", ",".join(self.engines)]
        if self.weights:
            parts += ["--weights", self.weights]
        if self.diffusion.steps is not None:
            parts += ["--steps", str(self.diffusion.steps)]
        if self.frames:
            parts += ["--frames", str(self.frames)]
        parts += ["--resolution", str(self.resolution)]
        if self.metric_weights.lpips_backbone:
            parts += ["--lpips-backbone", str(self.metric_weights.lpips_backbone)]
        if self.metric_weights.download:
            parts += ["--download-metric-weights"]
        return shlex.join(parts + ["-o", str(self.output)])


def check_config(config: EvaluationConfig, extra_engines: Sequence[Engine] = ()) -> None:
    """Raise EvaluationError for options that cannot work, before any work is done."""
    if not config.self_clips and not config.portraits:
        raise EvaluationError("nothing to evaluate: give --self VIDEO... and/or --cross PORTRAIT... --driving VIDEO...")
    if bool(config.portraits) != bool(config.driving):
        raise EvaluationError("cross-reenactment needs both --cross PORTRAIT... and --driving VIDEO...")
    unknown = [e for e in config.engines if e not in ENGINE_NAMES]
    if unknown:
        raise EvaluationError(f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINE_NAMES)}")
    if not config.engines and not extra_engines:
        raise EvaluationError("no engines to evaluate")
    if config.resolution < 64:
        raise EvaluationError(f"--resolution must be at least 64 px, got {config.resolution}")
    if config.frames is not None and config.frames < 2:
        raise EvaluationError(f"--frames must be at least 2, got {config.frames}")
    if "diffusion" in config.engines:  # the sampling options, checked as animate checks them
        config.diffusion.checked()
    if config.weights and (problem := diffusion_problem(config.weights)):  # named weights must be there
        raise EvaluationError(problem)
    for path in [*config.self_clips, *config.portraits, *config.driving]:
        if not Path(path).is_file():
            raise EvaluationError(f"{path}: no such file")
    out = Path(config.output)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "table.md").is_file())):
        raise EvaluationError(f"{out} exists and is not an earlier evaluation folder; choose a new -o DIR")
    if not out.resolve().parent.is_dir():
        raise EvaluationError(f"the folder {out.resolve().parent} does not exist")
    for path in [*config.self_clips, *config.portraits, *config.driving]:  # the folder is replaced whole
        if is_inside(path, out):
            raise EvaluationError(f"{path} is inside the output folder {out}, which an evaluation replaces whole; "
                                  "choose another -o DIR")


def _write_case_inputs(root: Path, p: PreparedCase, resolution: int) -> None:
    """The reference crop, and the real frames (self) or the driver's frames (cross)."""
    paths = video_paths(root, p.case.kind, p.case.name, "gt")
    paths["reference"].parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop(p.reference, p.square, resolution)).save(paths["reference"])
    frames = read_video(p.case.driving, max_frames=p.frames)
    if p.case.kind == "self":
        next(frames)  # frame 0 is the reference, not scored
        target = paths["truth"]
    else:
        target = paths["driving"]
    with LosslessWriter(target, p.fps) as w:
        for frame in frames:
            w.write(crop(frame, p.driver_square, resolution))


def _run_engine(root: Path, engine: Engine, p: PreparedCase, resolution: int, bar: tqdm) -> Timed:
    """Animate one case with one engine and save its scoring crops; raises ValueError
    (e.g. NoFaceError) when the engine cannot animate this case."""
    target = video_paths(root, p.case.kind, p.case.name, engine.name)["output"]
    timer = Timed()
    try:
        with LosslessWriter(target, p.fps) as w:
            out = timer.wrap(engine.animate(p.reference, read_video(p.case.driving, max_frames=p.frames), p.fps))
            for t, frame in enumerate(out):
                if frame.shape != p.reference.shape:
                    raise EvaluationError(
                        f"engine {engine.name} returned {frame.shape[1]}x{frame.shape[0]} frames for a "
                        f"{p.reference.shape[1]}x{p.reference.shape[0]} reference; engines must return whole frames")
                if p.case.kind == "cross" or t > 0:
                    w.write(crop(frame, p.square, resolution))
                bar.update(1)
        if timer.frames != p.frames:
            raise EvaluationError(f"engine {engine.name} returned {timer.frames} frames for {p.frames} driving frames")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return timer


def _write_side_by_side(root: Path, p: PreparedCase, engines: list[str], resolution: int) -> None:
    paths = video_paths(root, p.case.kind, p.case.name, "gt")
    reference = np.asarray(Image.open(paths["reference"]).convert("RGB"))
    driver = paths["truth"] if p.case.kind == "self" else paths["driving"]
    columns = [("real" if p.case.kind == "self" else "driver", read_frames(driver))]
    columns += [(e, read_frames(video_paths(root, p.case.kind, p.case.name, e)["output"])) for e in engines]
    size = min(resolution, 256)
    target = root / "videos" / "side_by_side" / f"{p.case.name}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_video(target, side_by_side(reference, columns, size), p.fps)


def evaluate(config: EvaluationConfig, extra_engines: Sequence[Engine] = (), command: str | None = None) -> Path:
    """Run the evaluation and write it to `config.output` (see the package docstring);
    `extra_engines` adds engines built in Python (e.g. for tests). Returns the folder."""
    check_config(config, extra_engines)
    out = Path(config.output)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.resolve().parent))
    try:
        _evaluate_into(tmp, config, extra_engines, command or config.command())
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _evaluate_into(root: Path, config: EvaluationConfig, extra_engines: Sequence[Engine], command: str) -> None:
    notes: list[str] = []
    skipped: dict[str, str] = {}
    engines = build_engines(config.engines, config.weights, config.diffusion, skipped) + list(extra_engines)
    names = [e.name for e in engines]
    order = list(config.engines) + [e.name for e in extra_engines]
    cases = plan_cases([Path(p) for p in config.self_clips], [Path(p) for p in config.portraits],
                       [Path(p) for p in config.driving])
    prepared: list[PreparedCase] = []
    for case in tqdm(cases, desc="placing crops", unit="case"):
        try:
            prepared.append(prepare(case, config.frames))
        except (InputError, NoFaceError) as exc:
            notes.append(f"case {case.name} skipped: {exc}")
    if not prepared:
        raise EvaluationError("no case could be evaluated: " + "; ".join(notes))
    runs: list[dict] = []
    total = sum(p.frames for p in prepared) * len(engines)
    with tqdm(total=total, desc="animating", unit="frame") as bar:
        for p in prepared:
            _write_case_inputs(root, p, config.resolution)
            for engine in engines:
                try:
                    timer = _run_engine(root, engine, p, config.resolution, bar)
                except (InputError, NoFaceError, EvaluationError) as exc:
                    notes.append(f"{engine.name} on {p.case.name} skipped: {exc}")
                    continue
                runs.append({"case": p.case.name, "kind": p.case.kind, "engine": engine.name,
                             "frames": timer.frames, "seconds": timer.seconds})
    scorers = Scorers.create(config.metric_weights)
    per_clip: list[dict] = []
    per_frame: list[dict] = []
    frames_by_case: dict[str, dict[str, list[dict]]] = {}
    for run in tqdm(runs, desc="scoring", unit="video"):
        scores = score_saved_videos(root, run["case"], run["engine"], run["kind"], scorers)
        key = {"engine": run["engine"], "case": run["case"], "kind": run["kind"]}
        per_clip.append({**key, **scores.summary, "fps": run["frames"] / max(run["seconds"], 1e-9)})
        per_frame += [{**key, **r} for r in scores.frames]
        frames_by_case.setdefault(run["case"], {})[run["engine"]] = scores.frames
    fps = {}
    for name in names:
        mine = [r for r in runs if r["engine"] == name]
        if mine:
            fps[name] = sum(r["frames"] for r in mine) / max(sum(r["seconds"] for r in mine), 1e-9)
    kinds = {p.case.kind for p in prepared}
    summary = _summary(config, prepared)
    for name, why in skipped.items():
        notes.insert(0, f"{name}: {why}")
    cells = table_cells(per_clip, order, skipped, fps, scorers.unavailable, kinds)
    write_table(root / "table.md", command, summary, cells, notes, scorers.unavailable)
    write_csv(root / "per_clip.csv", per_clip, PER_CLIP_COLUMNS)
    write_csv(root / "per_frame.csv", per_frame, PER_FRAME_COLUMNS)
    (root / "plots").mkdir()
    for p in prepared:
        if p.case.name in frames_by_case:
            plot_case(root / "plots" / f"{p.case.name}.png", p.case.name, p.case.kind, frames_by_case[p.case.name])
    plot_table(root / "plots" / "table.png", per_clip, [n for n in order if n in fps], fps)
    if config.side_by_side:
        for p in tqdm(prepared, desc="side by side", unit="case"):
            done = [n for n in order if any(r["case"] == p.case.name and r["engine"] == n for r in runs)]
            _write_side_by_side(root, p, done, config.resolution)
    manifest = {
        "command": command, "resolution": config.resolution, "max_frames": config.frames,
        "cases": [{"name": p.case.name, "kind": p.case.kind, "driving": str(p.case.driving),
                   "portrait": str(p.case.portrait) if p.case.portrait else None, "fps": p.fps,
                   "frames": p.frames, "square": [p.square.cx, p.square.cy, p.square.size]} for p in prepared],
        "runs": runs, "skipped_engines": skipped, "notes": notes,
    }
    (root / "cases.json").write_text(json.dumps(manifest, indent=1))


def _summary(config: EvaluationConfig, prepared: list[PreparedCase]) -> str:
    selfs = [p for p in prepared if p.case.kind == "self"]
    cross = [p for p in prepared if p.case.kind == "cross"]
    parts = [f"Scoring crops of {config.resolution} px."]
    if selfs:
        scored = ", ".join(f"{p.case.name} {p.frames - 1}" for p in selfs)
        parts.append(f"Self-reenactment: {_count(len(selfs), 'clip')} ({scored} scored frames).")
    if cross:
        parts.append(f"Cross-reenactment: {_count(len(cross), 'portrait/clip pair')} ({sum(p.frames for p in cross)} frames).")
    return " ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
