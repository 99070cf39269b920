"""Faults around the daemon: the store's size cap, a full disk, a report folder
it cannot write, the inotify limits. Each is caused for real where this host allows it.

- The context at its size cap (`store.max_map_size`): indexing pauses with
  `lookalike_context_writable 0`, the process stays up, nothing committed is lost or half
  written, and a restart with room indexes the rest without extracting the kept images again.
- The map grown by the writer thread while other threads read: no read fails (py-lmdb fails or
  invalidates them unless the resize waits for them; the flood benchmark lost two files so).
- A full disk under the context (a small tmpfs, filled): the same pause, and the paused changes
  land by themselves once space is freed.
- A writer retrying such a commit is paused on purpose, not stuck: the systemd watchdog is still
  fed (a writer hung inside a commit is stuck, and is not).
- The report folder unwritable (its parent is a file; no write permission): logged, counted,
  indexing goes on, and the next SIGUSR1 once it is writable writes the report.
- An inotify limit: the folder is polled instead, the log names the sysctl to raise, and a new
  image is still indexed, in process with an injected observer and for real in a daemon whose
  user namespace allows no watch at all. A subfolder refused a watch while the root is first
  watched is noticed too (watchdog raises it since 7.1.1), and the folder is polled. One made
  later, past the limit, watchdog only logs ("Unable to watch"): the reconcile finds its files.

Covered elsewhere, not repeated here: the map growing and the cap failing whole batches at the
store level (test_store.py, "the map"); event-queue overflow, a watched folder renamed away and
back, and one mounted again (test_daemon.py: test_an_event_queue_overflow_triggers_a_rescan,
test_a_root_renamed_away_keeps_its_records_until_it_is_back,
test_a_root_mounted_again_is_watched_again_whoever_sees_it_first).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import types
from pathlib import Path
from queue import Empty, SimpleQueue

import pytest
from prometheus_client import CollectorRegistry
from watchdog.observers import Observer

import images
from lookalike.config import WatchedFolder
from lookalike.errors import StoreFullError
from lookalike.extract import extract_file
from lookalike.metrics import Metrics
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext
from lookalike.store import context as context_module
from lookalike.store import writer as writer_module
from lookalike.store.changes import Put, Remove
from lookalike.watch.folders import Folders
from lookalike.watch.observe import Dirty, Watcher
from harness import QUICK, Daemon, folder, unreadable_prefix
from images import shapes

RETRY_SECONDS = 5.0        # store/writer.py: a failed commit is tried again this often
CAP = 1 << 20              # 1 MiB holds about 25 of the QUICK pictures




def held(daemon: Daemon) -> dict:
    """The context's records, after reading and decoding every record of it (StoreError on damage)."""
    with SearchContext.open(daemon.context_dir) as context:
        context.check()
        return {image.path: image for image in context.images()}


# --- the context at its size cap -----------------------------------------------------------

@pytest.mark.slow
def test_a_context_at_its_size_cap_pauses_keeps_what_it_has_and_resumes_with_room(daemons, tmp_path):
    """Room comes from a larger cap and a restart: the writer retries the batch that does not
    fit, and deletions queue behind it, so deleting files frees nothing while it waits."""
    photos = folder(tmp_path)
    daemon = daemons([photos], extraction=QUICK, store={"max_map_size": CAP}).start().ready()
    first = [images.write_jpeg(photos, f"a{i:02d}.jpg", shapes(i)) for i in range(8)]
    kept = daemon.wait_records(first)
    more = [images.write_jpeg(photos, f"b{i:02d}.jpg", shapes(100 + i)) for i in range(40)]

    daemon.wait_metric("lookalike_context_writable", lambda v: v == 0, "the context to reach its cap")
    paused = held(daemon)
    assert {path: paused[path] for path in kept} == kept          # what was committed is untouched
    assert len(first) <= len(paused) < len(first) + len(more)
    time.sleep(RETRY_SECONDS + 1)                                   # past a retry, which must fail too
    assert daemon.process.poll() is None
    assert daemon.metric("lookalike_context_writable") == 0
    assert held(daemon) == paused                                   # no part of a batch that did not fit
    assert daemon.log_path.read_text().count("reached its size cap") == 1     # said once, not every retry

    code, _ = daemon.stop()
    assert code == 0
    # The stop retries the waiting batch once more; it fits when a read transaction that ended
    # meanwhile (a duplicates pass) gave its pages back. Either way nothing committed changed.
    stopped = held(daemon)
    assert {path: stopped[path] for path in paused} == paused
    assert set(stopped) <= {str(path) for path in first + more}

    daemon.write_config([photos], extraction=QUICK, store={"max_map_size": 8 * CAP})
    daemon.start().ready()
    records = daemon.wait_records(first + more, "the rest indexed after a restart with room", timeout=60)
    assert {path: records[path] for path in stopped} == stopped    # kept, not extracted again
    daemon.wait_idle()
    assert daemon.metric("lookalike_files_indexed_total") == len(first) + len(more) - len(stopped)
    assert daemon.metric("lookalike_context_writable") == 1


