"""Command line: `python -m vivid animate ...` and `python -m vivid parse ...`.

Only translates arguments into calls to `vivid`. Options and paths are checked before any
heavy work; a refusal is one `vivid: error: ...` line on stderr, and outputs appear only
when complete (a failed or interrupted run leaves an existing file untouched).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

import numpy as np

from .face import FaceAnalyzer, MotionTemplate, colorize, render_motion_map
from .face.template import is_template_file
from .media import (
    BROWSER_MAX_SIDE, atomic_output, check_video, existing_file, fit_within, load_image, probe_video, read_video,
    same_file, write_video, Encoding, ALONGSIDE_OTHER_WORK,
)
from .interrupts import stop_on_signals, stop_signal
from .options import AnimateOptions, GpuMemoryError, check_output, check_output_folder

log = logging.getLogger("vivid.cli")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
DIFFUSION_ONLY = ("weights", "window", "overlap", "no_cyclic", "wrap", "steps", "guidance", "seed", "parser", "dtype", "disk_offload")


class UsageError(ValueError):
    """Arguments that contradict each other."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `vivid: error:` line like every other refusal."""

    def error(self, message: str) -> NoReturn:
        print(f"vivid: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m vivid", description="Animate a portrait with a driving video.")
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="also show notes and the libraries' own messages (hidden in a normal run)")
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
    a.add_argument("--max-side", type=int, default=BROWSER_MAX_SIDE, metavar="PX",
                   help=f"a larger portrait is scaled down to this longest side, so the video plays in every browser "
                        f"(default {BROWSER_MAX_SIDE}; 0 keeps the full size, which browsers may not play)")
    d = a.add_argument_group("diffusion engine")
    d.add_argument("--weights", help="folder saved by VividPipeline.save_pretrained, a Hugging Face hub id "
                   "(owner/name, fetched once into the hub cache), or 'tiny' (random, for testing)")
    d.add_argument("--window", type=int, default=None, help="frames per context window (default 24)")
    d.add_argument("--overlap", type=int, default=None, help="frames shared by neighbouring windows (default 4)")
    d.add_argument("--no-cyclic", action="store_true", default=None, help="fixed windows instead of cyclic overlap")
    d.add_argument("--wrap", action="store_true", default=None,
                   help="cyclic windows run past the last frame into the first (for looping clips)")
    d.add_argument("--parser", choices=["auto", "mesh", "farl"], default=None,
                   help="face parser for the motion maps: mesh (MediaPipe, offline), farl (the paper's FaRL), "
                        "auto (default: the model's setting, farl when its weights are on disk)")
    d.add_argument("--steps", type=int, default=None, help="denoising steps (default 25)")
    d.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 3.5; 1 or less: no guidance, "
                   "half the UNet work, as in diffusers)")
    d.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    d.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="number format the networks run in (default auto: bf16 on CPUs and GPUs that compute it "
                        "natively, fp16 on other GPUs, fp32 on other CPUs)")
    d.add_argument("--disk-offload", action=argparse.BooleanOptionalAction, default=None,
                   help="read CLIP and the ReferenceNet, which run once per video, from the weights files layer by "
                        "layer instead of holding them in memory (default: on when running on a CPU; at bf16 it "
                        "saves about 2.3 GB for the SD1.5-sized model, for a re-read of those weights per video)")
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
    for command in sub.choices.values():  # `-v` also after the subcommand; SUPPRESS keeps an earlier -v
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="also show notes and the libraries' own messages")
    return parser


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
    if args.max_side is not None and args.max_side < 0:
        raise UsageError(f"--max-side must be a side in px (0: no cap), got {args.max_side}")


def _options(args: argparse.Namespace) -> AnimateOptions:
    """The animate flags as checked options (flags left out keep the documented defaults)."""
    given = {
        "engine": args.engine, "size": args.size, "max_frames": args.max_frames, "crop_only": args.crop_only,
        "relative": not args.absolute, "weights": args.weights, "window": args.window, "overlap": args.overlap,
        "steps": args.steps, "guidance": args.guidance, "seed": args.seed, "parser": args.parser,
        "dtype": getattr(args, "dtype", None),  # --dtype (issue 12) plugs in here
        "cyclic": None if args.no_cyclic is None else not args.no_cyclic, "wrap": args.wrap,
    }
    options = AnimateOptions(**{k: v for k, v in given.items() if v is not None},
                             max_side=args.max_side or None)
    return options.check()


def _frames(path: str, max_frames: int | None, total: int, desc: str) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    yield from tqdm(read_video(path, max_frames=max_frames), total=total, desc=desc, unit="frame")


