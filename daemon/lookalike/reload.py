"""Reloading the configuration of a running daemon (SIGHUP): which changes apply live, and
which wait for a restart.

The file is read and validated whole first, so an invalid one changes nothing. Settings that
live in the open context, the worker processes or the bound sockets keep their running value,
with a warning; the service applies the rest (watched folders, settle and schedule timings,
log level, reports, thresholds).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from . import config as config_module
from .config import Config

log = logging.getLogger("lookalike")

RESTART_ONLY = ("state_dir", "extraction", "workers", "metrics_listen", "store_max_map_size", "api")


@dataclass(frozen=True)
class Reloaded:
    config: Config                  # the file's, with the restart-only settings kept as running
    watch_changed: bool             # the watched folders or their rules
    folders_gone: frozenset[str]    # watched until now, and no longer


def reread(running: Config) -> Reloaded:
    """Read the running configuration's file again: ConfigError if it is invalid."""
    new = config_module.load(running.source)
    kept = {name: getattr(running, name) for name in RESTART_ONLY if getattr(new, name) != getattr(running, name)}
    for name in kept:
        log.warning("%s changed: it takes effect after a restart; keeping the running value", name)
    gone = frozenset(str(path) for path in {f.path for f in running.watch} - {f.path for f in new.watch})
    return Reloaded(dataclasses.replace(new, **kept), new.watch != running.watch, gone)
