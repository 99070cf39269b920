"""The daemon (`lookalike run`, service.py) as systemd runs it: a real process on real folders.

Each test starts the console script on folders under tmp_path, with short timings, and deals
with it only from the outside: files written, renamed and deleted with the real kernel; real
signals; an sd_notify datagram socket bound here; the Prometheus endpoint scraped over HTTP.
State is read back from the search context itself (opened beside the running daemon: LMDB lets
another process read while the daemon writes) or with the CLI.

Every wait polls a condition against a deadline. Fixed pauses only pace a writer (a copy in
chunks; reports, stamped to the second) or, in a check that something did *not* happen, wait
past the point where it would have (after the daemon provably looked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import images
from harness import (DEADLINE, LOOKALIKE, QUICK, SETTLE, STOP_TIMEOUT, content_hash, folder, lookalike, lookalike_json,
                     occupied, paths_under)
from images import shapes
from lookalike.errors import ExitCode
from lookalike.store import SearchContext


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_start_indexes_every_image_and_notifies_ready_once(daemons, tmp_path):
    photos = folder(tmp_path)
    sub = folder(photos, "2024")
    expected = [images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut")),
                images.write_png(photos, "coffee.png", images.photo("coffee")),
                images.write_jpeg(sub, "chelsea.jpg", images.photo("chelsea"))]
    daemon = daemons([photos]).start(config_first=True).ready()     # `lookalike --config FILE run`

    records = daemon.wait_records(expected)
    assert records[str(expected[0])].content_hash == content_hash(expected[0].read_bytes())
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first duplicate pass")
    assert daemon.metric("lookalike_files_indexed_total") == 3
    assert daemon.metric_sum("lookalike_files_failed_total") == 0

    code, _ = daemon.stop()
    assert code == 0
    notified = daemon.notified()
    assert notified.count("READY=1") == 1, notified
    assert notified[-1] == "STOPPING=1"
    assert "WATCHDOG=1" not in notified                     # no WATCHDOG_USEC, no pings
    assert "(0 images); 1 worker\n" in daemon.log_path.read_text()       # not "1 workers"


def test_invalid_config_exits_78_without_ready(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos, tmp_path / "no-such-folder"], workers=0, colour="blue").start()
    try:
        code = daemon.process.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon kept running on an invalid config")
    assert code == ExitCode.CONFIG == 78
    assert "READY=1" not in daemon.notified()
    log = daemon.log_path.read_text()
    # Every problem at once, each with its key path.
    assert "watch[1].path" in log and "workers" in log and "colour" in log
    assert not (daemon.context_dir / "data.mdb").exists()


def test_a_second_daemon_on_the_same_state_exits_and_the_first_goes_on(daemons, tmp_path):
    photos = folder(tmp_path)
    first = daemons([photos]).start().ready()
    second = daemons([photos], state_dir=str(first.state)).start()
    try:
        code = second.process.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail("two daemons run on one state directory")
    assert code == ExitCode.STORE
    assert "READY=1" not in second.notified()
    image = images.write_jpeg(photos, "a.jpg", images.photo("astronaut"))
    first.wait_records([image])


def test_a_metrics_port_in_use_fails_the_start_before_anything_is_created(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos])
    with occupied(daemon.port):
        daemon.start()
        try:
            code = daemon.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon kept running without its metrics port")
    assert code == ExitCode.FAILED
    log = daemon.log_path.read_text()
    assert f"metrics.listen: cannot listen on 127.0.0.1:{daemon.port}" in log
    assert "stopping" not in log and "stopped" not in log, log
    assert not daemon.context_dir.exists()
    assert "READY=1" not in daemon.notified()


def context_contents(directory: Path) -> tuple[dict, dict]:
    """Everything a context knows about its files but when it learnt it: per path the image's
    identity, content hash, size, fingerprint and keypoints and descriptors; and the failures."""
    with SearchContext.open(directory) as context:
        stored = {}
        for image in context.images():
            local = context.local_features(image.path)
            stored[image.path] = (image.identity, image.content_hash, image.format, image.width, image.height,
                                  image.fingerprint, local.keypoints.tobytes(), local.descriptors.tobytes())
        failed = {f.path: (f.identity, f.reason, f.detail) for f in context.failures()}
    return stored, failed


@pytest.mark.slow
def test_features_add_scan_rebuild_and_the_daemon_make_the_same_context(daemons, tmp_path):
    photos = folder(tmp_path)
    hidden = folder(photos, ".thumbnails")
    expected = [images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut")),
                images.write_png(folder(photos, "2024"), "coffee.png", images.photo("coffee")),
                images.write_jpeg(photos, "astronaut-small.jpg", images.resized(images.photo("astronaut"), 200, 200))]
    bad = images.random_bytes(photos, "bad.jpg")
    for left_out in (hidden / "chelsea.jpg", photos / "~chelsea.jpg"):       # the default excludes
        images.write_jpeg(left_out.parent, left_out.name, images.photo("chelsea"))
    (photos / "notes.txt").write_text("not an image")
    settings = {"extraction": QUICK}

    daemon = daemons([photos], **settings).start().ready()
    daemon.wait_records(expected)
    daemon.wait(lambda: str(bad) in daemon.failures(), "the bad file recorded as failed")
    assert daemon.stop()[0] == 0
    contexts = {"daemon": daemon.context_dir}

    added = tmp_path / "added"
    lookalike_json("--context", added, "context", "create", "--working-size", str(QUICK["working_size"]))
    assert lookalike("--context", added, "features", "add", photos).returncode == ExitCode.FAILED
    contexts["features add"] = added
    for command in (("scan",), ("context", "rebuild")):
        way = daemons([photos], **settings)
        assert lookalike("--config", way.config_path, *command).returncode == ExitCode.OK
        contexts[" ".join(command)] = way.context_dir

    stored, failed = context_contents(contexts.pop("daemon"))
    assert sorted(stored) == sorted(map(str, expected)) and list(failed) == [str(bad)]
    for way, directory in contexts.items():
        assert context_contents(directory) == (stored, failed), way


# --- 2-4. events: create, modify, delete; a copy in progress; an editor's atomic save ------

def test_create_modify_delete_while_running(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos]).start().ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")

    first = images.jpeg_bytes(images.photo("astronaut"))
    path = write(photos / "a.jpg", first)
    record = daemon.wait_records([path])[str(path)]
    assert record.content_hash == content_hash(first) and record.identity.size == len(first)

    # Touched, same bytes: the stored identity follows, the features are not extracted again.
    mtime_ns = record.identity.mtime_ns - 60 * 10**9
    os.utime(path, ns=(mtime_ns, mtime_ns))
    record = daemon.wait(lambda: (r := daemon.records()[str(path)]) and r.identity.mtime_ns == mtime_ns and r,
                         "the touched file's new mtime recorded")
    assert daemon.metric("lookalike_files_indexed_total") == 1

    second = images.jpeg_bytes(images.photo("chelsea"))
    with open(path, "r+b") as out:                          # rewritten in place: same inode
        out.truncate(0)
        out.write(second)
    updated = daemon.wait(lambda: (r := daemon.records().get(str(path))) and r.content_hash != record.content_hash
                          and r, "the record of the rewritten file to change")
    assert updated.content_hash == content_hash(second)
    assert updated.identity.size == len(second) and updated.identity.inode == record.identity.inode
    assert (updated.width, updated.height) != (record.width, record.height)

    # Renamed: the record follows the name, the features are not extracted again.
    renamed = photos / "b.jpg"
    path.rename(renamed)
    moved = daemon.wait_records([renamed], "the record to follow the renamed file")[str(renamed)]
    assert moved.content_hash == updated.content_hash and moved.num == updated.num

    renamed.unlink()
    daemon.wait_records([], "the deleted file's record to go")
    daemon.wait_metric("lookalike_files_removed_total", lambda v: v >= 1, "the removal counted")
    assert daemon.metric("lookalike_files_indexed_total") == 2
    assert daemon.metric("lookalike_files_moved_total") == 1
    assert daemon.metric("lookalike_files_removed_total") == 1
    assert daemon.failures() == {}


SUMMARY = re.compile(r"INFO lookalike: files in the last \d+ s: (\d+) indexed, (\d+) updated, (\d+) moved, "
                     r"(\d+) removed, (\d+) failed$", re.M)


@pytest.mark.slow
def test_the_log_names_each_file_handled_at_debug_and_sums_them_up_at_most_once_per_interval(daemons, tmp_path):
    photos = folder(tmp_path)
    original = images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut"))
    daemon = daemons([photos], log={"level": "debug", "summary_interval": "1s"}, extraction=QUICK).start().ready()
    daemon.wait_records([original])
    copy = write(photos / "copy.jpg", images.jpeg_bytes(images.resized(images.photo("astronaut"), 256, 256)))
    daemon.wait_records([original, copy])
    renamed = photos / "renamed.jpg"
    copy.rename(renamed)
    daemon.wait_records([original, renamed])
    write(renamed, images.jpeg_bytes(images.photo("coffee")))
    daemon.wait(lambda: f"DEBUG lookalike: updated {renamed}\n" in daemon.log_path.read_text(), "the update logged")
    renamed.unlink()
    bad = write(photos / "bad.jpg", b"\xff\xd8 not a jpeg")
    daemon.wait_records([original])
    daemon.wait(lambda: daemon.failures(), "the bad file recorded")

    started = time.monotonic()
    flood = [write(photos / f"flood-{i}.jpg", images.jpeg_bytes(shapes(i, 64))) for i in range(40)]
    daemon.wait_records([original, *flood])
    flooded = time.monotonic() - started
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "a duplicates pass")
    time.sleep(1.5)                                     # past one more summary interval
    code, _ = daemon.stop()
    assert code == 0
    log = daemon.log_path.read_text()

    for line in (f"DEBUG lookalike: indexed {original}", f"DEBUG lookalike: indexed {copy}",
                 f"DEBUG lookalike: moved {copy} -> {renamed} (1 image)", f"DEBUG lookalike: updated {renamed}",
                 f"DEBUG lookalike: removed {renamed} (1 image)", f"WARNING lookalike: {bad}: "):
        assert line in log, line
    summaries = [tuple(map(int, m.groups())) for m in SUMMARY.finditer(log)]
    assert tuple(map(sum, zip(*summaries))) == (42, 1, 1, 1, 1), summaries
    # Under the flood: one line a second at most, not one per file.
    flood_lines = [s for s in summaries if s[0] > 1]
    assert 1 <= len(flood_lines) <= flooded + 2, summaries
    # Counts read as English: "1 worker", "1 pair", never "1 workers".
    assert "; 1 worker\n" in log
    assert not re.search(r"\b1 (images|groups|pairs|files|workers)\b", log), log


def test_a_copy_in_progress_is_indexed_once_complete(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos], settle_seconds="2s").start().ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")
    data = images.jpeg_bytes(images.resized(images.photo("rocket"), 1200, 800), quality=95)
    target = photos / "copy.jpg"
    pieces = [data[i * len(data) // 10:(i + 1) * len(data) // 10] for i in range(10)]

    with open(target, "wb") as out:                         # like cp: one open, ten writes
        for i, piece in enumerate(pieces):
            assert str(target) not in daemon.records(), f"recorded after {i} of 10 chunks"
            assert str(target) not in daemon.failures(), f"recorded as failed after {i} of 10 chunks"
            out.write(piece)
            out.flush()
            time.sleep(0.3)

    record = daemon.wait_records([target])[str(target)]
    assert record.identity.size == len(data) == target.stat().st_size
    assert record.content_hash == content_hash(data)
    assert daemon.metric("lookalike_files_indexed_total") == 1
    assert daemon.metric_sum("lookalike_files_failed_total") == 0

    # A copy that stops half-way is recorded as truncated, and tried again once it changes.
    half = photos / "half.jpg"
    write(half, data[:len(data) // 2])
    failure = daemon.wait(lambda: daemon.failures().get(str(half)), "the half-written file recorded as failed")
    assert failure.reason == "truncated"
    assert daemon.metric("lookalike_files_failed_total", reason="truncated") == 1
    with open(half, "ab") as out:
        out.write(data[len(data) // 2:])
    daemon.wait_records([target, half], "the completed file indexed")
    assert str(half) not in daemon.failures()


def test_an_editors_atomic_save_updates_the_record(daemons, tmp_path):
    photos = folder(tmp_path)
    original = images.write_jpeg(photos, "a.jpg", images.photo("astronaut"))
    daemon = daemons([photos]).start().ready()
    before = daemon.wait_records([original])[str(original)]

    edited = images.jpeg_bytes(images.photo("coffee"))
    temp = write(photos / ".a.jpg.tmp", edited)
    os.replace(temp, original)

    def saved():
        records = daemon.records()
        assert not any(".a.jpg.tmp" in p for p in [*records, *daemon.failures()]), "the temp name was stored"
        record = records.get(str(original))
        return record if record and record.content_hash != before.content_hash else None

    after = daemon.wait(saved, "the record to follow the saved file")
    assert after.content_hash == content_hash(edited)
    assert after.fingerprint != before.fingerprint
    daemon.wait_idle()
    assert set(daemon.records()) == {str(original)} and daemon.failures() == {}
    assert daemon.metric("lookalike_files_indexed_total") == 2


# --- 5-7. folders: renamed, moved out; names that are not ours ------------------------------

def test_a_renamed_folder_is_rekeyed_not_extracted_again(daemons, tmp_path):
    photos = folder(tmp_path)
    old = folder(photos, "trip")
    nested = folder(old, "day1")
    files = [images.write_jpeg(old if i % 2 else nested, f"{i:02d}.jpg", shapes(i)) for i in range(20)]
    daemon = daemons([photos], workers=2, extraction=QUICK).start().ready()
    daemon.wait_records(files)
    assert daemon.metric("lookalike_files_indexed_total") == 20
    unchanged = daemon.metric("lookalike_files_unchanged_total")

    new = photos / "holiday"
    old.rename(new)
    records = daemon.wait(lambda: (r := daemon.records()) and len(paths_under(r, new)) == 20 and r,
                          "20 records under the new name")
    assert paths_under(records, old) == []
    assert len(records) == 20
    # The daemon looks at each moved path once it settles and finds it as stored.
    daemon.wait_metric("lookalike_files_unchanged_total", lambda v: v >= unchanged + 20,
                       "the moved files checked and found unchanged")
    daemon.wait_idle()
    assert daemon.metric("lookalike_files_indexed_total") == 20, "moved files were extracted again"
    assert daemon.metric("lookalike_files_moved_total") >= 20
    assert daemon.metric("lookalike_files_removed_total") == 0
    assert {p for p in daemon.records()} == {str(new / f.relative_to(old)) for f in files}


def test_a_folder_moved_out_of_the_tree_leaves_no_records(daemons, tmp_path):
    photos = folder(tmp_path)
    deep = folder(photos, "d/e")
    moved = [images.write_jpeg(deep, f"{i}.jpg", shapes(i)) for i in range(3)]
    moved.append(images.write_jpeg(photos / "d", "top.jpg", shapes(3)))
    kept = images.write_jpeg(photos, "kept.jpg", shapes(4))
    outside = folder(tmp_path, "elsewhere")
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([*moved, kept])

    (photos / "d").rename(outside / "d")
    daemon.wait_records([kept], "no record under the moved-out folder")
    # The count follows the commit the records are read after.
    daemon.wait_metric("lookalike_files_removed_total", lambda v: v >= 4, "the removals counted")
    assert daemon.metric("lookalike_files_removed_total") == 4
    assert daemon.metric("lookalike_files_indexed_total") == 5

    # Moved back in: a folder arriving from outside brings its files.
    (outside / "d").rename(photos / "d")
    daemon.wait_records([*moved, kept], "the files of the folder moved in indexed")


def test_non_images_and_excluded_names_are_never_stored(daemons, tmp_path):
    photos = folder(tmp_path)
    jpeg = images.jpeg_bytes(images.photo("chelsea"))
    hidden_dir = folder(photos, ".thumbnails")
    at_start = [write(photos / "x.txt", b"notes\n"), write(photos / ".hidden.jpg", jpeg),
                write(photos / "a.jpg.part", jpeg), write(hidden_dir / "t.jpg", jpeg),
                write(photos / "~lock.jpg", jpeg)]
    first = images.write_jpeg(photos, "first.jpg", images.photo("astronaut"))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([first])

    while_running = [write(photos / "y.txt", b"more notes\n"), write(photos / ".later.jpg", jpeg),
                     write(photos / "b.jpg.part", jpeg[:1000]), write(hidden_dir / "u.jpg", jpeg),
                     write(photos / "c.jpg.crdownload", jpeg), write(photos / "notes.JPG.tmp", jpeg)]
    # Settled paths come out in the order they went quiet: once the sentinel written last is in,
    # every earlier event has been dealt with.
    sentinel = images.write_jpeg(photos, "sentinel.jpg", images.photo("coffee"))
    daemon.wait_records([first, sentinel])
    daemon.wait_idle()
    assert daemon.failures() == {}
    assert daemon.metric("lookalike_files_indexed_total") == 2
    for path in [*at_start, *while_running]:
        assert path.exists()

    # The download finishes: renamed to its real name, it is an image to index; so are the
    # files of a hidden folder renamed to a visible name, and the other way round.
    os.rename(photos / "a.jpg.part", photos / "a.jpg")
    hidden_dir.rename(photos / "thumbnails")
    expected = [first, sentinel, photos / "a.jpg", photos / "thumbnails/t.jpg", photos / "thumbnails/u.jpg"]
    daemon.wait_records(expected)
    (photos / "thumbnails").rename(photos / ".thumbnails")
    daemon.wait_records(expected[:3], "the files of a folder renamed to a hidden name gone")


# --- 8. a file that cannot be decoded --------------------------------------------------------

def test_an_undecodable_file_is_recorded_once_and_retried_only_when_it_changes(daemons, tmp_path):
    photos = folder(tmp_path)
    good = images.write_jpeg(photos, "good.jpg", images.photo("astronaut"))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([good])

    bad = images.random_bytes(photos, "bad.jpg", size=8192)
    daemon.wait(lambda: str(bad) in daemon.failures(), "the bad file recorded as failed")
    listed = daemon.cli("features", "failed")["failed"]
    assert [(f["path"], f["reason"]) for f in listed] == [(str(bad), "unsupported")]
    assert listed[0]["detail"]
    assert daemon.metric("lookalike_files_failed_total", reason="unsupported") == 1
    assert daemon.metric_sum("lookalike_files_failed_total") == 1

    # Not retried: a full reconcile finds it as recorded, and nothing is decoded again.
    seen = daemon.metric("lookalike_files_seen_total")
    daemon.reconcile()
    time.sleep(SETTLE * 3)                                  # past the settle time of anything it found
    daemon.wait_idle()
    assert daemon.metric("lookalike_files_failed_total", reason="unsupported") == 1
    assert daemon.metric("lookalike_files_seen_total") == seen
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="changed") == 0

    # Fixed: it becomes an image, so it is read again and indexed.
    data = images.jpeg_bytes(images.photo("coffee"))
    write(bad, data)
    record = daemon.wait_records([good, bad])[str(bad)]
    assert record.content_hash == content_hash(data)
    assert daemon.failures() == {}
    assert daemon.cli("features", "failed") == {"failed": []}
    assert daemon.metric_sum("lookalike_files_failed_total") == 1


# --- 9. restart: reconcile against what changed while stopped ---------------------------------

def test_restart_reconciles_what_changed_while_stopped(daemons, tmp_path):
    photos = folder(tmp_path)
    kept = [images.write_jpeg(photos, f"{n}.jpg", images.photo(n)) for n in ("astronaut", "chelsea")]
    deleted = images.write_jpeg(photos, "deleted.jpg", shapes(1))
    changed = images.write_jpeg(photos, "changed.jpg", shapes(2))
    daemon = daemons([photos]).start().ready()
    first = daemon.wait_records([*kept, deleted, changed])
    code, _ = daemon.stop()
    assert code == 0

    added = images.write_jpeg(photos, "added.jpg", images.photo("coffee"))
    deleted.unlink()
    new_pixels = images.jpeg_bytes(images.photo("rocket"))
    write(changed, new_pixels)
    daemon.start().ready()
    daemon.wait_records([*kept, changed, added])                   # the old record of changed.jpg counts too
    records = daemon.wait(lambda: (r := daemon.records())[str(changed)].content_hash == content_hash(new_pixels) and r,
                          "changed.jpg indexed again")
    for path in kept:                                       # untouched records, not re-extracted
        assert records[str(path)].num == first[str(path)].num
        assert records[str(path)].added == first[str(path)].added
    daemon.wait_idle()
    assert daemon.metric("lookalike_files_indexed_total") == 2          # added + changed
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="new") == 1
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="changed") == 1
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="missing") == 1
    assert daemon.metric("lookalike_files_removed_total") == 1


# --- 10-11. signals: SIGHUP reload, SIGUSR1 duplicates ----------------------------------------

def test_sighup_adds_a_folder_and_rejects_broken_yaml(daemons, tmp_path):
    first, second = folder(tmp_path, "first"), folder(tmp_path, "second")
    a = images.write_jpeg(first, "a.jpg", images.photo("astronaut"))
    b = images.write_jpeg(second, "b.jpg", images.photo("chelsea"))
    c = images.write_jpeg(second, "c.jpg", images.photo("coffee"))
    daemon = daemons([first]).start().ready()
    daemon.wait_records([a])

    daemon.write_config([first, second])
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.send(signal.SIGHUP)
    daemon.wait_records([a, b, c], "the added folder's images indexed")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert daemon.metric("lookalike_config_last_reload_successful") == 1
    lines = daemon.notified()
    reloading = lines.index("RELOADING=1")
    usec = lines[reloading + 1]
    assert re.fullmatch(r"MONOTONIC_USEC=\d+", usec), lines
    assert before <= int(usec.split("=")[1]) <= after      # CLOCK_MONOTONIC is the same for every process
    assert "READY=1" in lines[reloading + 2:]

    # Broken YAML: rejected, the daemon keeps running with the two folders it has.
    good_config = daemon.config_path.read_text()
    daemon.config_path.write_text("watch: [unclosed\nstate_dir: /x\n")
    messages = len(daemon.notify_messages())
    daemon.send(signal.SIGHUP)
    daemon.wait_metric("lookalike_config_last_reload_successful", lambda v: v == 0, "the reload rejected")
    assert daemon.process.poll() is None
    log = daemon.log_path.read_text()
    assert re.search(rf"{re.escape(str(daemon.config_path))}: invalid configuration\n +line 2, column \d+: "
                     r"not valid YAML", log) and "<unicode string>" not in log, daemon.log_tail()
    lines = [line for _, message in daemon.notify_messages()[messages:] for line in message]
    reloading = lines.index("RELOADING=1")
    assert re.fullmatch(r"MONOTONIC_USEC=\d+", lines[reloading + 1]), lines
    daemon.wait(lambda: "READY=1" in [line for _, message in daemon.notify_messages()[messages:]
                                      for line in message], "READY=1 after the rejected reload")
    d = images.write_jpeg(second, "d.jpg", shapes(5))
    daemon.wait_records([a, b, c, d], "an image in the second folder indexed on the kept config")

    daemon.config_path.write_text(good_config)
    daemon.send(signal.SIGHUP)
    daemon.wait_metric("lookalike_config_last_reload_successful", lambda v: v == 1, "the fixed config reloaded")

    # A folder no longer watched takes its records with it.
    daemon.write_config([second])
    daemon.send(signal.SIGHUP)
    daemon.wait_records([b, c, d], "the records of the folder dropped from the config gone")
    assert a.exists()
    code, _ = daemon.stop()
    assert code == 0


def test_sigusr1_writes_a_duplicates_report_and_keeps_n(daemons, tmp_path):
    photos = folder(tmp_path)
    original = images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut"))
    small = images.write_jpeg(photos, "astronaut-small.jpg", images.resized(images.photo("astronaut"), 256, 256), 80)
    other = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    keep = 2
    daemon = daemons([photos], reports={"keep": keep, "formats": ["json", "csv"]}).start().ready()
    daemon.wait_records([original, small, other])
    runs = daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first report")

    for _ in range(keep + 1):
        time.sleep(1.1)                                      # reports are stamped to the second
        daemon.send(signal.SIGUSR1)
        runs = daemon.wait_metric("lookalike_duplicates_runs_total", lambda v, runs=runs: v > runs,
                                  "a duplicate pass after SIGUSR1")

    latest = json.loads((daemon.reports / "duplicates-latest.json").read_text())
    groups = [sorted(image["path"] for image in group["images"]) for group in latest["groups"]]
    assert groups == [sorted([str(original), str(small)])]
    assert daemon.metric("lookalike_duplicate_groups") == 1
    for fmt in ("json", "csv"):
        stamped = sorted(p.name for p in daemon.reports.glob(f"duplicates-*.{fmt}")
                         if p.name != f"duplicates-latest.{fmt}")
        assert len(stamped) == keep, stamped
    newest = sorted(daemon.reports.glob("duplicates-2*.json"))[-1]
    assert newest.read_text() == (daemon.reports / "duplicates-latest.json").read_text()
    assert not list(daemon.reports.glob("*.tmp")) and not list(daemon.reports.glob(".*"))


@pytest.mark.slow
def test_resolve_moves_show_up_as_removals_and_the_next_report_no_longer_lists_them(daemons, tmp_path):
    photos = folder(tmp_path)
    original = images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut"))
    small = images.write_jpeg(photos, "astronaut-small.jpg", images.resized(images.photo("astronaut"), 256, 256), 80)
    copy = photos / "astronaut-copy.jpg"
    shutil.copy2(original, copy)
    other = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([original, small, copy, other])
    runs = daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first report")
    report = json.loads((daemon.reports / "duplicates-latest.json").read_text())
    [group] = report["groups"]
    copies = {image["path"] for image in group["images"] if not image["keeper"]}
    assert len(copies) == 2

    result = subprocess.run([os.fspath(LOOKALIKE), "--config", os.fspath(daemon.config_path), "resolve",
                             "--apply", "--json", "--to", os.fspath(tmp_path / "quarantine")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == ExitCode.OK, result.stderr
    assert {action["path"] for action in json.loads(result.stdout)["actions"]} == copies
    daemon.wait_records({str(p) for p in (original, small, copy, other)} - copies, "the moved copies' removal")
    time.sleep(1.1)                                          # reports are stamped to the second
    daemon.send(signal.SIGUSR1)
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v > runs, "a duplicate pass after SIGUSR1")
    latest = json.loads((daemon.reports / "duplicates-latest.json").read_text())
    assert not copies & {image["path"] for group in latest["groups"] for image in group["images"]}
    assert latest["groups"] == []


# --- 12-13. stop with a backlog; the systemd watchdog -----------------------------------------

@pytest.mark.slow
def test_sigterm_with_a_backlog_exits_in_time_and_loses_nothing(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos], workers=1, extraction=QUICK).start().ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")
    files = [images.write_jpeg(photos, f"{i:03d}.jpg", shapes(i)) for i in range(200)]
    daemon.wait_metric("lookalike_files_indexed_total", lambda v: v >= 1, "indexing under way")

    code, took = daemon.stop()
    assert code == 0
    assert took <= STOP_TIMEOUT + 2
    assert "STOPPING=1" in daemon.notified()
    with SearchContext.open(daemon.context_dir) as context:     # closed cleanly, opens again
        done = {image.path for image in context.images()}
    assert 0 < len(done) < 200, "no backlog at the stop: the test proves nothing"

    daemon.write_config([photos], workers=2, extraction=QUICK)
    daemon.start().ready()
    daemon.wait_records(files, "every file indexed after the restart", timeout=60)
    daemon.wait_idle()
    # What was committed before the stop is kept and not extracted again.
    assert daemon.metric("lookalike_files_indexed_total") == 200 - len(done)


def test_watchdog_pings_arrive_at_half_the_interval(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos]).start(env={"WATCHDOG_USEC": "1000000"}).ready()

    def pings():
        return [at for at, message in daemon.notify_messages() if "WATCHDOG=1" in message]

    arrivals = daemon.wait(lambda: (p := pings()) and len(p) >= 6 and p, "six WATCHDOG=1 pings")
    gaps = np.diff(arrivals)
    assert gaps.max() < 1.0, f"a gap of {gaps.max():.2f} s would let systemd kill the service"
    assert gaps.min() > 0.2, "pinging far more often than half the interval"


# --- 14. inotify overflow --------------------------------------------------------------------

@pytest.mark.slow
def test_an_event_queue_overflow_triggers_a_rescan(daemons, tmp_path):
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    flood = max(20_000, limit + 4_000)                     # each file is at least one event
    photos = folder(tmp_path)
    junk = folder(photos, "junk")
    daemon = daemons([photos]).start().ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")
    runs = daemon.metric("lookalike_reconcile_runs_total")

    daemon.send(signal.SIGSTOP)
    try:
        for i in range(flood):
            os.close(os.open(junk / f"{i:05d}.txt", os.O_WRONLY | os.O_CREAT, 0o644))
        # Written after the flood: their events are the ones the kernel drops.
        late = [images.write_jpeg(photos, f"late{i}.jpg", shapes(i)) for i in range(5)]
    finally:
        daemon.send(signal.SIGCONT)

    daemon.wait_records(late, "the images whose events were lost indexed by the rescan")
    assert daemon.metric("lookalike_watch_overflows_total") >= 1
    # The rescan hands files to the workers as it walks, so they can be stored before it ends.
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v > runs, "the rescan's end")
    assert daemon.process.poll() is None



def test_a_flood_past_the_settle_queue_limit_is_taken_at_the_pipelines_pace_and_nothing_is_lost(daemons, tmp_path):
    """Memory stays flat under a flood: at most settle_queue_limit paths wait. The start-up
    reconcile's finds wait in the walk instead of the queue; events beyond the limit are dropped,
    and the reconcile that follows finds their files."""
    limit = 20
    photos = folder(tmp_path)
    before = [images.write_jpeg(photos, f"before{i:03d}.jpg", shapes(i, 64)) for i in range(60)]
    daemon = daemons([photos], workers=2, extraction=QUICK, settle_queue_limit=limit).start().ready()
    flood = [images.write_jpeg(photos, f"flood{i:03d}.jpg", shapes(1000 + i, 64)) for i in range(120)]
    daemon.wait_records(before + flood, "every file, the flood's too", timeout=120)
    assert daemon.metric("lookalike_watch_events_dropped_total") >= 1
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 2, "the reconcile after the drops")
    waiting = [int(found.group(1)) for _, message in daemon.notify_messages() for line in message
               if (found := re.match(r"STATUS=\d+ images; (\d+) waiting", line))]
    assert waiting and max(waiting) <= limit, waiting
    assert "dropping events" in daemon.log_tail(400)
    assert daemon.metric_sum("lookalike_files_failed_total") == 0



def test_a_settle_queue_of_one_path_still_takes_every_file(daemons, tmp_path):
    """The reconcile's finds fill half the queue: half of one must still be one, or the walk
    would wait for room forever."""
    photos = folder(tmp_path)
    before = [images.write_jpeg(photos, f"before{i}.jpg", shapes(i, 64)) for i in range(5)]
    daemon = daemons([photos], extraction=QUICK, settle_queue_limit=1).start().ready()
    daemon.wait_records(before, "the files found by the start-up reconcile")


# --- 15-17. symlinks, non-UTF-8 names, a root that goes away ----------------------------------

def test_symlink_loops_and_links_out_of_the_tree_are_not_followed(daemons, tmp_path):
    photos = folder(tmp_path)
    outside = folder(tmp_path, "outside")
    target = images.write_jpeg(outside, "y.jpg", images.photo("chelsea"))
    real = images.write_jpeg(photos, "real.jpg", images.photo("astronaut"))
    (photos / "loop").symlink_to(photos)
    (photos / "x.jpg").symlink_to(target)
    (photos / "sub").mkdir()
    (photos / "sub" / "up").symlink_to("..")
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([real])
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")

    (photos / "z.jpg").symlink_to(target)                   # a link made while running
    sentinel = images.write_jpeg(photos, "sentinel.jpg", images.photo("coffee"))
    daemon.wait_records([real, sentinel])
    started = time.monotonic()
    daemon.reconcile()
    assert time.monotonic() - started < 10
    daemon.wait_idle()
    assert set(daemon.records()) == {str(real), str(sentinel)}
    assert daemon.failures() == {}
    assert daemon.metric("lookalike_internal_errors_total", stage="service") == 0


def test_a_non_utf8_file_name_is_indexed_and_removed(daemons, tmp_path):
    photos = folder(tmp_path)
    at_start = images.write_bytes(photos, b"na\xefve.jpg", images.jpeg_bytes(images.photo("chelsea")))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([at_start])

    path = images.non_utf8_name(photos)                     # b"caf\xe9.jpg", written while running
    assert os.fsencode(path).endswith(b"caf\xe9.jpg")
    records = daemon.wait_records([at_start, path])
    assert records[str(path)].content_hash == content_hash(images.jpeg_bytes(images.photo()))
    os.unlink(os.fsencode(path))
    daemon.wait_records([at_start], "the non-UTF-8 name removed")
    sentinel = images.write_jpeg(photos, "after.jpg", images.photo("astronaut"))
    daemon.wait_records([at_start, sentinel])
    assert daemon.metric_sum("lookalike_files_failed_total") == 0
    assert daemon.metric_sum("lookalike_internal_errors_total") == 0
    code, _ = daemon.stop()
    assert code == 0


def test_a_root_renamed_away_keeps_its_records_until_it_is_back(daemons, tmp_path):
    photos = folder(tmp_path)
    files = [images.write_jpeg(photos, f"{i}.jpg", shapes(i)) for i in range(3)]
    daemon = daemons([photos]).start().ready()
    daemon.wait_records(files)
    daemon.wait_idle()
    away = tmp_path / "unmounted"
    seen = daemon.metric("lookalike_files_seen_total")

    photos.rename(away)
    # inotify watches follow the inode: a file deleted in the renamed folder is reported under
    # its old path. The daemon looks at it, finds the folder gone, and must not take that for a
    # deletion (nor drop anything else under the folder).
    (away / "0.jpg").unlink()
    daemon.wait_metric("lookalike_files_seen_total", lambda v: v > seen, "the daemon to look at the old path")
    assert daemon.metric("lookalike_watched_folders_unavailable") == 1
    daemon.wait_idle()
    assert set(daemon.records()) == {str(f) for f in files}, "records of a missing folder were dropped"
    assert daemon.metric("lookalike_files_removed_total") == 0

    runs = daemon.metric("lookalike_reconcile_runs_total")
    away.rename(photos)
    # Housekeeping notices the folder is back, watches it again and reconciles it: the file
    # really deleted meanwhile goes, the others stay as they were.
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 0, "the folder seen back")
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v > runs, "a reconcile once the folder is back")
    new = images.write_jpeg(photos, "new.jpg", images.photo("coffee"))
    daemon.wait_records([*files[1:], new])
    daemon.wait_idle()
    assert daemon.metric("lookalike_files_indexed_total") == 4          # nothing extracted twice
    assert daemon.metric("lookalike_files_removed_total") == 1
    assert daemon.metric("lookalike_reconcile_discrepancies_total", kind="missing") == 1


def test_a_root_mounted_again_is_watched_again_whoever_sees_it_first(daemons, tmp_path):
    """A remount puts another directory (another inode) at the root's path; the old inotify
    watch still sees the old one. Whichever notices the folder is back first (housekeeping, a
    reconcile, a check), the watch must be armed again on the new directory."""
    photos = folder(tmp_path)
    files = [images.write_jpeg(photos, f"{i}.jpg", shapes(i)) for i in range(2)]
    daemon = daemons([photos]).start().ready()
    daemon.wait_records(files)
    photos.rename(tmp_path / "old-mount")
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 1, "the folder seen missing")

    shutil.copytree(tmp_path / "old-mount", photos)         # the "new mount": same files, new inodes
    daemon.reconcile()                                      # SIGHUP: its reconcile may see the folder first
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 0, "the folder seen back")
    new = images.write_jpeg(photos, "new.jpg", images.photo("coffee"))
    daemon.wait_records([*files, new], "a file in the new mount indexed from its event")
    assert daemon.metric("lookalike_files_removed_total") == 0



@pytest.mark.slow
def test_a_folder_missing_at_start_keeps_its_records_and_is_watched_once_it_appears(daemons, tmp_path):
    """A share not mounted yet at boot: the daemon starts as it goes on when a folder goes away."""
    photos, share = folder(tmp_path), folder(tmp_path, "share")
    here = images.write_jpeg(photos, "here.jpg", shapes(1))
    kept = images.write_jpeg(share, "kept.jpg", shapes(2))
    daemon = daemons([photos, share]).start().ready()
    daemon.wait_records([here, kept])
    daemon.stop()

    share.rename(tmp_path / "unmounted")
    daemon.start().ready()
    daemon.wait_metric("lookalike_reconcile_runs_total", lambda v: v >= 1, "the start-up reconcile")
    assert daemon.metric("lookalike_watched_folders_unavailable") == 1
    daemon.wait_idle()
    assert set(daemon.records()) == {str(here), str(kept)}, "records of a folder missing at start were dropped"
    assert f"{share}: the watched folder is missing or unmounted" in daemon.log_path.read_text()

    (tmp_path / "unmounted").rename(share)
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 0, "the folder seen")
    new = images.write_jpeg(share, "new.jpg", shapes(3))
    daemon.wait_records([here, kept, new], "a file in the folder that appeared indexed")
    assert daemon.metric("lookalike_files_removed_total") == 0
    code, _ = daemon.stop()
    assert code == 0


def test_a_reload_adding_a_folder_not_there_yet_is_accepted_and_watches_it_once_it_appears(daemons, tmp_path):
    photos = folder(tmp_path)
    here = images.write_jpeg(photos, "here.jpg", shapes(1))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([here])
    share = tmp_path / "share"
    daemon.write_config([photos, share])
    daemon.send(signal.SIGHUP)
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 1, "the added folder seen missing")
    assert daemon.metric("lookalike_config_last_reload_successful") == 1

    share.mkdir()
    daemon.wait_metric("lookalike_watched_folders_unavailable", lambda v: v == 0, "the folder seen")
    new = images.write_jpeg(share, "new.jpg", shapes(3))
    daemon.wait_records([here, new], "a file in the folder that appeared indexed")

    daemon.write_config([photos])                           # dropped again: no longer counted as missing
    share.rename(tmp_path / "away")
    daemon.send(signal.SIGHUP)
    daemon.wait_records([here], "the dropped folder's records gone")
    assert daemon.metric("lookalike_watched_folders_unavailable") == 0


def test_a_just_written_file_is_read_once_still_and_a_future_mtime_is_indexed(daemons, tmp_path):
    """A single write sets the mtime when it starts, so a read overlapping it can look whole:
    a file whose mtime is within a second of its read is settled and read again (never stuck
    there). A future mtime (a camera with a wrong clock) cannot mean that: indexed at once."""
    photos = folder(tmp_path)
    daemon = daemons([photos]).start().ready()
    recent = write(photos / "recent.jpg", images.jpeg_bytes(images.photo("coffee")))
    future = write(photos / "future.jpg", images.jpeg_bytes(images.photo("chelsea")))
    ahead = time.time_ns() + 3600 * 10**9
    os.utime(future, ns=(ahead, ahead))
    records = daemon.wait_records([recent, future])
    assert records[str(future)].identity.mtime_ns == ahead
    assert daemon.metric("lookalike_files_indexed_total") == 2


def test_a_scheduled_duplicates_pass_waits_for_a_large_backlog_within_a_bound():
    from lookalike.schedule import DEFERRING_BACKLOG, MAX_DEFERRALS, defer_duplicates
    interval = 900.0
    assert not defer_duplicates(DEFERRING_BACKLOG, 10.0, interval)           # a normal trickle
    assert defer_duplicates(DEFERRING_BACKLOG + 1, 10.0, interval)           # a flood still ingesting
    assert defer_duplicates(50_000, MAX_DEFERRALS * interval - 1, interval)
    assert not defer_duplicates(50_000, MAX_DEFERRALS * interval, interval)  # never starved for good
