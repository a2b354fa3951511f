"""One job at a time on a shared resource (a loaded diffusion model), first come first served,
each waiting job knowing its place in the queue (a visitor is shown "2 jobs ahead of yours").

A plain lock polled with a timeout would let any waiter in next (a job could wait for ever
behind later arrivals) and cannot say how many are ahead.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator


class TurnQueue:
    """Turns handed out in arrival order; `turn()` holds one for the length of a block."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()  # tickets in arrival order; the first holds the turn

    @property
    def busy(self) -> bool:
        """Whether a job holds the turn now."""
        with self._changed:
            return bool(self._queue)

    @property
    def waiting(self) -> int:
        """How many jobs wait for their turn now."""
        with self._changed:
            return max(0, len(self._queue) - 1)

    @contextmanager
    def turn(self, waiting: Callable[[int], None] = lambda ahead: None, interval: float = 0.25) -> Iterator[None]:
        """Wait for this caller's turn, calling `waiting(jobs ahead)` at least every `interval`
        seconds meanwhile (it may raise to give up: the place in the queue is given back), then
        hold the turn for the block."""
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
        try:
            while True:
                with self._changed:
                    ahead = self._queue.index(ticket)
                    if ahead:
                        self._changed.wait(interval)
                        ahead = self._queue.index(ticket)
                if not ahead:
                    break
                waiting(ahead)  # outside the lock: it may take time, or raise
            yield
        finally:
            with self._changed:
                self._queue.remove(ticket)
                self._changed.notify_all()


__all__ = ["TurnQueue"]
