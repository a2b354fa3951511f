"""The evaluation harness on the sample clips: still frame (the baseline) vs preview engine, and
with `--engines still,preview,diffusion` the diffusion engine's model (the shipped
VividPortraits-mini unless `--weights` names another) beside them.

Self-reenactment on every driving clip in ../shared/data/driving, cross-reenactment of four
portraits (two photos, two paintings) with three clips. Prints the table and writes it to
bench/RESULTS.md with per-clip figures; with the diffusion engine in its own section, with the
verdict on the mini model's target (below the still baseline's self-reenactment expression and
pose errors) and a picture of frames side by side (bench/mini_frames.jpg).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results import record  # noqa: E402
from vivid.evaluation import EvaluationConfig, evaluate  # noqa: E402
from vivid.evaluation.report import read_csv  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SELF_CLIPS = ("d0", "d3", "d6", "d9", "d10", "d11", "d12")
PORTRAITS = ("s1", "d19", "s0", "s9")  # photos and paintings
CROSS_CLIPS = ("d0", "d10", "d12")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60, help="frames per clip")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--engines", default="still,preview")
    parser.add_argument("--weights", default=None, help="diffusion engine's model (default: the shipped one)")
    parser.add_argument("--output", type=Path, default=None, help="keep the evaluation folder here")
    parser.add_argument("--before", default=None, help="another diffusion model to put beside it (e.g. the mini "
                        "model it replaces), as the engine 'mini-before'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output or Path(tmp) / "evaluation"
        config = EvaluationConfig(
            output=out,
            self_clips=[DATA / "driving" / f"{c}.mp4" for c in SELF_CLIPS],
            portraits=[DATA / "source" / f"{p}.jpg" for p in PORTRAITS],
            driving=[DATA / "driving" / f"{c}.mp4" for c in CROSS_CLIPS],
            engines=tuple(args.engines.split(",")), frames=args.frames, resolution=args.resolution,
            weights=args.weights,
        )
        start = time.perf_counter()
        extra = []
        if args.before:
            from vivid.engines import DiffusionEngine
            from vivid.model_host import load_pipeline

            before = DiffusionEngine(load_pipeline(args.before))
            before.name = "mini-before"
            extra.append(before)
        evaluate(config, extra_engines=extra)
        minutes = (time.perf_counter() - start) / 60
        load = os.getloadavg()[0]
        table = (out / "table.md").read_text()
        rows = read_csv(out / "per_clip.csv")
        engines = (*config.engines, *(e.name for e in extra))
        picture = frames_picture(out, read_csv(out / "per_frame.csv")) if "diffusion" in engines else None
    body_table = table.split("\n## Definitions")[0].split("\n", 2)[2].strip()  # without the title
    lines = ["| clip | " + " | ".join(f"{e} PSNR | {e} expr. | {e} pose" for e in engines) + " |",
             "|---|" + "---:|" * (3 * len(engines))]
    for case in dict.fromkeys(r["case"] for r in rows if r["kind"] == "self"):
        cells = []
        for e in engines:
            r = next((r for r in rows if r["case"] == case and r["engine"] == e), None)
            cells += ["–"] * 3 if r is None else [f"{r['psnr']:.2f}", f"{r['expression_error']:.2f}", f"{r['pose_error']:.2f}"]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    body = (f"{len(SELF_CLIPS)} self-reenactment clips and {len(PORTRAITS)} portraits x {len(CROSS_CLIPS)} clips, "
            f"first {args.frames} frames of each clip, {args.resolution} px scoring crops; "
            f"the whole run took {minutes:.1f} min (animation, scoring, plots and videos). Machine load "
            f"(1-min load average) at the end: {load:.1f} on {os.cpu_count()} cores; fps and run time depend on it.\n\n"
            + body_table.replace("\n## ", "\n#### ")
            + "\n\nSelf-reenactment per clip (expression error in % of face size, pose error in degrees):\n\n"
            + "\n".join(lines))
    if "diffusion" not in engines:
        record("Evaluation harness", body)
        return
    body += "\n\n" + verdict(rows)
    if picture is not None:
        body += (f"\n\n![frames side by side]({picture.name})\n\nOne frame from the middle of three cases, then "
                 "the self-reenactment frame with an open real mouth where the preview's mouth is furthest from the real "
                 "one (`videos/side_by_side/`): reference, real or driving video, then each engine.")
    record("Evaluation: VividPortraits-mini beside still and preview", body)


def verdict(rows: list[dict]) -> str:
    """The warp-guided mini model's targets (issue 28), each met or not, from the case means."""
    def mean(engine: str, kind: str, key: str) -> float:
        values = [r[key] for r in rows if r["kind"] == kind and r["engine"] == engine and key in r and r[key] == r[key]]
        return sum(values) / len(values) if values else float("nan")

    d = lambda kind, key: mean("diffusion", kind, key)  # noqa: E731
    p = lambda kind, key: mean("preview", kind, key)  # noqa: E731
    s = lambda kind, key: mean("still", kind, key)  # noqa: E731
    checks = [
        (f"self expression error {d('self', 'expression_error'):.2f} below still's {s('self', 'expression_error'):.2f} "
         f"and at most 1.25x preview's {p('self', 'expression_error'):.2f}",
         d("self", "expression_error") < min(s("self", "expression_error"), 1.25 * p("self", "expression_error"))),
        (f"self pose error {d('self', 'pose_error'):.2f} below still's {s('self', 'pose_error'):.2f} and at most "
         f"1.25x preview's {p('self', 'pose_error'):.2f}",
         d("self", "pose_error") < min(s("self", "pose_error"), 1.25 * p("self", "pose_error"))),
        (f"self PSNR {d('self', 'psnr'):.2f} within 1 dB of preview's {p('self', 'psnr'):.2f}",
         d("self", "psnr") >= p("self", "psnr") - 1),
        (f"open-mouth PSNR {d('self', 'mouth_psnr'):.2f} above preview's {p('self', 'mouth_psnr'):.2f}",
         d("self", "mouth_psnr") > p("self", "mouth_psnr")),
        (f"cross identity (dlib) {d('cross', 'id_dlib_cos'):.3f} at least 0.95", d("cross", "id_dlib_cos") >= 0.95),
        (f"cross identity leakage {d('cross', 'identity_leakage'):.3f} at most preview's "
         f"{p('cross', 'identity_leakage'):.3f} + 0.05",
         d("cross", "identity_leakage") <= p("cross", "identity_leakage") + 0.05),
        (f"flicker {d('self', 'flicker'):.2f} / {d('cross', 'flicker'):.2f} (self / cross) at most 3x preview's "
         f"{p('self', 'flicker'):.2f} / {p('cross', 'flicker'):.2f}",
         d("self", "flicker") <= 3 * p("self", "flicker") and d("cross", "flicker") <= 3 * p("cross", "flicker")),
    ]
    return "Targets (issue 28):\n\n" + "\n".join(f"- {text}: " + ("**met**" if ok else "**NOT met**")
                                                 for text, ok in checks)


