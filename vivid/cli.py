"""Command line: `python -m vivid animate ...`, `edit ...`, `parse ...` and `evaluate ...`.

Only translates arguments into calls to `vivid`: `animate` is the animation job
(`vivid.animation`, the one the app runs) with the engine `vivid.engines.make_engine`
builds, shown as a progress bar per stage; `edit` is a still portrait with motion edits
(`vivid.still_edit`, the app's Edit tab); `parse` reads a driving video or template with
`vivid.driving`. Options and paths are checked before any heavy work; a refusal is one
`vivid: error: ...` line on stderr, and outputs appear only when complete (a failed or
interrupted run leaves an existing file untouched).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

import numpy as np

from .animation import AnimationJob, AnimationRequest, Notice, Progress, Stopped
from .driving import Driving, MotionMapVideo
from .engines import make_engine
from .disk_space import as_disk_full, disk_full
from .errors import GpuMemoryError, flag_message
from .face import FaceAnalyzer, MotionTemplate, colorize, render_motion_map
from .face.analyzer import PARSERS
from .face.edit_reading import read_edits
from .face.motion_edits import MotionEdits, edit_list
from .face.template import is_template_file
from .interrupts import stop_on_signals, stop_signal
from .media import IMAGE_SUFFIXES, fit_within, load_image, probe_video, read_video
from .option_flags import add_option_flags, flag_name, given_options
from .options import ANIMATE, DIFFUSION, AnimateOptions, choose_engine, option_names
from .paths import atomic_output, check_output, check_output_folder, existing_file, same_file

log = logging.getLogger("vivid.cli")

#: Files `edit` writes: a picture.
EDIT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


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
    a.add_argument("reference", help="portrait image, or a portrait video (the source: each of its frames is moved by "
                                     "the driver's motion; preview engine; as long as the shorter video)")
    a.add_argument("driving", help="driving video, a motion template (.npz from `parse VIDEO --template`), or a "
                                   "driving photo (a short clip to its expression, see --photo-seconds)")
    a.add_argument("-o", "--output", required=True, help="output .mp4")
    a.add_argument("--side-by-side", metavar="OUT.mp4", help="also write driving | portrait | result to this video")
    a.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop the animation if it takes longer than this (default: no limit)")
    a.add_argument("--edit", dest="edit_pairs", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="change the motion on every frame, e.g. --edit gaze_x=0 gaze_motion=0 yaw=10 (over a clip "
                        "the levels are where the portrait's face rests and the driver's motion is added; "
                        "`python -m vivid edit --list` lists the edits and their ranges)")
    add_option_flags(a, AnimateOptions, option_names(ANIMATE))
    add_option_flags(a.add_argument_group(DIFFUSION), AnimateOptions, option_names(DIFFUSION))
    e = sub.add_parser("edit", help="change a portrait's expression, gaze and head pose (a still picture)",
                       description="Change a portrait's expression, gaze and head pose with the preview engine's warp. "
                                   "Edits: " + "; ".join(f"{n} ({MotionEdits.spec(n)['low']:g} to "
                                                         f"{MotionEdits.spec(n)['high']:g}): {MotionEdits.spec(n)['help']}"
                                                         for n in MotionEdits.names()))
    e.add_argument("portrait", nargs="?", help="portrait image")
    e.add_argument("-o", "--output", help="output picture (.png, .jpg or .webp)")
    e.add_argument("--set", dest="edit_pairs", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="the edits, e.g. --set smile=0.6 gaze_x=-0.3 (levels such as mouth_open are the values "
                        "wanted, offsets such as yaw are changes)")
    e.add_argument("--like", metavar="PHOTO", help="give the portrait the expression and head pose of the face in "
                                                   "this photo (read as edits; --set adds to them)")
    e.add_argument("--list", action="store_true", help="print one edit a line: name, lowest value, highest value, "
                                                       "default ('keep': the face's own), then what it does")
    e.add_argument("--face", type=int, metavar="N", help="which face when the portrait shows several, counted from "
                                                         "the left (default: the largest, most central one)")
    e.add_argument("--map", metavar="OUT.png", help="also write the edited face's motion map (what guides the "
                                                    "diffusion model)")
    e.add_argument("--crop-only", action="store_true", help="write the edited face crop, not the whole portrait")
    e.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="a larger portrait is edited scaled down to this longest side (default: 2048; 0: no cap)")
    p = sub.add_parser("parse", help="write parsing maps, motion maps and the fg/bg mask of an image or video")
    p.add_argument("input", help="image, video or motion template (.npz)")
    p.add_argument("-o", "--output", help="output folder (needed unless --template is given)")
    p.add_argument("--parser", "--backend", dest="parser", choices=PARSERS, default="auto",
                   help="face parser: mesh (MediaPipe, offline), farl (the paper's FaRL), auto (default): farl when "
                        "its weights are on disk and a GPU runs it")
    p.add_argument("--template", metavar="OUT.npz",
                   help="video only: save its motion template (smoothed face-mesh track, fps and sound; no pixels)")
    p.add_argument("--no-audio", action="store_true", help="with --template: leave the video's sound out")
    from .evaluation.command import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)
    for command in sub.choices.values():  # `-v` also after the subcommand; SUPPRESS keeps an earlier -v
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="also show notes and the libraries' own messages")
    return parser


def _check_engine_options(args: argparse.Namespace, options: AnimateOptions) -> None:
    """Flags that the chosen engine would silently ignore are refused (the options check
    itself runs in the job, as in every front end)."""
    if choose_engine(options.engine, options.weights) != "diffusion":
        by_name = {f.name: f for f in fields(AnimateOptions)}
        given = [flag_name(by_name[name]) for name in option_names(DIFFUSION) if getattr(args, name) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to the diffusion engine")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UsageError(f"--time-limit must be a number of seconds above 0, got {args.time_limit:g}")


def _frames(path: str, max_frames: int | None, total: int, desc: str) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    yield from tqdm(read_video(path, max_frames=max_frames), total=total, desc=desc, unit="frame")


def animate(args: argparse.Namespace) -> None:
    """Check everything, load the engine, run the job with a progress bar per stage."""
    edits = MotionEdits.parse(args.edit_pairs)  # a misspelt or out-of-range edit is refused before anything
    options = AnimateOptions(**given_options(args, AnimateOptions), edits=edits)  # flags left out keep the defaults
    _check_engine_options(args, options)
    request = AnimationRequest(Path(args.reference), Path(args.driving), Path(args.output), options,
                               side_by_side=args.side_by_side and Path(args.side_by_side), time_limit=args.time_limit)
    view = _TerminalView()
    job = AnimationJob(request, on_event=view)
    job.prepare()
    engine = make_engine(job.options, whole_process=True)  # models load only after every check
    if engine.description:
        print(engine.description, file=sys.stderr)
    try:
        done = job.run(engine)
    finally:
        view.close()
    sound = " with the template's sound" if done.template and done.sound else ""
    print(f"wrote {done.frames} frames to {done.output}{sound}", file=sys.stderr)
    if done.side_by_side:
        print(f"wrote the side-by-side video {done.side_by_side}", file=sys.stderr)


class _TerminalView:
    """The job's events on the terminal: a notice is a `vivid: warning:` line (plus the flag
    that changes it), and each stage gets a progress bar that appears with its first unit of
    work, so a refusal before it stays the only line."""

    #: Said after a notice, by its code: what to pass to change it.
    HINTS = {"scaled_down": " (--max-side 0 keeps the full size)"}
    #: Notices shown as notes only (--verbose): decoding warns about a damaged clip itself,
    #: with the exact count of the frames it could use; a photo's reading is news, not a warning.
    NOTES = ("cut_short", "photo")

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: Notice | Progress) -> None:
        if isinstance(event, Notice):
            (log.info if event.code in self.NOTES else log.warning)("%s%s", event.text, self.HINTS.get(event.code, ""))
            return
        if not event.done:
            return
        if self.bar is None or self.bar.desc != event.stage:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=event.total, desc=event.stage, unit=event.unit)
        self.bar.update(event.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def edit(args: argparse.Namespace) -> None:
    """`edit --list`, or one portrait with edits (and the photo's expression with --like)."""
    from .media import BROWSER_MAX_SIDE
    from .preview import PreviewConfig
    from .still_edit import StillEditor

    if args.list:
        if args.portrait or args.output or args.edit_pairs:
            raise UsageError("--list prints the edits; give it alone")
        print(edit_list())
        return
    if not args.portrait or not args.output:
        raise UsageError("give a portrait and -o OUT.png (or --list)")
    edits = MotionEdits.parse(args.edit_pairs)
    out = Path(args.output)
    if out.suffix.lower() not in EDIT_SUFFIXES:
        raise UsageError(f"the output must be a {', '.join(EDIT_SUFFIXES)} file, got {out.name}")
    inputs = [args.portrait, args.like]
    check_output(out, inputs, suffix=None)
    if args.map is not None:
        check_output(args.map, inputs, suffix=".png")
        if same_file(args.map, out):
            raise UsageError("--map needs a file name of its own, not the output's")
    if args.face is not None and args.face < 1:
        raise UsageError(f"--face counts faces from 1 (the leftmost), got {args.face}")
    portrait = existing_file(args.portrait, "an image file")
    cap = BROWSER_MAX_SIDE if args.max_side is None else (args.max_side or None)
    rgb, note = fit_within(load_image(portrait).rgb, cap)
    if note:
        log.warning("%s (--max-side 0 keeps the full size)", note)
    editor = StillEditor(rgb, PreviewConfig(crop_only=args.crop_only), face=args.face)
    if args.like is not None:
        photo = load_image(existing_file(args.like, "an image file")).rgb
        seen = editor.animator.analyzer.analyze(photo, Path(args.like).name)
        own = editor.animator.analyzer.analyze(rgb, portrait.name, args.face)
        liked = read_edits(own.landmarks, seen.landmarks)
        print(f"{Path(args.like).name} read as: {liked.describe()}", file=sys.stderr)
        edits = MotionEdits.from_values({**liked.changed(), **edits.changed()})
    _save_png(editor.render(edits), out)
    if args.map is not None:
        _save_png(editor.motion_map(edits), Path(args.map))
    print(f"wrote {out}" + (f" and {args.map}" if args.map else "") + f" (edits: {edits.describe()})", file=sys.stderr)


#: Files `parse` writes into its output folder.
PARSE_OUTPUTS = ("parsing.png", "labels.png", "motion_map.png", "foreground.png", "motion_maps.mp4",
                 "frames_without_face.txt")


def parse(args: argparse.Namespace) -> None:
    src = existing_file(args.input, "an image, video or motion template file")
    image = src.suffix.lower() in IMAGE_SUFFIXES
    if args.template is not None:
        if image or is_template_file(src):
            raise UsageError(f"--template needs a driving video, not {'an image' if image else 'a motion template'}")
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
    # A damaged or cut-short video, or a file that is not a template, is refused before any work.
    driving = None if image else Driving.open(src)
    if args.template is not None:
        _save_template(args, src)
    if args.output is None:
        return
    analyzer = FaceAnalyzer(args.parser)
    if image:
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
    from tqdm import tqdm

    tracked = tqdm(driving.analyses(analyzer), total=driving.total, desc="parsing", unit="frame")
    record, maps = MotionMapVideo.of(tracked, driving.size)
    with _output_folder(out):
        n = driving.write(out / "motion_maps.mp4", maps)  # with the driving sound
        with atomic_output(out / "frames_without_face.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in record.without_face))
    print(f"wrote motion_maps.mp4 ({n} frames, {len(record.without_face)} without a face) to {out}", file=sys.stderr)


def _save_png(array: np.ndarray, path: Path) -> None:
    """A picture, complete or not at all, in the format its name says (PNG unless .jpg/.webp)."""
    from PIL import Image

    kind = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format=kind, **({"quality": 95} if kind != "PNG" else {}))


@contextmanager
def _output_folder(folder: Path) -> Iterator[Path]:
    """Create the output folder for the block; if the block fails, remove it again when it was
    created here and is still empty (a failed run leaves nothing behind)."""
    created = not folder.exists()
    with disk_full(folder, f"the folder {folder}"):
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
        from .terminal import logging_above_progress_bars

        with logging_above_progress_bars():  # warnings between progress-bar redraws, not on their end
            if args.command == "evaluate":
                from .evaluation.command import run as evaluate

                evaluate(args)
            else:
                {"animate": animate, "edit": edit, "parse": parse}[args.command](args)
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
        return flag_message(exc), True  # an option's field name shown as its flag
    full = as_disk_full(exc)
    if full is not None:  # also a write no `disk_full` block named: the space, not "[Errno 28]"
        return str(full), True
    if isinstance(exc, OSError):  # a file that cannot be read or written, or a message of ours
        from urllib.error import URLError

        if isinstance(exc, URLError):
            return f"a download failed ({exc.reason}); check the network, or put the files on disk", True
        if not exc.strerror:
            return str(exc), True
        where = f"{Path(exc.filename).name}: " if exc.filename else ""
        return f"{where}{exc.strerror[0].lower()}{exc.strerror[1:]}", True
    if isinstance(exc, Stopped):  # the time limit, in the words every front end uses
        return str(exc), True
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