def animate(args: argparse.Namespace) -> None:
    _check_engine_options(args)
    options = _options(args)
    out = check_output(args.output, [args.reference, args.driving])
    existing_file(args.reference, "an image file")
    template = MotionTemplate.load(args.driving) if is_template_file(args.driving) else None
    info = check_video(args.driving, options.max_frames) if template is None else None
    reference, note = fit_within(load_image(args.reference).rgb, options.max_side)
    if note:
        log.warning("%s (--max-side 0 keeps the full size)", note)
    if template is not None:
        _animate_template(args, reference, out, template)
        return
    total = min(info.frames or 0, args.max_frames or info.frames or 0) or None
    if info.present == 1 and args.max_frames != 1:
        log.warning("%s has a single frame: the result is a still picture; use a video clip to animate",
                    Path(args.driving).name)
    if args.engine == "preview":
        frames = _counted(_preview_frames(args, reference, read_video(args.driving, max_frames=args.max_frames), info.fps),
                          total, "animating")
    else:
        frames = _diffusion_frames(args, reference, info.fps, total)
    # The preview's own threads keep the cores busy: the encoder takes the cheaper settings.
    encoding = ALONGSIDE_OTHER_WORK if args.engine == "preview" else Encoding()
    n = write_video(out, frames, info.fps, audio_from=args.driving, encoding=encoding)
    print(f"wrote {n} frames to {out}", file=sys.stderr)


def _animate_template(args: argparse.Namespace, reference: np.ndarray, out: Path, template: MotionTemplate) -> None:
    """`animate REF TEMPLATE.npz`: the template's motion, fps and (when stored) sound."""
    import dataclasses

    if args.max_frames:
        template = dataclasses.replace(template, points=template.points[: args.max_frames],
                                       interpolated=template.interpolated[: args.max_frames])
    if args.engine == "preview":
        frames = _counted(_preview_frames(args, reference, template, template.fps), len(template), "animating")
    else:
        frames = _diffusion_frames(args, reference, template.fps, len(template), driving=template)
    n = template.write_video(out, frames)
    print(f"wrote {n} frames to {out}" + (" with the template's sound" if template.has_audio else ""), file=sys.stderr)


def _preview_frames(args: argparse.Namespace, reference: np.ndarray, driving: "Iterator[np.ndarray] | MotionTemplate",
                    fps: float) -> Iterator[np.ndarray]:
    """The preview engine's frames, its decoding, tracking and warping overlapping in threads."""
    import cv2

    from .preview import PreviewAnimator, PreviewConfig
    from .preview_stream import stream_in_threads

    # The stages already keep both cores busy: OpenCV's own thread pool would only add hand-overs
    # (1.1 ms less CPU per frame, +3.5% frames/s on d3). The warp thread hands the GIL over at
    # each of its ~1100 triangle fills a frame: a shorter switch interval gets it back sooner
    # (+3% frames/s). Both settings are the whole process's: this process runs one job.
    cv2.setNumThreads(1)
    sys.setswitchinterval(0.001)
    config = PreviewConfig(size=args.size, crop_only=args.crop_only, relative=not args.absolute)
    return stream_in_threads(PreviewAnimator(config), reference, driving, fps)


def _counted(frames: Iterator[np.ndarray], total: int | None, desc: str) -> Iterator[np.ndarray]:
    """`frames` with a progress bar that appears with the first frame (a refusal before it,
    e.g. no face in the portrait, stays the only line)."""
    from tqdm import tqdm

    first = next(frames, None)
    if first is None:
        return
    with tqdm(total=total, desc=desc, unit="frame") as bar:
        bar.update(1)
        yield first
        for frame in frames:
            bar.update(1)
            yield frame


def _diffusion_frames(args: argparse.Namespace, reference: np.ndarray, fps: float, total: int | None,
                      driving: "MotionTemplate | None" = None) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    from .pipeline import VividPipeline
    from .terminal import quiet_loaded_libraries

    quiet_loaded_libraries()  # diffusers and transformers are loaded now
    # A weights folder was checked with the other options (vivid.options); a hub id is checked once fetched.
    dtype = args.dtype or "auto"
    if args.weights == "tiny":
        pipe = VividPipeline.tiny(resolution=args.size or 64, dtype=dtype)
    else:
        pipe = VividPipeline.from_pretrained(args.weights, dtype=dtype, disk_offload=args.disk_offload)
    streamed = f"; {' and '.join(pipe.streamed_networks)} read from disk when used" if pipe.streamed_networks else ""
    print(f"diffusion engine in {pipe.precision}{streamed}", file=sys.stderr)
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


