"""The animation jobs a server runs for its pages (the app's visitors).

One running job per page: a new job from the same page stops the one before; Cancel or a
closed page stops it, and the answer waits until the job has sent its last update (an update
still on its way would otherwise land after "cancelled" and stay). When a job ends, however
it ends, the memory it used goes back to the system (`vivid.memory.release_memory`), so a
server's resident memory returns to its baseline between visitors.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .animation import AnimationJob
from .memory import release_memory


@dataclass
class PageJob:
    """A page's running animation; `quiet` is set once it sends no more updates."""

    page: str | None
    job: AnimationJob
    quiet: threading.Event = field(default_factory=threading.Event)


class PageJobs:
    """The running job of each page (pages are named by their session key; None: no page)."""

    def __init__(self) -> None:
        self._jobs: dict[str, PageJob] = {}
        self._lock = threading.Lock()

    def add(self, page: str | None, job: AnimationJob) -> PageJob:
        """Register `job` as `page`'s running job, stopping the one it had."""
        entry = PageJob(page, job)
        if page:
            with self._lock:
                old = self._jobs.get(page)
                if old is not None:
                    old.job.stop()  # a new job from the same page replaces the old one
                self._jobs[page] = entry
        return entry

    def cancel(self, page: str | None, settle: float = 2.0) -> None:
        """Stop `page`'s running job (Cancel, or the page closed), waiting at most `settle`
        seconds for its last update to go out."""
        with self._lock:
            entry = self._jobs.pop(page, None) if page else None
        if entry is not None:
            entry.job.stop()
            entry.quiet.wait(settle)

    def finish(self, entry: PageJob) -> bool:
        """The page stopped following its job (the job ended, or the page's view was closed):
        no more updates, the job stopped if it still runs, the page let go and the memory
        handed back. True when the job was stopped midway (what it wrote is not a result)."""
        entry.quiet.set()
        stopped = entry.job.running
        if stopped:
            entry.job.close()
        with self._lock:
            if entry.page and self._jobs.get(entry.page) is entry:
                self._jobs.pop(entry.page, None)
        release_memory()
        return stopped


__all__ = ["PageJob", "PageJobs"]
