"""A damaged context is found, named and rebuilt; never read as silent garbage (or a SIGBUS).

Runs the CLI as a subprocess: a truncated LMDB file read through mmap faults the whole process,
so only a separate process proves that the check comes before the first read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lmdb
import pytest

import images
from harness import lookalike
from lookalike.errors import ExitCode
from lookalike.statedir import state_lock

@pytest.fixture
def scanned(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        images.write_jpeg(photos, f"{name}.jpg", images.photo(name))
    config = tmp_path / "config.yaml"
    config.write_text(f"watch: [{photos}]\nstate_dir: {tmp_path / 'state'}\n")
    result = lookalike("--config", config, "scan")
    assert result.returncode == 0, result.stderr
    return config


def data_file(config: Path) -> Path:
    return config.parent / "state" / "context" / "data.mdb"


def test_truncated_context_is_refused_with_the_recovery(scanned):
    data = data_file(scanned)
    os.truncate(data, data.stat().st_size // 2)
    result = lookalike("--config", scanned, "context", "info")
    assert result.returncode == ExitCode.STORE, result
    assert "truncated" in result.stderr and "context rebuild" in result.stderr and str(data.parent) in result.stderr


def test_damaged_pages_are_found_by_context_check(scanned):
    assert lookalike("--config", scanned, "context", "check").returncode == ExitCode.OK
    data = data_file(scanned)
    with open(data, "r+b") as handle:
        handle.seek(3 * 4096)
        handle.write(os.urandom(8 * 4096))
    result = lookalike("--config", scanned, "context", "check")
    assert result.returncode == ExitCode.STORE, result
    assert "damaged" in result.stderr and "context rebuild" in result.stderr


def test_rebuild_sets_the_damaged_context_aside_and_indexes_the_folders_again(scanned):
    data = data_file(scanned)
    os.truncate(data, data.stat().st_size // 2)
    result = lookalike("--config", scanned, "context", "rebuild")
    assert result.returncode == ExitCode.OK, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 3 and summary["failed"] == 0
    assert summary["tags_set_aside"] is None and "could not be read" in result.stderr   # nor any tag it held
    assert Path(summary["previous"]).name.startswith("context.damaged-")
    assert (Path(summary["previous"]) / "data.mdb").exists()           # kept for a post-mortem
    info = json.loads(lookalike("--config", scanned, "context", "info").stdout)
    assert info["images"] == 3


def test_rebuild_after_an_extraction_change_names_the_tags_it_sets_aside(scanned, tmp_path):
    tag = lookalike("--config", scanned, "tag", "put", "cats", images.write_jpeg(tmp_path, "cat.jpg", images.photo("chelsea")))
    assert tag.returncode == ExitCode.OK, tag.stderr
    context = data_file(scanned).parent
    with lmdb.open(str(context), max_dbs=32) as env:       # as an older extraction left it
        with env.begin(write=True) as txn:
            txn.put(b"extraction", b"2", db=env.open_db(b"meta", txn=txn))
    assert lookalike("--config", scanned, "context", "info").returncode == ExitCode.STORE

    result = lookalike("--config", scanned, "context", "rebuild")
    assert result.returncode == ExitCode.OK, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tags_set_aside"] == ["cats"] and summary["added"] == 3
    assert "'cats'" in result.stderr and summary["previous"] in result.stderr and "tag put" in result.stderr
    assert json.loads(lookalike("--config", scanned, "tag", "list").stdout)["tags"] == []


def test_rebuild_is_refused_while_the_state_dir_is_in_use(scanned):
    with state_lock(scanned.parent / "state"):
        result = lookalike("--config", scanned, "context", "rebuild")
    assert result.returncode == ExitCode.STORE
    assert f"in use by lookalike process {os.getpid()}" in result.stderr
    assert json.loads(lookalike("--config", scanned, "context", "info").stdout)["images"] == 3