def test_a_reconcile_does_not_extract_again_a_file_whose_record_waits_for_the_writer(daemons, tmp_path):
    """At the cap, the writer holds the records it cannot commit yet; a reconcile walking past
    their files finds the context without them, and must leave them to the writer."""
    photos = folder(tmp_path)
    daemon = daemons([photos], extraction=QUICK, store={"max_map_size": CAP}).start().ready()
    files = [images.write_jpeg(photos, f"a{i:02d}.jpg", shapes(i)) for i in range(48)]
    daemon.wait_metric("lookalike_context_writable", lambda v: v == 0, "the context to reach its cap")
    daemon.wait_metric("lookalike_extract_duration_seconds_count", lambda v: v == len(files), "every file extracted")
    daemon.wait_metric("lookalike_files_in_flight", lambda v: v == 0, "the workers done")
    waiting = len(files) - len(held(daemon))
    assert waiting > 0

    unchanged = daemon.metric("lookalike_files_unchanged_total")
    daemon.reconcile()
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="new") >= waiting
    daemon.wait_metric("lookalike_files_unchanged_total", lambda v: v >= unchanged + waiting,
                       "the reconcile's finds checked and left to the writer")
    assert daemon.metric("lookalike_extract_duration_seconds_count") == len(files)
    code, _ = daemon.stop()
    assert code == 0


def test_the_map_grows_while_other_threads_read(tmp_path, monkeypatch):
    """The writer thread grows the map while the main loop, a reconcile and a duplicates pass read.
    LMDB resizes a map only with no transaction active in the process, and py-lmdb's set_mapsize
    aborts every read transaction still open, under the thread using it. Found by the flood
    (bench/flood.py): at the 2 -> 4 GiB growth the main loop's `known()` failed with
    `mdb_txn_begin: Invalid argument`, and the two files it was checking waited for the next
    reconcile."""
    monkeypatch.setattr(context_module, "INITIAL_MAP_SIZE", 256 * 1024)
    settings = ExtractionSettings(**QUICK)
    sources = [extract_file(str(images.write_jpeg(tmp_path, f"{i}.jpg", shapes(i))), settings) for i in range(8)]
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    with SearchContext.create(tmp_path / "ctx", settings) as context:
        def read() -> None:
            while not stop.is_set():
                try:
                    context.known("/photos/0000.jpg")
                    context.count()
                    for _ in context.images(batch=16):
                        pass
                    reads[0] += 1
                except Exception as exc:                  # anything at all: the daemon's threads would stop
                    errors.append(repr(exc))
                # The daemon's threads do other work between reads. Readers that never pause
                # starve the writer instead: py-lmdb's abort of the full write transaction waits
                # until no operation is under way in any thread.
                time.sleep(0.001)

        readers = [threading.Thread(target=read, name=f"reader-{i}") for i in range(3)]
        for thread in readers:
            thread.start()
        try:
            for i in range(300):
                context.commit([Put(dataclasses.replace(sources[i % len(sources)], path=f"/photos/{i:04d}.jpg"))])
        finally:
            stop.set()
            for thread in readers:
                thread.join(30)
        grown = context.info()["map_size_bytes"]
        assert context.count() == 300
        context.check()
    assert grown >= 32 * 256 * 1024, "fewer than five doublings: the test proves little"
    assert reads[0] > 0
    assert errors == [], f"{len(errors)} reads failed, e.g. {errors[:3]}"


