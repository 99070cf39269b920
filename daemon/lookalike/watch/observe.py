"""Watchdog observers, turned into intents: which paths to look at again, what moved.

Events are hints, not truth (the reconcile scan is the truth), so this stage only normalises
and enqueues; it never stats, reads or decides. Three watchdog traps are handled here:

- an exception inside a handler ends the observer thread for good, so the handler body runs
  inside a catch-all, and `check()` restarts any observer that died anyway;
- on inotify queue overflow watchdog only logs a warning and delivers nothing, so a log
  handler on its logger turns that warning into a `Rescan`;
- a folder moved out of the tree yields one `DirDeletedEvent` and nothing for the files in
  it, so folder events are passed on as intents on the whole folder.

When the inotify watch or instance limit is reached, the folder falls back to polling. A folder
that is not there (a share not mounted yet) is not watched until `rewatch` is called for it; the
service notices it appear.
"""

from __future__ import annotations

import errno
import logging
import queue
from dataclasses import dataclass
from typing import Callable

from watchdog import events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import WatchedFolder
from .folders import Folders

log = logging.getLogger(__name__)

OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


@dataclass(frozen=True)
class Dirty:
    """Look at `path` (a file, or a folder that went away) once it has settled."""

    path: str
    quiet_since: float | None = None   # monotonic time it last changed; None: just now


@dataclass(frozen=True)
class Moved:
    source: str
    destination: str


@dataclass(frozen=True)
class Rescan:
    """Events were lost (overflow, a dead observer): reconcile every folder."""

    reason: str


Intent = Dirty | Moved | Rescan

_EVENTS = [events.FileCreatedEvent, events.FileModifiedEvent, events.FileClosedEvent, events.FileAttribEvent,
           events.FileMovedEvent, events.FileDeletedEvent, events.DirMovedEvent, events.DirDeletedEvent]


class _Handler(events.FileSystemEventHandler):
    def __init__(self, watcher: "Watcher"):
        self._watcher = watcher

    def dispatch(self, event: events.FileSystemEvent) -> None:
        try:
            self._watcher.on_event(event)
        except Exception:                                   # an escape would end the observer
            log.exception("could not handle the file-system event %r", event)
            self._watcher.count_error()


class _OverflowHook(logging.Handler):
    def __init__(self, intake: queue.SimpleQueue, count: Callable[[], None]):
        super().__init__(logging.WARNING)
        self._intake = intake
        self._count = count

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._count()
            self._intake.put(Rescan("the inotify event queue overflowed"))


class Watcher:
    def __init__(self, folders: Folders, intake: queue.SimpleQueue, metrics=None,
                 observer_factory: Callable[[WatchedFolder], BaseObserver] | None = None):
        self._folders = folders
        self._intake = intake
        self._metrics = metrics
        self._factory = observer_factory or _native_or_polling
        self._observers: dict[str, BaseObserver] = {}
        self._absent: set[str] = set()                  # folders missing when their watch was armed
        self._hook = _OverflowHook(intake, self._count_overflow)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).addHandler(self._hook)
        for folder in self._folders.all:
            self._start(folder)

    def _start(self, folder: WatchedFolder) -> None:
        try:
            observer = self._schedule(self._factory(folder), folder)
        except (FileNotFoundError, NotADirectoryError):
            self._absent.add(str(folder.path))
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            limit = "fs.inotify.max_user_watches" if exc.errno == errno.ENOSPC else "fs.inotify.max_user_instances"
            log.error("%s: the inotify limit %s is reached; polling this folder every %.0f s instead "
                      "(raise the limit with sysctl to get events again)", folder.path, limit, folder.poll_interval)
            observer = self._schedule(PollingObserver(timeout=folder.poll_interval), folder)
            if self._metrics:
                self._metrics.watch_degraded.inc()
        self._observers[str(folder.path)] = observer
        self._absent.discard(str(folder.path))

    def _schedule(self, observer: BaseObserver, folder: WatchedFolder) -> BaseObserver:
        try:
            observer.schedule(_Handler(self), str(folder.path), recursive=folder.recursive,
                              event_filter=_EVENTS, follow_symlink=folder.follow_symlinks)
            observer.daemon = True
            observer.start()
        except OSError:
            # The inotify reader starts with the first watch scheduled, before a refused or
            # missing folder raises: stopping the observer ends it and closes its descriptor.
            observer.stop()
            raise
        return observer

    def stop(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._hook)
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            if observer.is_alive():
                observer.join(2)
        self._observers.clear()

    def rewatch(self, folder: WatchedFolder) -> None:
        """Watch a folder afresh, by path (inotify watches follow the inode: a folder renamed
        away and back, or remounted, is not the one the old watch sees)."""
        observer = self._observers.pop(str(folder.path), None)
        if observer is not None:
            observer.stop()
        self._start(folder)

    def check(self) -> int:
        """Restart observers that died; each restart asks for a rescan. Returns how many."""
        restarted = 0
        for folder in self._folders.all:
            observer = self._observers.get(str(folder.path))
            if (observer is not None and observer.is_alive()) or str(folder.path) in self._absent:
                continue
            log.error("%s: the file-system watcher stopped; restarting it and rescanning", folder.path)
            try:
                self._start(folder)
            except OSError as exc:
                log.error("%s: cannot watch the folder: %s; it is still scanned every reconcile",
                          folder.path, exc.strerror or exc)
                continue
            restarted += 1
            if self._metrics:
                self._metrics.watcher_restarts.inc()
        if restarted:
            self._intake.put(Rescan("a file-system watcher was restarted"))
        return restarted

    @property
    def alive(self) -> bool:
        return all(observer.is_alive() for observer in self._observers.values())

    # --- events (observer threads) ---------------------------------------------------------

    def on_event(self, event: events.FileSystemEvent) -> None:
        if self._metrics:
            self._metrics.watch_events.labels(event.event_type).inc()
        source = _text(event.src_path)
        wants = self._folders.wants_folder if event.is_directory else self._folders.wants_file
        if event.event_type == events.EVENT_TYPE_MOVED:
            destination = _text(event.dest_path)
            had, has = wants(source), wants(destination)
            if had and has:
                self._intake.put(Moved(source, destination))
            elif had:
                self._intake.put(Dirty(source))            # moved out of the tree, or to an excluded name
            elif has:
                if not event.is_directory:                  # a folder moved in brings events for its files
                    self._intake.put(Dirty(destination))
        elif wants(source):
            self._intake.put(Dirty(source))

    def count_error(self) -> None:
        if self._metrics:
            self._metrics.internal_errors.labels("watch").inc()

    def _count_overflow(self) -> None:
        if self._metrics:
            self._metrics.watch_overflows.inc()


def _native_or_polling(folder: WatchedFolder) -> BaseObserver:
    if folder.mode == "poll":
        return PollingObserver(timeout=folder.poll_interval)
    return Observer()


def _text(path: str | bytes) -> str:
    return path if isinstance(path, str) else path.decode("utf-8", "surrogateescape")

