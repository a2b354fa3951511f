"""VividPortraits in the browser. Widgets and callbacks only; the work happens in `vivid`:
Animate runs `vivid.animation.AnimationJob` (as the command line does) on the engine
`vivid.engines.make_engine` builds, with the app's one diffusion model held by
`vivid.model_host.ModelHost` and each page's job followed by `vivid.page_jobs.PageJobs`, and
shows its events as the live view, the progress bar and the status line; Parsing reads
portraits with `vivid.face` and driving videos or templates with `vivid.driving`."""
from __future__ import annotations

import argparse
import base64
import html
import logging
import os
import re
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Iterator

import cv2
import gradio as gr
import numpy as np
from gradio.data_classes import ImageData

# torch's idle OpenMP threads sleep instead of spinning (set before anything loads torch):
# visitors' jobs share the cores, and spinning threads wait for cores others hold (bench/RESULTS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vivid.animation import AnimationJob, AnimationRequest, Cancelled, Notice, TimeLimitExceeded  # noqa: E402
from vivid.driving import Driving, MotionMapVideo, template_motion_video  # noqa: E402
from vivid.engines import make_engine  # noqa: E402
from vivid.errors import DiskFullError, GpuMemoryError, InputError, OptionError, WeightsError  # noqa: E402
from vivid.face import NoFaceError, render_motion_map  # noqa: E402
from vivid.face.motion_edits import LEVEL, SHARE, MotionEdits  # noqa: E402
from vivid.face.labels import LABELS, PARSING_PALETTE  # noqa: E402
from vivid.face.pictures import eye_closeup, mask_picture, overlay  # noqa: E402
from vivid.face.shared_analyzers import mesh_analyzer  # noqa: E402
from vivid.face.shared_analyzers import warm_up as warm_up_analyzers  # noqa: E402
from vivid.face.template import TemplateError  # noqa: E402
from vivid.disk_space import as_disk_full  # noqa: E402
from vivid.job_folders import new_job_folder, sweep_dead_jobs  # noqa: E402
from vivid.media import check_image, fit_within, is_image_file, load_image, probe_video  # noqa: E402
from vivid.models.disk_streaming import sweep_dead_offload_folders  # noqa: E402
from vivid.models.shipped import SHIPPED_MODEL_SUMMARY  # noqa: E402
from vivid.memory import freeze_startup_objects, limit_heap_arenas, release_memory  # noqa: E402
from vivid.model_host import ModelHost  # noqa: E402
from vivid.models.shipped import model_available  # noqa: E402
from vivid.option_flags import add_option_flags, given_options  # noqa: E402
from vivid.options import SOUNDS, AnimateOptions  # noqa: E402
from vivid.page_jobs import PageJobs  # noqa: E402
from vivid.paths import atomic_output  # noqa: E402
from vivid.sampling import DEFAULT_MAX_WINDOW  # noqa: E402
from vivid.server_limits import LIMIT_VARIABLES, AppLimits  # noqa: E402
from vivid.windows import check_windows  # noqa: E402

log = logging.getLogger("vivid.app")

ASSETS = Path(__file__).with_name("assets")
#: Longest driving video the Parsing tab analyses (frames), to keep the page responsive.
PARSE_VIDEO_MAX_FRAMES = 900
#: How often the Animate tab refreshes its live view and progress while working (seconds).
UPDATE_INTERVAL = 0.25
#: Live-view frames are sent at most this large (px), so streaming them stays cheap.
LIVE_VIEW_SIDE = 512
#: JPEG quality of the live-view frames (quick looks; the result video is the product).
LIVE_VIEW_QUALITY = 80
#: Results and uploads older than this are deleted (seconds); checked every tenth of it.
MAX_AGE = int(os.environ.get("VIVID_MAX_AGE", 3600))
#: Jobs waiting in the queue at most; more visitors are told the queue is full.
QUEUE_SIZE = int(os.environ.get("VIVID_QUEUE_SIZE", 20))
#: A job whose page stopped asking for updates this long ago is stopped (seconds).
STALL_TIMEOUT = 10.0
#: Cancel answers once the job has sent its last progress update, waiting at most this long
#: (seconds): an update still on its way would otherwise land after "cancelled" and stay.
CANCEL_SETTLE = 2.0
#: Where the app writes results (one folder per job).
OUTPUT_DIR = Path(tempfile.gettempdir()) / "vivid_app"


try:
    LIMITS = AppLimits.from_env()
except OptionError as exc:
    raise SystemExit(f"app.py: error: {exc}") from None
PREVIEW_ENGINE, DIFFUSION_ENGINE = "Preview (fast, no model weights)", "Diffusion model"
ENGINES = {PREVIEW_ENGINE: "preview", DIFFUSION_ENGINE: "diffusion"}
#: Example pairs: (portrait, motion template), both in assets/.
EXAMPLES = [
    ("astronaut.jpg", "talking.npz"),
    ("grace_hopper.jpg", "expressions.npz"),
    ("astronaut.jpg", "head-motion.npz"),
    ("grace_hopper.jpg", "speech.npz"),
]
#: What each parsing label means, for visitors (the mesh backend's limits said plainly).
LABEL_NOTES = {
    "background": "not the person",
    "skin": "inside the face outline, forehead included (mesh backend: a fringe over the forehead counts as skin)",
    "left_brow": "eyebrow, image-left",
    "right_brow": "eyebrow, image-right",
    "left_eye": "eye, image-left",
    "right_eye": "eye, image-right",
    "nose": "nose",
    "upper_lip": "upper lip",
    "inner_mouth": "inside of the mouth",
    "lower_lip": "lower lip",
    "hair": "hair (mesh backend: the person above the mouth line outside the face outline, so hats and ears too)",
    "body": "neck, shoulders and clothes (mesh backend: the person below the mouth line outside the face, "
            "so hair hanging that low too)",
}

