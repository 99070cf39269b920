"""Fixtures every test module may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import Daemon


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
