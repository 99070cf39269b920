"""The guards every test runs under (conftest.py): a test that leaves a thread or a process
running behind it fails, and the process is ended. Each case runs in a pytest of its own, with
this folder's conftest.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import running

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow           # a pytest process each, and the guards' grace period


def guarded(pytester, monkeypatch, test_body: str):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_case=textwrap.dedent(test_body))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_a_thread_left_running_fails_the_test(pytester, monkeypatch):
    result = guarded(pytester, monkeypatch, """
        import threading

        def test_leaves_a_thread():
            threading.Thread(target=threading.Event().wait, name="left-behind", daemon=True).start()
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines([r".*the test left threads running: \['left-behind'\]"])


def test_a_process_left_running_fails_the_test_and_is_killed(pytester, monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    result = guarded(pytester, monkeypatch, f"""
        import subprocess

        def test_leaves_a_process():
            process = subprocess.Popen(["sleep", "300"])
            open({str(pid_file)!r}, "w").write(str(process.pid))
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines([r".*the test left processes running: \['\d+ sleep 300'\]"])
    assert not running(int(pid_file.read_text()))


def test_threads_and_processes_ended_by_the_test_pass(pytester, monkeypatch):
    result = guarded(pytester, monkeypatch, """
        import subprocess
        import threading

        def test_ends_what_it_starts():
            thread = threading.Thread(target=lambda: None)
            thread.start()
            subprocess.run(["true"], check=True)
            thread.join()
    """)
    result.assert_outcomes(passed=1)
