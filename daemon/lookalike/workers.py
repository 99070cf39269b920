"""Worker processes for native decoding: one job each, so a crash names its file.

Decoding is CPU-bound and runs native code that can crash or run away on hostile files, so it
runs in child processes started with `spawn`: a fresh interpreter that never inherits the
parent's LMDB environment (LMDB forbids using an environment across fork()). Each worker holds
at most one job. When a worker dies or overruns its time limit, the file it held is reported as
`crashed` or `timeout`, the worker is replaced, and every other file goes on. `Workers` runs any
picklable job function this way (the HTML report's thumbnails too); `ExtractWorkers` runs `examine`,
`UploadWorkers` the API's uploads (defined here, so that a worker imports no more than extraction).

The parent waits on the workers' pipes and process sentinels together with its own wake-up fd
(see `wait`), so results, deaths and signals all wake the same loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection

from .errors import ImageError
from .extract import Outcome, Query, Unreadable, examine, query_data
from .settings import ExtractionSettings

log = logging.getLogger(__name__)

START_METHOD = "spawn"


@dataclass(frozen=True)
class Job:
    path: str
    known_hash: bytes | None      # the stored content hash: equal bytes skip extraction


@dataclass(frozen=True)
class Upload:
    path: str                 # the name the upload goes by, in answers and messages
    data: bytes
    serial: int               # tells two uploads of one name apart


def _examine(settings: ExtractionSettings, job: Job) -> Outcome:
    return examine(job.path, settings, job.known_hash)


def _examine_upload(settings: ExtractionSettings, upload: Upload) -> Query | Unreadable:
    try:
        return query_data(upload.path, upload.data, settings)
    except ImageError as exc:
        return Unreadable(upload.path, exc.reason, exc.detail)


def _serve(conn: Connection, handle: Callable) -> None:
    # Ctrl-C and systemd's stop signal reach the whole process group; the parent decides
    # when workers end (it closes their pipes), so a stop never kills a job half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A daemon that was killed (SIGKILL, OOM) closes its ends without a word: the worker hears
    # EOF, a reset or a broken pipe, and simply ends (a traceback would read as a second failure).
    while True:
        try:
            job = conn.recv()
        except (EOFError, ConnectionResetError):
            return
        if job is None:
            return
        result = handle(job)
        try:
            conn.send(result)
        except (BrokenPipeError, ConnectionResetError):
            return


class _Worker:
    def __init__(self, context, handle: Callable, kind: str):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, handle), name=f"lookalike-{kind}", daemon=True)
        self.process.start()
        child.close()
        self.job = None
        self.started = 0.0


class Workers:
    """`count` spawned processes, each running `handle(job)` for one job at a time.

    `handle` must be picklable (a module-level function, or a `partial` of one): it is sent to
    each new process. `lost(job, reason, detail)` makes the result of a job whose process died
    (`crashed`) or overran `job_timeout` (`timeout`). Jobs need a `path`, for `busy`; `kind`
names the workers in process names and the log."""

    def __init__(self, count: int, handle: Callable, lost: Callable, job_timeout: float, kind: str):
        self._context = multiprocessing.get_context(START_METHOD)
        assert self._context.get_start_method() != "fork"
        self._handle, self._lost, self._kind = handle, lost, kind
        self._timeout = job_timeout
        self._workers = [_Worker(self._context, handle, kind) for _ in range(count)]

    @property
    def free(self) -> int:
        return sum(w.job is None for w in self._workers)

    @property
    def busy(self) -> list[str]:
        return [w.job.path for w in self._workers if w.job is not None]

    def submit(self, job) -> None:
        worker = next(w for w in self._workers if w.job is None)
        worker.job, worker.started = job, time.monotonic()
        worker.conn.send(job)

    def waitables(self) -> list:
        return [w.conn for w in self._workers if w.job] + [w.process.sentinel for w in self._workers]

    def collect(self) -> list[tuple]:
        """Results ready now, and a `crashed`/`timeout` outcome for each worker lost meanwhile."""
        done = []
        for i, worker in enumerate(self._workers):
            job = worker.job
            if job is not None and worker.conn.poll():
                try:
                    done.append((job, worker.conn.recv()))
                    worker.job = None
                    continue
                except (EOFError, OSError):
                    pass                                    # died while sending: handled below
            if not worker.process.is_alive():
                code = worker.process.exitcode
                if job is not None:
                    detail = (f"the decoder process died (signal {-code})" if code and code < 0
                              else f"the decoder process exited with status {code}")
                    done.append((job, self._lost(job, "crashed", detail)))
                log.warning("%s worker %d ended (exit status %s); starting another", self._kind,
                            worker.process.pid, code)
                self._replace(i)
            elif job is not None and time.monotonic() - worker.started > self._timeout:
                done.append((job, self._lost(job, "timeout",
                                             f"no result after {self._timeout:g} s; the decoder was stopped")))
                self._replace(i)
        return done

    def _replace(self, i: int) -> None:
        old = self._workers[i]
        if old.process.is_alive():
            old.process.kill()
        old.process.join(1)
        old.conn.close()
        self._workers[i] = _Worker(self._context, self._handle, self._kind)

    def stop(self) -> None:
        """End every worker: idle ones are asked to exit, busy ones are killed (their files are
        not recorded, so the next reconcile finds them again)."""
        for worker in self._workers:
            if worker.job is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            else:
                worker.process.kill()
        for worker in self._workers:
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
            worker.conn.close()


class ExtractWorkers(Workers):
    """The extract stage's workers: `examine` on each `Job`, a lost one recorded `Unreadable`."""

    def __init__(self, count: int, settings: ExtractionSettings, job_timeout: float = 300.0):
        super().__init__(count, partial(_examine, settings),
                         lambda job, reason, detail: Unreadable(job.path, reason, detail),
                         job_timeout, kind="extract")


class UploadWorkers(Workers):
    """The API's workers: `query_data` on each `Upload`, a lost one answered `Unreadable`."""

    def __init__(self, count: int, settings: ExtractionSettings, job_timeout: float):
        super().__init__(count, partial(_examine_upload, settings),
                         lambda upload, reason, detail: Unreadable(upload.path, reason, detail),
                         job_timeout, kind="upload")
