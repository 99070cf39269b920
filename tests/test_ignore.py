"""`ignore` (operations.py, store/ignored.py): pairs marked "not a duplicate" on real photos.

A small library of real photos and their copies is scanned (`lookalike scan`, the daemon's own
pass), a pair is marked, and the next report must keep it apart though no file changed; the
daemon test renames a file and restarts the daemon and checks the mark still holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

import images
from lookalike.errors import ExitCode
from lookalike.store import ignored
from lookalike.store.ignored import IgnoredPair
from test_cli import run, run_json


def write_library(photos: Path) -> dict[str, Path]:
    """The astronaut and two smaller copies of it (three contents), the cat and a copy."""
    photos.mkdir()
    astronaut, chelsea = images.photo("astronaut"), images.photo("chelsea")
    return {"astronaut": images.write_jpeg(photos, "astronaut.jpg", astronaut),
            "medium": images.write_jpeg(photos, "astronaut-384.jpg", images.resized(astronaut, 384, 384), 85),
            "small": images.write_jpeg(photos, "astronaut-256.jpg", images.resized(astronaut, 256, 256), 80),
            "chelsea": images.write_jpeg(photos, "chelsea.jpg", chelsea),
            "chelsea_small": images.write_jpeg(photos, "chelsea-small.jpg", images.resized(chelsea, 300, 200), 80)}


def groups_of(report: dict) -> set[frozenset[str]]:
    return {frozenset(image["path"] for image in group["images"]) for group in report["groups"]}


def keeper_of(report: dict, path: Path) -> str | None:
    for group in report["groups"]:
        if str(path) in (image["path"] for image in group["images"]):
            return next(image["path"] for image in group["images"] if image["keeper"])
    return None


class Library:
    def __init__(self, base: Path):
        self.base = base
        self.files = write_library(base / "photos")
        self.config = base / "lookalike.yaml"
        self.config.write_text(f"watch: [{base / 'photos'}]\nstate_dir: {base / 'state'}\n")
        self.report = base / "state" / "reports" / "duplicates-latest.json"

    def scan(self, capsys) -> dict:
        run_json(capsys, "--config", self.config, "scan")
        return json.loads(self.report.read_text())

    def ignore(self, capsys, *args, expect: int = ExitCode.OK) -> dict:
        return run_json(capsys, "--config", self.config, "ignore", "--json", *args, expect=expect)

    def fails(self, capsys, *args) -> tuple[int, str]:
        code, out, err = run(capsys, "--config", self.config, "ignore", *args)
        assert not out
        return code, err


@pytest.fixture
def library(tmp_path) -> Library:
    return Library(tmp_path)


def test_an_ignored_pair_is_kept_apart_until_the_mark_is_removed(library, capsys):
    files = library.files
    before = library.scan(capsys)
    family = frozenset(str(files[name]) for name in ("astronaut", "medium", "small"))
    assert family in groups_of(before)

    marked = library.ignore(capsys, files["astronaut"], files["small"])
    hashes = {image["path"]: image["content_hash"] for group in before["groups"] for image in group["images"]}
    [pair] = marked["added"]
    assert dict(zip(pair["paths"], pair["content_hashes"])) == {str(files[name]): hashes[str(files[name])]
                                                                 for name in ("astronaut", "small")}
    pair_id = pair["id"]
    # Nothing changed on disk: the next pass regroups all the same.
    after = library.scan(capsys)
    assert frozenset({str(files["astronaut"]), str(files["medium"])}) in groups_of(after)
    assert all(str(files["small"]) not in group for group in groups_of(after))
    duplicates = run_json(capsys, "--config", library.config, "duplicates")
    assert groups_of(duplicates) == groups_of(after)
    assert library.ignore(capsys, files["small"], files["astronaut"])["already"][0]["id"] == pair_id

    listed = library.ignore(capsys, "--list")["pairs"]
    assert [(p["id"], sorted(p["paths"])) for p in listed] == [(pair_id, sorted([str(files["astronaut"]),
                                                                                 str(files["small"])]))]
    assert sorted(path for paths in listed[0]["current_paths"] for path in paths) == sorted(listed[0]["paths"])
    code, text, _ = run(capsys, "--config", library.config, "ignore", "--list")
    assert code == ExitCode.OK and pair_id in text and str(files["small"]) in text

    removed = library.ignore(capsys, "--remove", files["small"], files["astronaut"])
    assert [pair["id"] for pair in removed["removed"]] == [pair_id]
    assert family in groups_of(library.scan(capsys))
    assert library.ignore(capsys, "--list")["pairs"] == []
    # By its id too.
    library.ignore(capsys, files["astronaut"], files["small"])
    assert library.ignore(capsys, "--remove", pair_id)["removed"][0]["id"] == pair_id
    assert family in groups_of(library.scan(capsys))


def test_of_two_ignored_copies_of_one_keeper_the_first_in_keeper_order_stays(library, capsys):
    """Both copies are like the keeper, but marked not like each other: one group cannot hold
    both, and an image is in one group at most. The larger copy (first in the keeper order)
    stays with the keeper; the other is held out, and alone it is in no group."""
    files = library.files
    library.scan(capsys)
    library.ignore(capsys, files["medium"], files["small"])
    report = library.scan(capsys)
    assert frozenset({str(files["astronaut"]), str(files["medium"])}) in groups_of(report)
    assert all(str(files["small"]) not in group for group in groups_of(report))


def test_ignoring_a_group_marks_each_copy_against_its_keeper_only(library, capsys):
    """The report claimed each copy is a duplicate of the keeper; those claims are withdrawn.
    The copies were never claimed to be alike each other, so they group on their own."""
    files = library.files
    report = library.scan(capsys)
    shutil.copy(library.report, library.base / "before.json")
    group_id = next(g["id"] for g in report["groups"] if str(files["astronaut"]) in
                    (i["path"] for i in g["images"]))
    assert keeper_of(report, files["astronaut"]) == str(files["astronaut"])
    marked = library.ignore(capsys, "--group", str(group_id))
    assert sorted(sorted(p["paths"]) for p in marked["added"]) == sorted(
        sorted([str(files["astronaut"]), str(files[copy])]) for copy in ("medium", "small"))

    after = library.scan(capsys)
    assert frozenset({str(files["medium"]), str(files["small"])}) in groups_of(after)
    assert all(str(files["astronaut"]) not in group for group in groups_of(after))
    assert frozenset({str(files["chelsea"]), str(files["chelsea_small"])}) in groups_of(after)
    # The report named explicitly: the same marks, already stored.
    again = library.ignore(capsys, "--group", str(group_id), "--report", library.base / "before.json")
    assert not again["added"] and {p["id"] for p in again["already"]} == {p["id"] for p in marked["added"]}


def test_bad_requests_are_refused_naming_the_file_or_group(library, capsys, tmp_path):
    files = library.files
    library.scan(capsys)
    missing = library.base / "photos" / "gone.jpg"
    code, err = library.fails(capsys, files["astronaut"], missing)
    assert code == ExitCode.NOT_FOUND and f"{missing}: no such file" in err
    outside = images.write_jpeg(library.base, "outside.jpg", images.photo("coffee"))
    code, err = library.fails(capsys, files["astronaut"], outside)
    assert code == ExitCode.NOT_FOUND and f"{outside}: not in the search context" in err
    code, err = library.fails(capsys, files["astronaut"], files["astronaut"])
    assert code == ExitCode.USAGE and "the same file twice" in err
    twin = library.base / "photos" / "astronaut-twin.jpg"
    shutil.copy2(files["astronaut"], twin)
    library.scan(capsys)
    code, err = library.fails(capsys, files["astronaut"], twin)
    assert code == ExitCode.USAGE and "the same bytes" in err
    with open(files["small"], "ab") as handle:
        handle.write(b"edited since")
    code, err = library.fails(capsys, files["astronaut"], files["small"])
    assert code == ExitCode.USAGE and f"{files['small']}: changed since it was indexed" in err

    groups = len(json.loads(library.report.read_text())["groups"])
    code, err = library.fails(capsys, "--group", str(groups + 1))
    assert code == ExitCode.NOT_FOUND and f"group {groups + 1}: not in {library.report}" in err
    code, err = library.fails(capsys, "--remove", "0123456789")
    assert code == ExitCode.NOT_FOUND and "0123456789: no pair marked" in err
    code, err = library.fails(capsys, "--remove", files["astronaut"], files["medium"])
    assert code == ExitCode.NOT_FOUND and "not marked not a duplicate" in err
    for args, expected in ((["--list", "--group", "1"], "--list and --group do not go together"),
                           ([files["astronaut"]], "ignore takes two files"),
                           (["--report", library.report, files["astronaut"], files["medium"]], "--report names"),
                           (["--list", files["astronaut"]], "--list takes no files")):
        code, err = library.fails(capsys, *args)
        assert code == ExitCode.USAGE and expected in err, (args, err)
    assert library.ignore(capsys, "--list")["pairs"] == []

    other = tmp_path / "other-context"
    run_json(capsys, "--context", other, "context", "create")
    code, out, err = run(capsys, "--context", other, "ignore", "--group", "1", "--report", library.report)
    assert code == ExitCode.USAGE and "a report of the context" in err


def test_a_damaged_list_is_an_error_naming_it_and_no_report_ignores_it(library, capsys):
    files = library.files
    library.scan(capsys)
    library.ignore(capsys, files["astronaut"], files["small"])
    stored = library.base / "state" / "context" / "ignored.json"
    assert json.loads(stored.read_text())["version"] == 1
    stored.write_text('{"version": 1, "pairs": [{"id": "x"}]')
    code, _, err = run(capsys, "--config", library.config, "duplicates")
    assert code == ExitCode.STORE and f"{stored}: not a list of pairs marked not a duplicate" in err
    stored.write_text('{"version": 2, "pairs": []}')
    code, _, err = run(capsys, "--config", library.config, "ignore", "--list")
    assert code == ExitCode.STORE and f"{stored}: written by a newer lookalike" in err


def test_a_rebuild_keeps_the_marks_and_a_delete_removes_them(library, capsys):
    files = library.files
    library.scan(capsys)
    marked = library.ignore(capsys, files["astronaut"], files["small"])["added"]
    rebuilt = run_json(capsys, "--config", library.config, "context", "rebuild")
    assert [p["id"] for p in library.ignore(capsys, "--list")["pairs"]] == [p["id"] for p in marked]
    assert all(str(files["small"]) not in group for group in groups_of(library.scan(capsys)))
    run_json(capsys, "--config", library.config, "context", "delete")
    assert not Path(rebuilt["context"]).exists()


def test_marks_made_at_once_are_all_kept(tmp_path):
    """Each writer reads, adds and replaces the file under the lock: none loses another's mark."""
    writers, marks = 8, 10
    start = threading.Barrier(writers)

    def mark(writer: int) -> None:
        start.wait()
        for n in range(marks):
            ignored.add(tmp_path, [IgnoredPair.of((bytes([writer, n, 0]), f"/a{writer}-{n}"),
                                                  (bytes([writer, n, 1]), f"/b{writer}-{n}"))])

    threads = [threading.Thread(target=mark, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = ignored.read(tmp_path)
    assert len(stored.pairs) == writers * marks
    assert stored.apart(bytes([3, 4, 1]), bytes([3, 4, 0])) and not stored.apart(bytes([3, 4, 0]), bytes([3, 5, 1]))


@pytest.mark.slow
def test_with_the_daemon_a_pair_stays_apart_after_a_rename_and_a_restart(daemons, tmp_path):
    files = write_library(tmp_path / "photos")
    daemon = daemons([tmp_path / "photos"])
    daemon.start().ready()
    daemon.wait_records(files.values())
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first report")
    latest = daemon.reports / "duplicates-latest.json"
    family = frozenset(str(files[name]) for name in ("astronaut", "medium", "small"))
    assert family in groups_of(json.loads(latest.read_text()))

    def next_report() -> dict:
        runs = daemon.metric("lookalike_duplicates_runs_total")
        daemon.send(signal.SIGUSR1)
        daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v > runs, "a pass after SIGUSR1")
        return json.loads(latest.read_text())

    def apart(report: dict, first: Path, second: Path) -> bool:
        return not any({str(first), str(second)} <= group for group in groups_of(report))

    # While the daemon runs: it holds the state lock and the LMDB environment.
    marked = daemon.cli("ignore", "--json", files["astronaut"], files["small"])
    assert len(marked["added"]) == 1
    assert apart(next_report(), files["astronaut"], files["small"])

    renamed = files["small"].with_name("renamed.jpg")
    os.rename(files["small"], renamed)
    daemon.wait_records([*(p for name, p in files.items() if name != "small"), renamed])
    report = next_report()
    assert apart(report, files["astronaut"], renamed)
    assert frozenset({str(files["astronaut"]), str(files["medium"])}) in groups_of(report)

    daemon.stop()
    daemon.start().ready()
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first report after a restart")
    assert apart(json.loads(latest.read_text()), files["astronaut"], renamed)

    daemon.cli("ignore", "--json", "--remove", renamed, files["astronaut"])
    assert frozenset({str(files["astronaut"]), str(files["medium"]), str(renamed)}) in groups_of(next_report())

    # A list it cannot read stops the pass, not the daemon, and no report undoes the marks.
    stored = daemon.context_dir / "ignored.json"
    stored.write_text("{")
    published = latest.read_bytes()
    failed = daemon.metric("lookalike_internal_errors_total", 0.0, stage="duplicates")
    daemon.send(signal.SIGUSR1)
    daemon.wait_metric("lookalike_internal_errors_total", lambda v: v > failed, "the pass to fail", stage="duplicates")
    assert f"{stored}: not a list of pairs marked not a duplicate" in daemon.log_text()
    assert daemon.alive() and latest.read_bytes() == published
