"""Write a benchmark's figures into bench/RESULTS.md, one section per benchmark."""
from __future__ import annotations

import platform
import re
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def record(section: str, body: str) -> None:
    """Replace (or add) `section` in RESULTS.md with `body` and the command that made it."""
    command = "python " + " ".join(sys.argv)
    stamp = time.strftime("%Y-%m-%d")
    block = (
        f"## {section}\n\n`{command}` ({stamp}, {platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()})\n\n{body.strip()}\n\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + block
    RESULTS.write_text(text)
    print(block)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
