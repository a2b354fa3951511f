"""Keep the C++ libraries' start-up chatter (MediaPipe/TFLite/absl write straight to file
descriptor 2) out of what the user reads, for the command line and the app."""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: Messages that native code prints on its own and that say nothing to a user; each runs
#: to the end of its line (it may follow a progress bar on the same line).
NOISE = re.compile(
    rb"(?:[IWE]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\]"  # absl/glog: W0000 00:00:... file.cc:114] ...
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog"
    rb"|\S*symbol_database\.py:\d+: UserWarning: SymbolDatabase"
    rb"|\s+warnings\.warn\('SymbolDatabase)[^\r\n]*"
)


def clean(line: bytes) -> bytes | None:
    """The line without noise; None when nothing but noise was on it."""
    kept = NOISE.sub(b"", line)
    return None if line and not kept.strip(b"\r") else kept


def filter_native_stderr() -> None:
    """Route fd 2 through a thread that drops NOISE and passes everything else on.
    Call once, early, in a program's entry point (not in library code)."""
    if getattr(filter_native_stderr, "_installed", False):
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    original = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [c for c in map(clean, lines) if c is not None]
                if kept:
                    os.write(original, b"".join(c + b"\n" for c in kept))
                # Progress bars redraw with \r and no newline: pass them on as they come.
                if b"\r" in pending:
                    head, _, pending = pending.rpartition(b"\r")
                    shown = clean(head)
                    if shown:
                        os.write(original, shown + b"\r")
            if pending and (rest := clean(pending)):
                os.write(original, rest)

    thread = threading.Thread(target=pump, name="native-stderr-filter", daemon=True)
    thread.start()
    filter_native_stderr._installed = True  # type: ignore[attr-defined]

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(original, fd)  # closes the pipe's last writer: the pump sees EOF and finishes
        thread.join(timeout=2)

    atexit.register(drain)
