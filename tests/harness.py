"""What the tests (and the benchmarks) that run real lookalike processes share: the CLI as a
subprocess, a free port, the content hash the context stores, the process tree under a daemon,
and `Daemon`: one `lookalike run` process on real folders, dealt with only from the outside.

Every wait polls a condition against a deadline. Fixed pauses only pace a writer or, in a check
that something did *not* happen, wait past the point where it would have."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lookalike.errors import ExitCode, NotFoundError
from lookalike.store import SearchContext

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


@contextlib.contextmanager
def occupied(port: int):
    """A listener on 127.0.0.1:`port` for the length of the block, as another program's would be."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        yield


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a daemon's extraction workers and multiprocessing's helper)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
            except OSError:
                continue                           # gone between listing and reading
            found.extend(children)
            pending.extend(children)
    return found


def children(pid: int) -> list[int]:
    """The processes `pid` started itself, living or not yet reaped."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit is reaped by init, or not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmRSS, RssAnon, ...) in bytes; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    return status_bytes(pid, "VmRSS")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    return sum(rss_bytes(p) for p in [pid, *descendants(pid)])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and its parts, in bytes: RssAnon (heap, stacks: what a leak grows) and RssFile
    (mapped files: libraries, and the LMDB map's pages the process touched, which the kernel
    can drop and read again)."""
    return {field: status_bytes(pid, field) for field in ("VmRSS", "RssAnon", "RssFile")}


def group_members(pgid: int) -> list[str]:
    """"pid command" of every process in process group `pgid`."""
    members = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if os.getpgid(pid) == pgid:
                members.append(f"{pid} {command_line(pid)}")
        except OSError:
            continue
    return members


def stop_group(process: subprocess.Popen, timeout: float) -> list[str]:
    """SIGTERM, then SIGKILL to the whole process group (`process` started its own session).
    Returns "pid command" for anything the group still held 5 s after its leader exited, which
    is killed too."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return []
        time.sleep(0.1)
    left = group_members(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return left


def unreadable_prefix() -> tuple[tuple[str, ...], str | None]:
    """How to run the daemon so that a mode-000 file is unreadable to it, or why it cannot be.

    Root reads any file (CAP_DAC_OVERRIDE). Without that capability and CAP_DAC_READ_SEARCH,
    root is held to the permission bits like anyone, which is also how the shipped unit runs
    it (DynamicUser, no capabilities)."""
    if os.geteuid() != 0:
        return (), None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return (), "running as root without setpriv: a mode-000 file is readable to root"
    probe = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        return (), f"setpriv cannot drop capabilities here: {probe.stderr.decode(errors='replace').strip()}"
    return (setpriv, "--bounding-set", "-dac_override,-dac_read_search"), None


# --- the daemon -----------------------------------------------------------------------------

DEADLINE = 60.0           # generous: a slow CI host must not fail a test, only a broken daemon
POLL = 0.1
SETTLE = 0.5              # settle_seconds in the test configs
STOP_TIMEOUT = 5.0
# Every image is scaled to the working size before extraction (640 by default: ~0.15 s per image
# here). Tests that only count files use a small one; it is fixed when the context is created.
QUICK = {"working_size": 128}
# A metric() caller that passes no default: a missing series fails the test.
_REQUIRED = object()


def folder(parent: Path, name: str = "photos") -> Path:
    path = parent / name
    path.mkdir(parents=True)
    return path


def paths_under(records, prefix: Path) -> list[str]:
    return [p for p in records if p.startswith(str(prefix) + "/")]


def exposition(port: int, timeout: float = 10) -> str:
    """The Prometheus text a daemon's metrics endpoint on `port` serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return response.read().decode()


def scrape(port: int, timeout: float = 10) -> dict[tuple[str, frozenset], float]:
    """(name, labels) -> value of every sample a daemon's metrics endpoint serves."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition(port, timeout)) for sample in family.samples}


def total(samples: dict[tuple[str, frozenset], float], name: str) -> float:
    """A metric summed over all its label sets (e.g. failures of any reason)."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