def frames_picture(out: Path, frame_rows: list[dict], cases: int = 3, width: int = 1024) -> Path | None:
    """A JPEG of side-by-side frames for RESULTS.md, stacked: the middle frame of `cases` cases
    spread over the list (self- and cross-reenactment), and the self-reenactment frame with an
    open real mouth where the preview's mouth is furthest from the real one (the dark hole a
    warp paints; the same rule whatever the diffusion engine does there)."""
    import cv2
    import numpy as np

    from vivid.media import read_video

    videos = sorted((out / "videos" / "side_by_side").glob("*.mp4"))
    pick = [(videos[i], None) for i in np.linspace(0, len(videos) - 1, min(cases, len(videos))).round().astype(int)]
    mouths = [r for r in frame_rows if r["engine"] == "preview" and r["kind"] == "self"
              and r.get("mouth_psnr", float("nan")) == r.get("mouth_psnr")]  # NaN and missing left out
    if mouths:
        worst = min(mouths, key=lambda r: r["mouth_psnr"])
        pick.append((out / "videos" / "side_by_side" / f"{worst['case']}.mp4", int(worst["frame"]) - 1))
    rows = []
    for video, index in dict.fromkeys(pick):
        frames = list(read_video(video))
        frame = frames[len(frames) // 2 if index is None else index]
        rows.append(cv2.resize(frame, (width, round(frame.shape[0] * width / frame.shape[1])), interpolation=cv2.INTER_AREA))
    if not rows:
        return None
    target = Path(__file__).with_name("mini_frames.jpg")
    cv2.imwrite(str(target), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return target


if __name__ == "__main__":
    main()
