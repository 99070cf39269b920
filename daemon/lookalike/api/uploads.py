"""Uploaded images decoded in worker processes, as the daemon decodes its folders' files.

An upload is a stranger's bytes handed to native decoders, which can crash or run away on a
hostile file: decoding one in the daemon's own process would let it take the daemon down. So
uploads go to spawned workers (workers.UploadWorkers) of their own, apart from the folders' workers
so that queries never hold back ingest; a worker that dies or overruns `api.request_timeout`
answers `crashed` or `timeout` for its upload and is replaced.

Request threads call `extract`, which waits for the result; one thread feeds the workers and
hands results back, since a `Workers` is driven from one thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future
from multiprocessing.connection import wait as wait_for

from ..errors import ImageError, LookalikeError
from ..extract import Query, Unreadable
from ..settings import ExtractionSettings
from ..workers import Upload, UploadWorkers

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5            # how often an overrun is looked for while nothing else happens


class Stopping(LookalikeError):
    """The daemon stopped before an upload's turn came."""


class UploadExtractor:
    def __init__(self, processes: int, settings: ExtractionSettings, timeout: float):
        self._workers = UploadWorkers(processes, settings, timeout)
        self._serials = itertools.count()
        self._lock = threading.Lock()
        self._queued: deque[tuple[Upload, Future]] = deque()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = threading.Event()
        # An overrun is found when the thread wakes: often enough for the shortest timeout too.
        self._poll = min(POLL_SECONDS, timeout / 2)
        self._thread = threading.Thread(target=self._run, name="api-uploads", daemon=True)
        self._thread.start()

    def extract(self, name: str, data: bytes) -> Future:
        """A future of the upload's Query (`query`), so that two uploads are decoded at once."""
        future: Future = Future()
        with self._lock:
            if self._stopping.is_set():
                raise Stopping("the daemon is stopping")
            self._queued.append((Upload(name, data, next(self._serials)), future))
            os.write(self._wake_write, b"\0")          # under the lock: stop closes it after
        return future

    @staticmethod
    def query(future: Future) -> Query:
        outcome = future.result()
        if isinstance(outcome, Unreadable):
            raise ImageError(outcome.path, outcome.reason, outcome.detail)
        return outcome

    def _run(self) -> None:
        waiting: dict[int, Future] = {}
        try:
            while not self._stopping.is_set():
                with self._lock:
                    while self._workers.free and self._queued:
                        upload, future = self._queued.popleft()
                        self._workers.submit(upload)
                        waiting[upload.serial] = future
                wait_for([self._wake_read, *self._workers.waitables()], self._poll)
                try:
                    while os.read(self._wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass
                for upload, outcome in self._workers.collect():
                    waiting.pop(upload.serial).set_result(outcome)
        except Exception:
            log.exception("the upload workers' thread failed; uploads are refused until a restart")
            self._stopping.set()
        finally:
            with self._lock:
                waiting.update((upload.serial, future) for upload, future in self._queued)
                self._queued.clear()
            for future in waiting.values():
                future.set_exception(Stopping("the daemon is stopping"))

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            os.write(self._wake_write, b"\0")
        self._thread.join(10)
        self._workers.stop()
        os.close(self._wake_read)
        os.close(self._wake_write)