class Notices:
    """Stands in for systemd's notify socket: a datagram socket and a thread recording each
    message with its arrival time. The path is kept short (sun_path holds 108 bytes)."""

    def __init__(self):
        self._directory = tempfile.mkdtemp(prefix="lookalike-notify-")
        self.path = os.path.join(self._directory, "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.settimeout(POLL)
        self._messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="notify-listener", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._socket.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append((time.monotonic(), data.decode().split("\n")))

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def messages(self, since: int = 0) -> list[tuple[float, list[str]]]:
        with self._lock:
            return list(self._messages[since:])

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._socket.close()
        shutil.rmtree(self._directory, ignore_errors=True)


class Daemon:
    """One `lookalike run` process (started again after a stop on the same state) and ways to
    look at it: its context, its metrics, its sd_notify messages, its log. Each run starts a
    session of its own, so that closing it also ends the workers a SIGKILL leaves behind."""

    def __init__(self, base: Path, watch: list, state: Path | None = None, **settings):
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.state = state or base / "state"
        self.context_dir = self.state / "context"
        self.reports = self.state / "reports"
        self.config_path = base / "lookalike.yaml"
        self.log_path = base / "daemon.log"
        self.port = free_port()
        self.api_port = free_port()
        self.notices = Notices()
        self.process: subprocess.Popen | None = None
        self._since = 0                     # notices before this index belong to earlier runs
        self._log = None
        self.write_config(watch, **settings)

    # --- lifecycle -----------------------------------------------------------------------

    def write_config(self, watch: list, **settings) -> None:
        document = {
            "watch": [str(w) if isinstance(w, Path) else w for w in watch],
            "state_dir": str(self.state),
            "workers": 1,
            "settle_seconds": f"{SETTLE}s",
            "reconcile_interval": "1h",
            "duplicates": {"interval": "1h"},
            "reports": {"keep": 3},
            "metrics": {"listen": f"127.0.0.1:{self.port}"},
            "api": {"listen": f"127.0.0.1:{self.api_port}"},
            "stop_timeout": f"{STOP_TIMEOUT:g}s",
        }
        document.update(settings)
        self.config_path.write_text(yaml.safe_dump(document))

    def start(self, prefix: tuple = (), env: dict | None = None, config_first: bool = False) -> "Daemon":
        """`prefix`: a command that execs the daemon (setpriv, unshare), keeping its process id."""
        assert not self.alive(), "already running"
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS")}
        environ.update({"NOTIFY_SOCKET": self.notices.path, "PYTHONFAULTHANDLER": "1", **(env or {})})
        if config_first:
            argv = [LOOKALIKE, "--config", self.config_path, "run"]
        else:
            argv = [LOOKALIKE, "run", "--config", self.config_path]
        if self._log is None:
            self._log = open(self.log_path, "ab")
        self._since = len(self.notices)
        self.process = subprocess.Popen([os.fspath(a) for a in (*prefix, *argv)], stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, env=environ,
                                        start_new_session=True)
        return self

    def ready(self) -> "Daemon":
        self.wait(lambda: "READY=1" in self.notified(), "READY=1")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT + 5) -> tuple[int, float]:
        """Signal the daemon and wait for it to exit: (exit status, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not exit within {timeout:g} s of signal {signum}\n{self.log_tail()}")
        return code, time.monotonic() - started

    def kill(self) -> list[int]:
        """SIGKILL the daemon (not its workers: a crash leaves them behind); the workers it had."""
        workers = descendants(self.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return workers

    def close(self) -> None:
        """Kill the daemon if it still runs, and whatever its session still holds."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.notices.close()
        if self._log is not None:
            self._log.close()

    # --- looking at it -------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "--- daemon log (tail) ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def wait(self, condition, what: str, timeout: float = DEADLINE, detail=lambda: ""):
        """Poll `condition` until it returns something true, and return that; fail if the daemon
        exits first or the deadline passes (with `detail()` and the log's tail in the message)."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if not self.alive():
                pytest.fail(f"the daemon exited with status {self.process.returncode} while waiting for "
                            f"{what}\n{detail()}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{detail()}\n{self.log_tail()}")
            time.sleep(POLL)

    def notified(self) -> list[str]:
        """Every line sent to the notify socket by the current run, in order."""
        return [line for _, message in self.notices.messages(self._since) for line in message]

    def notify_messages(self) -> list[tuple[float, list[str]]]:
        return self.notices.messages(self._since)

    def exposition(self, timeout: float = 10) -> str:
        return exposition(self.port, timeout)

    def scrape(self, timeout: float = 10) -> dict[tuple[str, frozenset], float]:
        return scrape(self.port, timeout)

    def metric(self, name: str, default: float = _REQUIRED, **labels) -> float:
        """The series' value now. A series the daemon does not expose fails the test, unless the
        caller gives the `default` to take instead (a labelled series not yet incremented)."""
        value = self.scrape().get((name, frozenset(labels.items())), default)
        if value is _REQUIRED:
            pytest.fail(f"no series {name}{labels or ''} in the exposition")
        return value

    def metric_sum(self, name: str) -> float:
        """The sum over every label set of `name` (e.g. failures of any reason)."""
        return total(self.scrape(), name)

    def records(self) -> dict[str, object]:
        """path -> StoredImage, read from the context while the daemon runs."""
        return self._by_path(SearchContext.images)

    def failures(self) -> dict[str, object]:
        """path -> the failure recorded for it."""
        return self._by_path(SearchContext.failures)

    def _by_path(self, listing) -> dict[str, object]:
        try:
            with SearchContext.open(self.context_dir) as context:
                return {entry.path: entry for entry in listing(context)}
        except NotFoundError:
            return {}            # not created yet

    def wait_records(self, expected, what: str = "", timeout: float = DEADLINE) -> dict:
        """Wait until the context holds exactly the paths `expected`; return its records."""
        expected = {os.fspath(p) for p in expected}
        records = {}

        def matches():
            nonlocal records
            records = self.records()
            return set(records) == expected

        self.wait(matches, what or f"the context to hold {sorted(expected)}", timeout,
                  detail=lambda: f"held: {sorted(records)}")
        return records

    def wait_metric(self, name: str, predicate, what: str, **labels) -> float:
        """Wait until the series' value satisfies `predicate`; return the value."""
        value = None

        def check():
            nonlocal value
            value = self.metric(name, **labels)
            return predicate(value)

        self.wait(check, what, detail=lambda: f"{name}{labels or ''} = {value}")
        return value

    def wait_idle(self) -> None:
        """Wait for a STATUS= report made after this call (housekeeping sends one every 2 s)
        saying nothing waits to settle, is being extracted or reconciled, with the writer's
        queue empty. Gauges alone could be that stale, so a fresh report is required."""
        start = len(self.notices)
        status = re.compile(r"STATUS=\d+ images; 0 waiting, 0 extracting(.*)")

        def idle():
            for _, message in self.notices.messages(start):
                for line in message:
                    found = status.fullmatch(line)
                    if found and "reconciling" not in found.group(1):
                        return self.metric("lookalike_store_queue_changes") == 0
            return False

        self.wait(idle, "the pipeline to drain")

    def reconcile(self) -> None:
        """Make the daemon walk its folders (SIGHUP) and wait until that walk has finished."""
        runs = self.metric("lookalike_reconcile_runs_total")
        self.send(signal.SIGHUP)
        self.wait_metric("lookalike_reconcile_runs_total", lambda v: v > runs, "a reconcile after SIGHUP")

    def cli(self, *args) -> dict:
        """The CLI on this daemon's context; its JSON answer."""
        return lookalike_json("--context", self.context_dir, *args)
