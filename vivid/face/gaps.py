"""Fill short runs of frames where no face was found, from the neighbouring frames."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def fill_gaps(
    items: Iterable[T | None],
    max_gap: int,
    blend: Callable[[T, T, float], T],
) -> Iterator[tuple[T | None, bool]]:
    """Yield (item, was_filled) for each input, lazily and in order.

    A run of at most `max_gap` Nones between two items is filled with `blend(a, b, t)`;
    such a run at the start or the end is filled with its one neighbour. Longer runs stay
    None. Holds back at most `max_gap` inputs, so it works on streams of any length.
    """
    pending = 0  # Nones held back since the last item
    overflow = False  # the current run is already too long to fill
    last: T | None = None
    for item in items:
        if item is None:
            if overflow:
                yield None, False
                continue
            pending += 1
            if pending > max_gap:
                for _ in range(pending):
                    yield None, False
                pending, overflow = 0, True
            continue
        if not overflow:
            for k in range(1, pending + 1):
                yield (item if last is None else blend(last, item, k / (pending + 1))), True
        pending, overflow, last = 0, False, item
        yield item, False
    for _ in range(pending):
        yield (last, True) if last is not None else (None, False)
