"""The record stage: what a worker made of a file becomes a change for the store's writer, and
what the writer committed is counted and logged.

`Recorder.record` runs on the service loop, `Recorder.committed` on the store thread; they share
only the records on their way to the context (`being_stored`) and the activity counts, both
safe across the two.
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import display_path
from .extract import Extracted, Outcome, SameContent, few_features
from .match import FEW_FEATURES
from .metrics import Metrics
from .reports.text import counted
from .store.changes import Change, Fail, Move, Put, Remove, Touch
from .types import FileIdentity

log = logging.getLogger("lookalike")


class Activity:
    """What the pipeline did to files since the last summary line: one debug line per file
    handled, and at most one info line per `log.summary_interval` with the counts, so a flood
    of files stays readable in the log. Counted on the main thread and the store thread."""

    KINDS = ("indexed", "updated", "moved", "removed", "failed")

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.KINDS, 0)
        self._since = time.monotonic()

    def count(self, kind: str, images: int = 1) -> None:
        with self._lock:
            self._counts[kind] += images

    def summarise(self) -> None:
        now = time.monotonic()
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(self.KINDS, 0)
            since, self._since = self._since, now
        if any(counts.values()):
            log.info("files in the last %.0f s: %s", now - since,
                     ", ".join(f"{counts[kind]} {kind}" for kind in self.KINDS))


class Recorder:
    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self.activity = Activity()
        # Records handed to the writer and not yet committed (set on the service loop, popped
        # on the store thread): a reconcile that walks past such a file finds the context
        # without it, and the check must not take it for new.
        self.being_stored: dict[str, FileIdentity] = {}

    def record(self, path: str, outcome: Outcome, identity: FileIdentity | None, replacing: bool) -> Change | None:
        """The change that records `outcome` for the writer, or None when the file is to settle
        and be read again (gone since the check, or still being written)."""
        metrics = self._metrics
        if isinstance(outcome, Extracted):
            features = outcome.features
            metrics.extract_duration.observe(features.extract_seconds)
            metrics.decode_duration.observe(features.decode_seconds)
            if few_features(features.local.count):
                log.warning("%s: %s: %d keypoints; only its identical and near-identical copies can be found",
                            display_path(path), FEW_FEATURES, features.local.count)
                metrics.files_few_features.inc()
            self.being_stored[path] = features.identity
            kind = "updated" if replacing else "indexed"
            log.debug("%s %s", kind, display_path(path))
            self.activity.count(kind)
            return Put(features)
        if isinstance(outcome, SameContent):
            metrics.files_unchanged.inc()
            return Touch(path, outcome.identity)
        if outcome.reason in ("missing", "changed"):
            return None
        log.warning("%s: %s: %s", display_path(path), outcome.reason, outcome.detail)
        self.activity.count("failed")
        metrics.files_failed.labels(outcome.reason).inc()
        return Fail(path, identity, outcome.reason, outcome.detail)

    def committed(self, changes: list[Change], results: list) -> None:
        """Counts what the writer committed (runs on the store thread)."""
        for change, result in zip(changes, results):
            if isinstance(change, Put):
                # A later Put of the same path may still wait: at worst it is extracted once more.
                self.being_stored.pop(change.features.path, None)
                self._metrics.files_indexed.inc()
            elif isinstance(change, Remove) and result:
                self._metrics.files_removed.inc(result)
                log.debug("removed %s (%s)", display_path(change.path), counted(result, "image"))
                self.activity.count("removed", result)
            elif isinstance(change, Move) and result:
                self._metrics.files_moved.inc(result)
                log.debug("moved %s -> %s (%s)", display_path(change.source), display_path(change.destination),
                          counted(result, "image"))
                self.activity.count("moved", result)

    def store_trouble(self, troubled: bool) -> None:
        self._metrics.store_writable.set(0 if troubled else 1)
