"""The state directory: the lock that makes one daemon (or rebuild) its only writer, and the
search context it holds, opened with the configured settings."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .config import Config
from .errors import NotFoundError, StoreError
from .store import SearchContext

STATE_LOCK_NAME = "lookalike.lock"


@contextmanager
def state_lock(state_dir: Path, advice: str = "stop it first") -> Iterator[None]:
    """One daemon (or rebuild) per state directory: two writers' reconciles would fight.
    `advice`: what the refusal tells a person to do."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / STATE_LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StoreError(str(state_dir), f"in use by lookalike process {holder}; {advice}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def open_context(config: Config) -> SearchContext:
    """The configured context, created on first use."""
    cap = {} if config.store_max_map_size is None else {"max_map_size": config.store_max_map_size}
    try:
        return SearchContext.open(config.context_dir, expect=config.extraction, **cap)
    except NotFoundError:                   # none yet, or a creation a crash cut short
        return SearchContext.create(config.context_dir, config.extraction, **cap)


