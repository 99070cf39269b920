"""Fixtures every test module may use, and the guards every test runs under: a test fails if
it leaves a thread running or a child process alive behind it (warnings are errors through
the pytest configuration in pyproject.toml)."""

from __future__ import annotations

import multiprocessing.resource_tracker
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness import Daemon, children, command_line, descendants, running

pytest_plugins = ["pytester"]          # test_guards.py runs the guards on tests that leak

# What a test's own teardown may still be finishing: a thread told to stop, a process killed.
GRACE_SECONDS = 2.0


@pytest.fixture
def daemons(tmp_path):
    """Make `Daemon`s, each in a folder of its own under tmp_path; every one still running at
    the end is killed, with whatever its session holds."""
    made: list[Daemon] = []

    def make(watch: list, state: Path | None = None, **settings) -> Daemon:
        daemon = Daemon(tmp_path / f"daemon{len(made)}", watch, state, **settings)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every thread a test started has ended once its fixtures are torn down. (Fixtures of a
    wider scope are set up before this one, so what they start is not counted.)"""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    started = set(threading.enumerate()) - before
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [thread for thread in started if thread.is_alive()]
    assert not leaked, f"the test left threads running: {sorted(thread.name for thread in leaked)}"


@pytest.fixture(autouse=True, scope="session")
def resource_tracker():
    """multiprocessing's resource tracker, started before any test: the first spawned worker in
    this process starts it and it stays for the life of the process, so it is not the leak of
    whichever test happens to spawn first (the HTML report spawns its thumbnail workers)."""
    multiprocessing.resource_tracker.ensure_running()


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Every process a test started has exited once its fixtures are torn down. A leaked one is
    killed, with everything below it, so that it cannot disturb the tests after it."""
    me = os.getpid()
    before = set(children(me))
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    while leaked := [pid for pid in children(me) if pid not in before and running(pid)]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    found = [f"{pid} {command_line(pid)}" for pid in leaked]
    for process in [pid for leader in leaked for pid in [leader, *descendants(leader)]]:
        try:
            os.kill(process, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not found, f"the test left processes running: {found}"
