"""The watchlist: every image the daemon stores is checked against the references of every tag,
and a match becomes an alert.

The images to check are queued in the context by the transaction that stores them
(store/tags.py), so a restart loses none, and an image stored by `features add` or `scan`
is checked once the daemon runs. One thread checks them, apart from the service loop and the
store thread, so a check never holds up ingest. A check is a look-up in the references' own
candidate index (store/index.py), then match.compare on the few references it proposes: a cost
that does not grow with the number of references the way comparing with each would
(BENCHMARKS.md, "Watchlist check").

The result goes to the writer as a Watched change, which records the alerts under their cursors
and takes the image off the queue in one transaction; the thread waits for it to land before it
reads the queue again, or it would check the same images twice. Once an alert is recorded it is
logged (one info line), counted (`lookalike_watchlist_matches_total{tag}`) and appended as a JSON
line to `alerts.file` when one is configured. The context is the record; the file is a feed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .config import Config
from .errors import NotFoundError, display_path
from .match import compare
from .metrics import Metrics
from .store import SearchContext
from .store.changes import Watched
from .store.writer import Writer

log = logging.getLogger("lookalike")

POLL_SECONDS = 0.5            # how soon a newly stored image is checked
PAGE = 64                     # queued images read per look at the queue
RETRY_SECONDS = 5.0           # after an unexpected error, before the queue is read again


def check(context: SearchContext, num: int, threshold: float) -> tuple[dict, ...]:
    """The alerts for the stored image `num` (without cursors): for each tag, the first of its
    references to match it at or above `threshold`, in the order the references' index ranks
    them (exact copies, then near ones by fingerprint distance, then by descriptor votes). One
    match makes the alert, and a comparison costs milliseconds: the tag's other references are
    not compared. Nothing when the image is gone since."""
    try:
        image, candidate = context.candidate(num)
    except NotFoundError:
        return ()                   # removed since it was stored: nothing to watch
    matched: dict[str, tuple] = {}
    for number in context.reference_candidates(image.content_hash, image.fingerprint, candidate.local):
        reference = context.reference(number)
        if reference is None or reference.tag in matched:
            continue                # replaced or deleted since the look-up; its tag has its alert
        match = compare(reference.candidate, candidate, context.settings.detector)
        if match.similarity >= threshold:
            matched[reference.tag] = (reference, match)
    return tuple({"at": time.time(), "path": image.path, "tag": tag, "reference": reference.name,
                  "similarity": round(match.similarity, 1), "kinds": list(match.kinds)}
                 for tag, (reference, match) in sorted(matched.items()))


class TagLabels:
    """The `tag` label values of the match counter: the first LIMIT tags that match get their own,
    every later one OVERFLOW, so the series stay bounded however many tags come and go."""

    LIMIT = 100
    OVERFLOW = "_other"             # no tag name can begin with "_" (store/tags.py)

    def __init__(self):
        self._given: set[str] = set()

    def __call__(self, tag: str) -> str:
        if tag in self._given:
            return tag
        if len(self._given) < self.LIMIT:
            self._given.add(tag)
            return tag
        return self.OVERFLOW


class Watchlist(threading.Thread):
    def __init__(self, context: SearchContext, writer: Writer, metrics: Metrics, config: Callable[[], Config]):
        super().__init__(name="lookalike-watchlist", daemon=True)
        self._context = context
        self._writer = writer
        self._metrics = metrics
        self._config = config          # the running configuration: a reload changes the threshold, the file
        self._labels = TagLabels()
        self._stopping = threading.Event()
        self._file_failing = False

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                checked = self._check_queued()
            except Exception:
                log.exception("unexpected error in the watchlist; checking again in %.0f s", RETRY_SECONDS)
                self._metrics.internal_errors.labels("watchlist").inc()
                self._stopping.wait(RETRY_SECONDS)
                continue
            if not checked:
                self._stopping.wait(POLL_SECONDS)

    def _check_queued(self) -> int:
        """Check a page of the queued images: how many."""
        queued = self._context.watch_pending(PAGE)
        for num in queued:
            if self._stopping.is_set():
                break
            alerts = check(self._context, num, self._config().alerts_threshold)
            for alert in self._writer.apply(Watched(num, alerts), timeout=None):
                self._announce(alert)
        return len(queued)

    def _announce(self, alert: dict) -> None:
        log.info("watchlist: %s matches tag %s (reference %s, similarity %.1f); alert %d",
                 display_path(alert["path"]), alert["tag"], alert["reference"], alert["similarity"], alert["cursor"])
        self._metrics.watchlist_matches.labels(self._labels(alert["tag"])).inc()
        path = self._config().alerts_file
        if path is not None:
            self._append(path, alert)

    def _append(self, path: Path, alert: dict) -> None:
        line = (json.dumps(alert) + "\n").encode("ascii")      # a path's undecodable bytes as \\udcXX, as in reports
        try:
            # One write() of the whole line to a file opened for appending: a reader never sees
            # half a line followed by another.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._file_failing:
                log.error("%s: cannot append the alert (alerts.file): %s; alerts stay in the context "
                          "('lookalike alerts')", display_path(str(path)), exc.strerror or exc)
            self._file_failing = True
            self._metrics.alerts_file_failures.inc()
            return
        if self._file_failing:
            log.info("%s: appending alerts again", display_path(str(path)))
            self._file_failing = False
