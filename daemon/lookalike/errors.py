"""The error family.

Every failure lookalike reports is one of these: a message that names the file or key, a closed
`reason` (used as a metric label, so never free text), and the CLI exit code it maps to. Only
`cli.main` turns them into exit codes and log lines; everything else raises or records them.
"""

from __future__ import annotations

import os


class ExitCode:
    OK = 0
    FAILED = 1          # some inputs of a batch failed; the rest were processed
    USAGE = 2
    NOT_FOUND = 3       # no such image in the context / no such file / no context
    BAD_IMAGE = 4       # the file is not an image lookalike can read
    STORE = 5           # the context cannot be opened or written
    CONFIG = 78         # EX_CONFIG from sysexits.h, which systemd and operators recognise


def display_path(path: str | bytes) -> str:
    """A path as text for messages, with undecodable bytes shown as \\x escapes."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


class LookalikeError(Exception):
    exit_code = ExitCode.FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(LookalikeError):
    exit_code = ExitCode.USAGE


class ConfigError(LookalikeError):
    """One or more problems in a config file; `problems` lists each as 'key.path: what is wrong',
    `warnings` what is odd but would not have stopped it (a watched folder not there yet)."""

    exit_code = ExitCode.CONFIG

    def __init__(self, source: str, problems: list[str], warnings: tuple[str, ...] | list[str] = ()):
        self.source = source
        self.problems = list(problems)
        self.warnings = list(warnings)
        lines = "\n".join([f"  {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings])
        super().__init__(f"{source}: invalid configuration\n{lines}")


class ImageError(LookalikeError):
    """A file that could not be turned into features. `reason` is one of REASONS."""

    exit_code = ExitCode.BAD_IMAGE
    REASONS = (
        "missing",       # vanished or never existed
        "not_a_file",    # a directory, FIFO, device or socket
        "unreadable",    # permission denied or an I/O error
        "empty",         # zero bytes
        "unsupported",   # not a format lookalike decodes
        "truncated",     # the file ends before the image does
        "corrupt",       # the decoder rejected the data
        "too_large",     # over the pixel or byte cap
        "changed",       # rewritten while it was being read
        "crashed",       # the decoder's process died on it (the daemon decodes in worker processes)
        "timeout",       # the decoder took longer than the daemon allows
    )

    def __init__(self, path: str | bytes, reason: str, detail: str):
        assert reason in self.REASONS, reason
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{display_path(path)}: {reason}: {detail}")


class NotFoundError(LookalikeError):
    exit_code = ExitCode.NOT_FOUND


class TagError(UsageError):
    """A tag name, or what was asked of a tag, that lookalike refuses: `tag` names it."""

    def __init__(self, tag: str, detail: str):
        self.tag = tag
        super().__init__(f"tag {tag!r}: {detail}")


class StoreError(LookalikeError):
    """The search context cannot be opened, read or written."""

    exit_code = ExitCode.STORE

    def __init__(self, context_dir: str, detail: str):
        self.context_dir = context_dir
        super().__init__(f"{context_dir}: {detail}")


class StoreFullError(StoreError):
    """The map reached its configured cap; nothing of the failed batch was written."""


class ReportError(LookalikeError):
    """A report file that cannot be read or is not a report this version understands."""

    def __init__(self, path, detail: str):
        self.path = path
        super().__init__(f"{display_path(os.fspath(path))}: {detail}")


class ManifestError(LookalikeError):
    """A quarantine manifest that cannot be read or is not one this version understands."""

    def __init__(self, path, detail: str):
        self.path = path
        super().__init__(f"{display_path(os.fspath(path))}: {detail}")


class Refused(LookalikeError):
    """`resolve` or `undo` leaves a file alone: `reason` says why (it changed since the report,
    its place is taken, ...). Recorded per file in their output, never raised out of them."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{display_path(path)}: {reason}")
