"""Types that several layers share, kept apart from any one of them so that none imports
another only for a type."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class FileIdentity:
    """What the reconcile compares to decide whether a file changed without reading it."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class Cancelled(Exception):
    """A long pass (a reconcile walk, a timed pass) stopped because the daemon is stopping."""