#: Files `parse` writes into its output folder.
PARSE_OUTPUTS = ("parsing.png", "labels.png", "motion_map.png", "foreground.png", "motion_maps.mp4",
                 "frames_without_face.txt")


def parse(args: argparse.Namespace) -> None:
    src = existing_file(args.input, "an image or video file")
    if args.template is not None:
        if src.suffix.lower() in IMAGE_SUFFIXES:
            raise UsageError("--template needs a driving video, not an image")
        if not is_template_file(args.template):
            raise UsageError(f"--template must name an .npz file, got {args.template}")
        check_output(args.template, [src], suffix=".npz")
    elif args.output is None:
        raise UsageError("give -o FOLDER for the maps, or --template OUT.npz for a motion template")
    if args.output is not None:
        out = check_output_folder(args.output, [src])
        for name in PARSE_OUTPUTS:
            if same_file(src, out / name):
                raise UsageError(f"the input {src.name} is in {out} under a name parse writes; "
                                 "choose another output folder")
    if src.suffix.lower() not in IMAGE_SUFFIXES:
        check_video(src)  # a damaged or cut-short video is refused before any work
    if args.template is not None:
        _save_template(args, src)
    if args.output is None:
        return
    analyzer = FaceAnalyzer(args.backend)
    if src.suffix.lower() in IMAGE_SUFFIXES:
        rgb = load_image(src).rgb
        a = analyzer.analyze(rgb, src.name)
        with _output_folder(out):
            _save_png(colorize(a.labels), out / "parsing.png")
            _save_png(a.labels, out / "labels.png")  # raw indices into vivid.face.LABELS
            _save_png(render_motion_map(a), out / "motion_map.png")
            _save_png((a.foreground * 255).astype(np.uint8), out / "foreground.png")
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

    with _output_folder(out):
        n = write_video(out / "motion_maps.mp4", maps(), info.fps)
        with atomic_output(out / "frames_without_face.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in missing))
    print(f"wrote motion_maps.mp4 ({n} frames, {len(missing)} without a face) to {out}", file=sys.stderr)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@contextmanager
def _output_folder(folder: Path) -> Iterator[Path]:
    """Create the output folder for the block; if the block fails, remove it again when it was
    created here and is still empty (a failed run leaves nothing behind)."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


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
    from .terminal import configure

    configure(verbose=args.verbose)
    stop_on_signals()  # `kill` stops like Ctrl-C: partial outputs are removed
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # warnings between progress-bar redraws, not on their end
            if args.command == "evaluate":
                from .evaluation.command import run as evaluate

                evaluate(args)
            else:
                (animate if args.command == "animate" else parse)(args)
    except KeyboardInterrupt:
        _end_progress_bars()
        print("vivid: interrupted; no output was written (an earlier file there is untouched)", file=sys.stderr)
        return 143 if stop_signal() == signal.SIGTERM else 130
    except Exception as exc:
        _end_progress_bars()
        message, anticipated = describe_error(exc)
        if anticipated:
            print(f"vivid: error: {message}", file=sys.stderr)
            return 2
        # Unanticipated: still one line, with a hint for the bug report.
        print(f"vivid: error: {message} (this is a bug; set VIVID_DEBUG=1 for the traceback)", file=sys.stderr)
        if os.environ.get("VIVID_DEBUG"):
            raise
        return 1
    return 0


def describe_error(exc: BaseException) -> tuple[str, bool]:
    """The one line a user reads for `exc`, and whether it is an anticipated refusal (our own
    ValueError subclasses, files that cannot be read or written, memory) or a bug."""
    if isinstance(exc, ValueError) and type(exc).__module__.split(".")[0] in ("vivid", "train"):
        message, option = str(exc), getattr(exc, "option", None)
        if option and message.startswith(option):  # an option's field name, shown as its flag
            message = "--" + option.replace("_", "-") + message[len(option):]
        return message, True
    if isinstance(exc, OSError):  # a file that cannot be read or written, or a message of ours
        from urllib.error import URLError

        if isinstance(exc, URLError):
            return f"a download failed ({exc.reason}); check the network, or put the files on disk", True
        if not exc.strerror:
            return str(exc), True
        where = f"{Path(exc.filename).name}: " if exc.filename else ""
        return f"{where}{exc.strerror[0].lower()}{exc.strerror[1:]}", True
    if isinstance(exc, GpuMemoryError):  # says which settings to lower
        return str(exc), True
    if isinstance(exc, MemoryError):
        return ("out of memory; use a shorter clip (--max-frames), a smaller --size or --max-side, "
                "or close other programs"), True
    return f"{type(exc).__name__}: {exc}", False


def _end_progress_bars() -> None:
    """Close any progress bar still drawn, so the error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()
