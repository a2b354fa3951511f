"""Command line: `python -m vivid animate ...` and `python -m vivid parse ...`.

Only translates arguments into calls to `vivid`; errors become one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .face import FaceAnalyzer, MotionTemplate, NoFaceError, colorize, render_motion_map
from .face.template import TemplateError, is_template_file
from .media import InputError, load_image, probe_video, read_video, write_video

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
DIFFUSION_ONLY = ("weights", "window", "overlap", "no_cyclic", "wrap", "steps", "guidance", "seed", "parser")


class UsageError(ValueError):
    """Arguments that contradict each other."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vivid", description="Animate a portrait with a driving video.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("animate", help="animate REFERENCE with the motion of DRIVING")
    a.add_argument("reference", help="portrait image")
    a.add_argument("driving", help="driving video, or a motion template (.npz from `parse VIDEO --template`)")
    a.add_argument("-o", "--output", required=True, help="output .mp4")
    a.add_argument("--engine", choices=["preview", "diffusion"], default="preview",
                   help="preview: fast warping, no weights (default); diffusion: the model")
    a.add_argument("--size", type=int, default=None, help="side of the animated face crop in px (preview default: the portrait's own scale; diffusion: the model's)")
    a.add_argument("--max-frames", type=int, default=None, help="use only the first N driving frames")
    a.add_argument("--crop-only", action="store_true", help="output the animated face crop, not the whole portrait")
    a.add_argument("--absolute", action="store_true", help="copy the driving face's shape, not only its motion")
    d = a.add_argument_group("diffusion engine")
    d.add_argument("--weights", help="folder saved by VividPipeline.save_pretrained, or 'tiny' (random, for testing)")
    d.add_argument("--window", type=int, default=None, help="frames per context window (default 24)")
    d.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows (default 4)")
    d.add_argument("--no-cyclic", action="store_true", default=None, help="fixed windows instead of cyclic overlap")
    d.add_argument("--wrap", action="store_true", default=None,
                   help="cyclic windows run past the last frame into the first (for looping clips)")
    d.add_argument("--parser", choices=["auto", "mesh", "farl"], default=None,
                   help="face parser for the motion maps: mesh (MediaPipe, offline), farl (the paper's FaRL), "
                        "auto (default: the model's setting, farl when its weights are on disk)")
    d.add_argument("--steps", type=int, default=None, help="denoising steps (default 25)")
    d.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 3.5)")
    d.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p = sub.add_parser("parse", help="write parsing maps, motion maps and the fg/bg mask of an image or video")
    p.add_argument("input", help="image or video")
    p.add_argument("-o", "--output", help="output folder (needed unless --template is given)")
    p.add_argument("--parser", "--backend", dest="backend", choices=["auto", "mesh", "farl"], default="auto",
                   help="face parser: mesh (MediaPipe, offline), farl (the paper's FaRL), auto: farl when its weights are on disk")
    p.add_argument("--template", metavar="OUT.npz",
                   help="video only: save its motion template (smoothed face-mesh track, fps and sound; no pixels)")
    p.add_argument("--no-audio", action="store_true", help="with --template: leave the video's sound out")
    from .evaluation.command import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)
    return parser


def _check_output_file(path: Path) -> None:
    if path.suffix.lower() != ".mp4":
        raise UsageError(f"output must be an .mp4 file, got {path.name}")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write to {folder}")


def _check_engine_options(args: argparse.Namespace) -> None:
    given = [name for name in DIFFUSION_ONLY if getattr(args, name) is not None] if args.engine == "preview" else []
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise UsageError(f"{flags} only apply to the diffusion engine")
    if args.wrap and args.no_cyclic:
        raise UsageError("--wrap only applies to cyclic windows; drop --no-cyclic or --wrap")
    if args.engine == "diffusion" and not args.weights:
        raise UsageError("the diffusion engine needs --weights (a saved model folder); "
                         "use --engine preview to animate without downloaded weights")


def _frames(path: str, max_frames: int | None, total: int, desc: str) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    yield from tqdm(read_video(path, max_frames=max_frames), total=total, desc=desc, unit="frame")


def animate(args: argparse.Namespace) -> None:
    out = Path(args.output)
    _check_output_file(out)
    _check_engine_options(args)
    reference = load_image(args.reference).rgb
    if is_template_file(args.driving):
        _animate_template(args, reference, out)
        return
    info = probe_video(args.driving)
    total = min(info.frames or 0, args.max_frames or info.frames or 0) or None
    if args.engine == "preview":
        from .preview import PreviewAnimator, PreviewConfig

        config = PreviewConfig(size=args.size, crop_only=args.crop_only, relative=not args.absolute)
        frames = PreviewAnimator(config).stream(reference, _frames(args.driving, args.max_frames, total, "animating"), info.fps)
    else:
        frames = _diffusion_frames(args, reference, info.fps, total)
    n = write_video(out, frames, info.fps, audio_from=args.driving)
    print(f"wrote {n} frames to {out}", file=sys.stderr)


def _animate_template(args: argparse.Namespace, reference: np.ndarray, out: Path) -> None:
    """`animate REF TEMPLATE.npz`: the template's motion, fps and (when stored) sound."""
    import dataclasses

    from tqdm import tqdm

    template = MotionTemplate.load(args.driving)
    if args.max_frames:
        template = dataclasses.replace(template, points=template.points[: args.max_frames],
                                       interpolated=template.interpolated[: args.max_frames])
    if args.engine == "preview":
        from .preview import PreviewAnimator, PreviewConfig

        config = PreviewConfig(size=args.size, crop_only=args.crop_only, relative=not args.absolute)
        frames = tqdm(PreviewAnimator(config).stream(reference, template), total=len(template), desc="animating", unit="frame")
    else:
        frames = _diffusion_frames(args, reference, template.fps, len(template), driving=template)
    n = template.write_video(out, frames)
    print(f"wrote {n} frames to {out}" + (" with the template's sound" if template.has_audio else ""), file=sys.stderr)


