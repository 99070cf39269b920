"""The tests' helpers, for the benchmarks: the process tree and free ports (tests/harness.py)
and the image builders (tests/images.py), one copy of each for both."""

from __future__ import annotations

import sys

from runinfo import PROJECT

sys.path.insert(0, str(PROJECT / "tests"))

import harness  # noqa: E402
import images  # noqa: E402

__all__ = ["harness", "images"]
