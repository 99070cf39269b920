"""The settle stage: hold each dirty path until it stops changing, then hand it on once.

A path is ready when no event arrived for `settle_seconds` and its (size, mtime) did not move
over that time, so a copy in progress, written in chunks, is read once and complete. Bursts of
events for one path (a 3 MB copy gives dozens) collapse into one entry. Paths wait in the order
they went quiet; a path touched again goes back to the end.

The queue is bounded for events (`offer`): a flood of new files must not grow the daemon's
memory with it, and a path refused here is not lost, since whoever offered it knows to
reconcile afterwards. Paths the pipeline hands back (`touch`) are always taken: they were
in the queue a moment ago.

Not thread-safe: the service loop owns it.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Callable

_Sample = tuple[int, int] | None          # (size, mtime_ns), or None when the path is missing


def sample(path: str) -> _Sample:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def monotonic_since(wall_time: float) -> float:
    """The monotonic time that corresponds to a wall-clock time in the past (file mtimes)."""
    return time.monotonic() - max(0.0, time.time() - wall_time)


class Settler:
    def __init__(self, settle_seconds: float, limit: int, clock: Callable[[], float] = time.monotonic,
                 probe: Callable[[str], _Sample] = sample):
        self.settle_seconds = settle_seconds
        self.limit = limit
        self._clock = clock
        self._probe = probe
        self._waiting: OrderedDict[str, tuple[float, _Sample]] = OrderedDict()   # by quiet_since
        self._ready: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._ready)

    def offer(self, path: str, quiet_since: float | None = None) -> bool:
        """`touch`, if the path is waiting already or there is room; False if it was refused."""
        if len(self) >= self.limit and path not in self._waiting and path not in self._ready:
            return False
        self.touch(path, quiet_since)
        return True

    def touch(self, path: str, quiet_since: float | None = None) -> None:
        """`path` changed at `quiet_since` (now if None); wait until it has been still long enough."""
        now = self._clock()
        self._ready.pop(path, None)
        if quiet_since is not None and quiet_since <= now - self.settle_seconds and path not in self._waiting:
            # Quiet for long already (a reconcile found it): first in line, no waiting.
            self._waiting[path] = (quiet_since, self._probe(path))
            self._waiting.move_to_end(path, last=False)
            return
        self._waiting.pop(path, None)
        self._waiting[path] = (now, self._probe(path))

    def _advance(self) -> None:
        now = self._clock()
        recheck = []
        while self._waiting:
            path, (quiet_since, seen) = next(iter(self._waiting.items()))
            if now - quiet_since < self.settle_seconds:
                break
            del self._waiting[path]
            current = self._probe(path)
            if current == seen:
                self._ready[path] = None
            else:                                  # still changing without events (polling, NFS)
                recheck.append((path, current))
        for path, current in recheck:
            self._waiting[path] = (now, current)

    def take(self, limit: int, skip: Callable[[str], bool] = lambda path: False) -> list[str]:
        """Up to `limit` settled paths, oldest first; paths for which `skip` is true stay."""
        self._advance()
        taken = []
        for path in self._ready:
            if len(taken) == limit:
                break
            if not skip(path):
                taken.append(path)
        for path in taken:
            del self._ready[path]
        return taken
