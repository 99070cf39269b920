"""reconcile.py: the walk that is the truth when events are lost. Real folders on tmp_path, a
real context; no daemon (test_daemon.py runs the reconcile inside one)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

import images
from lookalike.config import WatchedFolder
from lookalike.extract import extract_file
from lookalike import reconcile as reconcile_module
from lookalike.reconcile import reconcile, walk
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext
from lookalike.types import Cancelled, FileIdentity
from lookalike.watch.folders import Folders
from lookalike.watch.observe import Dirty


def walked(folder: WatchedFolder, folders: Folders) -> set[str]:
    return {path for path, _ in walk(folder, folders, threading.Event())}


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    for relative in ("a.jpg", "sub/b.jpg", "sub/deeper/c.png", ".cache/d.jpg", "sub/notes.txt"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_walk_yields_wanted_files_below_the_root(tree):
    folder = WatchedFolder(tree)
    assert walked(folder, Folders((folder,))) == {str(tree / "a.jpg"), str(tree / "sub/b.jpg"),
                                                  str(tree / "sub/deeper/c.png")}


def test_walk_of_a_non_recursive_folder_stays_at_the_top(tree):
    folder = WatchedFolder(tree, recursive=False)
    assert walked(folder, Folders((folder,))) == {str(tree / "a.jpg")}


def test_walk_does_not_follow_links_and_ends_on_a_loop(tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "y.jpg").write_bytes(b"y")
    (tree / "loop").symlink_to(tree)
    (tree / "sub" / "up").symlink_to("..")
    (tree / "x.jpg").symlink_to(outside / "y.jpg")
    (tree / "out").symlink_to(outside)
    folder = WatchedFolder(tree)
    started = time.monotonic()
    found = walked(folder, Folders((folder,)))
    assert time.monotonic() - started < 5
    assert found == {str(tree / "a.jpg"), str(tree / "sub/b.jpg"), str(tree / "sub/deeper/c.png")}


def test_walk_with_follow_symlinks_visits_each_folder_once(tree):
    (tree / "loop").symlink_to(tree)
    folder = WatchedFolder(tree, follow_symlinks=True)
    found = walked(folder, Folders((folder,)))
    assert str(tree / "a.jpg") in found
    assert not any("/loop/loop/" in path for path in found)


def test_nested_folders_each_walk_their_own_files(tree):
    outer = WatchedFolder(tree)
    inner = WatchedFolder(tree / "sub", include=("*.jpg",), recursive=False)
    folders = Folders((outer, inner))
    assert walked(inner, folders) == {str(tree / "sub/b.jpg")}
    # Below the non-recursive inner folder the outer one owns the files again (Folders.folder_of),
    # so its walk must reach them: otherwise a file added there while the daemon was down, or
    # whose event was lost, is never found.
    assert folders.folder_of(str(tree / "sub/deeper/c.png")) is outer
    assert walked(outer, folders) == {str(tree / "a.jpg"), str(tree / "sub/deeper/c.png")}


def test_a_nested_recursive_folder_is_left_to_its_own_walk(tree):
    outer = WatchedFolder(tree)
    inner = WatchedFolder(tree / "sub")
    folders = Folders((outer, inner))
    assert walked(outer, folders) == {str(tree / "a.jpg")}
    assert walked(inner, folders) == {str(tree / "sub/b.jpg"), str(tree / "sub/deeper/c.png")}


def test_a_stop_cancels_the_walk(tree):
    stop = threading.Event()
    stop.set()
    folder = WatchedFolder(tree)
    with pytest.raises(Cancelled):
        list(walk(folder, Folders((folder,)), stop))


def test_reconcile_reports_new_changed_and_missing(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    same = images.write_jpeg(root, "same.jpg", images.photo("astronaut"))
    changed = images.write_jpeg(root, "changed.jpg", images.photo("chelsea"))
    gone = images.write_jpeg(root, "gone.jpg", images.photo("coffee"))
    settings = ExtractionSettings(working_size=128)
    with SearchContext.create(tmp_path / "ctx", settings) as context:
        context.upsert_many([extract_file(str(p), settings) for p in (same, changed, gone)])
        images.write_jpeg(root, "changed.jpg", images.photo("rocket"))
        gone.unlink()
        new = images.write_jpeg(root, "new.jpg", images.photo("coffee"))
        folder = WatchedFolder(root)
        intents = []
        summary = reconcile(Folders((folder,)), context, intents.append, lambda f: True, threading.Event())
    assert (summary.files, summary.new, summary.changed, summary.missing) == (3, 1, 1, 1)
    assert all(isinstance(i, Dirty) for i in intents)
    assert sorted(i.path for i in intents) == sorted(map(str, (changed, gone, new)))
    missing = next(i for i in intents if i.path == str(gone))
    assert missing.quiet_since == 0.0                      # nothing to wait for


def test_reconcile_skips_a_folder_that_is_down(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    kept = images.write_jpeg(root, "a.jpg", images.photo("astronaut"))
    settings = ExtractionSettings(working_size=128)
    with SearchContext.create(tmp_path / "ctx", settings) as context:
        context.upsert(extract_file(str(kept), settings))
        kept.unlink()
        intents = []
        folder = WatchedFolder(root)
        summary = reconcile(Folders((folder,)), context, intents.append, lambda f: False, threading.Event())
    assert intents == [] and summary.folders_down == [str(root)] and summary.missing == 0


def test_reconcile_compares_page_by_page_and_finds_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(reconcile_module, "PAGE", 3)
    root = tmp_path / "photos"
    root.mkdir()
    settings = ExtractionSettings(working_size=128)
    features = extract_file(str(images.write_jpeg(root, "model.jpg", images.photo("astronaut"))), settings)
    kept = [images.write_jpeg(root, f"kept-{n}.jpg", images.photo("astronaut")) for n in range(6)]
    gone = [root / f"gone-{n}.jpg" for n in range(5)]
    with SearchContext.create(tmp_path / "ctx", settings) as context:
        context.upsert_many([replace(features, path=str(p), identity=FileIdentity.of(p.stat())) for p in kept] +
                            [replace(features, path=str(p)) for p in gone])
        for n in range(4):
            context.record_failure(str(root / f"failed-gone-{n}.jpg"), None, "corrupt", "bad Huffman code")
        new = [images.write_jpeg(root, f"new-{n}.jpg", images.photo("coffee")) for n in range(4)]
        intents = []
        folder = WatchedFolder(root)
        summary = reconcile(Folders((folder,)), context, intents.append, lambda f: True, threading.Event())
    missing = [*map(str, gone), *(str(root / f"failed-gone-{n}.jpg") for n in range(4))]
    assert (summary.files, summary.new, summary.changed, summary.missing) == (11, 5, 0, 9)
    assert sorted(i.path for i in intents) == sorted([*missing, *map(str, new), str(root / "model.jpg")])


def test_reconcile_of_an_emptied_folder_finds_every_file_missing(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    settings = ExtractionSettings(working_size=128)
    photo = images.write_jpeg(root, "a.jpg", images.photo("astronaut"))
    with SearchContext.create(tmp_path / "ctx", settings) as context:
        context.upsert(extract_file(str(photo), settings))
        context.record_failure(str(root / "b.jpg"), None, "corrupt", "bad Huffman code")
        photo.unlink()
        intents = []
        summary = reconcile(Folders((WatchedFolder(root),)), context, intents.append, lambda f: True,
                            threading.Event())
    assert (summary.files, summary.missing) == (0, 2)
    assert sorted(i.path for i in intents) == [str(photo), str(root / "b.jpg")]
