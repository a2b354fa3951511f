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
import warnings

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
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, _Format):  # ours, from an earlier call
            root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(_Format(prog))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("vivid").setLevel(logging.INFO if verbose else logging.WARNING)
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


def _set_av_level(verbose: bool) -> None:
    """FFmpeg's own messages (e.g. `[h264 @ 0x..] Invalid NAL unit size` on a damaged file):
    off in a normal run (our reader reports damage itself), through logging with `verbose`."""
    try:
        import av.logging
    except ImportError:
        return
    av.logging.set_level(av.logging.WARNING if verbose else None)