# --- a full disk ---------------------------------------------------------------------------

def mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `where`; None, or why it cannot be done here."""
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", os.fspath(where)],
                            capture_output=True, text=True)
    return f"mount -t tmpfs failed: {result.stderr.strip()}" if result.returncode else None


def unmount(where: Path) -> None:
    if subprocess.run(["umount", os.fspath(where)], capture_output=True).returncode:
        subprocess.run(["umount", "--lazy", os.fspath(where)], check=True)


def fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    chunk = bytes(1 << 16)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_full_disk_pauses_commits_and_they_land_once_space_is_freed(daemons, tmp_path):
    """The state folder on an 8 MiB tmpfs, filled to the last byte while the daemon indexes.
    Where no filesystem can be mounted, the size-cap test above is the stand-in: a map at its cap
    fails the commit just as a full disk does, and the writer treats both alike."""
    photos = folder(tmp_path)
    daemon = daemons([photos], extraction=QUICK)
    daemon.state.mkdir(parents=True)
    why = mount_tmpfs(daemon.state, "8m")
    if why:
        pytest.skip(f"{why}; the size-cap test stands in for it")
    try:
        daemon.start().ready()
        first = [images.write_jpeg(photos, f"a{i}.jpg", shapes(i)) for i in range(5)]
        kept = daemon.wait_records(first)
        filler = daemon.state / "filler"
        fill(filler)
        assert os.statvfs(daemon.state).f_bavail == 0
        more = [images.write_jpeg(photos, f"b{i:02d}.jpg", shapes(100 + i)) for i in range(20)]

        daemon.wait_metric("lookalike_context_writable", lambda v: v == 0, "a commit to fail on the full disk")
        # LMDB may still fit a small commit or two in pages freed by earlier ones; not more.
        paused = held(daemon)
        assert {path: paused[path] for path in kept} == kept
        assert len(paused) < len(first) + len(more)
        time.sleep(RETRY_SECONDS + 1)
        assert daemon.process.poll() is None
        assert daemon.metric("lookalike_context_writable") == 0
        assert held(daemon) == paused
        assert "No space left on device" in daemon.log_path.read_text()

        filler.unlink()
        records = daemon.wait_records(first + more, "the paused changes committed once space is back")
        daemon.wait_metric("lookalike_context_writable", lambda v: v == 1, "the context writable again")
        assert {path: records[path] for path in paused} == paused
        assert set(held(daemon)) == set(records)
        assert daemon.failures() == {}
        assert daemon.metric("lookalike_files_indexed_total") == len(first) + len(more)
        code, _ = daemon.stop()
        assert code == 0
    finally:
        daemon.close()
        unmount(daemon.state)


# --- a writer paused on purpose is not a hung writer ------------------------------------------

class Clock:
    def __init__(self):
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class Context:
    """Stands in for SearchContext.commit: full until `room` is set, or hung until `release` is."""

    def __init__(self, hang: bool = False):
        self.room = threading.Event()
        self.release = threading.Event()
        self.hang = hang
        self.committed: list = []

    def commit(self, changes):
        if self.hang:
            self.release.wait()
        elif not self.room.is_set():
            raise StoreFullError("/state/context", "the context reached its size cap")
        self.committed += changes
        return [0] * len(changes)


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("hang", [False, True], ids=["retrying a full store", "hung in a commit"])
def test_only_a_hung_writer_is_stuck(monkeypatch, hang):
    """`stuck` stops the systemd watchdog pings (service._healthy), and systemd then kills the
    daemon: right for a write that never returns, wrong for a writer retrying a full disk or map,
    which a restart cannot help."""
    clock = Clock()
    monkeypatch.setattr(writer_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    context = Context(hang=hang)
    troubles = []
    writer = writer_module.Writer(context, on_trouble=troubles.append, retry_seconds=0.01)
    writer.start()
    try:
        writer.submit(Remove("/photos/a.jpg"))
        until(lambda: writer.waiting == 0)                          # taken: being committed or retried
        writer.submit(Remove("/photos/b.jpg"))                      # and one waiting behind it
        if not hang:
            until(lambda: troubles == [True])
        clock.offset += 61                                          # a minute without a commit
        time.sleep(0.1)                                             # retries keep failing meanwhile
        assert writer.stuck is hang
    finally:
        context.room.set()
        context.release.set()
        assert writer.flush(10)
        assert writer.stop(10)
    assert [change.path for change in context.committed] == ["/photos/a.jpg", "/photos/b.jpg"]
    assert troubles == ([] if hang else [True, False])


# --- the report folder unwritable ------------------------------------------------------------

@pytest.mark.parametrize("how", ["its parent is a file", "no write permission"])
def test_an_unwritable_report_folder_is_logged_counted_and_indexing_goes_on(daemons, tmp_path, how):
    photos = folder(tmp_path)
    original = images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut"))
    small = images.write_jpeg(photos, "astronaut-small.jpg", images.resized(images.photo("astronaut"), 256, 256), 80)
    prefix: tuple[str, ...] = ()
    if how == "its parent is a file":
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a folder should be")
        reports, reason = blocker / "reports", "Not a directory"

        def make_writable():
            blocker.unlink()
    else:
        # Root writes anywhere (CAP_DAC_OVERRIDE); without it, root is held to the mode bits.
        prefix, why = unreadable_prefix()
        if why:
            pytest.skip(why)
        reports, reason = tmp_path / "reports", "Permission denied"
        reports.mkdir()
        reports.chmod(0o500)

        def make_writable():
            reports.chmod(0o700)
    daemon = daemons([photos], reports={"dir": str(reports), "keep": 3}).start(prefix=prefix).ready()
    daemon.wait_records([original, small])

    daemon.wait_metric("lookalike_report_write_failures_total", lambda v: v >= 1, "the first report to fail")
    assert daemon.metric("lookalike_duplicates_runs_total") == 0
    logged = [line for line in daemon.log_path.read_text().splitlines() if "cannot write the duplicate report" in line]
    assert logged and reason in logged[0] and str(reports) in logged[0]
    later = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    daemon.wait_records([original, small, later], "indexing to go on")
    failures = daemon.metric("lookalike_report_write_failures_total")

    make_writable()
    daemon.send(signal.SIGUSR1)
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "a report after SIGUSR1")
    latest = json.loads((reports / "duplicates-latest.json").read_text())
    assert [sorted(image["path"] for image in group["images"]) for group in latest["groups"]] == \
        [sorted([str(original), str(small)])]
    assert daemon.metric("lookalike_report_write_failures_total") == failures
    code, _ = daemon.stop()
    assert code == 0


# --- the inotify limits --------------------------------------------------------------------

@pytest.mark.parametrize("code, sysctl", [(errno.ENOSPC, "fs.inotify.max_user_watches"),
                                          (errno.EMFILE, "fs.inotify.max_user_instances")],
                         ids=["watches", "instances"])
def test_an_inotify_limit_makes_the_folder_polled(tmp_path, caplog, code, sysctl):
    """watchdog raises these from `start()` (watchdog/observers/inotify_c.py: _raise_error)."""
    photos = folder(tmp_path)
    watched = WatchedFolder(photos, poll_interval=0.2)
    refused = []

    class Refused(Observer):
        def start(self):
            refused.append(self)
            raise OSError(code, f"inotify {'watch' if code == errno.ENOSPC else 'instance'} limit reached")

    metrics = Metrics(CollectorRegistry())
    intake: SimpleQueue = SimpleQueue()
    watcher = Watcher(Folders((watched,)), intake, metrics, observer_factory=lambda f: Refused())
    with caplog.at_level(logging.ERROR, logger="lookalike.watch.observe"):
        watcher.start()
    try:
        assert len(refused) == 1 and watcher.alive
        assert metrics.registry.get_sample_value("lookalike_watch_polling_fallbacks_total") == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and sysctl in errors[0] and str(photos) in errors[0]

        new = images.write_jpeg(photos, "new.jpg", shapes(1))
        wait = 5 * watched.poll_interval + 2
        deadline = time.monotonic() + wait
        intents = []
        while Dirty(str(new)) not in intents:
            try:
                intents.append(intake.get(timeout=max(0.0, deadline - time.monotonic())))
            except Empty:
                pytest.fail(f"no intent for the new file within {wait:g} s of polling; got {intents}")
        assert watcher.check() == 0                                 # the polling observer is healthy
    finally:
        watcher.stop()


def inotify_limited(watches: int) -> tuple[tuple[str, ...], str | None]:
    """A command prefix that runs the daemon in a user namespace of its own, allowed `watches`
    inotify watches (/proc/sys/user/max_inotify_watches is per user namespace, and a child's
    limit holds whatever its parents allow): a real ENOSPC without touching the host's sysctl."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return (), "no unshare(1) here"
    script = f'echo {watches} > /proc/sys/user/max_inotify_watches && exec "$@"'
    prefix = (unshare, "--user", "--map-root-user", "sh", "-c", script, "sh")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode:
        return (), f"cannot lower the inotify watch limit in a user namespace: {probe.stderr.strip()}"
    return prefix, None


