"""Prepare training data: source videos -> DATA/clips/, DATA/index.jsonl, DATA/rejected.jsonl.

A run finds the videos, keeps its shard's share, skips the videos finished before (they have
a record in DATA/sources/), prepares the rest, in worker processes when asked, and rebuilds
the index from all records in DATA. The storage format is described in `clips`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from ..disk_space import directory_bytes, disk_full, disk_full_error, is_disk_full
from .clip_maker import ClipMaker, PrepareConfig
from .clips import ARRAYS_FILE, CLIPS, INDEX, REJECTED, SETTINGS, SOURCES, write_atomic, write_jsonl

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"})
#: Seconds between index rewrites during a long run (so a stopped run leaves a usable index).
REINDEX_EVERY = 300.0


class UsageError(ValueError):
    """Arguments or inputs that cannot work together; the message says which."""


# -- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One source video: where it is and its name relative to the input it came from."""

    path: Path
    key: str  # "<folder name>/<path inside it>" for a folder input, the file name for a file input

    @property
    def id(self) -> str:
        return video_id(self.key)


def video_id(key: str) -> str:
    """A stable folder-safe id: readable tail of the name plus a hash of the whole name, so
    the same video gets the same id on every run and on every machine."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", key)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[-40:].strip("_-") or "video"
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def find_sources(inputs: Iterable[str | Path]) -> list[Source]:
    """The videos named by `inputs` (files, or folders searched recursively for files with a
    video suffix), sorted by key; the same file given twice counts once."""
    found: dict[str, Source] = {}
    seen: set[Path] = set()
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            base = given.resolve().name
            candidates = [(p, f"{base}/{p.relative_to(given).as_posix()}") for p in sorted(given.rglob("*"))
                          if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(given).parts)]
            if not candidates:
                log.warning("%s: no video files in it (looked for %s)", given, " ".join(sorted(VIDEO_SUFFIXES)))
        elif given.is_file():
            candidates = [(given, given.name)]
        else:
            raise UsageError(f"{given}: no such file or folder")
        for path, key in candidates:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            if key in found:
                raise UsageError(f"{found[key].path} and {path} would get the same id ({key}); "
                                 "rename one or give their parent folders as inputs")
            found[key] = Source(path, key)
    return [found[k] for k in sorted(found)]


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise UsageError(f"--shard must be K/N with 1 <= K <= N (e.g. 1/4), not {text!r}")
    return int(m[1]), int(m[2])


def in_shard(source: Source, shard: tuple[int, int] | None) -> bool:
    """Whether shard K of N prepares this video: decided by a hash of its name alone, so
    every machine agrees without seeing the others' inputs, and shards never overlap."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha1(source.key.encode()).hexdigest()[-8:], 16) % n == k - 1


# -- summary -----------------------------------------------------------------------------
@dataclass
class Summary:
    """What DATA holds after a run, and what the run did."""

    clips: int = 0
    clip_seconds: float = 0.0
    videos: int = 0
    source_seconds: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    disk_bytes: int = 0
    prepared: int = 0  # videos prepared by this run
    skipped: int = 0  # videos this run found finished already
    failed: list[str] = field(default_factory=list)  # "source: error" for videos that raised
    system_failures: int = 0  # of those, the ones that failed for a reason other than their content

    def lines(self) -> list[str]:
        """The closing report, for people."""
        hours = self.clip_seconds / 3600
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items())) or "none"
        per_hour = f" ({self.disk_bytes / 1e9 / hours:.1f} GB per hour of clips)" if hours else ""
        lines = [
            f"kept {self.clips} clips, {hours:.3f} h ({self.clip_seconds:.0f} s), "
            f"from {self.videos} videos with {self.source_seconds / 3600:.3f} h of video",
            f"rejected {sum(self.rejected.values())}: {rejected}",
            f"disk used by clips: {self.disk_bytes / 1e9:.3f} GB{per_hour}",
            f"this run: {self.prepared} videos prepared, {self.skipped} already done, {len(self.failed)} failed",
        ]
        lines += [f"failed: {f}" for f in self.failed]
        return lines


def rebuild_index(data: str | Path) -> Summary:
    """Rewrite DATA/index.jsonl and rejected.jsonl from the video records in DATA/sources
    (sorted, atomically). A record whose clip folders have gone is dropped, so its video is
    prepared again on the next run."""
    data = Path(data)
    records = []
    for path in sorted((data / SOURCES).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable record (%s); its video will be prepared again", path, exc)
            path.unlink(missing_ok=True)
            continue
        gone = [c["id"] for c in record["clips"] if not (data / c["path"] / ARRAYS_FILE).is_file()]
        if gone:
            log.warning("%s: clip folders %s are missing; the video will be prepared again", record["source"], gone)
            path.unlink(missing_ok=True)
            continue
        records.append(record)
    clips = sorted((c for r in records for c in r["clips"]), key=lambda c: c["id"])
    rejected = sorted((x for r in records for x in r["rejected"]), key=lambda x: (x["source"], x["frames"] or [-1]))
    write_jsonl(data / INDEX, clips)
    write_jsonl(data / REJECTED, rejected)
    return Summary(
        clips=len(clips), clip_seconds=sum(c["seconds"] for c in clips), videos=len(records),
        source_seconds=sum(r["seconds"] for r in records), rejected=Counter(x["reason"] for x in rejected),
        disk_bytes=directory_bytes(data / CLIPS),
    )


# -- the run -----------------------------------------------------------------------------
def check_settings(data: Path, config: PrepareConfig) -> None:
    """Record the settings in a new DATA; refuse to add to a DATA made with other ones."""
    path = data / SETTINGS
    current = config.settings()
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in sorted(set(before) | set(current)) if before.get(k) != current.get(k)]
        if diff:
            what = ", ".join(f"{k} {before.get(k)!r} (now {current.get(k)!r})" for k in diff)
            raise UsageError(f"{data} was prepared with {what}; use the same settings or another -o folder")
    else:
        write_atomic(path, json.dumps(current, indent=2, sort_keys=True) + "\n")


