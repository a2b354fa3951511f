"""Running out of disk space, said in the user's terms: the output's own name (not the
temporary file the write failed on), how much space it needs and how much there is.

Two moments: before a job (`check_room`, with an estimate of what it will write, so a job that
cannot fit is refused before minutes of work) and when a write fails with ENOSPC or EDQUOT
(`disk_full`, which turns the system's "[Errno 28] No space left on device: '/x/.tmp123'" into
one line naming the output). A write that filled the disk used up all that was free, so the
figure after its partial file is removed ("needs more than N MB") is a true lower bound.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DiskFullError

#: errno values that mean "no room for this write" (a full disk, a user's quota).
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
#: The same, as libraries that wrap the system's error in their own class word it
#: (safetensors: "I/O error: No space left on device (os error 28)").
DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is a write that found no room."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        if not isinstance(exc, OSError) and DISK_FULL_TEXT.search(str(exc)):  # e.g. safetensors' own error class
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Bytes a normal user may still write on the disk holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def size_text(nbytes: float) -> str:
    """A byte count for people: 850 KB, 12.5 MB, 3.2 GB."""
    if nbytes < 1e6:
        return f"{max(nbytes, 0) / 1e3:.0f} KB"
    if nbytes < 1e9:
        return f"{nbytes / 1e6:.1f} MB"
    return f"{nbytes / 1e9:.2f} GB"


def disk_full_error(path: str | Path, needed: int | None = None, what: str | None = None) -> DiskFullError:
    """The one-line refusal for `path` not fitting: the space needed ("more than" the free space
    when only that is known) and the space free."""
    free, folder = free_bytes(Path(path).parent), Path(path).absolute().parent
    if needed and needed > free:
        need = f"at least {size_text(needed)} and {size_text(free)} is free in {folder}"
        figures = f"needs at least {size_text(needed)}, {size_text(free)} free"
    else:
        need = f"more than the {size_text(free)} free in {folder}"
        figures = f"needs more than the {size_text(free)} free"
    return DiskFullError(f"no space left on the disk for {what or path}: it needs {need}; "
                         "free some space or write elsewhere", str(path), figures)


def check_room(path: str | Path, needed: int, what: str | None = None) -> None:
    """Refuse before any work when the disk holding `path` has less than `needed` bytes free."""
    if free_bytes(Path(path).parent) < needed:
        raise disk_full_error(path, needed, what)


@contextmanager
def disk_full(path: str | Path, what: str | None = None, needed: int | None = None) -> Iterator[None]:
    """Within the block, a write that finds the disk full (whatever file it was writing: a
    temporary one, a scratch folder's) is raised as a DiskFullError naming `path`. Put it
    outside the clean-up of the block's partial files, so the free figure counts their space.
    `needed`: what the output takes when known (an earlier copy's size), said when above the free space."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full_error(path, needed, what) from exc


#: Bytes an H.264 video takes per pixel of each frame, at the least (CRF 18 on a still face: a
#: talking head at 512 px takes 4-10 KB a frame): a floor, so the check before a job never
#: refuses one that would fit.
VIDEO_BYTES_PER_PIXEL = 0.01


def video_bytes(frames: int, width: int, height: int) -> int:
    """The least space an mp4 of `frames` frames of `width` x `height` takes (plus its header)."""
    return int(frames * width * height * VIDEO_BYTES_PER_PIXEL) + 64_000


def as_disk_full(exc: BaseException) -> DiskFullError | None:
    """`exc` as the one-line DiskFullError when it is a write that found no room (one raised
    where no `disk_full` block named the output: the file the system names is used, or the
    current folder); None otherwise. For front ends' last line of defence."""
    if isinstance(exc, DiskFullError):
        return exc
    if not is_disk_full(exc):
        return None
    cause, seen = exc, set()
    while cause is not None and getattr(cause, "filename", None) is None and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    name = getattr(cause, "filename", None) if cause is not None else None
    return disk_full_error(Path(name) if name else Path.cwd() / "output")


def directory_bytes(folder: str | Path) -> int:
    """Bytes the files under `folder` take (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


__all__ = ["DISK_FULL", "as_disk_full", "check_room", "directory_bytes", "disk_full", "disk_full_error", "free_bytes",
           "is_disk_full", "size_text", "video_bytes"]
