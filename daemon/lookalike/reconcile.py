"""The reconcile stage: walk the watched folders and compare them with the search context.

Events are hints; this walk is the truth. It runs at start, on a timer, after an event
overflow and after a watcher restart, and finds what events missed: files added, changed or
deleted while the daemon was down, or while events were lost. It costs one stat per unchanged
file and reads nothing; every file that differs from the context (new, other size or mtime,
gone) is handed to the same settle -> check path that events use.

Symlinks are not followed unless the folder says so, and then a set of visited folders stops
loops. A folder that cannot be listed is logged and skipped, and nothing under it is treated
as deleted (a missing file is removed only when a stat says ENOENT, in the check).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from array import array
from queue import Empty, Full, Queue
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .config import WatchedFolder
from .imaging.decode import unchanged
from .store import SearchContext
from .types import Cancelled, FileIdentity
from .watch.folders import Folders
from .watch.observe import Dirty, Intent
from .watch.settle import monotonic_since

log = logging.getLogger(__name__)

PAGE = 1024               # paths compared with the context per read transaction


@dataclass
class Summary:
    files: int = 0
    new: int = 0
    changed: int = 0
    missing: int = 0
    seconds: float = 0.0
    folders_down: list[str] = field(default_factory=list)

    @property
    def discrepancies(self) -> int:
        return self.new + self.changed + self.missing


class Finds:
    """The walk's finds on their way to the settle queue. The walk puts, and waits while
    `capacity` finds wait already, so a walk that finds a flood of new files feeds them at the
    pipeline's pace and holds no more than that; the service loop takes them as it has room."""

    def __init__(self, capacity: int, stop: threading.Event):
        self._queue: Queue = Queue(capacity)
        self._stop = stop

    def put(self, intent: Dirty) -> None:
        """Hand one find over; raises Cancelled if the daemon stops while it waits for room."""
        while True:
            try:
                self._queue.put(intent, timeout=0.1)
                return
            except Full:
                if self._stop.is_set():
                    raise Cancelled() from None

    def take(self) -> Dirty | None:
        """The oldest find, or None if there is none."""
        try:
            return self._queue.get_nowait()
        except Empty:
            return None


def walk(folder: WatchedFolder, folders: Folders, stop: threading.Event) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every wanted file under `folder`, in no particular order."""
    pending = [str(folder.path)]
    visited: set[tuple[int, int]] = set()
    while pending:
        if stop.is_set():
            raise Cancelled()
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
            if folder.follow_symlinks:
                st = os.stat(directory)
                if (st.st_dev, st.st_ino) in visited:
                    continue
                visited.add((st.st_dev, st.st_ino))
        except OSError as exc:
            log.warning("%s: cannot list this folder (%s); its files are left as they are",
                        directory, exc.strerror or exc)
            continue
        # The listing is read whole, so no folder stays open while the walk waits for room in
        # the settle queue (an open folder blocks an unmount), and is used up as it goes: each
        # entry keeps its stat once asked, which adds up in a large folder (BENCHMARKS.md, "What a
        # reconcile holds").
        listed.reverse()
        while listed:
            entry = listed.pop()
            path = entry.path
            try:
                if entry.is_dir(follow_symlinks=folder.follow_symlinks):
                    # A nested folder walks its own files, but below a non-recursive one the
                    # files are this folder's again (Folders.folder_of), so go through it.
                    owner = folders.folder_of(path)
                    if (folder.recursive and folders.wants_folder(path)
                            and (owner is folder or (owner is not None and not owner.recursive))):
                        pending.append(path)
                elif (entry.is_file(follow_symlinks=folder.follow_symlinks) and folders.wants_file(path)
                      and folders.folder_of(path) is folder):
                    yield path, entry.stat(follow_symlinks=folder.follow_symlinks)
            except OSError:
                continue                                  # vanished while listed, or a dangling link


def reconcile(folders: Folders, context: SearchContext, emit: Callable[[Intent], None],
              root_is_up: Callable[[WatchedFolder], bool], stop: threading.Event) -> Summary:
    """Emit a Dirty intent for every path where the folders and the context disagree.

    What it holds does not grow with the collection but by 8 bytes per file walked: walked
    files are compared with the context a page at a time, and then the context's paths are read
    a page at a time against a sorted array of the walked paths' hashes, to find the missing."""
    started = time.monotonic()
    summary = Summary()
    for folder in folders.all:
        root = str(folder.path)
        if not root_is_up(folder):
            summary.folders_down.append(root)
            continue
        # Salted afresh for each walk: a gone file whose hash collides with a walked file's (one
        # chance in about 10^13 per gone file, at a million files) is hidden from one walk only.
        salt = random.getrandbits(64)
        walked = array("q")
        page: list[tuple[str, os.stat_result]] = []
        for path, st in walk(folder, folders, stop):
            summary.files += 1
            walked.append(hash((salt, path)))
            page.append((path, st))
            if len(page) == PAGE:
                _compare(page, context, emit, summary)
                page.clear()
        _compare(page, context, emit, summary)
        seen = np.sort(np.frombuffer(walked, dtype=np.int64))
        del walked
        for paths in context.paths_under(root, PAGE):
            if stop.is_set():
                raise Cancelled()
            for path in _not_in(seen, paths, salt):
                # A nested watched folder walks its own files; a path under no folder any more goes.
                if folders.folder_of(path) in (folder, None):
                    summary.missing += 1
                    emit(Dirty(path, 0.0))
    summary.seconds = time.monotonic() - started
    return summary


def _compare(walked: list[tuple[str, os.stat_result]], context: SearchContext, emit: Callable[[Intent], None],
             summary: Summary) -> None:
    known = context.identities([path for path, _ in walked])
    for path, st in walked:
        identity = known.get(path, False)
        if identity is False:
            summary.new += 1
        elif not unchanged(FileIdentity.of(st), identity):
            summary.changed += 1
        else:
            continue
        emit(Dirty(path, monotonic_since(st.st_mtime)))


def _not_in(seen: np.ndarray, paths: list[str], salt: int) -> list[str]:
    """The paths whose salted hash is not in the sorted array `seen`."""
    if not len(seen):
        return paths
    hashes = np.fromiter((hash((salt, path)) for path in paths), dtype=np.int64, count=len(paths))
    at = np.minimum(np.searchsorted(seen, hashes), len(seen) - 1)
    return [path for path, found in zip(paths, seen[at] == hashes) if not found]