_MAKER: ClipMaker | None = None


def _prepare_one(maker: ClipMaker, source: Source, data: Path) -> dict:
    """Prepare one video and write its record; an unexpected error is returned, not raised
    (no record is written, so the next run tries the video again)."""
    try:
        record = maker.make(source.path, str(source.path), source.id, data / CLIPS)
        write_atomic(data / SOURCES / f"{source.id}.json", json.dumps(record, sort_keys=True))
    except Exception as exc:  # one bad video must not end a long run
        log.debug("failed on %s", source.path, exc_info=True)
        return {"error": f"{source.path}: {type(exc).__name__}: {exc}", "cause": failure_cause(exc)}
    return record


def failure_cause(exc: BaseException) -> str:
    """Why a video failed: "disk full" (no other video will fit either), "content" (the video
    itself: damaged, undecodable: a ValueError that is no OSError) or "system" (anything else:
    a file that cannot be read or written, memory, a bug), which a script must notice."""
    if is_disk_full(exc):
        return "disk full"
    return "content" if isinstance(exc, ValueError) and not isinstance(exc, OSError) else "system"


def _init_worker(config: PrepareConfig, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _die_with_parent(parent)
    global _MAKER
    _MAKER = ClipMaker(config)


def _worker_task(source: Source, data: Path) -> dict:
    assert _MAKER is not None
    return _prepare_one(_MAKER, source, data)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the parent dies (even by SIGKILL), so no
    orphan keeps writing into DATA while a rerun starts."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def prepare(
    inputs: Sequence[str | Path],
    data: str | Path,
    config: PrepareConfig = PrepareConfig(),
    *,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> Summary:
    """Prepare every video of `inputs` (this shard's share) into `data`; rerunnable at any
    point. Returns the summary of what `data` holds afterwards."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    data = Path(data)
    sources = find_sources(inputs)
    if not sources:
        raise UsageError("no videos found in " + " ".join(map(str, inputs)))
    mine = [s for s in sources if in_shard(s, shard)]
    (data / CLIPS).mkdir(parents=True, exist_ok=True)
    (data / SOURCES).mkdir(exist_ok=True)
    check_settings(data, config)
    todo = [s for s in mine if not (data / SOURCES / f"{s.id}.json").is_file()]
    prepared, failed, kept, rejected, system_failures = 0, [], 0, 0, 0
    last_index = time.monotonic()
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="video", desc="preparing", disable=not progress)
    try:
        for result in _results(todo, data, config, workers):
            bar.update(1)
            if "error" in result:
                if result.get("cause") == "disk full":  # the next videos would find the disk full too
                    raise disk_full_error(data / CLIPS, None, f"the clips in {data / CLIPS}")
                failed.append(result["error"])
                if result.get("cause") != "content":
                    system_failures += 1
                log.warning("%s", result["error"])
                continue
            prepared += 1
            kept += len(result["clips"])
            rejected += len(result["rejected"])
            bar.set_postfix(clips=kept, rejected=rejected, refresh=False)
            if time.monotonic() - last_index > REINDEX_EVERY:
                rebuild_index(data)
                last_index = time.monotonic()
    finally:
        bar.close()
        with disk_full(data / INDEX, f"the index {data / INDEX}"):
            summary = rebuild_index(data)  # also when interrupted: the index lists what is finished
    summary.prepared, summary.skipped, summary.failed = prepared, len(mine) - len(todo), failed
    summary.system_failures = system_failures
    return summary


def _results(todo: list[Source], data: Path, config: PrepareConfig, workers: int) -> Iterable[dict]:
    """Records (or {"error": ...}) as videos finish, in this process or in `workers` processes."""
    if not todo:
        return
    if workers == 1 or len(todo) == 1:
        maker = ClipMaker(config)
        try:
            for source in todo:
                yield _prepare_one(maker, source, data)
        finally:
            maker.close()
        return
    context = multiprocessing.get_context("spawn")  # MediaPipe graphs do not survive fork
    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=context,
                               initializer=_init_worker, initargs=(config, os.getpid()))
    try:
        pending = {pool.submit(_worker_task, s, data) for s in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
