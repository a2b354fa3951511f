"""Folders a server writes each job's results into, deleted once they are older than a
maximum age (a public app must not fill its disk with visitors' uploads and results), and
what a server killed mid-job left in them, swept when it starts again."""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from .disk_space import disk_full
from .paths import host_tag, owner_gone, owner_tag, remove_dead_leftovers


def sweep_job_folders(root: Path, max_age: float) -> int:
    """Delete the job folders (and stray files) in `root` older than `max_age` seconds;
    returns how many went."""
    if not root.is_dir():
        return 0
    cutoff, removed = time.time() - max_age, 0
    for job in root.iterdir():
        try:
            if job.stat().st_mtime < cutoff:
                shutil.rmtree(job, ignore_errors=True) if job.is_dir() else job.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def new_job_folder(root: Path, kind: str, max_age: float) -> Path:
    """A fresh folder for one job in `root` (named `kind_...`), after sweeping the old ones."""
    with disk_full(root / kind, f"a new job folder in {root}"):
        root.mkdir(parents=True, exist_ok=True)
        sweep_job_folders(root, max_age)
        return Path(tempfile.mkdtemp(prefix=f"{kind}_{owner_tag()}_", dir=root))  # the owner: swept if it is killed


def sweep_dead_jobs(root: Path) -> int:
    """After a restart: in the job folders of this machine's processes that are gone (killed
    mid-job), remove the partial files and scratch folders, and the job folder itself when no
    finished result is left in it. Finished results stay until their age is up. Returns how
    many folders went."""
    if not root.is_dir():
        return 0
    owned, removed = re.compile(rf"[a-z_]+?_{re.escape(host_tag())}-(\d+)_\w+"), 0
    for job in root.iterdir():
        found = owned.fullmatch(job.name)
        if not found or not job.is_dir() or not owner_gone(int(found.group(1)), job):
            continue
        remove_dead_leftovers(job)
        if not any(job.iterdir()):
            shutil.rmtree(job, ignore_errors=True)
            removed += 1
    return removed


__all__ = ["new_job_folder", "sweep_dead_jobs", "sweep_job_folders"]
