"""Paths the program reads and writes: input files that must exist, outputs that must not be
an input, and atomic writing.

Everything that leaves the program as a file goes through `atomic_output`: written beside the
target under a temporary name (tagged with this host and process) and renamed into place only
when complete, so a failed or cancelled run never leaves a half-written file or destroys an
existing one, and a later run removes what a killed one left. Output paths are checked
(`check_output`, `check_output_folder`) before any work.
"""
from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .disk_space import disk_full
from .errors import InputError, OptionError
from .interrupts import check_not_stopped


def existing_file(path: str | Path, what: str = "file") -> Path:
    """`path` as a Path if it names a readable file; an InputError that says what it is otherwise."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not {what}; give the file itself")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file (a device or pipe?); give {what}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (cannot read it)")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (also through links), without needing `b` to exist."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write the output to. When the block ends normally
    the file is renamed to `path` (replacing any earlier file in one step); when it fails or
    is interrupted the temporary file is removed and an existing `path` is left untouched; a
    write that finds the disk full is a DiskFullError naming `path` and the space it needs."""
    path = Path(path)
    remove_stale_leftovers(path)
    tmp = path.with_name(f".{path.name}.{owner_tag()}-{secrets.token_hex(4)}.partial{path.suffix}")
    with disk_full(path):  # outside the clean-up: the message's free figure counts the partial's space
        try:
            yield tmp
            if not tmp.exists():
                raise InputError(f"nothing was written for {path.name}")
            check_not_stopped()  # a Ctrl-C whose exception a finaliser swallowed still keeps the earlier file
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def host_tag() -> str:
    """This machine's name as written in the names of partial files and scratch folders."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"


def owner_tag(pid: int | None = None) -> str:
    """Host and process that own a partial file or scratch folder, as written in its name."""
    return f"{host_tag()}-{os.getpid() if pid is None else pid}"


def scratch_prefix(path: Path) -> str:
    """Name start of this process's scratch folders beside `path` (hidden, with our host and
    PID, so a later run can tell a killed run's leftovers from a running one's)."""
    return f".{path.name}.vivid-{owner_tag()}-"


def remove_stale_leftovers(path: Path) -> None:
    """Delete what earlier runs on this machine writing `path` left when they were killed
    outright (SIGKILL, power loss: no clean-up code runs): partial files and scratch folders,
    recognised by their whole name, whose process is gone. A living process's files, other
    machines' files (a shared folder) and anything else are left alone."""
    _remove_dead(path.parent.glob(f".{glob.escape(path.name)}.*"), re.escape(path.name), re.escape(path.suffix))


def remove_dead_leftovers(folder: Path) -> int:
    """`remove_stale_leftovers` for every output in `folder` (a restarted server's job folders,
    whose targets it does not know); returns how many went."""
    return _remove_dead(folder.glob(".*"), r"[^/]+", r"(\.[^./]+)?")


def _remove_dead(candidates: Iterable[Path], name: str, suffix: str) -> int:
    """Remove the `candidates` that are partial files or scratch folders (of an output named
    like `name`, ending in `suffix`) of this machine's processes that are gone."""
    host, removed = re.escape(host_tag()), 0
    ours = re.compile(rf"\.{name}\.{host}-(\d+)-[0-9a-f]{{8}}\.partial{suffix}"
                      rf"|\.{name}\.vivid-{host}-(\d+)-[a-z0-9_]{{8}}")
    for old in candidates:
        found = ours.fullmatch(old.name)
        if not found or not owner_gone(int(next(g for g in found.groups() if g and g.isdigit())), old):
            continue
        try:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            removed += 1
        except OSError:  # gone already, or not ours to delete
            continue
    return removed


def _process_started() -> float:
    """When this process started (seconds since the epoch; Linux /proc, else the first import)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        import time

        return time.time()


#: When this process started: a file named with its PID but older than that is a previous
#: process's that had the same PID (a restarted container's app is often PID 1 again).
PROCESS_STARTED = _process_started()


def owner_gone(pid: int, path: Path) -> bool:
    """Whether process `pid`, named in `path`'s name as its owner, is gone: another PID that no
    longer runs, or this process's PID on a file made before this process started."""
    if pid == os.getpid():
        try:
            return path.lstat().st_mtime < PROCESS_STARTED - 1  # a second's slack: clocks and file times round
        except OSError:
            return False
    return not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process `pid` may still run (when in doubt: yes, so its files are kept)."""
    if os.name != "posix":  # on Windows signal 0 is CTRL_C_EVENT: never send it; keep the files
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or cannot tell): keep its files
    return True


def check_output(output: str | Path, inputs: Iterable[str | Path | None], suffix: str | None = ".mp4") -> Path:
    """An output file the program may write: the right suffix, in an existing writable
    folder, not a folder itself, and not one of the inputs (which the run would destroy)."""
    out = Path(output)
    if suffix is not None and out.suffix.lower() != suffix:
        raise OptionError(f"the output must be a {suffix} file, got {out.name}")
    if out.is_dir():
        raise OptionError(f"the output {out} is a folder; give a file name such as {out / ('result' + (suffix or ''))}")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise OptionError(f"the output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write to the output folder {folder} (permission denied)")
    if out.exists() and not out.is_file():
        raise OptionError(f"the output {out} exists and is not a regular file")
    for given in inputs:
        if given is not None and same_file(given, out):
            raise OptionError(f"the output {out.name} is one of the inputs; writing it would destroy that input, "
                              "choose another output name")
    return out


def check_output_folder(output: str | Path, inputs: Iterable[str | Path | None]) -> Path:
    """An output folder: a folder (or a name to create one with), not an existing file, and
    not holding any input (an input must not be overwritten or swept away with it)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OptionError(f"the output {out} is a file; give a folder for the results (a new or existing folder)")
    parent = out.resolve().parent
    if not out.exists() and not parent.is_dir():
        raise OptionError(f"the folder {parent} does not exist")
    target = out if out.exists() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write to {target} (permission denied)")
    for given in inputs:
        if given is not None and same_file(given, out):
            raise OptionError(f"the output folder {out} is one of the inputs; choose another folder")
    return out


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` lies inside `folder` (after resolving links)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


__all__ = [
    "atomic_output", "check_output", "check_output_folder", "existing_file", "host_tag", "is_inside", "owner_tag",
    "owner_gone", "process_alive", "remove_dead_leftovers", "remove_stale_leftovers", "same_file", "scratch_prefix",
]
