"""A duplicates pass as every caller runs it (the daemon on its schedule, `scan`, `duplicates`,
the API): match the images queued since the last pass, group them (duplicates.py), and the
report document of the groups (reports/), which the caller renders or publishes.
"""

from __future__ import annotations

from typing import Callable

from .duplicates import PassStats, find_groups
from .reports import to_document
from .settings import DEFAULT_KEEP_FORMATS
from .store import SearchContext
from .store.changes import Change


def report_document(context: SearchContext, threshold: float, keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS,
                    apply: Callable[[Change], None] | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    stats: PassStats | None = None) -> dict:
    """The report document of the duplicate groups at `threshold`. `apply` writes what the pass
    records (pairs, the queue): into the context directly by default; the daemon passes its
    writer's, the context's only writer while it runs."""
    groups = find_groups(context, threshold, apply, progress, stats, keep_formats)
    return to_document(groups, threshold, str(context.directory))
