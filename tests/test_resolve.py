"""`resolve` and `undo` (resolve.py): a plan from a real report, applied to real files.

Each test scans a small library of real photos with a config (`lookalike scan`), so the report
is the one the daemon would write; then it changes files on disk as a person would, and checks
the tree itself: every file's bytes and mtime, hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import images
from harness import LOOKALIKE
from lookalike import cli
from lookalike.errors import ExitCode


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([os.fspath(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args, expect: int = ExitCode.OK) -> dict:
    code, out, err = run(capsys, *args)
    assert code == expect, f"exit {code}, stderr: {err}"
    return json.loads(out)


def tree(*roots: Path) -> dict[str, tuple[str, int]]:
    """path -> (hash of the bytes, mtime_ns) of every file under `roots`; a symlink by its target."""
    found = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    found[path] = ("-> " + os.readlink(path), 0)
                else:
                    found[path] = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    return found


class Library:
    """A watched folder of photos and copies, a reference folder inside it, a config, a report."""

    def __init__(self, base: Path, reference: bool = False):
        self.base = base
        self.photos = base / "photos"
        self.photos.mkdir()
        self.quarantine = base / "quarantine"
        astronaut = images.photo("astronaut")
        self.astronaut = images.write_jpeg(self.photos, "astronaut.jpg", astronaut)
        self.small = images.write_jpeg(self.photos, "astronaut-small.jpg", images.resized(astronaut, 256, 256), 80)
        (self.photos / "2024").mkdir()
        self.copy = self.photos / "2024" / "astronaut-copy.jpg"
        shutil.copy2(self.astronaut, self.copy)
        self.coffee = images.write_jpeg(self.photos, "coffee.jpg", images.photo("coffee"))
        self.chelsea = images.write_jpeg(self.photos, "chelsea.jpg", images.photo("chelsea"))
        self.chelsea_copy = self.photos / "chelsea-copy.jpg"
        shutil.copy2(self.chelsea, self.chelsea_copy)
        self.kept_folder = self.photos / "kept"
        extra = ""
        if reference:
            self.kept_folder.mkdir()
            for name in ("coffee.jpg", "coffee-2.jpg"):      # whichever is kept, one is a copy
                shutil.copy2(self.coffee, self.kept_folder / name)
            extra = f"keep:\n  reference: [{self.kept_folder}]\n"
        self.config = base / "lookalike.yaml"
        self.config.write_text(f"watch: [{self.photos}]\nstate_dir: {base / 'state'}\n{extra}")
        self.report = base / "state" / "reports" / "duplicates-latest.json"

    def scan(self, capsys) -> dict:
        run_json(capsys, "--config", self.config, "scan")
        return json.loads(self.report.read_text())

    def resolve(self, capsys, *args, expect: int = ExitCode.OK) -> dict:
        return run_json(capsys, "--config", self.config, "resolve", "--json", *args, expect=expect)


@pytest.fixture
def library(tmp_path) -> Library:
    return Library(tmp_path)


def copies_in(report: dict) -> set[str]:
    return {image["path"] for group in report["groups"] for image in group["images"] if not image["keeper"]}


def keepers_in(report: dict) -> set[str]:
    return {image["path"] for group in report["groups"] for image in group["images"] if image["keeper"]}


def test_the_report_carries_each_files_content_hash(library, capsys):
    report = library.scan(capsys)
    for group in report["groups"]:
        for image in group["images"]:
            expected = hashlib.blake2b(Path(image["path"]).read_bytes(), digest_size=16).hexdigest()
            assert image["content_hash"] == expected


def test_resolve_without_apply_changes_nothing_and_plans_every_copy(library, capsys):
    report = library.scan(capsys)
    assert copies_in(report) and keepers_in(report)
    before = tree(library.base)
    plans = {action: library.resolve(capsys, "--action", action) for action in ("quarantine", "hardlink", "delete")}
    code, text, _ = run(capsys, "--config", library.config, "resolve", "--to", library.quarantine)
    assert tree(library.base) == before
    assert not library.quarantine.exists()

    plan = plans["quarantine"]
    assert plan["version"] == 1
    assert {a["path"] for a in plan["actions"]} == copies_in(report)
    assert all(a["action"] == "quarantine" and a["keeper"] in keepers_in(report) and a["reason"]
               for a in plan["actions"])
    assert {s["path"]: s["reason"] for s in plan["skipped"]} == {k: "the keeper" for k in keepers_in(report)}
    assert code == ExitCode.OK and "nothing was changed" in text
    assert all(f"quarantine  {path}" in text for path in copies_in(report))
    # Hard links only for byte-identical copies; the resized one is left alone, saying why.
    linked = {a["path"] for a in plans["hardlink"]["actions"]}
    identical = {image["path"] for group in report["groups"] for image in group["images"] if not image["keeper"]
                 and image["content_hash"] == next(k["content_hash"] for k in group["images"] if k["keeper"])}
    assert linked == identical and len(linked) == 2
    assert {s["path"]: s["reason"] for s in plans["hardlink"]["skipped"]}[str(library.small)] == \
        "not byte-identical to the keeper"


def test_apply_quarantines_exactly_the_plan_and_undo_restores_bytes_and_mtimes(library, capsys):
    library.scan(capsys)
    before = tree(library.photos)
    plan = library.resolve(capsys)
    planned = {a["path"] for a in plan["actions"]}
    done = library.resolve(capsys, "--apply", "--to", library.quarantine)
    assert done["applied"] and {a["path"] for a in done["actions"]} == planned

    after = tree(library.photos)
    assert set(after) == set(before) - planned
    assert all(after[path] == before[path] for path in after)
    manifest = Path(done["manifest"])
    assert manifest.parent == library.quarantine
    held = tree(library.quarantine)
    assert set(held) == {str(library.quarantine) + path for path in planned} | {str(manifest)}
    assert all(held[str(library.quarantine) + path] == before[path] for path in planned)

    undone = run_json(capsys, "undo", manifest)
    assert set(undone["restored"]) == planned and not undone["refused"] and not undone["in_place"]
    assert tree(library.photos) == before
    assert tree(library.quarantine) == {str(manifest): held[str(manifest)]}
    # Again: nothing left to do, nothing refused.
    again = run_json(capsys, "undo", manifest)
    assert set(again["in_place"]) == planned and not again["restored"] and not again["refused"]


def test_undo_refuses_a_taken_path_and_a_changed_quarantined_file(library, capsys):
    library.scan(capsys)
    done = library.resolve(capsys, "--apply", "--to", library.quarantine)
    first, second = sorted(a["path"] for a in done["actions"])[:2]
    Path(first).write_bytes(b"a new file at the old name")
    held = Path(str(library.quarantine) + second)
    held.write_bytes(held.read_bytes() + b"x")
    undone = run_json(capsys, "undo", done["manifest"], expect=ExitCode.FAILED)
    assert {r["path"]: r["reason"] for r in undone["refused"]} == {
        first: "the original path is taken again",
        second: f"the quarantined file {held} changed"}
    assert Path(first).read_bytes() == b"a new file at the old name" and not os.path.exists(second)


def test_a_file_changed_after_the_report_is_skipped_with_its_reason(library, capsys):
    report = library.scan(capsys)
    copies = sorted(copies_in(report))
    assert len(copies) >= 3
    same_size, appended, linked = copies[:3]
    # Same size and mtime, other bytes: only hashing again finds it.
    stat = os.stat(same_size)
    data = bytearray(Path(same_size).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(same_size).write_bytes(bytes(data))
    os.utime(same_size, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with open(appended, "ab") as handle:
        handle.write(b"more")
    os.replace(linked, linked + ".moved")
    os.symlink(linked + ".moved", linked)
    before = tree(library.photos)

    plan = library.resolve(capsys)
    skipped = {s["path"]: s["reason"] for s in plan["skipped"]}
    assert skipped[appended] == "changed since the report (size or mtime)"
    assert skipped[linked] == "a symlink now"
    assert same_size in {a["path"] for a in plan["actions"]}

    done = library.resolve(capsys, "--apply", "--to", library.quarantine, expect=ExitCode.FAILED)
    skipped = {s["path"]: s["reason"] for s in done["skipped"]}
    assert skipped[same_size] == "its bytes changed since the report"
    moved = {a["path"] for a in done["actions"]}
    assert moved == set(copies) - {same_size, appended, linked}
    after = tree(library.photos)
    assert all(after[path] == before[path] for path in (same_size, appended, linked, linked + ".moved"))


def test_a_copy_whose_keeper_changed_is_left_alone(library, capsys):
    report = library.scan(capsys)
    group = next(g for g in report["groups"] if len(g["images"]) >= 2)
    keeper = next(i["path"] for i in group["images"] if i["keeper"])
    with open(keeper, "ab") as handle:
        handle.write(b"edited")
    plan = library.resolve(capsys, "--action", "delete")
    skipped = {s["path"]: s["reason"] for s in plan["skipped"]}
    for image in group["images"]:
        if not image["keeper"]:
            assert skipped[image["path"]] == f"its keeper {keeper}: changed since the report (size or mtime)"


def test_hardlink_links_identical_copies_and_refuses_files_whose_bytes_differ(library, capsys):
    report = library.scan(capsys)
    before = tree(library.photos)
    done = library.resolve(capsys, "--action", "hardlink", "--apply")
    assert done["actions"], done
    for action in done["actions"]:
        assert os.path.samefile(action["path"], action["keeper"])
        assert tree(library.photos)[action["path"]][0] == before[action["path"]][0]
    skipped = {s["path"]: s["reason"] for s in done["skipped"]}
    assert skipped[str(library.small)] == "not byte-identical to the keeper"
    assert tree(library.photos)[str(library.small)] == before[str(library.small)]
    assert not [p for p in os.listdir(library.photos) if p.endswith(".tmp")]
    # Run again: nothing to link, each says so.
    again = library.resolve(capsys, "--action", "hardlink")
    assert not again["actions"]
    assert {s["path"]: s["reason"] for s in again["skipped"]}[done["actions"][0]["path"]] == \
        "already a hard link to the keeper"
    assert keepers_in(report)


def test_hardlink_refuses_a_copy_whose_bytes_changed_since_the_report(library, capsys):
    library.scan(capsys)
    target = library.resolve(capsys, "--action", "hardlink")["actions"][0]["path"]
    stat = os.stat(target)
    data = bytearray(Path(target).read_bytes())
    data[-10] ^= 0x01
    Path(target).write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    done = library.resolve(capsys, "--action", "hardlink", "--apply", expect=ExitCode.FAILED)
    assert {s["path"]: s["reason"] for s in done["skipped"]}[target] == "its bytes changed since the report"
    assert Path(target).read_bytes() == bytes(data) and os.stat(target).st_nlink == 1


def test_reference_folders_keepers_and_unwatched_files_are_never_acted_on(tmp_path, capsys):
    library = Library(tmp_path, reference=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    strays = [outside / "astronaut.jpg", outside / "astronaut-2.jpg"]       # whichever is kept, one is a copy
    for stray in strays:
        shutil.copy2(library.astronaut, stray)
    context = tmp_path / "state" / "context"
    run_json(capsys, "--context", context, "context", "create")
    run_json(capsys, "--context", context, "features", "add", *strays)      # in the context, not watched
    report = library.scan(capsys)
    references = [str(library.kept_folder / name) for name in ("coffee.jpg", "coffee-2.jpg")]
    listed = {i["path"] for g in report["groups"] for i in g["images"]}
    assert set(references) | set(map(str, strays)) <= listed

    done = library.resolve(capsys, "--action", "delete", "--apply")
    skipped = {s["path"]: s["reason"] for s in done["skipped"]}
    in_reference = f"in the reference folder {library.kept_folder}"
    assert {skipped[p] for p in references} <= {in_reference, "the keeper"} and in_reference in skipped.values()
    outside_reason = "outside the watched folders"
    assert {skipped[str(p)] for p in strays} <= {outside_reason, "the keeper"} and outside_reason in skipped.values()
    assert all(skipped[k] == "the keeper" for k in keepers_in(report))
    for path in (*references, *map(str, strays), *keepers_in(report)):
        assert os.path.exists(path), path
    deleted = {a["path"] for a in done["actions"]}
    assert deleted and not any(os.path.exists(p) for p in deleted)


@pytest.mark.parametrize("args, says", [
    (["--apply"], "needs --to DIR"),
    (["--action", "delete", "--to", "q"], "--to is the quarantine folder"),
])
def test_resolve_usage_errors(library, capsys, args, says):
    library.scan(capsys)
    code, _, err = run(capsys, "--config", library.config, "resolve", *args)
    assert code == ExitCode.USAGE and says in err


def test_a_quarantine_inside_a_watched_folder_is_refused(library, capsys):
    library.scan(capsys)
    before = tree(library.photos)
    code, _, err = run(capsys, "--config", library.config, "resolve", "--apply", "--to", library.photos / "q")
    assert code == ExitCode.USAGE and "inside the watched folder" in err
    assert tree(library.photos) == before


def test_no_report_is_not_found_and_a_report_is_needed(library, capsys):
    code, _, err = run(capsys, "--config", library.config, "resolve")
    assert code == ExitCode.NOT_FOUND and "no such report" in err
    code, _, err = run(capsys, "resolve")
    assert code == ExitCode.USAGE and "--report FILE" in err


# --- a kill in the middle -----------------------------------------------------------------------

def _other_filesystem() -> Path | None:
    """A writable folder on another filesystem than the temporary folder, for the copy path."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev:
        return shm
    return None