#: The diffusion model every visitor's job runs (`main` sets it from --weights, --dtype and
#: --[no-]disk-offload; here: the shipped model): loaded by the first diffusion job, its motion
#: maps drawn with its own parser.
HOST = ModelHost()
#: Each page's running animation.
PAGES = PageJobs()
#: The options that choose the app's model (the rest are the Animate tab's controls).
MODEL_OPTIONS = ("weights", "dtype", "disk_offload")

#: What a visitor is told as it is: refusals of inputs, options and models.
REFUSALS = (InputError, NoFaceError, TemplateError, OptionError, WeightsError, GpuMemoryError, DiskFullError)


def warm_up(portrait: Path = ASSETS / "grace_hopper.jpg") -> None:
    """The face analysers built and run once before the server listens (`launch`), and the
    preview's C passes built (once per machine), so the first visitor's click does not pay for it."""
    from vivid import native_warp

    warm_up_analyzers(portrait, HOST.parser)
    native_warp.library()


def visitor_text(message: str) -> str:
    """A message with server paths cut down to file names (visitors need not see our disk)."""
    return re.sub(r"(?<![\w.])(?:/[^\s/'\":,()]+)+/([^\s/'\":,()]+)", r"\1", str(message))


def _error(exc: BaseException) -> gr.Error:
    if isinstance(exc, DiskFullError):  # the operator's problem: the full line in the log, the figures for the visitor
        log.warning("%s", exc)
        return gr.Error(f"The server's disk is full: the result {exc.figures}. Try again later.")
    return gr.Error(visitor_text(str(exc)))


# -- Parsing tab ----------------------------------------------------------------------------
def legend_html() -> str:
    """The parsing colours with what each label means."""
    rows = []
    for name, colour in zip(LABELS, PARSING_PALETTE):
        swatch = "#%02x%02x%02x" % tuple(int(c) for c in colour)
        rows.append(
            f'<li data-label="{name}"><span class="vivid-swatch" style="background:{swatch}"></span>'
            f"<b>{name.replace('_', ' ')}</b> — {html.escape(LABEL_NOTES.get(name, ''))}</li>"
        )
    return ('<div class="vivid-legend"><p>Parsing-map colours (the motion map keeps only brows, eyes, nose, lips '
            "and mouth, plus white eyelid lines and yellow irises):</p><ul>" + "".join(rows) + "</ul></div>")


def _analyse_upload(path: str | None):
    if not path:
        raise gr.Error("Upload a portrait first.")
    try:
        rgb = load_image(path, LIMITS.media).rgb
        return rgb, HOST.analyzer().analyze(rgb, "the portrait")
    except (InputError, NoFaceError) as exc:
        raise _error(exc) from None


def _parser_text() -> str:
    """Which face parser the Parsing tab (and the app's diffusion model) uses, for visitors."""
    if HOST.analyzer().backend == "farl":
        return "farl (FaRL face parsing and WFLW eye landmarks, as in the paper)"
    return ("mesh (MediaPipe face mesh and selfie segmentation). The mesh knows the face's parts exactly but not "
            "where hair ends: hair and body are split from the person mask by position (see the legend).")


def parse_image(path: str | None):
    rgb, a = _analyse_upload(path)
    info = f"Parser: {_parser_text()}"
    if a.notes:
        info += "\n" + "\n".join(f"- {visitor_text(n)}" for n in a.notes)
    motion = render_motion_map(a)
    return overlay(rgb, a.labels), motion, mask_picture(rgb, a.foreground), eye_closeup(rgb, a, motion), info


def scaled_motion_maps(path: str | None, seed: int, count: int = 4) -> list[np.ndarray]:
    """The training augmentation made visible: the motion map under `count` random scalings
    (each part by 0.8-1.2, the spacing by 0.7-1.3), seeds `seed`, `seed + 1`, ..."""
    from vivid.face import random_scale

    _, a = _analyse_upload(path)
    return [render_motion_map(random_scale(a, int(seed) + k)) for k in range(count)]


def parse_video(path: str | None, template: str | None = None, progress=gr.Progress()):
    """The motion maps of every frame of a driving video or motion template, with its sound,
    and the frames without a face."""
    if not (path or template):
        raise gr.Error("Upload a driving video or a motion template first.")
    out = None
    try:
        driving = Driving.open(template or path, LIMITS.media, PARSE_VIDEO_MAX_FRAMES)
        tracked = progress.tqdm(driving.analyses(HOST.analyzer()), total=driving.total, desc="Tracking")
        record, maps = MotionMapVideo.of(tracked, driving.size)
        out = new_job_folder(OUTPUT_DIR, "parse", MAX_AGE) / "motion_maps.mp4"
        n = driving.write(out, maps)
    except REFUSALS as exc:
        if out is not None:
            shutil.rmtree(out.parent, ignore_errors=True)
        raise _error(exc) from None
    finally:
        release_memory()
    source = ("a motion template (its face-mesh track, no pixels)" if driving.template is not None
              else f"parser: {HOST.analyzer().backend}")
    lines = [f"{n} frames at {driving.fps:g} fps, {source}, {'with' if driving.has_audio else 'no'} sound"]
    if n >= PARSE_VIDEO_MAX_FRAMES:
        lines.append(f"only the first {PARSE_VIDEO_MAX_FRAMES} frames were analysed")
    lines.append(f"Frames without a face: {_ranges(record.without_face) or 'none'}")
    if record.filled:
        lines.append(f"  of these, filled in from neighbouring frames: {_ranges(record.filled)}")
    return str(out), "\n".join(lines)