def test_a_daemon_refused_every_inotify_watch_polls_and_still_indexes(daemons, tmp_path):
    prefix, why = inotify_limited(0)
    if why:
        pytest.skip(why)
    photos = folder(tmp_path)
    before = images.write_jpeg(photos, "before.jpg", shapes(1))
    daemon = daemons([{"path": str(photos), "poll_interval": "1s"}], extraction=QUICK)
    daemon.start(prefix=prefix).ready()
    daemon.wait_records([before])
    daemon.wait_idle()
    assert daemon.metric("lookalike_watch_polling_fallbacks_total") == 1
    assert daemon.log_path.read_text().count("fs.inotify.max_user_watches") == 1
    runs = daemon.metric("lookalike_reconcile_runs_total")

    new = images.write_jpeg(photos, "new.jpg", shapes(2))
    daemon.wait_records([before, new], "the new file found by polling")
    assert daemon.metric("lookalike_reconcile_runs_total") == runs          # not by a reconcile (hourly)
    assert daemon.metric("lookalike_watch_events_total", kind="created") >= 1
    code, _ = daemon.stop()
    assert code == 0


def subfolders_beyond_the_limit(daemons, tmp_path) -> tuple[Daemon, list[Path]]:
    """A daemon allowed 2 watches on a folder with 3 subfolders: the root and one subfolder are
    watched, two are not; a new image is written in each subfolder once it runs."""
    prefix, why = inotify_limited(2)
    if why:
        pytest.skip(why)
    photos = folder(tmp_path)
    subfolders = [folder(photos, f"sub{i}") for i in range(3)]
    daemon = daemons([{"path": str(photos), "poll_interval": "1s"}], extraction=QUICK)
    daemon.start(prefix=prefix).ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")
    return daemon, [images.write_jpeg(sub, "new.jpg", shapes(i)) for i, sub in enumerate(subfolders)]


def test_files_in_a_subfolder_refused_a_watch_are_found_by_the_reconcile(daemons, tmp_path):
    daemon, new = subfolders_beyond_the_limit(daemons, tmp_path)
    daemon.reconcile()
    daemon.wait_records(new, "every new file indexed after the reconcile")
    assert daemon.process.poll() is None


def test_a_subfolder_refused_a_watch_is_still_watched_or_polled(daemons, tmp_path):
    daemon, new = subfolders_beyond_the_limit(daemons, tmp_path)
    # Events (or a 1 s poll) and a 0.5 s settle would index them within a couple of seconds.
    daemon.wait_records(new, "every new file indexed without a reconcile", timeout=8)
    # watchdog (since 7.1.1) raises the refusal of a subfolder's watch while it starts to watch,
    # so the folder falls back to polling, said once.
    assert daemon.metric("lookalike_watch_polling_fallbacks_total") == 1
    assert daemon.log_path.read_text().count("fs.inotify.max_user_watches") == 1
