"""What a benchmark's results record about where and what ran: the machine and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (f"{platform.node()}: {os.cpu_count()} cores ({model}), {memory / 2**30:.1f} GiB RAM, "
            f"kernel {platform.release()}, Python {platform.python_version()}")


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "daemon")
    return f"{commit}{' (daemon/ had uncommitted changes)' if dirty else ''}"


# Taken when a benchmark imports this module, before it runs: a run can outlast several commits.
_AT_START = _commit()


def revision() -> str:
    """The commit whose code this run imported."""
    return _AT_START
