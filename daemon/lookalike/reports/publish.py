"""Publishing a report: one file per format, a stable `latest` copy, the last N kept.

    duplicates-20261121T101500Z.json   one per pass and format, pruned to the newest `keep`
    duplicates-latest.json             always the newest, replaced atomically

JSON is always published, whatever `reports.formats` says: `report show` and `resolve` read it,
and the HTML page names it in the `resolve` command it shows. The daemon and `scan` publish
through here alike. `latest` is a copy, not a symlink, so it reads the same over SMB or after a
backup.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .. import resolve
from ..config import Config
from ..files import atomic_write
from . import render
from .html import Resolution

PREFIX = "duplicates-"


def latest_path(directory: Path, fmt: str) -> Path:
    """The stable copy of the newest report in `fmt`."""
    return directory / f"{PREFIX}latest.{fmt}"


def published_formats(config: Config) -> tuple[str, ...]:
    """JSON, then the configured formats."""
    return tuple(dict.fromkeys(("json", *config.report_formats)))


def resolution(document: dict, report: Path, config: Config) -> Resolution:
    """What `resolve` would do with the report at `report` (the plan of its default action, by
    resolve's own rules, reading only the files' metadata), and the command that does it."""
    plan = resolve.make_plan(document, resolve.ACTIONS[0], report, config.watch, config.keep_reference)
    command = shlex.join(["lookalike", "--config", str(Path(config.source).absolute()), "resolve", "--report", str(report),
                          "--to", "QUARANTINE_DIR", "--apply"])
    return Resolution.of(plan, command)


def publish(document: dict, config: Config) -> list[Path]:
    """The report in every published format, in `config.reports`; old ones pruned to
    `reports.keep`. The paths written, JSON first."""
    directory = config.reports
    stamp = document["generated"].replace("-", "").replace(":", "")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in published_formats(config):
        stamped = directory / f"{PREFIX}{stamp}.{fmt}"
        text = render(document, fmt, resolution(document, written[0], config) if fmt == "html" else None)
        atomic_write(stamped, text)
        latest = latest_path(directory, fmt)
        atomic_write(latest, text)
        written.append(stamped)
        history = sorted(p for p in directory.glob(f"{PREFIX}*.{fmt}") if p != latest)
        for old in history[:-config.reports_keep]:
            old.unlink(missing_ok=True)
    return written