def _diffusion_frames(args: argparse.Namespace, reference: np.ndarray, fps: float, total: int | None,
                      driving: "MotionTemplate | None" = None) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    from .pipeline import VividPipeline

    if args.weights == "tiny":
        pipe = VividPipeline.tiny(resolution=args.size or 64)
    elif (Path(args.weights) / "model_index.json").is_file():
        pipe = VividPipeline.from_pretrained(args.weights)
    else:
        raise UsageError(f"{args.weights} is not a saved VividPipeline folder (no model_index.json)")
    if args.size and args.size != pipe.config.resolution and args.weights != "tiny":
        raise UsageError(f"this model works at {pipe.config.resolution} px; drop --size")
    if args.parser:
        pipe.analyzer = FaceAnalyzer(args.parser)
    options = {k: getattr(args, k) for k in ("window", "overlap", "steps", "guidance", "seed") if getattr(args, k) is not None}
    steps = options.get("steps", 25)
    if driving is None:
        driving = read_video(args.driving, max_frames=args.max_frames)
    bar = tqdm(total=steps, desc="denoising", unit="step")
    for event in pipe.stream(reference, driving, cyclic=not args.no_cyclic, wrap=bool(args.wrap), fps=fps, relative=not args.absolute,
                             paste_back=not args.crop_only, **options):
        if event.kind == "progress":
            bar.update(1)
        else:
            if bar.desc != "decoding":
                bar.close()
                bar = tqdm(total=total, desc="decoding", unit="frame")
            bar.update(1)
            yield event.frame
    bar.close()


def parse(args: argparse.Namespace) -> None:
    from PIL import Image

    src = Path(args.input)
    if args.template is not None:
        if src.suffix.lower() in IMAGE_SUFFIXES:
            raise UsageError("--template needs a driving video, not an image")
        if not is_template_file(args.template):
            raise UsageError(f"--template must name an .npz file, got {args.template}")
        if not Path(args.template).resolve().parent.is_dir():
            raise UsageError(f"output folder {Path(args.template).resolve().parent} does not exist")
    elif args.output is None:
        raise UsageError("give -o FOLDER for the maps, or --template OUT.npz for a motion template")
    if args.template is not None and args.output is None:
        _save_template(args, src)
        return
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UsageError(f"cannot write to {out}")
    if args.template is not None:
        _save_template(args, src)
    analyzer = FaceAnalyzer(args.backend)
    if src.suffix.lower() in IMAGE_SUFFIXES:
        rgb = load_image(src).rgb
        a = analyzer.analyze(rgb, src.name)
        Image.fromarray(colorize(a.labels)).save(out / "parsing.png")
        Image.fromarray(a.labels).save(out / "labels.png")  # raw indices into vivid.face.LABELS
        Image.fromarray(render_motion_map(a)).save(out / "motion_map.png")
        Image.fromarray((a.foreground * 255).astype(np.uint8)).save(out / "foreground.png")
        for note in a.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote parsing.png, labels.png, motion_map.png, foreground.png to {out} ({analyzer.backend_note})", file=sys.stderr)
        return
    from .face import TrackConfig

    info = probe_video(src)
    missing: list[int] = []

    def maps() -> Iterator[np.ndarray]:
        for i, a in enumerate(analyzer.iter_track(_frames(str(src), None, info.frames or None, "parsing"), TrackConfig(fps=info.fps))):
            if a is None or a.interpolated:
                missing.append(i)
            yield render_motion_map(a) if a is not None else np.zeros((info.height, info.width, 3), np.uint8)

    n = write_video(out / "motion_maps.mp4", maps(), info.fps)
    (out / "frames_without_face.txt").write_text("".join(f"{i}\n" for i in missing))
    print(f"wrote motion_maps.mp4 ({n} frames, {len(missing)} without a face) to {out}", file=sys.stderr)


def _save_template(args: argparse.Namespace, src: Path) -> None:
    """`parse VIDEO --template OUT.npz`: the video's motion, fps and sound, without pixels."""
    from .face.template import extract_audio

    info = probe_video(src)
    frames = _frames(str(src), None, info.frames or None, "tracking")
    template = MotionTemplate.from_video(frames, FaceAnalyzer("mesh", segment=False), fps=info.fps)
    if info.has_audio and not args.no_audio:
        template.audio, template.audio_format = extract_audio(src)
    path = template.save(args.template)
    print(f"wrote motion template {path} ({len(template)} frames at {template.fps:g} fps, "
          f"{int(template.found.sum())} with a face, {'with' if template.has_audio else 'no'} sound, "
          f"{path.stat().st_size / 1024:.0f} KB)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .native_log import filter_native_stderr

    filter_native_stderr()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.command == "evaluate":
            from .evaluation.command import run as evaluate

            evaluate(args)
        else:
            (animate if args.command == "animate" else parse)(args)
    except (InputError, NoFaceError, UsageError, TemplateError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"vivid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vivid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unexpected still gets one line, with a hint for bug reports
        from .models.weights import WeightsError

        if isinstance(exc, WeightsError):
            print(f"vivid: error: {exc}", file=sys.stderr)
            return 2
        print(f"vivid: error: {type(exc).__name__}: {exc} (set VIVID_DEBUG=1 for the traceback)", file=sys.stderr)
        if os.environ.get("VIVID_DEBUG"):
            raise
        return 1
    return 0
