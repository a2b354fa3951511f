"""The refusals every layer raises and every front end shows as one line.

At the bottom of the package (it imports nothing of `vivid`), so the module that detects a
problem raises it without importing the module that shows it, and the options, the media
checks, the saved-model checks and the pipeline all raise the same classes. Each is a
ValueError (or MemoryError) whose message says what is wrong and what to do.
"""
from __future__ import annotations

import errno
import re


class InputError(ValueError):
    """An input file or array that the program cannot use; the message says why."""


class OptionError(ValueError):
    """An option value (or combination) the program cannot use; the message names it and says
    what to do. `option` is the option's field name (the CLI shows it as its --flag)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class WeightsError(ValueError):
    """A weights file or saved model folder is missing, unreadable, or does not fit the network
    it is meant for."""


class DiskFullError(OSError):
    """An output did not fit on its disk: the message names the output (the path the user gave,
    not a temporary name), the space it needs and the space there is."""

    def __init__(self, message: str, path: str | None = None, figures: str = ""):
        super().__init__(errno.ENOSPC, message)
        self.path = path
        self.figures = figures  # the space needed and free, without paths: "needs at least 2 MB, 1 MB free"

    def __str__(self) -> str:
        return self.strerror


class GpuMemoryError(MemoryError):
    """The GPU ran out of memory; the message says which settings need less of it."""


def flag_message(exc: BaseException) -> str:
    """The message of `exc` with the option it names spelt as a command-line flag where it is
    first mentioned ("overlap must be ..." -> "--overlap must be ...", "needs weights" ->
    "needs --weights"): the command line's wording of the same refusal."""
    message, option = str(exc), getattr(exc, "option", None)
    if not option:
        return message
    return re.sub(rf"(?<![\w-]){re.escape(option)}\b", "--" + option.replace("_", "-"), message, count=1)


__all__ = ["DiskFullError", "GpuMemoryError", "InputError", "OptionError", "WeightsError", "flag_message"]
