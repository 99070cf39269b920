"""The store stage's thread: the one writer of the search context.

Other threads hand it changes through a bounded queue (`submit` blocks when it is full, which
is the pipeline's back-pressure). It commits whatever is waiting, up to BATCH changes, in one
transaction; when idle each change lands at once.

BATCH is small because LMDB keeps every page a write transaction dirtied on a free list of its
own, in the writer's heap, until the environment closes: the largest transaction ever committed
sets the daemon's resident memory for good. One image's index postings land on about a
thousand pages of a 100,000-image context, so each image a batch may hold costs megabytes
for good, while batching saves little there: postings of different images rarely share a page
(measured: BENCHMARKS.md, "Images per commit").

A commit that fails (the disk or the map cap is full, an I/O error) is retried with back-off,
the batch kept whole; nothing is dropped and the daemon stays up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable

from ..errors import StoreError, StoreFullError
from .changes import Change
from .context import SearchContext

log = logging.getLogger(__name__)

BATCH = 8
_STOP = object()


@dataclass(frozen=True)
class _Awaited:
    """A change whose submitter waits for its result (Writer.apply)."""

    change: Change
    result: Future


class Writer(threading.Thread):
    def __init__(self, context: SearchContext, capacity: int = 256,
                 on_commit: Callable[[list[Change], list], None] | None = None,
                 on_trouble: Callable[[bool], None] | None = None, retry_seconds: float = 5.0):
        super().__init__(name="lookalike-store", daemon=True)
        self.context = context
        self._queue: queue.Queue = queue.Queue(capacity)
        self._on_commit = on_commit or (lambda changes, results: None)
        self._on_trouble = on_trouble or (lambda troubled: None)
        self._retry_seconds = retry_seconds
        self._stopping = threading.Event()
        self.last_progress = time.monotonic()

    # --- other threads -------------------------------------------------------------------

    def submit(self, change: Change) -> None:
        self._queue.put(change)

    def apply(self, change: Change, timeout: float | None) -> object:
        """Submit `change` and wait for its commit: its result (SearchContext.commit). StoreError
        when it is not committed within `timeout` seconds (None: no limit), in which case it stays
        queued and may land later, or when the writer stopped without writing it."""
        awaited = _Awaited(change, Future())
        self._queue.put(awaited)
        try:
            return awaited.result.result(timeout)
        except FutureTimeout:
            raise StoreError(str(self.context.directory), f"the change was not written within {timeout:.0f} s "
                             "(the store is busy or cannot write); it stays queued") from None

    @property
    def room(self) -> int:
        return self._queue.maxsize - self._queue.qsize()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change submitted so far is committed (or `timeout` passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def stop(self, timeout: float) -> bool:
        """Commit what is queued, then end. False if that did not finish within `timeout`."""
        self._queue.put(_STOP)
        self.join(timeout)
        self._stopping.set()
        return not self.is_alive()

    @property
    def stuck(self) -> bool:
        """Changes have waited for a minute while no commit returned: a write that hangs. A commit
        that fails and is retried is not stuck."""
        return self.waiting > 0 and time.monotonic() - self.last_progress > 60

    # --- the writer thread ---------------------------------------------------------------

    def run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            items = [item for item in batch if item is not _STOP]
            if items:
                changes = [item.change if isinstance(item, _Awaited) else item for item in items]
                results = self._commit(changes)
                for item, result in zip(items, results or [None] * len(items)):
                    if isinstance(item, _Awaited) and results is None:
                        item.result.set_exception(StoreError(str(self.context.directory),
                                                             "stopped before the change was written"))
                    elif isinstance(item, _Awaited):
                        item.result.set_result(result)
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _commit(self, changes: list[Change]) -> list | None:
        """Commit `changes`, retrying while the store cannot: their results, or None when the
        writer stopped first."""
        troubled = False
        while True:
            try:
                results = self.context.commit(changes)
            except StoreFullError as exc:
                problem = f"{exc.message}; indexing paused, retrying every {self._retry_seconds:.0f} s"
            except (StoreError, OSError) as exc:
                problem = f"cannot write the search context: {getattr(exc, 'message', exc)}; retrying"
            except Exception as exc:                    # lmdb.Error and the like: keep the batch, retry
                problem = f"cannot write the search context: {exc!r}; retrying"
            else:
                break
            if not troubled:
                log.error("%s", problem)
                troubled = True
                self._on_trouble(True)
            # Paused on purpose, and the gauge says why: not stuck. (A stuck writer stops the
            # systemd watchdog pings, and a restart frees no disk.)
            self.last_progress = time.monotonic()
            if self._stopping.wait(self._retry_seconds):
                log.error("stopping with %d changes not written; the next reconcile finds them again", len(changes))
                return None
        if troubled:
            log.info("the search context is writable again")
            self._on_trouble(False)
        self.last_progress = time.monotonic()
        self._on_commit(changes, results)
        return results
