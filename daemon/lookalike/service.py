"""The daemon (`lookalike run`): starts the stages, feeds them, schedules, stops them.

    watch ─┐
           ├─> intents ─> settle ─> check ─> extract (worker processes) ─> store (writer thread)
 reconcile ┘                          └──────── remove / fail ───────────────┘
                                                   duplicates (thread, on a schedule) ─> reports

Who runs what:
  main thread        this loop: intents into the settler, settled paths checked against the
                     context, jobs to workers, results and removals to the writer, timers
                     (schedule.py), signals, sd_notify. It is the only thread that decides.
  observer threads   watch/observe.py: enqueue intents, nothing else
  reconcile thread   reconcile.py: walks the folders of the watched roots that are up
                     (watch/roots.py), hands its finds over as the settle queue makes room
                     (it waits meanwhile)
  duplicates thread  one pass at a time: verify candidates, group, publish reports (reads only)
  api threads        api/: answer HTTP queries from the open context; their writes (tags) go to
                     the writer; uploads are decoded in worker processes of their own
  store thread       store/writer.py: the only writer of the LMDB environment
  worker processes   workers.py (spawned, never forked): read, decode, extract

A path is never in two places at once: a settled path that is still being extracted waits
until its result has been handed to the writer, whose queue is FIFO, so a deletion that
follows an extraction is always applied after it.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from contextlib import ExitStack
from multiprocessing.connection import wait as wait_for
from queue import Empty, SimpleQueue
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from .api import ApiServer
from .config import Config
from .duplicates import PassStats
from .duplicates_pass import report_document
from .errors import ConfigError, LookalikeError, display_path
from .imaging.decode import unchanged
from .logs import configure_logging
from .metrics import Metrics
from .notify import Notifier
from .reconcile import Finds, reconcile
from .reports.publish import publish
from .record import Recorder
from .reload import reread
from .reports.text import counted
from .schedule import BackgroundPass, Schedule
from .statedir import open_context, state_lock
from .store import SearchContext
from .store.changes import Change, Move, Remove
from .store.writer import Writer
from .types import Cancelled, FileIdentity
from .watch.folders import Folders
from .watch.observe import Dirty, Moved, Rescan, Watcher
from .watch.roots import Roots
from .watch.settle import Settler
from .watchlist import Watchlist
from .workers import ExtractWorkers, Job

log = logging.getLogger("lookalike")

TICK_SECONDS = 0.25
# A single write() sets the mtime when it starts, so a read overlapping it can see the same size
# and mtime before and after and still hold a mix of old and new bytes. A file modified this
# close to its read is not trusted (borg's rule): it settles and is read again.
SETTLED_AGE_SECONDS = 1.0
FOUND_BUFFER = 1000          # the reconcile's finds on their way to the settle queue
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)




class Service:
    def __init__(self, config: Config, metrics: Metrics | None = None, notifier: Notifier | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.folders = Folders(config.watch)
        self._intake: SimpleQueue = SimpleQueue()                   # the watcher's intents
        self._stop = threading.Event()
        self._finds = Finds(FOUND_BUFFER, self._stop)                # the reconcile's
        self._settler = Settler(config.settle_seconds, config.settle_queue_limit)
        self._dropped = 0                                           # events refused since the last catch-up
        self._signals: list[int] = []
        self._checked: dict[str, tuple[FileIdentity, float]] = {}   # identity and time at hand-out
        self._recorder = Recorder(self.metrics)
        self.roots = Roots(self.metrics)
        self._reconcile = BackgroundPass("reconcile", self._reconcile_pass,
                                         self.metrics.internal_errors.labels("reconcile").inc)
        self._duplicates = BackgroundPass("duplicates", self._duplicates_pass,
                                          self.metrics.internal_errors.labels("duplicates").inc)
        self._schedule = Schedule(config, self.notifier.watchdog_interval)
        self.watcher = Watcher(self.folders, self._intake, self.metrics)
        self._stop_deadline = float("inf")                 # set when the stop begins
        self.context: SearchContext | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_write)
        try:
            with state_lock(self.config.state_dir), ExitStack() as running:
                # First: a port in use fails the start before anything is created or started.
                metrics_server = self._serve_metrics(self.config.metrics_listen)
                running.callback(self._stopped)
                running.callback(metrics_server.server_close)
                running.callback(metrics_server.shutdown)
                try:
                    self._start(running)
                    while not self._stop.is_set():
                        wait_for([wake_read, *self.workers.waitables()], TICK_SECONDS)
                        _drain(wake_read)
                        self._step()
                finally:
                    self._stopping()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)
        return 0

    def _on_signal(self, signum, frame) -> None:
        self._signals.append(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop.set()

    def _start(self, running: ExitStack) -> None:
        """Start the stages; each one started is stopped, in reverse order, when `running` closes."""
        config = self.config
        self.context = open_context(config)
        running.callback(self.context.close)
        self.writer = Writer(self.context, on_commit=self._recorder.committed,
                             on_trouble=self._recorder.store_trouble)
        self.writer.start()
        running.callback(self._stop_writer)
        running.callback(self._join_passes)               # the duplicates pass writes through the writer
        self.watchlist = Watchlist(self.context, self.writer, self.metrics, lambda: self.config)
        self.watchlist.start()
        running.callback(self.watchlist.stop, 2.0)        # a check takes milliseconds; it writes through the writer
        self.workers = ExtractWorkers(config.workers, config.extraction)
        running.callback(self._stop_workers)
        for folder in config.watch:
            self.roots.is_up(folder)
        self.watcher.start()
        running.callback(self._stop_watching)
        if config.api.enabled:
            api = ApiServer(config.api, self.context, self.writer, config.reports, self.metrics, self._queues,
                            config.source)
            running.callback(api.stop)
        self._reconcile.request()
        self._schedule.start(time.monotonic())
        log.info("watching %s; context %s (%s); %s",
                 ", ".join(str(f.path) for f in config.watch), config.context_dir,
                 counted(self.context.count(), "image"), counted(config.workers, "worker"))
        self.notifier.ready("started; reconciling the watched folders")

    def _queues(self) -> dict[str, int]:
        """The queues' lengths now, for the API's status (read from its threads: each is one len())."""
        return {"settling": len(self._settler), "extracting": len(self.workers.busy), "storing": self.writer.waiting}

    def _serve_metrics(self, listen: str) -> WSGIServer:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            server, _ = start_http_server(int(port), addr=host, registry=self.metrics.registry)
        except OSError as exc:
            raise LookalikeError(f"metrics.listen: cannot listen on {listen}: {exc.strerror or exc}") from None
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", server.server_port)
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("metrics.listen is %s: the metrics are reachable from other hosts", listen)
        return server

    def _stopping(self) -> None:
        """The first step of a stop; the stages started stop after it, newest first."""
        self._stop_deadline = time.monotonic() + self.config.stop_timeout
        self.notifier.stopping()
        log.info("stopping")
        self._stop.set()

    def _stop_watching(self) -> None:
        self.watcher.stop()                               # the one watching now (a reload replaces it)

    def _stop_workers(self) -> None:
        # Let running extractions finish while there is time; what does not finish is not
        # recorded, and the next start's reconcile finds those files again.
        while self.workers.busy and time.monotonic() < self._stop_deadline - 3:
            wait_for(self.workers.waitables(), 0.2)
            self._collect()
        self.workers.stop()

    def _join_passes(self) -> None:
        for background in (self._reconcile, self._duplicates):
            background.join(max(0.1, self._stop_deadline - time.monotonic() - 2))

    def _stop_writer(self) -> None:
        if not self.writer.stop(max(0.5, self._stop_deadline - time.monotonic() - 0.5)):
            log.error("the store did not finish its last commit in time")

    def _stopped(self) -> None:
        self.notifier.close()
        log.info("stopped")

    # --- the loop ------------------------------------------------------------------------

    def _step(self) -> None:
        for stage in (self._handle_signals, self._take_intents, self._collect, self._dispatch, self._timers):
            try:
                stage()
            except Exception:
                log.exception("unexpected error in the service loop (%s); carrying on", stage.__name__)
                self.metrics.internal_errors.labels("service").inc()

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self.reload()
            elif signum == signal.SIGUSR1:
                log.info("SIGUSR1: finding duplicates now")
                self._duplicates.request()

    def _take_intents(self) -> None:
        while True:
            try:
                intent = self._intake.get_nowait()
            except Empty:
                break
            if isinstance(intent, Dirty):
                self._offer(intent.path, intent.quiet_since)
            elif isinstance(intent, Moved):
                self.writer.submit(Move(intent.source, intent.destination))
                self._offer(intent.source)
                self._offer(intent.destination)
            elif isinstance(intent, Rescan):
                log.warning("%s: reconciling every watched folder", intent.reason)
                self._reconcile.request()
        # The reconcile's finds fill half the queue at most: the other half keeps room for events,
        # so a file changed during a long walk is not left to the walk after it.
        half = max(1, self._settler.limit // 2)
        while len(self._settler) < half and (found := self._finds.take()) is not None:
            self._settler.touch(found.path, found.quiet_since)
        if self._dropped and len(self._settler) <= half:
            log.warning("events dropped while the settle queue was full: %d; reconciling to find their files",
                        self._dropped)
            self._dropped = 0
            self._reconcile.request()

    def _offer(self, path: str, quiet_since: float | None = None) -> None:
        """An event's path to the settle queue. When it is full the event is dropped, not held:
        a flood of new files must not grow the daemon's memory, and once the queue has drained
        to half, a reconcile finds every file whose event was dropped."""
        if self._settler.offer(path, quiet_since):
            return
        if not self._dropped:
            log.warning("%d paths wait to settle (settle_queue_limit): dropping events until half of them are "
                        "done, then reconciling", self._settler.limit)
        self._dropped += 1
        self.metrics.events_dropped.inc()

    def _dispatch(self) -> None:
        busy = set(self.workers.busy)
        # Leave the writer room for every result that may come back, so no put ever blocks.
        while self.workers.free and self.writer.room > 2 * self.config.workers + 8:
            paths = self._settler.take(1, skip=busy.__contains__)
            if not paths:
                return
            self._check(paths[0])

    def _check(self, path: str) -> None:
        """Stat a settled path and compare it with the context: extract, remove, or nothing."""
        self.metrics.files_seen.inc()
        folder = self.folders.folder_of(path)
        try:
            st = os.stat(path) if folder is not None and folder.follow_symlinks else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            if folder is None or self.roots.is_up(folder):
                self.writer.submit(Remove(path))
            return
        except OSError as exc:
            log.warning("%s: cannot stat (%s); left as it is", display_path(path), exc.strerror or exc)
            return
        if folder is None:
            self.writer.submit(Remove(path))              # its folder is no longer watched
        elif stat.S_ISDIR(st.st_mode):
            if not self.folders.wants_folder(path):
                self.writer.submit(Remove(path))
        elif stat.S_ISLNK(st.st_mode) or not self.folders.wants_file(path):
            self.writer.submit(Remove(path))              # replaced by a symlink, or now excluded
        else:
            identity = FileIdentity.of(st)
            known, known_hash = self.context.known(path)
            if unchanged(identity, known) or unchanged(identity, self._recorder.being_stored.get(path)):
                self.metrics.files_unchanged.inc()
                return
            self._checked[path] = (identity, time.time())
            self.workers.submit(Job(path, known_hash))

    def _collect(self) -> None:
        for job, outcome in self.workers.collect():
            identity, handed_out = self._checked.pop(job.path, (None, 0.0))
            modified = outcome.identity.mtime_ns / 1e9 if outcome.identity else None
            # (A future mtime, from a camera's wrong clock, says nothing about a write under way.)
            if modified and handed_out - SETTLED_AGE_SECONDS < modified <= time.time():
                self._settler.touch(job.path)             # written while (or just before) it was read
                continue
            change = self._recorder.record(job.path, outcome, identity, replacing=job.known_hash is not None)
            if change is None:
                self._settler.touch(job.path)
            else:
                self.writer.submit(change)

    def _timers(self) -> None:
        now = time.monotonic()
        schedule = self._schedule
        self._reconcile.poll()
        self._duplicates.poll()
        if schedule.reconcile.due(now):
            self._reconcile.request()
        backlog = len(self._settler)
        idle = not backlog and not self.workers.busy and not self.writer.waiting
        first_reconcile_done = self._reconcile.finished_once.is_set() and not self._reconcile.running
        if schedule.duplicates_due(now, backlog, idle, first_reconcile_done, self._duplicates.last_started):
            self._duplicates.request()
        if schedule.housekeeping.due(now):
            self._housekeeping()
        if schedule.summary.due(now):
            self._recorder.activity.summarise()
        if schedule.watchdog.due(now) and self._healthy():
            self.notifier.watchdog()

    def _housekeeping(self) -> None:
        self.watcher.check()
        for folder in self.config.watch:
            if self.roots.is_up(folder) and self.roots.take_back(folder):
                log.warning("%s: the watched folder is back; watching and reconciling it again", folder.path)
                self.watcher.rewatch(folder)
                self._reconcile.request()
        queued, busy = len(self._settler), len(self.workers.busy)
        self.metrics.files_queued.set(queued)
        self.metrics.files_in_flight.set(busy)
        self.metrics.store_queue.set(self.writer.waiting)
        images = self.context.count()
        self.metrics.images.set(images)
        self.metrics.context_size.set(self.context.size_on_disk())
        self.notifier.status(f"{images} images; {queued} waiting, {busy} extracting"
                             + ("; reconciling" if self._reconcile.running else "")
                             + ("; finding duplicates" if self._duplicates.running else ""))

    def _healthy(self) -> bool:
        return self.writer.is_alive() and not self.writer.stuck and self.watcher.alive

    # --- background passes ---------------------------------------------------------------

    def _reconcile_pass(self) -> None:
        summary = reconcile(self.folders, self.context, self._finds.put, self.roots.is_up, self._stop)
        self.metrics.reconcile_runs.inc()
        self.metrics.reconcile_last_success.set(time.time())
        self.metrics.reconcile_duration.observe(summary.seconds)
        for kind in ("new", "changed", "missing"):
            self.metrics.reconcile_discrepancies.labels(kind).inc(getattr(summary, kind))
        log.info("reconciled %s in %.1f s: %d new, %d changed, %d missing%s", counted(summary.files, "file"),
                 summary.seconds, summary.new, summary.changed, summary.missing,
                 f"; not available: {', '.join(summary.folders_down)}" if summary.folders_down else "")

    def _duplicates_pass(self) -> None:
        config = self.config
        started = time.monotonic()
        stats = PassStats()

        def progress(done: int, total: int) -> None:
            if self._stop.is_set():
                raise Cancelled()

        def apply(change: Change) -> None:
            """Through the writer, the context's only writer, and wait for it to land."""
            self.writer.submit(change)
            while not self.writer.flush(timeout=1.0):
                if self._stop.is_set():
                    raise Cancelled()

        try:
            document = report_document(self.context, config.duplicates_threshold, config.keep_rules,
                                       apply, progress, stats)
        finally:
            self.metrics.pairs_verified.inc(stats.verified)
        try:
            written = publish(document, config)
        except (OSError, LookalikeError) as exc:
            log.error("%s: cannot write the duplicate report: %s", config.reports,
                      getattr(exc, "strerror", None) or exc)
            self.metrics.report_write_failures.inc()
            return
        seconds = time.monotonic() - started
        images = sum(len(g["images"]) for g in document["groups"])
        self.metrics.duplicates_runs.inc()
        self.metrics.duplicates_duration.observe(seconds)
        self.metrics.duplicates_last_success.set(time.time())
        self.metrics.duplicate_groups.set(len(document["groups"]))
        self.metrics.duplicate_images.set(images)
        log.info("duplicates: %s, %s in groups; %s matched, %s verified in %.1f s; report %s",
                 counted(len(document["groups"]), "group"), counted(images, "image"),
                 counted(stats.matched, "image"), counted(stats.verified, "pair"), seconds, written[0])

    # --- reload --------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; apply it whole, or keep the running one and say why."""
        self.notifier.reloading()
        try:
            reloaded = reread(self.config)
        except ConfigError as exc:
            log.error("reload rejected; still running with the previous configuration.\n%s", exc.message)
            self.metrics.config_reload_ok.set(0)
            self.notifier.ready("reload rejected: invalid configuration")
            return False
        new = reloaded.config
        if reloaded.watch_changed:
            self.watcher.stop()
            self.folders = Folders(new.watch)
            self.watcher = Watcher(self.folders, self._intake, self.metrics)
            self.watcher.start()
            for gone in reloaded.folders_gone:
                self._settler.touch(gone, 0.0)              # its records go, unless another folder holds it
                self.roots.forget(gone)
            for folder in new.watch:
                self.roots.is_up(folder)                    # a folder not there yet: the warning, the gauge
        # A reload is also the operator's way to ask for a rescan (events are only hints).
        self._reconcile.request()
        self._settler.settle_seconds = new.settle_seconds
        self._settler.limit = new.settle_queue_limit
        self._schedule.retime(time.monotonic(), new)
        logging.getLogger().setLevel(new.log_level.upper())
        self.config = new
        self.metrics.config_reload_ok.set(1)
        log.info("configuration reloaded from %s", new.source)
        self.notifier.ready("configuration reloaded")
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def run_daemon(config: Config) -> int:
    """The daemon's entry: `lookalike run`. It lives here, not in the application layer, because
    the daemon serves the API, which is built on that layer."""
    # The context names every indexed file and the reports show them: for the daemon's user only.
    os.umask(0o077)
    configure_logging(config.log_level, config.log_format)
    return Service(config).run()