# -- Animate tab ----------------------------------------------------------------------------
def template_video(path: str | Path) -> str:
    """The motion-map video a template shows in the driving-video slot (rendered once per file)."""
    return str(template_motion_video(path, OUTPUT_DIR.parent / "vivid_templates"))


def show_template(path: str | None):
    """A visitor uploaded a template: show its motion maps in the driving-video slot."""
    if not path:
        return gr.update()
    try:
        return template_video(path)
    except (TemplateError, InputError) as exc:
        raise _error(exc) from None


def check_settings(engine: str, window: float, overlap: float):
    """Inline check of the window settings (`vivid.windows.check_windows`, as every job checks
    them): message, and whether Animate may be pressed."""
    if ENGINES.get(engine) == "diffusion":
        try:
            check_windows(window, overlap)
        except OptionError as exc:
            message = str(exc)[0].upper() + str(exc)[1:]
            return gr.update(value=f"⚠️ {message}.", visible=True), gr.update(interactive=False)
    return gr.update(value="", visible=False), gr.update(interactive=True)


def engine_changed(engine: str, window: float, overlap: float):
    """Diffusion-only settings are shown only for the diffusion engine."""
    return (gr.update(visible=ENGINES.get(engine) == "diffusion"), *check_settings(engine, window, overlap))


