"""The animation job: portrait + driving video (or motion template) → engine → mp4 with the
driving sound. The one way the command line and the app run an animation.

Layers (README "What is here"): face → conditioning/models → pipeline/preview → engines →
**animation job** → CLI / app / evaluate.

    job = AnimationJob(AnimationRequest(portrait, driving, output, options), on_event=show)
    job.prepare()        # every check before any work; refusals are exceptions
    done = job.run()     # or job.start(); for progress in job.updates(0.25): ...; job.result()

- `prepare` checks everything that can be checked before work, cheapest first: the options
  (`AnimateOptions.check`), the output paths, the driving input's header and limits
  (`vivid.driving.Driving`), the portrait (scaled down to `max_side`), a face in the
  portrait and in the first seconds of the driving clip. The portrait may be a video (a
  source video, `vivid.source_video`: the preview engine moves each of its frames, the result
  is as long as the shorter video, at the source's frame rate) and the driver a photo (a
  short clip to the photo's expression, `Driving.from_photo`). A refusal is a ValueError subclass
  (OptionError, InputError, NoFaceError, TemplateError) whose message is the one line to show.
  What a user should know but that does not stop the job comes out as `Notice` events.
- `run` builds the engine unless given one (`vivid.engines.make_engine`: models load only
  after every check), waits its turn when the engine serves one job at a time (a shared
  model; `Progress` says it is waiting), streams its frames into the mp4 (complete or absent,
  never half written), carries the driving sound over, and writes the optional side-by-side
  video (driving | portrait | result). `Progress` events say frames done, the total, the share
  of the job done, the time left and a status line, with the latest picture (a frame, or the
  diffusion engine's estimate). Returns `Done`.
- `stop()`, from any thread, ends the work at the next frame or denoising step (within a
  second for the preview engine and small models) with `Cancelled`; the request's
  `time_limit` ends it with `TimeLimitExceeded`, whose message every front end shows as is.
- `start`, `updates` and `result` run the job in a background thread for a view that shows
  the latest progress at its own pace (the app); a view that stops asking for updates
  (`stall_timeout`) stops the job.

No Gradio, tqdm or argparse here: front ends turn the events into their own views.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .disk_space import check_room, video_bytes
from .driving import Driving
from .engines import Engine, make_engine
from .errors import OptionError
from .job_memory import check_fits
from .face import FaceAnalyzer
from .face.shared_analyzers import mesh_analyzer
from .media import DEFAULT_LIMITS, MediaLimits, fit_within, is_image_file, load_image, read_video, write_video
from .options import AnimateOptions
from .paths import check_output, existing_file, same_file
from .source_video import SourceVideo, at_times, paired_length

#: Share of the progress bar for the work before the first frame, when an engine reports it
#: (the diffusion engine's denoising; decoding the frames takes the rest).
STEPS_SHARE = 0.9
#: Height of each panel of the side-by-side video, px.
SIDE_BY_SIDE_HEIGHT = 384


class Stopped(Exception):
    """The job was stopped before it finished; nothing was left at the output path."""


class Cancelled(Stopped):
    """Someone asked the job to stop (`AnimationJob.stop`: a Cancel button, a closed page)."""

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)


class TimeLimitExceeded(Stopped):
    """The job ran past its time limit; the message says so, the same in every front end."""

    def __init__(self, seconds: float):
        super().__init__(f"the animation ran longer than its time limit of {seconds:g} s and was stopped; "
                         "try a shorter driving video")


@dataclass(frozen=True)
class AnimationRequest:
    """What to animate, with what, and where the results go."""

    reference: Path  # the portrait: a photo, or a portrait video (the source)
    driving: Path  # a driving video, a motion template (.npz) or a driving photo
    output: Path  # the result .mp4
    options: AnimateOptions = AnimateOptions()  # engine and its settings (checked by `prepare`)
    side_by_side: Path | None = None  # also write driving | portrait | result here (.mp4)
    time_limit: float | None = None  # seconds the work may take at most (None: no limit)
    limits: MediaLimits = DEFAULT_LIMITS  # how large the inputs may be


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the job. `code` says which
    ("scaled_down", "cut_short", "single_frame", "photo"), so a front end can add its own hint."""

    code: str
    text: str


@dataclass(frozen=True)
class Progress:
    """Where the job is. `stage` is "waiting" (for a shared model), "starting", "denoising"
    (steps), "animating" or "decoding" (output frames), or "side by side"; `done` of `total`
    counts its steps or frames."""

    stage: str
    done: int
    total: int | None
    unit: str  # "step" or "frame"
    fraction: float | None  # share of the whole job done (None: the length is unknown)
    eta: float | None  # seconds left (None: not known yet)
    status: str  # one line for a status bar, e.g. "frame 12 of 120"
    picture: np.ndarray | None  # the latest output frame or the engine's estimate (None: none yet)


