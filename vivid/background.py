"""Iterators that run ahead in background threads, through bounded queues.

For stage pipelines whose stages spend their time in native code that releases the GIL
(PyAV decoding and encoding, MediaPipe, OpenCV, NumPy): each stage works on the next item
while the following stage works on the current one. Queues hold at most `depth` items, so
memory stays flat however long the stream is. Errors raised in a stage come out of the
consuming iterator; closing the consuming iterator stops the threads behind it.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: How often a blocked stage looks whether its consumer has gone (seconds).
POLL = 0.1


class _Done:
    """End of a stage's items (or its error)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def run_ahead(items: Iterable[T], depth: int = 8, name: str = "stage") -> Iterator[T]:
    """`items`, produced in a thread of its own up to `depth` items ahead of the consumer."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    return
            put(_Done())
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Done(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (files, graphs) runs in its thread

    thread = threading.Thread(target=produce, name=f"vivid-{name}", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, depth: int = 8,
                name: str = "worker") -> Iterator[R]:
    """`fn(item)` for each item, computed by `workers` threads, yielded in the input order;
    at most `depth` items are in flight."""
    if workers < 1 or depth < 1:
        raise ValueError(f"workers and depth must be at least 1, got {workers} and {depth}")
    if workers == 1:  # each result handed on as soon as it is made (the first one too)
        yield from run_ahead(map(fn, items), depth, name)
        return
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"vivid-{name}") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= depth:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()
