"""Folders a server writes each job's results into, deleted once they are older than a
maximum age (a public app must not fill its disk with visitors' uploads and results)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


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
    root.mkdir(parents=True, exist_ok=True)
    sweep_job_folders(root, max_age)
    return Path(tempfile.mkdtemp(prefix=f"{kind}_", dir=root))


__all__ = ["new_job_folder", "sweep_job_folders"]