@dataclass(frozen=True)
class Done:
    """A finished job."""

    output: Path
    side_by_side: Path | None
    frames: int
    fps: float
    sound: bool  # the result carries sound (the driver's or the source video's, as asked)
    template: bool  # the driving input was a motion template
    seconds: float  # time the work took (checks and model loading not included)


Event = Notice | Progress


def side_by_side(driving: np.ndarray, reference: np.ndarray, result: np.ndarray,
                 height: int = SIDE_BY_SIDE_HEIGHT) -> np.ndarray:
    """driving | reference | result, each scaled to `height`."""
    import cv2

    panels = [cv2.resize(p, (max(2, round(p.shape[1] * height / p.shape[0])), height), interpolation=cv2.INTER_AREA)
              for p in (driving, reference, result)]
    return np.concatenate(panels, axis=1)


@dataclass
class _Clock:
    """The job's time: when it started, its deadline, and when a view last asked for news."""

    start: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    watched: float = field(default_factory=time.monotonic)
    stall_timeout: float | None = None


class AnimationJob:
    """One animation (see the module docstring). `faces` is the analyser of the fail-fast face
    checks (default: the process's mesh analyser, which the preview engine shares)."""

    def __init__(self, request: AnimationRequest, on_event: Callable[[Event], None] | None = None,
                 faces: FaceAnalyzer | None = None):
        self.request = request
        self.on_event = on_event or (lambda event: None)
        self.faces = faces
        self.options: AnimateOptions | None = None  # checked, by `prepare`
        self.driving: Driving | None = None
        self.reference: np.ndarray | None = None  # the portrait as animated (scaled down to max_side)
        self.source: SourceVideo | None = None  # the portrait when it is a video (`reference`: its first frame)
        self.latest: Progress | None = None
        self._stop = threading.Event()
        self._timed_out = False
        self._first_frame = threading.Event()
        self._clock = _Clock()
        self._thread: threading.Thread | None = None
        self._outcome: dict = {}

    # -- before any work -------------------------------------------------------------------
    def prepare(self) -> None:
        """Every check that comes before work, cheapest first; `Notice` events for what the
        user should know. Raises the refusal (a ValueError subclass) otherwise."""
        r = self.request
        self.options = r.options.check()
        check_output(r.output, [r.reference, r.driving])
        if r.side_by_side is not None:
            check_output(r.side_by_side, [r.reference, r.driving])
            if same_file(r.side_by_side, r.output):
                raise OptionError("the side-by-side video needs a name of its own, not the output's", "side_by_side")
        existing_file(r.reference, "an image or video file")
        o = self.options
        photo_driver = is_image_file(r.driving)
        if not photo_driver:
            self.driving = Driving.open(r.driving, r.limits, o.max_frames)
        if is_image_file(r.reference):
            if o.sound == "source":
                raise OptionError("sound: the portrait is a photo, which has no sound; take the driving clip's "
                                  "(driving) or none", "sound")
            self.reference, note = fit_within(load_image(r.reference, r.limits).rgb, o.max_side)
            if note:
                self.on_event(Notice("scaled_down", note))
        else:
            self._check_source_engine()
            self.source = SourceVideo.open(r.reference, r.limits, o.max_frames, o.max_side)
            self.reference = self.source.first_frame()
            if self.source.scaled_down:
                self.on_event(Notice("scaled_down", f"the source video is {self.source.info.width}x"
                                                    f"{self.source.info.height}; it is animated scaled down to "
                                                    f"{self.reference.shape[1]}x{self.reference.shape[0]}"))
        faces = self.faces or mesh_analyzer()
        faces.analyze(self.reference, "the first frame of the source video" if self.source else "the portrait", o.face)
        if photo_driver:
            self.driving = Driving.from_photo(r.driving, self.reference, faces, o.photo_seconds, o.face, r.limits,
                                              o.max_frames)
            self.on_event(Notice("photo", f"the driving photo read as: {self.driving.photo_edits.describe()}"))
            self._check_disk_room()
            return
        info = self.driving.info
        wanted = info and (min(info.frames, o.max_frames) if o.max_frames else info.frames)
        if info and wanted and info.present < wanted:
            self.on_event(Notice("cut_short", f"the driving video is cut short or damaged: {info.present} of its "
                                              f"{wanted} frames are in the file; animating those"))
        self.driving.check_first_seconds(faces)
        self._check_disk_room()
        if info and info.present == 1 and o.max_frames != 1:
            self.on_event(Notice("single_frame", "the driving video has a single frame: the result will be a still "
                                                 "picture, not an animation; use a clip of a few seconds"))

    def _check_disk_room(self) -> None:
        """Refuse before any work when the output's disk cannot hold even a small video of this
        length (a write that runs out later still says so, naming the output)."""
        total, (h, w) = self.total, self.reference.shape[:2]
        if total:
            copies = 2 if self.has_sound else 1  # the silent video, then the one with sound, side by side
            check_room(self.request.output, video_bytes(total, w, h) * copies, str(self.request.output))

    def _check_memory(self, engine: Engine) -> None:
        """Refuse before any work a job that would need more memory than is available, with
        the figures and the setting that would make it fit (`vivid.job_memory`)."""
        h, w = self.reference.shape[:2]
        dh, dw = self.driving.size if self.driving.size[0] else (h, w)
        need = engine.memory_need(self.total or 0, h * w, dh * dw)
        if need is not None:
            check_fits(need)

    def _check_source_engine(self) -> None:
        """A source video is the preview engine's: "auto" takes it, another engine is refused."""
        asked = self.request.options.engine
        if asked == "auto":
            self.options = replace(self.options, engine="preview")
        elif self.options.engine != "preview":
            raise OptionError(f"engine {self.options.engine} cannot animate a portrait video (a source video): it "
                              "animates one portrait image; use the preview engine, or give a photo", "engine")

    @property
    def total(self) -> int | None:
        """Frames the result will have (None: not known before the end)."""
        if self.source is None:
            return self.driving.total
        return paired_length(self.source.total, self.source.fps, self.driving.total, self.driving.fps)

    @property
    def fps(self) -> float:
        """The result's frame rate: the source video's, else the driver's."""
        return self.source.fps if self.source is not None else self.driving.fps

    @property
    def has_sound(self) -> bool:
        """Whether the result will carry sound."""
        sound = self.options.sound
        if sound == "none":
            return False
        return self.source.has_audio if sound == "source" else self.driving.has_audio

    def _write(self, out: Path, frames, encoding) -> int:
        """`frames` as the result's mp4 at its frame rate with the sound asked for."""
        sound = self.options.sound
        if sound == "driving":
            return self.driving.write(out, frames, encoding, self.fps)
        audio = self.source.path if sound == "source" else None
        return write_video(out, frames, self.fps, audio_from=audio, encoding=encoding)

    # -- the work ----------------------------------------------------------------------------
    def run(self, engine: Engine | None = None) -> Done:
        """Animate (after `prepare`, which runs first if it has not): see the module docstring."""
        if self.driving is None:
            self.prepare()
        engine = engine or make_engine(self.options, analyzer=self.faces)
        r = self.request
        with engine.turn(self._waiting):
            self._check_memory(engine)  # in its turn: a job before it on a shared model has handed its memory back
            self._clock.start = time.monotonic()
            self._clock.deadline = None if r.time_limit is None else self._clock.start + r.time_limit
            self._progress("starting", 0, None, "frame", 0.0, "analysing the driving motion…")
            frames = self._write(r.output, self._frames(engine), engine.encoding)
            if r.side_by_side is not None:
                self._write(r.side_by_side, self._side_by_side(frames), engine.encoding)
        return Done(r.output, r.side_by_side, frames, self.fps, self.has_sound,
                    self.driving.template is not None and self.driving.photo is None,
                    time.monotonic() - self._clock.start)

    def _waiting(self, ahead: int = 1) -> None:
        """While other jobs hold the engine's model or are before this one in its queue: say
        how many (the status changes when the queue moves), and end the wait on a stop (or
        when nobody watches any more)."""
        status = (f"waiting: the diffusion model is busy with another job; {ahead} job{'s' if ahead > 1 else ''} "
                  f"ahead of yours in the queue")
        if self.latest is None or self.latest.status != status:
            self._progress("waiting", 0, None, "frame", None, status)
        self._check()

    def stop(self) -> None:
        """Ask the job to stop (any thread): it raises `Cancelled` at its next frame or step."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was asked for (or the time limit passed)."""
        return self._stop.is_set()

    def _check(self) -> None:
        """Raise if the job must stop; called between frames and steps, from any of its threads."""
        now, clock = time.monotonic(), self._clock
        if clock.deadline is not None and now > clock.deadline:
            self._timed_out = True
            self._stop.set()
        if clock.stall_timeout is not None and now - clock.watched > clock.stall_timeout:
            self._stop.set()  # nobody is watching any more
        if self._stop.is_set():
            raise TimeLimitExceeded(self.request.time_limit) if self._timed_out else Cancelled()

    def _frames(self, engine: Engine) -> Iterator[np.ndarray]:
        """The engine's output frames, with progress for each of them and for its steps."""
        total, frames, stepped = self.total, 0, False
        if self.source is not None:
            events = engine.stream_source(self.source, self.driving.source(self._check), self.driving.fps, self._check)
        else:
            events = engine.stream(self.reference, self.driving.source(self._check), self.driving.fps)
        try:
            for event in events:
                self._check()
                if event.kind == "progress":
                    stepped = True
                    within = getattr(event, "within", 0.0)
                    status = (f"denoising step {event.step + 1}/{event.total}, {within:.0%}" if within
                              else f"denoising step {event.step}/{event.total}") + (f" ({engine.note})" if engine.note else "")
                    self._progress("denoising", event.step, event.total, "step",
                                   STEPS_SHARE * (event.step + within) / max(event.total, 1), status, event.estimate)
                    continue
                frames += 1
                share = frames / total if total else None
                if stepped and share is not None:
                    share = STEPS_SHARE + (1 - STEPS_SHARE) * share
                self._progress("decoding" if stepped else "animating", frames, total, "frame", share,
                               f"frame {frames}" + (f" of {total}" if total else ""), event.frame)
                self._first_frame.set()
                yield event.frame
        finally:
            getattr(events, "close", lambda: None)()

    def _side_by_side(self, frames: int) -> Iterator[np.ndarray]:
        """driving | portrait | result for every frame written, read back from the result."""
        fraction = self.latest.fraction if self.latest else None
        drivers = self.driving.pictures()
        portraits = None
        if self.source is not None:  # paired by time, as the result was
            drivers, portraits = at_times(drivers, self.driving.fps, self.source.fps), self.source.frames()
        for i, (result, driver) in enumerate(zip(read_video(self.request.output), drivers), 1):
            self._check()
            self._progress("side by side", i, frames, "frame", fraction, "making the side-by-side video")
            yield side_by_side(driver, self.reference if portraits is None else next(portraits), result)

    def _progress(self, stage: str, done: int, total: int | None, unit: str, fraction: float | None, status: str,
                  picture: np.ndarray | None = None) -> None:
        elapsed = time.monotonic() - self._clock.start
        eta = elapsed * (1 - fraction) / fraction if fraction and fraction > 0.02 else None
        if picture is None and self.latest is not None:
            picture = self.latest.picture  # the live view keeps the last picture until a new one comes
        self.latest = Progress(stage, done, total, unit, fraction, eta, status, picture)
        self.on_event(self.latest)

    # -- in the background -----------------------------------------------------------------
    def start(self, engine: Engine | None = None) -> None:
        """`run` in a background thread (after `prepare`); see `updates` and `result`."""
        self._clock.watched = time.monotonic()
        self._thread = threading.Thread(target=self._run_into_outcome, args=(engine,), name="vivid-animate",
                                        daemon=True)
        self._thread.start()

    def _run_into_outcome(self, engine: Engine | None) -> None:
        try:
            self._outcome["done"] = self.run(engine)
        except BaseException as exc:  # raised by `result`, in the caller's thread
            self._outcome["error"] = exc

    def updates(self, interval: float, stall_timeout: float | None = None) -> Iterator[Progress]:
        """While the job started with `start` runs: its latest progress every `interval`
        seconds (and at once when the first frame is out). Nothing once a stop was asked for.
        If the caller does not come back for the next update within `stall_timeout` seconds
        (a page that stopped listening), the job stops."""
        self._clock.stall_timeout = stall_timeout
        while self._thread.is_alive():
            if self._first_frame.is_set():
                self._thread.join(interval)
            else:
                self._first_frame.wait(interval)
            if self._stop.is_set():
                return  # cancelled or over time: no progress may follow the answer to a Cancel
            self._clock.watched = time.monotonic()
            if self.latest is not None:
                yield self.latest

    def result(self) -> Done:
        """The finished job's `Done` (waiting for it), or its error; `Cancelled` when a stop
        was asked for, even if the work had just finished."""
        if self._thread is not None:
            self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        if self._stop.is_set() or "done" not in self._outcome:  # stopped, or stopped before it started
            raise TimeLimitExceeded(self.request.time_limit) if self._timed_out else Cancelled()
        return self._outcome["done"]

    def close(self, timeout: float = 5.0) -> None:
        """Stop a job running in the background and wait (at most `timeout` s) for its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


__all__ = [
    "AnimationJob", "AnimationRequest", "Cancelled", "Done", "Event", "Notice", "Progress", "Stopped",
    "TimeLimitExceeded", "side_by_side",
]
