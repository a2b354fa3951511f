"""What reaches the user's terminal: our own warnings as `vivid: warning: ...` lines, and no
library chatter (diffusers' and transformers' notices, FutureWarnings, FFmpeg's decoder
messages, TensorFlow Lite / absl start-up lines) unless `--verbose` asks for it.

Entry points (the CLI, the app) call `configure` once, before the heavy libraries load;
library code never touches the terminal itself.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

#: Loggers of libraries that speak up on their own; quiet below ERROR in a normal run.
CHATTY = ("diffusers", "transformers", "accelerate", "huggingface_hub", "torch", "PIL", "matplotlib", "absl",
          "libav", "httpx", "urllib3", "facer", "timm", "mediapipe")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is at the time (tqdm and test captures swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    """`vivid: warning: message` for our records; the logger's name for a library's."""

    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "note" if record.levelno < logging.WARNING else record.levelname.lower()
        who = self.prog if record.name.split(".")[0] in ("vivid", "__main__") else f"{self.prog}: {record.name}"
        text = f"{who}: {level}: {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(verbose: bool = False, prog: str = "vivid") -> None:
    """Set up the terminal for a run: our warnings (and with `verbose` our notes and every
    library's messages) as one line each on stderr; in a normal run library chatter is
    silenced at its source where possible and filtered out of stderr otherwise."""
    global _hide_prints
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, _Format):  # ours, from an earlier call
            root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Format(prog))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("vivid").setLevel(logging.INFO if verbose else logging.WARNING)
    _hide_prints = not verbose
    if verbose:
        logging.captureWarnings(True)  # Python warnings, as `vivid: py.warnings: warning: ...` lines
        _set_av_level(verbose=True)
        return
    # Before the libraries load, their own switches: glog (MediaPipe), TensorFlow Lite, HF.
    for key, value in (("GLOG_minloglevel", "2"), ("TF_CPP_MIN_LOG_LEVEL", "2"), ("DIFFUSERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(key, value)
    warnings.simplefilter("ignore")  # FutureWarning, DeprecationWarning, UserWarning from libraries
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    _set_av_level(verbose=False)
    quiet_loaded_libraries()
    from .native_log import filter_native_stderr

    filter_native_stderr()  # what C++ code writes straight to file descriptor 2


def quiet_loaded_libraries() -> None:
    """diffusers and transformers keep their own verbosity and progress-bar switches: set them
    if they are loaded (call again after importing them; never imports them itself)."""
    if logging.getLogger("vivid").getEffectiveLevel() < logging.WARNING:
        return  # verbose: leave them as they are
    for name in ("diffusers", "transformers"):
        module = sys.modules.get(f"{name}.utils.logging")
        if module is not None:
            module.set_verbosity_error()
            module.disable_progress_bar()


#: Set by `configure`: what libraries print inside `library_prints()` is hidden (no --verbose).
_hide_prints = False
_hiding: dict[int, int] = {}  # thread id -> how many `library_prints` blocks it is in
_hiding_lock = threading.Lock()


class _ThreadFilter:
    """Stands in for sys.stdout / sys.stderr while a thread is in `library_prints`: that
    thread's writes are dropped, every other thread's pass through (the app serves other
    visitors meanwhile)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if threading.get_ident() in _hiding:
            return len(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, buffer...: the real stream's
        return getattr(self.stream, name)


@contextmanager
def library_prints() -> Iterator[None]:
    """What a library prints straight to sys.stdout / sys.stderr on this thread inside the
    block (facer's download notices and progress bars) is shown only with --verbose, like
    the libraries' log messages. Does nothing until an entry point calls `configure`."""
    if not _hide_prints:
        yield
        return
    me = threading.get_ident()
    with _hiding_lock:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _ThreadFilter):
                setattr(sys, name, _ThreadFilter(getattr(sys, name)))
        _hiding[me] = _hiding.get(me, 0) + 1
    try:
        yield
    finally:
        with _hiding_lock:
            _hiding[me] -= 1
            if not _hiding[me]:
                del _hiding[me]
            if not _hiding:  # the filters go, unless something has wrapped them meanwhile
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _ThreadFilter):
                        setattr(sys, name, stream.stream)


class _AboveBars(logging.Handler):
    """Writes records with `tqdm.write`, so a warning comes out above the progress bars
    instead of over their last redraw."""

    def __init__(self, like: logging.Handler):
        super().__init__(like.level)
        self.setFormatter(like.formatter)
        self.filters = list(like.filters)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a broken terminal must not end the run
            self.handleError(record)


@contextmanager
def logging_above_progress_bars() -> Iterator[None]:
    """Inside the block, the root logger's terminal handlers write between progress-bar
    redraws (tqdm's own `logging_redirect_tqdm` would import its asyncio support: 20 ms of
    the command line's start-up)."""
    root = logging.getLogger()
    before = root.handlers
    root.handlers = [_AboveBars(h) if isinstance(h, _Stderr) else h for h in before]
    try:
        yield
    finally:
        root.handlers = before


def _set_av_level(verbose: bool) -> None:
    """FFmpeg's own messages (e.g. `[h264 @ 0x..] Invalid NAL unit size` on a damaged file):
    off in a normal run (our reader reports damage itself), through logging with `verbose`."""
    try:
        import av.logging
    except ImportError:
        return
    av.logging.set_level(av.logging.WARNING if verbose else None)
