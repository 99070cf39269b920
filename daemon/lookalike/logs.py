"""Logging for the daemon and the CLI: plain text on a terminal, journald priorities under
systemd, or one JSON document a line."""

from __future__ import annotations

import json
import logging
import os
import sys

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                    "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class _JournalFormatter(logging.Formatter):
    """journald adds the time and reads the priority from a `<N>` prefix (SyslogLevelPrefix)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{text}"


def configure_logging(level: str, fmt: str, stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # watchdog logs every overflow and rebuild itself; ours says what it means.
    logging.getLogger("watchdog").setLevel(logging.WARNING)
