"""Writing a file in one step: a reader sees the old file or the new one, never half of either
(borg's SaveFile): a temporary file in the target's folder, fsync, rename, and the folder
fsynced so the rename survives a power cut. Reports and the pairs marked not a duplicate are
written this way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(target: Path, text: str) -> None:
    """Write `text` to `target` in one step; the folder must exist (nobody's folders are made
    by accident)."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
