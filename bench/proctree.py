"""A process and its descendants, read from /proc: what the benchmarks measure memory of."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a daemon's extraction workers, a tool's children)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue                           # gone between listing and reading
            found += map(int, children)
            stack += map(int, children)
    return found


def status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmRSS, RssAnon, ...) in bytes; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    return sum(status_bytes(p, "VmRSS") for p in [pid, *descendants(pid)])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and its parts, in bytes: RssAnon (heap, stacks: what a leak grows) and RssFile
    (mapped files: libraries, and the LMDB map's pages the process touched, which the kernel
    can drop and read again)."""
    return {field: status_bytes(pid, field) for field in ("VmRSS", "RssAnon", "RssFile")}