def _fit(frame: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(frame.shape[:2])
    if scale >= 1:
        return frame
    return cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def _live(picture: np.ndarray | None) -> np.ndarray | None:
    """A live-view picture, sent at most LIVE_VIEW_SIDE px large."""
    return None if picture is None else _fit(picture, LIVE_VIEW_SIDE)


def _progress_html(fraction: float | None, eta: float | None, label: str) -> str:
    if fraction is None:
        return f'<div class="vivid-progress"><progress></progress> <span>{html.escape(label)}</span></div>'
    text = f"{100 * fraction:.0f}%" + (f" · about {eta:.0f} s left" if eta is not None else "") + f" · {label}"
    return (f'<div class="vivid-progress"><progress value="{fraction:.3f}" max="1"></progress> '
            f"<span>{html.escape(text)}</span></div>")


def cancel(request: gr.Request = None) -> str:
    """Cancel button and tab close: stop this page's running job (its last update goes out first)."""
    PAGES.cancel(_page(request), CANCEL_SETTLE)
    return "cancelled"


def _page(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def tab_closed(request: gr.Request = None) -> None:
    """The visitor closed or reloaded the page: stop its job."""
    cancel(request)


#: The Animate inputs in order (the callback's parameters), for the request check's answers.
ANIMATE_INPUTS = ("reference", "driving", "template", "engine", "crop_only", "absolute", "want_side", "steps",
                  "guidance", "seed", "window", "overlap", "cyclic", "source_video", "driving_photo", "sound", "face",
                  "use_edits", "edit_state")
#: The face picker's choice that leaves the choice to the program.
AUTO_FACE = "largest, most central"


def check_request(reference: str | None, driving: str | None, template: str | None, engine: str, crop_only: bool,
                  absolute: bool, want_side: bool, steps: float, guidance: float, seed: float, window: float,
                  overlap: float, cyclic: bool, source_video: str | None = None, driving_photo: str | None = None,
                  sound: str = "driving", face: str | None = None, use_edits: bool = False,
                  edit_state: dict | None = None) -> list:
    """Gradio's validator for Animate: runs when the request arrives, before it joins the
    queue, so a request beyond the limits (image pixels, video size and duration, template
    length) or with bad settings is refused at once, with the message next to its input, even
    while other visitors' jobs run. Reads headers only; `animate` checks the same again."""
    problems: dict[str, str] = {}

    def check(name: str, fn) -> None:
        try:
            fn()
        except (InputError, TemplateError, OptionError, WeightsError) as exc:
            problems[getattr(exc, "option", None) or name] = visitor_text(str(exc))

    if source_video:
        check("source_video", lambda: probe_video(source_video, LIMITS.media))
    elif reference:
        check("reference", lambda: check_image(reference, LIMITS.media))
    if driving_photo:
        check("driving_photo", lambda: check_image(driving_photo, LIMITS.media))
    elif template:
        check("template", lambda: Driving.open(template, LIMITS.media))
    elif driving:
        check("driving", lambda: probe_video(driving, LIMITS.media))
    check("engine", lambda: _options(engine, crop_only, absolute, steps, guidance, seed, window, overlap, cyclic, sound,
                                     face, use_edits, edit_state).check())
    return [gr.validate(name not in problems, problems.get(name, "")) for name in ANIMATE_INPUTS]


def _face_number(face: str | None) -> int | None:
    """The face picker's choice as a face number (None: the program's choice)."""
    if not face or face == AUTO_FACE:
        return None
    return int(str(face).split()[0])


def _options(engine: str, crop_only: bool, absolute: bool, steps: float, guidance: float, seed: float, window: float,
             overlap: float, cyclic: bool, sound: str = "driving", face: str | None = None, use_edits: bool = False,
             edit_state: dict | None = None) -> AnimateOptions:
    """The Animate controls as options, with the app's model and output limit (and the Edit
    tab's edits when asked for)."""
    edits = edit_state["edits"] if use_edits and edit_state else MotionEdits()
    return AnimateOptions(engine=ENGINES.get(engine, engine), crop_only=bool(crop_only), relative=not absolute,
                          steps=steps, guidance=guidance, seed=seed, window=window, overlap=overlap,
                          cyclic=bool(cyclic), max_side=LIMITS.output_side, weights=HOST.weights, dtype=HOST.dtype,
                          disk_offload=HOST.disk_offload, sound=sound or "driving", face=_face_number(face),
                          edits=edits)


def animate(reference: str | None, driving: str | None, template: str | None, engine: str, crop_only: bool,
            absolute: bool, want_side: bool, steps: int, guidance: float, seed: int, window: int, overlap: int,
            cyclic: bool, source_video: str | None = None, driving_photo: str | None = None, sound: str = "driving",
            face: str | None = None, use_edits: bool = False, edit_state: dict | None = None,
            request: gr.Request = None) -> Iterator[tuple]:
    """Generator callback: (live view, result, side-by-side, status, progress) while working,
    then the finished videos. Cancel, closing the tab or closing this generator stops it.
    The work is `vivid.animation.AnimationJob`, as on the command line. The portrait may be a
    video (`source_video`) and the driver a photo (`driving_photo`); those win over the
    photo and the driving clip when both are given."""
    portrait = source_video or reference
    driver = driving_photo or template or driving
    if not portrait or not driver:
        raise gr.Error("Upload a portrait and a driving video (or pick an example) first.")
    folder = new_job_folder(OUTPUT_DIR, "animate", MAX_AGE)
    options = _options(engine, crop_only, absolute, steps, guidance, seed, window, overlap, cyclic, sound, face,
                       use_edits, edit_state)
    request_ = AnimationRequest(Path(portrait), Path(driver), folder / "animation.mp4", options,
                                folder / "side_by_side.mp4" if want_side else None, LIMITS.job_seconds, LIMITS.media)
    job = AnimationJob(request_, on_event=_show_notice, faces=mesh_analyzer())
    try:  # every check first, then the model loads (or is refused), all before the job starts
        job.prepare()
        loaded = HOST.loaded
        engine_ = make_engine(job.options, host=HOST)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _refusal(exc) from None
    if engine_.description and not loaded:
        log.info("%s", engine_.description)
    yield from _follow(job, engine_, PAGES.add(_page(request), job), folder)
    yield _finished(job, folder)


def _refusal(exc: BaseException) -> BaseException:
    """What a visitor is told when a job cannot start: a refusal as it is; a model that did not
    load (missing files, no network for a hub id) in one line, the details in the server log."""
    if isinstance(exc, REFUSALS):
        return _error(exc)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not the visitor's business
        return exc
    log.exception("could not load the diffusion weights %s", HOST.weights, exc_info=exc)
    reason = str(exc).splitlines()[0] if isinstance(exc, ValueError) and str(exc) else "see the server log"
    return gr.Error(f"The diffusion model could not be loaded ({visitor_text(reason)}); use the preview engine.")


def _show_notice(event) -> None:
    """The job's notices as the page's messages (a portrait scaled down is news, not a problem)."""
    if isinstance(event, Notice):
        show = gr.Info if event.code in ("scaled_down", "photo") else gr.Warning
        show(visitor_text(event.text[0].upper() + event.text[1:]) + ".")


def _follow(job: AnimationJob, engine, page, folder: Path) -> Iterator[tuple]:
    """Updates while the job waits for the model and runs; whatever ends it (Cancel, the tab
    closed, the end), the page lets it go (`PageJobs.finish`) and a stopped job's files go."""
    try:
        job.start(engine)
        for p in job.updates(UPDATE_INTERVAL, STALL_TIMEOUT):
            yield _live(p.picture), None, None, p.status, _progress_html(p.fraction, p.eta, p.status)
    finally:  # also when Gradio closes this generator (Cancel, tab closed)
        if PAGES.finish(page):  # closed mid-job: drop what it wrote
            shutil.rmtree(folder, ignore_errors=True)


def _finished(job: AnimationJob, folder: Path) -> tuple:
    """The last update: the videos and what was done, or why not."""
    try:
        done = job.result()
    except Cancelled:
        shutil.rmtree(folder, ignore_errors=True)
        return None, None, None, "cancelled", ""
    except (*REFUSALS, ValueError, TimeLimitExceeded) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _error(exc) from None
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if as_disk_full(exc) is not None:  # a write no output check named
            raise _error(as_disk_full(exc)) from None
        log.exception("animation failed", exc_info=exc)
        raise gr.Error(f"Animation failed: {visitor_text(str(exc))}") from None
    sound = {"driving": ", with the driving sound", "source": ", with the source video's sound"}
    status = (f"done: {done.frames} frames at {done.fps:g} fps in {done.seconds:.1f} s"
              + (sound.get(job.options.sound, "") if done.sound else ""))
    side = str(done.side_by_side) if done.side_by_side else None
    return _live(job.latest.picture), str(done.output), side, status, _progress_html(1.0, None, "done")


# -- Edit tab -------------------------------------------------------------------------------
#: The edits with a slider on the Edit tab, in MotionEdits' order (the shares of a driver's
#: motion only act over a clip: they sit in their own accordion).
EDIT_NAMES = MotionEdits.names()
#: Longest side of the edited picture sent to the page while the sliders move, px (the
#: download is the portrait's own size).
EDIT_VIEW_SIDE = 768


def _slider_step(name: str) -> float:
    spec = MotionEdits.spec(name)
    return 1.0 if spec["unit"] == "°" else 0.01 if spec["kind"] == LEVEL or spec["high"] <= 1.5 else 0.05


def face_choices(path: str | None) -> list[str]:
    """The face picker's choices for a portrait: the program's choice, then each face from the
    left ("2 of 3, from the left")."""
    if not path or not is_image_file(path):
        return [AUTO_FACE]
    try:
        rgb = load_image(path, LIMITS.media).rgb
        boxes = mesh_analyzer().face_boxes(rgb, "the portrait")
        # The job's own look at this upload, made now (the faces just found answer it): Animate
        # then finds the portrait analysed (the analyser remembers it by its pixels).
        mesh_analyzer().analyze(fit_within(rgb, LIMITS.output_side)[0], "the portrait")
    except (InputError, NoFaceError):
        return [AUTO_FACE]
    return [AUTO_FACE] + ([f"{k} of {len(boxes)}, from the left" for k in range(1, len(boxes) + 1)]
                          if len(boxes) > 1 else [])


def pick_face(path: str | None):
    """A portrait arrived: offer its faces (the picker shows only when there are several)."""
    choices = face_choices(path)
    return gr.update(choices=choices, value=AUTO_FACE, visible=len(choices) > 1)


def edit_load(path: str | None, face: str | None):
    """A portrait (or another of its faces) on the Edit tab: analyse it once, set the level
    sliders to its own values and the others to no change, and show it with its motion map."""
    from vivid.still_edit import StillEditor

    if not path:
        return (None, None, None, "Choose a portrait.", *[gr.update() for _ in EDIT_NAMES])
    try:
        rgb, _ = fit_within(load_image(path, LIMITS.media).rgb, LIMITS.output_side)
        editor = StillEditor(rgb, analyzer=mesh_analyzer(), face=_face_number(face))
    except (InputError, NoFaceError, OptionError) as exc:
        raise _error(exc) from None
    levels = editor.levels
    values = [round(levels[n], 2) if n in levels else _default(n) for n in EDIT_NAMES]
    state = {"editor": editor, "edits": MotionEdits(), "name": Path(path).stem}
    picture, motion = _edited(editor, MotionEdits())
    return (state, picture, motion, "Move a slider: the picture follows. Reset gives the portrait back.", *values)


def _default(name: str) -> float:
    """The slider position of an edit that changes nothing (an offset's or share's default)."""
    return float(getattr(MotionEdits(), name))


def _edited(editor, edits: MotionEdits) -> tuple[np.ndarray, np.ndarray]:
    """The edited portrait (sized for the page) and its motion map."""
    return _fit(editor.render(edits), EDIT_VIEW_SIDE), editor.motion_map(edits)


def edit_render(state: dict | None, *values: float):
    """A slider moved: one frame re-rendered (preview engine) with every slider's value."""
    if not state:
        return state, gr.update(), gr.update(), "Choose a portrait first."
    editor = state["editor"]
    try:
        edits = editor.edits_from(dict(zip(EDIT_NAMES, values)))
    except OptionError as exc:
        raise _error(exc) from None
    state = {**state, "edits": edits}
    picture, motion = _edited(editor, edits)
    return state, picture, motion, f"edits: {edits.describe()}"


def edit_reset(state: dict | None):
    """Every slider back where the portrait is: the portrait itself."""
    if not state:
        return (state, gr.update(), gr.update(), "Choose a portrait first.", *[gr.update() for _ in EDIT_NAMES])
    editor = state["editor"]
    levels = editor.levels
    values = [round(levels[n], 2) if n in levels else _default(n) for n in EDIT_NAMES]
    picture, motion = _edited(editor, MotionEdits())
    return ({**state, "edits": MotionEdits()}, picture, motion, "reset: the portrait as it is", *values)


def edit_download(state: dict | None) -> str:
    """The edited portrait at its own size, as a PNG to download."""
    if not state:
        raise gr.Error("Choose a portrait first.")
    from PIL import Image

    try:
        out = new_job_folder(OUTPUT_DIR, "edit", MAX_AGE) / f"{state['name']}-edited.png"
        with atomic_output(out) as tmp:
            Image.fromarray(state["editor"].render(state["edits"])).save(tmp, format="PNG")
    except DiskFullError as exc:
        raise _error(exc) from None
    return str(out)


def edits_summary(state: dict | None, use: bool) -> str:
    """What Animate will apply from the Edit tab."""
    if not use:
        return ""
    edits = state["edits"] if state else MotionEdits()
    return f"Edits applied to every frame: {edits.describe()}" + ("" if edits else " (move the Edit tab's sliders)")


# -- Live tab -------------------------------------------------------------------------------
def live_step(frame: np.ndarray | None, reference: str | None, session: dict | None):
    """One webcam frame in, the animated portrait and the frame's motion map out."""
    from vivid.live import LiveAnimator

    session = session or {}
    if frame is None:
        return gr.update(), gr.update(), session, gr.update()
    if not reference:
        raise gr.Error("Choose a portrait first.")
    if session.get("reference") != reference:
        old = session.get("animator")
        if old is not None:
            old.close()
        try:
            session = {"reference": reference, "animator": LiveAnimator(load_image(reference).rgb), "times": deque(maxlen=30)}
        except (InputError, NoFaceError) as exc:
            raise _error(exc) from None
    out, motion = session["animator"].step(frame)
    times = session["times"]
    times.append(time.monotonic())
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    return out, _fit(motion, 320), session, f"{rate:.1f} frames/s processed on the server"


def live_reset(session: dict | None):
    if session and session.get("animator") is not None:
        session["animator"].reset()
    return session


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


CSS = """
.vivid-legend ul { list-style: none; padding: 0; columns: 2; }
.vivid-legend li { margin: 2px 0; }
.vivid-swatch { display: inline-block; width: 1.1em; height: 1.1em; margin-right: .4em; vertical-align: middle;
                border: 1px solid #888; }
.vivid-progress progress { width: 60%; height: 1em; vertical-align: middle; }
"""


def inline_image(**kwargs) -> gr.Image:
    """An output image whose pictures travel inside the update as JPEG data URLs. A plain
    gr.Image writes every picture to Gradio's file cache and sends its URL, and the browser
    then asks for the file: one more round trip per live-view frame (20-40 ms here on loopback, a
    network round trip on a hosted Space) and a file per frame on the server's disk (the Live
    tab's two images at 20 frames/s wrote 40 files a second, kept for `MAX_AGE`)."""
    component = gr.Image(format="jpeg", **kwargs)
    # Replaced on the instance, not in a subclass: Gradio writes a .pyi stub beside the module of
    # any component subclass at import, and the browser did not render such subclasses here.
    default = component.postprocess

    def postprocess(value):
        if not isinstance(value, np.ndarray):
            return default(value)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(value, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, LIVE_VIEW_QUALITY])
        if not ok:  # not for RGB uint8; Gradio's own way then
            return default(value)
        # No path: Gradio leaves a file object without one alone (as it does for its inline SVGs).
        return ImageData(url="data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"),
                         mime_type="image/jpeg", size=len(jpeg))

    component.postprocess = postprocess
    return component


