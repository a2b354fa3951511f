"""Face finders lent out one look or one video at a time, so an analyser's looks and videos
run side by side (each on graphs of its own) and the next one gets warm graphs.

A finder holds MediaPipe graphs (~40 MB of native memory, not thread-safe): the pool keeps up
to `IDLE_FINDERS` for what comes next, the last returned lent first, and every finder it makes
shares one memory of the last pictures looked at (`LookMemory`): a job's look at its driving
clip's first frame answers that clip's tracker, whichever finder each has.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from .finding import FaceFinder, FinderConfig, LookMemory

#: Finders kept for the next looks and videos; more at once are made for the moment and closed after.
IDLE_FINDERS = 2


class FinderPool:
    """Lends `FaceFinder`s made with `config` (see the module docstring)."""

    def __init__(self, config: FinderConfig = FinderConfig()):
        self.config = config
        self.memory = LookMemory()
        self._idle: list[FaceFinder] = []  # the last returned at the end
        self._lock = threading.Lock()

    def borrow(self) -> FaceFinder:
        """An idle finder (the last returned: its graphs are warm), or a new one; give it back."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return FaceFinder(self.config, self.memory)

    def give_back(self, finder: FaceFinder) -> None:
        """Keep `finder` for the next borrower, or close it when enough are kept."""
        with self._lock:
            if len(self._idle) < IDLE_FINDERS:
                self._idle.append(finder)
                return
        finder.close()

    @contextmanager
    def lent(self) -> Iterator[FaceFinder]:
        """A finder for the length of a `with` block."""
        finder = self.borrow()
        try:
            yield finder
        finally:
            self.give_back(finder)

    def close(self) -> None:
        """Close the kept finders and forget the pictures looked at (lent ones close when given back)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for finder in idle:
            finder.close()
        self.memory.clear()
