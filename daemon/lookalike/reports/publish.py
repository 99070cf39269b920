"""Publishing a report: one file per format, a stable `latest` copy, the last N kept.

    duplicates-20261121T101500Z.json   one per pass and format, pruned to the newest `keep`
    duplicates-latest.json             always the newest, replaced atomically

`latest` is a copy, not a symlink, so it reads the same over SMB or after a backup.
"""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write
from . import render

PREFIX = "duplicates-"


def latest_path(directory: Path, fmt: str) -> Path:
    """The stable copy of the newest report in `fmt`."""
    return directory / f"{PREFIX}latest.{fmt}"


def publish(document: dict, directory: Path, formats: tuple[str, ...], keep: int) -> list[Path]:
    stamp = document["generated"].replace("-", "").replace(":", "")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        text = render(document, fmt)
        stamped = directory / f"{PREFIX}{stamp}.{fmt}"
        atomic_write(stamped, text)
        latest = latest_path(directory, fmt)
        atomic_write(latest, text)
        written.append(stamped)
        history = sorted(p for p in directory.glob(f"{PREFIX}*.{fmt}") if p != latest)
        for old in history[:-keep]:
            old.unlink(missing_ok=True)
    return written
