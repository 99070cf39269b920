"""What the tests that run real lookalike processes share: the CLI as a subprocess, a free
port, the content hash the context stores, and the process tree under a daemon."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from lookalike.errors import ExitCode

LOOKALIKE = Path(sys.executable).with_name("lookalike")


def lookalike(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(LOOKALIKE), *map(os.fspath, args)], capture_output=True, text=True,
                          timeout=timeout)


def lookalike_json(*args) -> dict:
    result = lookalike(*args)
    assert result.returncode == ExitCode.OK, f"lookalike {' '.join(map(str, args))}: {result.stderr}"
    return json.loads(result.stdout)


def content_hash(data: bytes) -> bytes:
    """What the context stores as an image's content hash (imaging/decode.py)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its extraction workers and multiprocessing's helper)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except FileNotFoundError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit is reaped by init, or not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
