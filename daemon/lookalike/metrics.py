"""Every metric the daemon exports, defined once, in a registry the caller provides.

Names follow Prometheus conventions: the `lookalike_` prefix, base units (`_seconds`,
`_bytes`), counters ending in `_total`. Label values are closed sets (a failure reason, an
event kind, a stage), never a path, so the number of series stays bounded whatever the folders
hold. The `_created` series are turned off: they double the exposition and say nothing here.
"""

from __future__ import annotations

import platform

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info,
                               ProcessCollector, disable_created_metrics)

from . import __version__
from .errors import ImageError

disable_created_metrics()

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LONG_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)       # process_resident_memory_bytes, CPU seconds, fds
        self.registry = registry
        self.files_seen = Counter("lookalike_files_seen_total",
                                  "Files looked at after they settled (events and reconciles)", registry=registry)
        self.files_indexed = Counter("lookalike_files_indexed_total",
                                     "Files whose features were extracted and stored", registry=registry)
        self.files_unchanged = Counter("lookalike_files_unchanged_total",
                                       "Files looked at and found as stored (same size and mtime, or same bytes)",
                                       registry=registry)
        self.files_removed = Counter("lookalike_files_removed_total",
                                     "Records removed because their file was deleted or moved away", registry=registry)
        self.files_moved = Counter("lookalike_files_moved_total",
                                   "Records re-keyed to a new path without re-extraction", registry=registry)
        self.files_failed = Counter("lookalike_files_failed_total", "Files that could not be indexed, by reason",
                                    ["reason"], registry=registry)
        for reason in ImageError.REASONS:
            self.files_failed.labels(reason)
        self.files_few_features = Counter("lookalike_files_few_features_total",
                                          "Files stored with too few keypoints to be matched geometrically",
                                          registry=registry)
        self.extract_duration = Histogram("lookalike_extract_duration_seconds",
                                          "Time to read, decode and extract one image, in a worker",
                                          buckets=_SECONDS, registry=registry)
        self.decode_duration = Histogram("lookalike_decode_duration_seconds",
                                         "Time to read and decode one image to its working size",
                                         buckets=_SECONDS, registry=registry)
        self.files_queued = Gauge("lookalike_files_queued", "Paths waiting to settle or for a worker",
                                  registry=registry)
        self.files_in_flight = Gauge("lookalike_files_in_flight", "Files being extracted now", registry=registry)
        self.store_queue = Gauge("lookalike_store_queue_changes", "Changes waiting for the store's writer",
                                 registry=registry)
        self.images = Gauge("lookalike_context_images", "Images in the search context", registry=registry)
        self.context_size = Gauge("lookalike_context_size_bytes", "Search context size on disk",
                                  registry=registry)
        self.store_writable = Gauge("lookalike_context_writable",
                                    "1 when the last commit to the search context succeeded", registry=registry)
        self.watch_events = Counter("lookalike_watch_events_total", "File-system events received, by kind",
                                    ["kind"], registry=registry)
        self.watch_overflows = Counter("lookalike_watch_overflows_total",
                                       "Kernel event-queue overflows (each triggers a reconcile)", registry=registry)
        self.events_dropped = Counter("lookalike_watch_events_dropped_total",
                                      "Events dropped while settle_queue_limit paths waited (a reconcile follows)",
                                      registry=registry)
        self.watcher_restarts = Counter("lookalike_watcher_restarts_total",
                                        "File-system watchers found dead and restarted", registry=registry)
        self.watch_degraded = Counter("lookalike_watch_polling_fallbacks_total",
                                      "Folders switched to polling because an inotify limit was reached",
                                      registry=registry)
        self.reconcile_runs = Counter("lookalike_reconcile_runs_total", "Reconcile walks finished",
                                      registry=registry)
        self.reconcile_duration = Histogram("lookalike_reconcile_duration_seconds", "Time of one reconcile walk",
                                            buckets=_LONG_SECONDS, registry=registry)
        self.reconcile_last_success = Gauge("lookalike_reconcile_last_success_timestamp_seconds",
                                            "When the last reconcile walk finished (Unix time)", registry=registry)
        self.folders_unavailable = Gauge("lookalike_watched_folders_unavailable",
                                         "Watched folders missing or unmounted (their records are kept)",
                                         registry=registry)
        self.reconcile_discrepancies = Counter("lookalike_reconcile_discrepancies_total",
                                               "Differences between the folders and the context a reconcile found",
                                               ["kind"], registry=registry)
        for kind in ("new", "changed", "missing"):
            self.reconcile_discrepancies.labels(kind)
        self.duplicates_runs = Counter("lookalike_duplicates_runs_total", "Duplicate detection passes that published a report",
                                       registry=registry)
        self.duplicates_duration = Histogram("lookalike_duplicates_duration_seconds",
                                             "Time of one duplicate detection pass", buckets=_LONG_SECONDS,
                                             registry=registry)
        self.duplicates_last_success = Gauge("lookalike_duplicates_last_success_timestamp_seconds",
                                             "When the last duplicate report was written (Unix time)",
                                             registry=registry)
        self.duplicate_groups = Gauge("lookalike_duplicate_groups", "Groups in the latest duplicate report",
                                      registry=registry)
        self.duplicate_images = Gauge("lookalike_duplicate_images", "Images in groups in the latest report",
                                      registry=registry)
        self.pairs_verified = Counter("lookalike_pairs_verified_total",
                                      "Candidate pairs verified geometrically", registry=registry)
        self.report_write_failures = Counter("lookalike_report_write_failures_total",
                                             "Reports that could not be written", registry=registry)
        self.internal_errors = Counter("lookalike_internal_errors_total",
                                       "Unexpected errors caught and survived, by stage", ["stage"],
                                       registry=registry)
        for stage in ("watch", "service", "reconcile", "duplicates", "api", "watchlist"):
            self.internal_errors.labels(stage)
        self.api_requests = Counter("lookalike_api_requests_total",
                                    "HTTP API requests answered, by route (\"unmatched\" for none) and status code",
                                    ["route", "code"], registry=registry)
        self.api_duration = Histogram("lookalike_api_request_duration_seconds",
                                      "Time to answer an HTTP API request, by route", ["route"],
                                      buckets=_SECONDS, registry=registry)
        self.watchlist_matches = Counter("lookalike_watchlist_matches_total",
                                         "Newly stored images that matched a tag's reference, by tag (the first "
                                         "100 tags matched; later ones as _other)", ["tag"], registry=registry)
        self.alerts_file_failures = Counter("lookalike_alerts_file_failures_total",
                                            "Alerts that could not be appended to alerts.file", registry=registry)
        self.config_reload_ok = Gauge("lookalike_config_last_reload_successful",
                                      "1 when the last configuration reload succeeded", registry=registry)
        self.config_reload_ok.set(1)
        self.build = Info("lookalike_build", "Version of lookalike and its platform", registry=registry)
        self.build.info({"version": __version__, "python": platform.python_version()})
        self.store_writable.set(1)