def portrait_input(**kwargs) -> gr.Image:
    """An image upload whose callback gets the file's path unopened. Gradio's own
    preprocessing opens every upload with PIL first, which turns a decompression bomb into an
    opaque error; `load_image` instead reads the size from the header and refuses with a
    message (AppLimits.image_pixels)."""
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    default = component.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)  # what Gradio returns too for a file path, minus opening it
        return default(payload)

    component.preprocess = preprocess
    return component


def build() -> gr.Blocks:
    portraits = sorted(str(p) for p in ASSETS.glob("*.jpg"))
    examples = [[str(ASSETS / p), template_video(ASSETS / "templates" / t), str(ASSETS / "templates" / t)]
                for p, t in EXAMPLES if (ASSETS / p).is_file() and (ASSETS / "templates" / t).is_file()]
    diffusion = model_available(HOST.weights)  # weights given, or the shipped model
    engines = list(ENGINES) if diffusion else [PREVIEW_ENGINE]
    recommended, default = HOST.sampling_defaults, AnimateOptions()  # the controls start at these
    engine_info = ("Preview warps the portrait on the CPU in about real time; the diffusion model paints every frame "
                   "and is much slower" + (f" (this server's: {SHIPPED_MODEL_SUMMARY})." if HOST.shipped else ".")
                   if diffusion else
                   "This server runs the fast preview engine, which warps the portrait on the CPU in about real time. "
                   "The diffusion model is not installed here.")
    with gr.Blocks(title="VividPortraits", delete_cache=(max(60, MAX_AGE // 10), MAX_AGE)) as demo:
        gr.Markdown(
            "# VividPortraits\nAnimate a portrait with the head motion and expressions of a driving video. "
            "Pick an example below to see it run, or bring your own portrait and clip (or record one with your "
            "webcam). **Edit** changes the portrait's expression, gaze and head pose with sliders; **Live** drives a "
            "portrait with your webcam; **Parsing** shows the facial parsing maps that guide the model."
        )
        edit_state = gr.State()  # the Edit tab's portrait and edits, which Animate can apply to a clip
        with gr.Tab("Animate"):
            with gr.Row():
                with gr.Column():
                    ref_in = portrait_input(label="Portrait", elem_id="animate-reference")
                    face_in = gr.Dropdown([AUTO_FACE], value=AUTO_FACE, label="Which face (the portrait shows several)",
                                          visible=False, elem_id="animate-face")
                drv_in = gr.Video(label="Driving video (upload or record)", sources=["upload", "webcam"],
                                  elem_id="animate-driving")
            tpl_in = gr.File(label="…or a motion template (.npz: motion and sound, no pixels)", file_types=[".npz"],
                             elem_id="animate-template", height=80)
            with gr.Accordion("…or a portrait video as the source, or a photo as the driver", open=False,
                              elem_id="animate-more-inputs"):
                with gr.Row():
                    src_in = gr.Video(label="Portrait video (the source): each of its frames moved by the driver "
                                            "(preview engine; as long as the shorter video)", sources=["upload"],
                                      elem_id="animate-source-video")
                    photo_in = portrait_input(label="Driving photo: a short clip from the portrait's face to the "
                                                    "photo's expression and head pose", elem_id="animate-driving-photo")
                sound = gr.Radio(list(SOUNDS), value="driving", label="Sound of the result",
                                 info="the driving clip's, the source video's, or none", elem_id="animate-sound")
            with gr.Row():
                use_edits = gr.Checkbox(False, label="Apply the Edit tab's edits to every frame",
                                        elem_id="animate-use-edits")
                edits_note = gr.Markdown("", elem_id="animate-edits-note")
            ex = None
            if examples:
                ex = gr.Examples(examples, inputs=[ref_in, drv_in, tpl_in], elem_id="animate-examples",
                                 label="Examples (click one to run it): portrait × motion template",
                                 example_labels=[f"{Path(e[0]).stem.replace('_', ' ')} × {Path(e[2]).stem}" for e in examples])
            with gr.Row():
                engine = gr.Radio(engines, value=PREVIEW_ENGINE, label="Engine", info=engine_info, elem_id="animate-engine")
                crop_only = gr.Checkbox(default.crop_only, label="Face crop only")
                absolute = gr.Checkbox(not default.relative, label="Copy the driver's face shape too")
                want_side = gr.Checkbox(False, label="Also make a side-by-side video", elem_id="animate-side-by-side")
            with gr.Group(visible=False, elem_id="animate-diffusion-settings") as diffusion_settings:
                with gr.Row():
                    steps = gr.Slider(1, 50, recommended.steps, step=1, label="Denoising steps", elem_id="animate-steps")
                    guidance = gr.Slider(1.0, 7.0, recommended.guidance, step=0.5, label="Guidance",
                                         elem_id="animate-guidance")
                    seed = gr.Number(default.seed, precision=0, label="Seed", elem_id="animate-seed")
                with gr.Row():
                    window = gr.Slider(4, DEFAULT_MAX_WINDOW, default.window, step=1, label="Window (frames)",
                                       elem_id="animate-window")
                    overlap = gr.Slider(0, 16, default.overlap, step=1, label="Overlap (frames)", elem_id="animate-overlap")
                    cyclic = gr.Checkbox(default.cyclic, label="Cyclic overlap", elem_id="animate-cyclic")
                settings_error = gr.Markdown(visible=False, elem_id="animate-settings-error")
            with gr.Row():
                go = gr.Button("Animate", variant="primary", elem_id="animate-button")
                stop = gr.Button("Cancel", variant="stop", elem_id="animate-cancel")
            progress = gr.HTML("", elem_id="animate-progress")
            with gr.Row():
                live = inline_image(label="Live view (frames as they are made)", elem_id="animate-live")
                result_video = gr.Video(label="Result", elem_id="animate-result", autoplay=True)
            side_video = gr.Video(label="Side by side: driving | portrait | result", elem_id="animate-side", visible=False)
            status = gr.Textbox(label="Status", elem_id="animate-status")
            inputs = [ref_in, drv_in, tpl_in, engine, crop_only, absolute, want_side, steps, guidance, seed, window,
                      overlap, cyclic, src_in, photo_in, sound, face_in, use_edits, edit_state]
            outputs = [live, result_video, side_video, status, progress]
            run = go.click(animate, inputs, outputs, show_progress="hidden", validator=check_request)
            # An example is a portrait and a template: a source video or a driving photo left from
            # before would take their place, so they go first.
            ran = [ex.load_input_event.then(lambda: (None, None), None, [src_in, photo_in], queue=False).then(
                animate, inputs, outputs, show_progress="hidden", validator=check_request)] if ex else []
            stop.click(cancel, None, status, cancels=[run, *ran], queue=False)
            drv_in.upload(lambda: None, None, tpl_in, queue=False)
            drv_in.stop_recording(lambda: None, None, tpl_in, queue=False)
            tpl_in.upload(show_template, tpl_in, drv_in)
            # The latest upload is what is animated: a portrait photo or video, a driving clip or photo.
            ref_in.upload(lambda: None, None, src_in, queue=False)
            src_in.upload(lambda: None, None, ref_in, queue=False)
            for driver in (drv_in.upload, drv_in.stop_recording, tpl_in.upload):
                driver(lambda: None, None, photo_in, queue=False)
            photo_in.upload(lambda: (None, None), None, [drv_in, tpl_in], queue=False)
            want_side.change(lambda on: gr.update(visible=on), want_side, side_video, queue=False)
            engine.change(engine_changed, [engine, window, overlap], [diffusion_settings, settings_error, go], queue=False)
            for slider in (window, overlap):
                slider.change(check_settings, [engine, window, overlap], [settings_error, go], queue=False)
            ref_in.change(pick_face, ref_in, face_in)
            for changed in (use_edits.change, edit_state.change):
                changed(edits_summary, [edit_state, use_edits], edits_note, queue=False)
        with gr.Tab("Edit") as edit_tab:
            gr.Markdown("Change the portrait's expression, gaze and head pose: the picture follows each slider (preview "
                        "engine), with the motion map of the edited face beside it, what the diffusion model would be "
                        "guided by. Levels (eyes, gaze, mouth open) start where the portrait is; the rest start at no "
                        "change. To animate a clip with these edits, tick *Apply the Edit tab's edits* on the Animate "
                        "tab: over a clip the levels are where the face rests and the driver's motion is added.")
            with gr.Row():
                edit_ref = portrait_input(label="Portrait", elem_id="edit-reference",
                                          value=portraits[0] if portraits else None)
                with gr.Column():
                    edit_face = gr.Dropdown([AUTO_FACE], value=AUTO_FACE, label="Which face (the portrait shows several)",
                                            visible=False, elem_id="edit-face")
                    edit_status = gr.Textbox(label="Edits", elem_id="edit-status")
                    with gr.Row():
                        reset = gr.Button("Reset", elem_id="edit-reset")
                        save = gr.Button("Download the edited portrait (PNG)", elem_id="edit-save")
                    edit_file = gr.File(label="Download", elem_id="edit-file", height=80)
            with gr.Row():
                edit_out = inline_image(label="Edited portrait (preview engine)", elem_id="edit-result")
                edit_map = inline_image(label="Motion map of the edited face", elem_id="edit-map")
            sliders = {}
            groups = (("Eyes and gaze", ("left_eye_open", "right_eye_open", "gaze_x", "gaze_y")),
                      ("Brows and mouth", ("brows", "mouth_open", "smile", "pout", "purse")),
                      ("Head", ("yaw", "pitch", "roll", "shift_x", "shift_y", "scale")))
            for title, names in groups:
                with gr.Group():
                    gr.Markdown(f"**{title}**")
                    with gr.Row():
                        for name in names:
                            spec = MotionEdits.spec(name)
                            sliders[name] = gr.Slider(spec["low"], spec["high"], _default(name) if spec["kind"] != LEVEL
                                                      else spec["low"], step=_slider_step(name), label=name,
                                                      info=spec["help"], elem_id="edit-" + name.replace("_", "-"))
            with gr.Accordion("Over a driving clip: how much of the driver's motion each part keeps", open=False):
                with gr.Row():
                    for name in EDIT_NAMES:
                        spec = MotionEdits.spec(name)
                        if spec["kind"] == SHARE:
                            sliders[name] = gr.Slider(spec["low"], spec["high"], _default(name),
                                                      step=_slider_step(name), label=name, info=spec["help"],
                                                      elem_id="edit-" + name.replace("_", "-"))
            slider_list = [sliders[name] for name in EDIT_NAMES]
            loaded = [edit_state, edit_out, edit_map, edit_status, *slider_list]
            edit_ref.change(pick_face, edit_ref, edit_face).then(edit_load, [edit_ref, edit_face], loaded)
            edit_face.input(edit_load, [edit_ref, edit_face], loaded)
            edit_tab.select(lambda state, path, face: edit_load(path, face) if state is None else
                            (state, *[gr.update() for _ in loaded[1:]]), [edit_state, edit_ref, edit_face], loaded)
            for slider in slider_list:
                slider.input(edit_render, [edit_state, *slider_list], [edit_state, edit_out, edit_map, edit_status],
                             trigger_mode="always_last", show_progress="hidden")
            reset.click(edit_reset, edit_state, loaded, show_progress="hidden")
            save.click(edit_download, edit_state, edit_file)
        with gr.Tab("Live"):
            gr.Markdown("Your webcam drives the portrait in real time (preview engine). Look straight at the camera "
                        "when you start: that pose is the portrait's own. Nothing is recorded.")
            session = gr.State()
            with gr.Row():
                live_ref = portrait_input(label="Portrait", elem_id="live-reference",
                                          value=portraits[0] if portraits else None)
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="live-webcam")
            with gr.Row():
                live_out = inline_image(label="Animated portrait", elem_id="live-output")
                live_motion = inline_image(label="Motion map of your face", elem_id="live-motion")
            live_rate = gr.Textbox(label="Speed", elem_id="live-fps")
            recentre = gr.Button("Take my current pose as neutral", elem_id="live-reset")
            if portraits:
                gr.Examples(portraits, inputs=live_ref)
            webcam.stream(live_step, [webcam, live_ref, session], [live_out, live_motion, session, live_rate],
                          stream_every=0.05, time_limit=600, concurrency_limit=4, show_progress="hidden")
            recentre.click(live_reset, session, session, queue=False)
        with gr.Tab("Parsing"):
            with gr.Tab("Portrait"):
                with gr.Row():
                    image_in = portrait_input(label="Portrait", elem_id="parse-image-input")
                    image_info = gr.Textbox(label="Analysis", lines=4, elem_id="parse-image-info")
                with gr.Row():
                    parsing_out = gr.Image(label="Parsing map", format="png", elem_id="parse-parsing")
                    motion_out = gr.Image(label="Motion map (what the model sees)", format="png", elem_id="parse-motion")
                    mask_out = gr.Image(label="Foreground / background", format="png", elem_id="parse-mask")
                gr.HTML(legend_html(), elem_id="parse-legend")
                eyes_out = gr.Image(label="Eyes close up: eyelid line and iris (photo above, motion map below)",
                                    format="png", elem_id="parse-eyes")
                if portraits:
                    gr.Examples(portraits, inputs=image_in)
                gr.Button("Parse portrait", variant="primary", elem_id="parse-image-button").click(
                    parse_image, image_in, [parsing_out, motion_out, mask_out, eyes_out, image_info]
                )
                with gr.Accordion("Random scaling (the training augmentation against identity leakage)", open=False):
                    with gr.Row():
                        scale_seed = gr.Number(0, precision=0, label="First seed")
                        scale_button = gr.Button("Show four random scalings")
                    scaled = gr.Gallery(label="Scaled motion maps", columns=4, format="png", elem_id="parse-scaled")
                    scale_button.click(scaled_motion_maps, [image_in, scale_seed], scaled)
            with gr.Tab("Driving video"):
                with gr.Row():
                    video_in = gr.Video(label="Driving video", sources=["upload", "webcam"], elem_id="parse-video-input")
                    video_out = gr.Video(label="Motion maps (with the driving sound)", elem_id="parse-video-output")
                parse_tpl_in = gr.File(label="…or a motion template (.npz: motion and sound, no pixels)",
                                       file_types=[".npz"], elem_id="parse-template-input", height=80)
                video_info = gr.Textbox(label="Tracking", lines=4, elem_id="parse-video-info")
                gr.Button("Parse video", variant="primary", elem_id="parse-video-button").click(
                    parse_video, [video_in, parse_tpl_in], [video_out, video_info]
                )
                video_in.upload(lambda: None, None, parse_tpl_in, queue=False)  # the latest upload is parsed
                video_in.stop_recording(lambda: None, None, parse_tpl_in, queue=False)
                parse_tpl_in.upload(lambda: None, None, video_in, queue=False)
        demo.unload(tab_closed)
    return demo


def launch(demo: gr.Blocks, **kwargs) -> None:
    """Queue limits (diffusion runs one job at a time inside `animate`; visitors beyond the
    queue are told it is full), the upload limit, and launch."""
    kwargs.setdefault("max_file_size", f"{LIMITS.upload_mb:g}mb")
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = LIMITS.image_pixels  # PIL's own guard, for images Gradio decodes (webcam frames)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    swept = sweep_dead_jobs(OUTPUT_DIR)  # what a server killed mid-job left (its finished results stay)
    sweep_dead_offload_folders()
    if swept:
        log.info("removed %d unfinished job folders of a server that was stopped mid-job", swept)
    warm_up()  # before the freeze: what it imports and builds lives as long as the server
    freeze_startup_objects()
    demo.launch(css=CSS, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description="VividPortraits web app")
    # Hugging Face Spaces set GRADIO_SERVER_NAME/PORT; locally the app listens on 127.0.0.1 only.
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    model = parser.add_argument_group("the diffusion model (as `python -m vivid animate` takes it)")
    add_option_flags(model, AnimateOptions, MODEL_OPTIONS, env={"weights": "VIVID_WEIGHTS", "dtype": "VIVID_DTYPE"})
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' own messages too")
    parser.epilog = "Limits per request, set by environment variables: " + ", ".join(
        f"{var}={getattr(LIMITS, name):.10g}" for name, var in LIMIT_VARIABLES.items())
    args = parser.parse_args()
    global HOST
    HOST = ModelHost(**given_options(args, AnimateOptions))
    limit_heap_arenas()
    from vivid.terminal import configure

    configure(verbose=args.verbose, prog="app")
    logging.getLogger("vivid").setLevel(logging.INFO)  # the server log: one line per job
    launch(build(), server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
