"""Ctrl-C and `kill` as a flag as well as an exception. Python raises KeyboardInterrupt
wherever the main thread happens to be; where that is a finaliser (a generator closed by the
garbage collector, a `__del__`) the exception is printed and dropped, and the run would
carry on to the end. The flag stays set, so code about to make a result final refuses."""
from __future__ import annotations

import signal
from typing import NoReturn

_received: list[int] = []  # the signals that asked this process to stop


def stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM (`kill`) raise KeyboardInterrupt and set the flag
    (main thread only: Python runs signal handlers there)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def stop_signal() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _received[-1] if _received else None


def check_not_stopped() -> None:
    """Raise KeyboardInterrupt if a stop was asked for, even if its exception was lost."""
    if _received:
        raise KeyboardInterrupt


def _handler(signum, frame) -> NoReturn:
    _received.append(signum)
    raise KeyboardInterrupt