@pytest.mark.slow
@pytest.mark.parametrize("where", ["same filesystem", "other filesystem"])
def test_a_sigkill_during_apply_loses_no_file_and_undo_restores_all(tmp_path, capsys, where):
    photos = tmp_path / "photos"
    photos.mkdir()
    original = images.write_jpeg(photos, "original.jpg", images.resized(images.photo("astronaut"), 96, 96))
    count = 150
    for i in range(count):
        folder = photos / f"copies{i % 5}"
        folder.mkdir(exist_ok=True)
        shutil.copy2(original, folder / f"copy{i:03}.jpg")
    config = tmp_path / "lookalike.yaml"
    config.write_text(f"watch: [{photos}]\nstate_dir: {tmp_path / 'state'}\nextraction: {{working_size: 128}}\n")
    run_json(capsys, "--config", config, "scan")
    before = tree(photos)

    if where == "other filesystem":
        base = _other_filesystem()
        if base is None:
            pytest.skip("no second writable filesystem here")
        quarantine_base = Path(tempfile.mkdtemp(dir=base, prefix="lookalike-test-"))
    else:
        quarantine_base = tmp_path
    quarantine = quarantine_base / "quarantine"
    try:
        process = subprocess.Popen([str(LOOKALIKE), "--config", str(config), "resolve", "--apply", "--json",
                                    "--to", str(quarantine)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        entries = 0
        deadline = time.monotonic() + 60
        while entries < 20 and process.poll() is None and time.monotonic() < deadline:
            manifests = list(quarantine.glob("lookalike-manifest-*.jsonl")) if quarantine.exists() else []
            entries = manifests[0].read_bytes().count(b"\n") - 1 if manifests else 0
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert process.returncode == -signal.SIGKILL, "the apply finished before it could be killed"
        [manifest] = quarantine.glob("lookalike-manifest-*.jsonl")
        recorded = [json.loads(line) for line in manifest.read_text().splitlines()[1:] if line.endswith("}")]
        assert 20 <= len(recorded) < count + 1

        # Every file is at its path or in the quarantine with its entry; none is anywhere else.
        in_manifest = {entry["path"] for entry in recorded}
        for path, (digest, mtime) in before.items():
            held = str(quarantine) + path
            if os.path.exists(path):
                assert tree(Path(path).parent)[path] == (digest, mtime)
            else:
                assert path in in_manifest, f"{path} is gone and not in the manifest"
                assert os.path.exists(held), f"{path} is neither in place nor in the quarantine"
                assert tree(Path(held).parent)[held][0] == digest
        assert len(before) - sum(os.path.exists(p) for p in before) >= 19

        undone = run_json(capsys, "undo", manifest)
        assert not undone["refused"]
        assert tree(photos) == before
    finally:
        if quarantine_base != tmp_path:
            shutil.rmtree(quarantine_base, ignore_errors=True)


def test_a_copy_that_runs_out_of_space_leaves_the_file_in_place(tmp_path, capsys):
    """A file size limit stands in for a full quarantine disk: the copy across filesystems fails
    part-way, the original stays, the half-written copy goes, the other files go on."""
    base = _other_filesystem()
    if base is None:
        pytest.skip("no second writable filesystem here")
    library = Library(tmp_path)
    report = library.scan(capsys)
    limit = 40_000
    sizes = {image["path"]: image["size"] for group in report["groups"] for image in group["images"]}
    too_big = {p for p in copies_in(report) if sizes[p] > limit}
    assert too_big and copies_in(report) - too_big
    before = tree(library.photos)
    quarantine_base = Path(tempfile.mkdtemp(dir=base, prefix="lookalike-test-"))
    quarantine = quarantine_base / "quarantine"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    try:
        result = subprocess.run([str(LOOKALIKE), "--config", str(library.config), "resolve", "--apply", "--json",
                                 "--to", str(quarantine)], capture_output=True, text=True, timeout=60,
                                preexec_fn=limit_file_size)
        assert result.returncode == ExitCode.FAILED, result.stderr
        done = json.loads(result.stdout)
        assert {s["path"]: s["reason"] for s in done["skipped"] if s["path"] in too_big} == \
            {p: "File too large" for p in too_big}
        assert {a["path"] for a in done["actions"]} == copies_in(report) - too_big
        after = tree(library.photos)
        assert all(after[p] == before[p] for p in too_big)
        assert not [name for _, _, names in os.walk(quarantine) for name in names if name.endswith(".tmp")]
        undone = run_json(capsys, "undo", done["manifest"])
        assert set(undone["in_place"]) == too_big and not undone["refused"]
        assert tree(library.photos) == before
    finally:
        shutil.rmtree(quarantine_base, ignore_errors=True)
