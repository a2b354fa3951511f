"""Handing memory back to the system, for a process that runs many jobs (the app) and for
loaders that read weights through temporary buffers.

glibc keeps freed heap pages (blocks below its mmap threshold, up to 32 MiB, which is most
of a network's tensors) and gives each thread that allocates at the same time its own arena,
so a server's resident memory would settle well above its baseline after a few jobs. Other
C libraries (macOS, musl) have no such calls: there the collector's work is all we do.
"""
from __future__ import annotations

import ctypes
import gc


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def limit_heap_arenas(count: int = 2) -> None:
    """At most `count` glibc heap arenas: with jobs on several threads the server's memory then
    returns to within a few MB of its baseline (bench/app_load.py). Call it before the threads start."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, count)  # M_ARENA_MAX


def freeze_startup_objects() -> None:
    """Collect once, then keep every object alive now (what a server built at start-up, which
    lives as long as it does) out of all later collections: `release_memory` then walks only
    what jobs made (a few ms instead of ~0.5 s)."""
    gc.collect()
    gc.freeze()


def release_memory(full: bool = False) -> None:
    """After a job, or after reading weights through temporary buffers: collect what was left
    and hand freed heap pages back to the system, so resident memory returns to its baseline.
    A full collection when `full` or once start-up objects are frozen (`freeze_startup_objects`),
    else the young generations only (a full one walks every object the process holds)."""
    gc.collect() if full or gc.get_freeze_count() else gc.collect(1)
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


__all__ = ["freeze_startup_objects", "limit_heap_arenas", "release_memory"]
