"""Whether each watched folder is there: a folder, on the device it was first seen on.

An unmounted share looks like an empty folder, so without this a reconcile would delete every
record under it. The reconcile and the check ask `is_up` before they take a missing file for a
deleted one. Whoever sees a folder come back (the reconcile thread, the service loop) marks it
back; only the service loop may re-arm its watch, so it takes the mark (`take_back`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading

from ..config import WatchedFolder

log = logging.getLogger(__name__)


class Roots:
    def __init__(self, metrics=None):
        self._metrics = metrics
        self._lock = threading.Lock()
        self._devices: dict[str, int] = {}
        self._down: set[str] = set()
        self._back: set[str] = set()

    def is_up(self, folder: WatchedFolder) -> bool:
        """The folder exists on the device it was first seen on. A change is logged once."""
        root = str(folder.path)
        with self._lock:
            try:
                st = os.stat(root)
                up = stat.S_ISDIR(st.st_mode) and self._devices.setdefault(root, st.st_dev) == st.st_dev
            except OSError:
                up = False
            if not up and root not in self._down:
                log.warning("%s: the watched folder is missing or unmounted; its records are kept until it is back",
                            root)
                self._down.add(root)
            elif up and root in self._down:
                self._back.add(root)
                self._down.discard(root)
            if self._metrics:
                self._metrics.folders_unavailable.set(len(self._down))
        return up

    def take_back(self, folder: WatchedFolder) -> bool:
        """Whether the folder came back since the last call (and so needs watching afresh)."""
        root = str(folder.path)
        with self._lock:
            if root not in self._back:
                return False
            self._back.discard(root)
            return True

    def forget(self, root: str) -> None:
        """A folder no longer watched: not down, not back, its device not remembered."""
        with self._lock:
            self._down.discard(root)
            self._back.discard(root)
            self._devices.pop(root, None)
