"""A real small filesystem for the disk-full tests: a size-limited tmpfs mounted for the test
and removed after (needs root, or a system that lets this user mount; skipped otherwise)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def small_disk(size_kb: int) -> Iterator[Path]:
    """A folder on its own filesystem of `size_kb` KB, unmounted and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="vivid-small-disk-"))
    mount = shutil.which("mount")
    done = mount and subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size_kb}k,mode=1777", "tmpfs", str(folder)],
                                    capture_output=True, text=True)
    if not done or done.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root): " + (done.stderr.strip() if done else "no mount"))
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # a process still holds a file
        folder.rmdir()


def fill(folder: Path, leave_kb: int) -> Path:
    """A filler file that leaves about `leave_kb` KB free on `folder`'s filesystem."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler.bin"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave_kb * 1024))
    return filler


def free_kb(folder: Path) -> int:
    """KB free on `folder`'s filesystem."""
    return shutil.disk_usage(folder).free // 1024


def listing(folder: Path) -> list[str]:
    """Every name under `folder`, hidden ones too (a leftover partial file shows here)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


__all__ = ["fill", "free_kb", "listing", "small_disk"]
