"""The daemon's timed work: the background passes (reconcile, duplicates) and what is due when.

The service loop asks `Schedule` once per tick what is due and does it; nothing here starts a
timer thread. A pass runs on a thread of its own (`BackgroundPass`), one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .config import Config
from .types import Cancelled

log = logging.getLogger("lookalike")

HOUSEKEEPING_SECONDS = 2.0
# A scheduled duplicates pass waits while more files than this wait to be indexed, but never
# longer than this many intervals after the last pass began.
DEFERRING_BACKLOG = 1000
MAX_DEFERRALS = 4
# How soon a deferred duplicates pass asks again whether the backlog has gone.
DEFERRED_RETRY_SECONDS = 60.0


def defer_duplicates(backlog: int, since_last_pass: float, interval: float) -> bool:
    """Whether a scheduled duplicates pass waits: a pass over a context still filling competes
    with the workers for the cores and reports on half the files, so it waits while more than
    DEFERRING_BACKLOG files wait to be indexed, but never past MAX_DEFERRALS intervals."""
    return backlog > DEFERRING_BACKLOG and since_last_pass < MAX_DEFERRALS * interval


class BackgroundPass:
    """A background pass (reconcile or duplicates): one at a time; a request while it runs
    makes it run once more afterwards."""

    def __init__(self, name: str, body: Callable[[], None], on_error: Callable[[], None]):
        self._name = name
        self._body = body
        self._on_error = on_error
        self._thread: threading.Thread | None = None
        self._again = False
        self.last_started = -float("inf")
        self.finished_once = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request(self) -> None:
        if self.running:
            self._again = True
            return
        self._again = False
        self.last_started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"lookalike-{self._name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._body()
        except Cancelled:
            pass
        except Exception:
            log.exception("the %s pass failed; it runs again at the next interval", self._name)
            self._on_error()
        finally:
            self.finished_once.set()

    def poll(self) -> None:
        """Start the run asked for while the last one was running, once that one is done."""
        if self._again and not self.running:
            self.request()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class Timer:
    """Due every `interval` seconds from `start`; at once if `at_start`."""

    def __init__(self, interval: float, at_start: bool = False):
        self.interval = interval
        self._at_start = at_start
        self._next = float("inf")

    def start(self, now: float) -> None:
        self._next = now if self._at_start else now + self.interval

    def elapsed(self, now: float) -> bool:
        return now >= self._next

    def due(self, now: float) -> bool:
        """True once per interval; the next interval counts from `now`."""
        if not self.elapsed(now):
            return False
        self._next = now + self.interval
        return True

    def postpone(self, now: float, seconds: float) -> None:
        self._next = now + seconds

    def retime(self, now: float, interval: float) -> None:
        """A new interval (a reload): a shorter one takes effect now, a longer one after the
        wait under way."""
        self.interval = interval
        self._next = min(self._next, now + interval)


class Schedule:
    """When the timed passes and chores are due. Only the service loop uses it."""

    def __init__(self, config: Config, watchdog_interval: float | None):
        self.reconcile = Timer(config.reconcile_interval)
        self._duplicates = Timer(config.duplicates_interval)
        self.housekeeping = Timer(HOUSEKEEPING_SECONDS, at_start=True)
        self.summary = Timer(config.log_summary_interval)
        self.watchdog = Timer(watchdog_interval or float("inf"), at_start=bool(watchdog_interval))
        self._first_report_due = True
        self._started = float("inf")

    def start(self, now: float) -> None:
        self._started = now
        for timer in (self.reconcile, self._duplicates, self.housekeeping, self.summary, self.watchdog):
            timer.start(now)

    def duplicates_due(self, now: float, backlog: int, idle: bool, first_reconcile_done: bool,
                       last_pass_started: float) -> bool:
        """Every interval, unless deferred (`defer_duplicates`); and the first report as soon as
        the first reconcile's finds are all indexed, so a fresh start reports without waiting an
        interval."""
        first_due = self._first_report_due and idle and first_reconcile_done
        since_last = now - max(last_pass_started, self._started)
        timer = self._duplicates
        if timer.elapsed(now) and defer_duplicates(backlog, since_last, timer.interval):
            timer.postpone(now, min(DEFERRED_RETRY_SECONDS, timer.interval))
            return False
        if timer.elapsed(now) or first_due:
            self._first_report_due = False
            timer.postpone(now, timer.interval)
            return True
        return False

    def retime(self, now: float, config: Config) -> None:
        self.reconcile.retime(now, config.reconcile_interval)
        self._duplicates.retime(now, config.duplicates_interval)
        self.summary.retime(now, config.log_summary_interval)
