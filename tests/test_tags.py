"""Tags (named reference images kept in the context) and the daemon's watchlist alerts.

The CLI runs as a subprocess on a real context; the watchlist runs in a real daemon on real
folders (tests/harness.py), and its alerts are read back four ways: `lookalike alerts`, the
log, a real scrape of /metrics and the alerts file.
"""

from __future__ import annotations

import json
import re

import lmdb
import numpy as np
import pytest

import images
from harness import content_hash, folder, lookalike, lookalike_json
from lookalike.errors import ExitCode, StoreError, TagError
from lookalike.extract import extract_file
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext, inspection
from lookalike.store.changes import DeleteTag, PutTag
from lookalike.store.tags import Reference
from lookalike.store.writer import Writer
from lookalike.watchlist import TagLabels


def cropped_copy(pixels: np.ndarray) -> np.ndarray:
    """A copy a person might make: a crop of the middle, scaled down."""
    height, width = pixels.shape[:2]
    crop = pixels[height // 10: height - height // 10, width // 8: width - width // 8]
    return images.resized(crop, crop.shape[1] * 3 // 4, crop.shape[0] * 3 // 4)


def references_folder(tmp_path):
    """Reference images outside any indexed folder: astronaut and chelsea."""
    refs = folder(tmp_path, "references")
    return (images.write_jpeg(refs, "astronaut.jpg", images.photo("astronaut")),
            images.write_jpeg(refs, "chelsea.jpg", images.photo("chelsea")))


# --- the CLI over a context ------------------------------------------------------------------

def test_tags_are_stored_apart_from_the_images_searched_replaced_and_deleted(tmp_path):
    astronaut, chelsea = references_folder(tmp_path)
    photos = folder(tmp_path)
    copy = images.write_png(photos, "astronaut-copy.png", cropped_copy(images.photo("astronaut")))
    other = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    cat = images.write_jpeg(photos, "cat.jpg", images.photo("chelsea"))
    context = tmp_path / "context"
    lookalike_json("--context", context, "context", "create")
    lookalike_json("--context", context, "features", "add", photos)

    put = lookalike_json("--context", context, "tag", "put", "space", astronaut)
    assert put["name"] == "space"
    assert [(r["name"], r["content_hash"]) for r in put["references"]] == [
        ("astronaut.jpg", content_hash(astronaut.read_bytes()).hex())]
    assert lookalike_json("--context", context, "tag", "list")["tags"] == [put]
    # Not an image of the context: not listed, not in duplicates, the context still checks.
    listed = {i["path"] for i in lookalike_json("--context", context, "features", "list")["images"]}
    assert listed == {str(copy), str(other), str(cat)}
    assert lookalike_json("--context", context, "duplicates")["groups"] == []
    assert lookalike_json("--context", context, "context", "check")["ok"]

    found = lookalike_json("--context", context, "tag", "search", "space")
    assert (found["version"], found["tags"], found["threshold"]) == (1, ["space"], 50.0)
    assert [(r["path"], r["tag"], r["reference"]) for r in found["results"]] == [
        (str(copy), "space", "astronaut.jpg")]
    assert found["results"][0]["similarity"] >= 50 and "cropped" in found["results"][0]["kinds"]

    # Put again: the references are replaced, and kept when the context is opened again.
    lookalike_json("--context", context, "tag", "put", "space", chelsea)
    lookalike_json("--context", context, "tag", "put", "cats", chelsea)
    found = lookalike_json("--context", context, "tag", "search", "space", "cats", "--max-count", "5")
    assert [(r["path"], r["tag"], r["reference"]) for r in found["results"]] == [
        (str(cat), "space", "chelsea.jpg")]
    assert [t["name"] for t in lookalike_json("--context", context, "tag", "list")["tags"]] == ["cats", "space"]

    assert lookalike_json("--context", context, "tag", "delete", "space") == {"deleted": "space"}
    assert [t["name"] for t in lookalike_json("--context", context, "tag", "list")["tags"]] == ["cats"]
    gone = lookalike("--context", context, "tag", "search", "space")
    assert gone.returncode == ExitCode.NOT_FOUND and "tag 'space': no such tag" in gone.stderr


def test_bad_tag_names_missing_tags_and_bad_references_are_refused_by_name(tmp_path):
    astronaut, _ = references_folder(tmp_path)
    context = tmp_path / "context"
    lookalike_json("--context", context, "context", "create")
    for name in ("has space", "_other", "x" * 65, "../up", "é"):
        result = lookalike("--context", context, "tag", "put", name, astronaut)
        assert result.returncode == ExitCode.USAGE, (name, result.stderr)
        assert f"tag {name!r}: not a valid tag name" in result.stderr
    missing = lookalike("--context", context, "tag", "delete", "nothing")
    assert missing.returncode == ExitCode.NOT_FOUND and "tag 'nothing': no such tag" in missing.stderr
    not_an_image = images.text_file_named_png(tmp_path)
    bad = lookalike("--context", context, "tag", "put", "notes", astronaut, not_an_image)
    assert bad.returncode == ExitCode.BAD_IMAGE and str(not_an_image) in bad.stderr
    absent = lookalike("--context", context, "tag", "put", "notes", tmp_path / "absent.jpg")
    assert absent.returncode == ExitCode.BAD_IMAGE and "absent.jpg: missing" in absent.stderr
    assert lookalike_json("--context", context, "tag", "list") == {"tags": []}     # nothing half-stored
    negative = lookalike("--context", context, "alerts", "--since", "-1")
    assert negative.returncode == ExitCode.USAGE and "cursor -1" in negative.stderr


def test_the_references_index_written_by_an_older_layout_is_written_again_on_open(tmp_path):
    astronaut, chelsea = references_folder(tmp_path)
    settings = ExtractionSettings()
    first, second = (extract_file(str(path), settings) for path in (astronaut, chelsea))
    directory = tmp_path / "context"
    with SearchContext.create(directory) as context:
        context.commit([PutTag("space", (Reference.of_file(first),)), PutTag("cats", (Reference.of_file(second),))])
    before = {name: len(entries) for name, entries in inspection.database_entries(directory).items()}
    env = lmdb.open(str(directory), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:        # an index of the older layout: none of today's keys
        txn.drop(env.open_db(b"tag_lsh", txn=txn, dupsort=True, dupfixed=True), delete=False)
        txn.put(b"index", b"1", db=env.open_db(b"meta", txn=txn))
    env.close()
    with SearchContext.open(directory) as context:
        # No content hash and no fingerprint to go by: only the descriptor index can find it.
        found = context.reference_candidates(bytes(16), ~first.fingerprint & (2**64 - 1), first.local)
        assert [context.reference(number).name for number in found] == ["astronaut.jpg"]
    assert {name: len(entries) for name, entries in inspection.database_entries(directory).items()} == before


def test_a_change_through_the_writer_returns_its_result_and_a_stopped_writer_says_so(tmp_path):
    """Writer.apply: how a daemon's thread (the HTTP API's) changes tags, the writer being the
    context's one writer while the daemon runs."""
    astronaut, _ = references_folder(tmp_path)
    reference = Reference.of_file(extract_file(str(astronaut), ExtractionSettings()))
    with SearchContext.create(tmp_path / "context") as context:
        writer = Writer(context)
        writer.start()
        try:
            put = writer.apply(PutTag("space", (reference,)), timeout=30)
            assert [r["name"] for r in put["references"]] == ["astronaut.jpg"]
            assert writer.apply(DeleteTag("space"), timeout=30) is True
            assert writer.apply(DeleteTag("space"), timeout=30) is False
        finally:
            assert writer.stop(10)
        with pytest.raises(StoreError, match="not written within 0 s"):
            writer.apply(PutTag("space", (reference,)), timeout=0.2)
        with pytest.raises(TagError, match="1001 reference images; a tag holds at most 1000"):
            PutTag("space", (reference,) * 1001)
        assert context.tags() == []


def test_the_tag_label_of_the_match_counter_is_capped():
    labels = TagLabels()
    given = [labels(f"tag{i}") for i in range(TagLabels.LIMIT + 5)]
    assert given[:TagLabels.LIMIT] == [f"tag{i}" for i in range(TagLabels.LIMIT)]
    assert given[TagLabels.LIMIT:] == [TagLabels.OVERFLOW] * 5
    assert labels("tag0") == "tag0"


# --- the watchlist in the daemon ---------------------------------------------------------------

def alerts_file_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_copy_of_a_reference_dropped_in_a_watched_folder_raises_one_alert_that_survives_a_restart(
        daemons, tmp_path):
    astronaut, chelsea = references_folder(tmp_path)
    photos = folder(tmp_path)
    alerts_file = tmp_path / "alerts.jsonl"
    daemon = daemons([photos], alerts={"file": str(alerts_file)})
    lookalike_json("--config", daemon.config_path, "context", "create")
    lookalike_json("--config", daemon.config_path, "tag", "put", "space", astronaut, chelsea)
    daemon.start().ready()

    copy = images.write_png(photos, "astronaut-copy.png", cropped_copy(images.photo("astronaut")))
    first = daemon.wait(lambda: daemon.cli("alerts", "--json")["alerts"], "an alert for the copy")
    assert [(a["cursor"], a["path"], a["tag"], a["reference"]) for a in first] == [
        (1, str(copy), "space", "astronaut.jpg")]
    assert first[0]["similarity"] >= 50
    # Logged, counted and appended once the alert is recorded: within moments, not at once.
    daemon.wait_metric("lookalike_watchlist_matches_total", lambda v: v == 1, "the match counted", tag="space")
    daemon.wait(lambda: alerts_file_lines(alerts_file) == first, "the alert in the alerts file")
    watch_lines = [line for line in daemon.log_text().splitlines() if "watchlist:" in line]
    assert len(watch_lines) == 1 and str(copy) in watch_lines[0] and "tag space" in watch_lines[0]

    # A file that matches no reference: stored, checked, and no alert.
    other = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    daemon.wait_records([copy, other])
    with SearchContext.open(daemon.context_dir) as context:
        daemon.wait(lambda: context.watch_pending() == [], "the watchlist to check the coffee")
    assert daemon.cli("alerts", "--json")["alerts"] == first

    # While the daemon runs its writer is the context's only one: tags change through it, and
    # the refusal names the route that does it.
    refused = lookalike("--config", daemon.config_path, "tag", "put", "cats", chelsea)
    assert refused.returncode == ExitCode.STORE and "HTTP API instead (PUT /v1/tags/cats" in refused.stderr
    refused = lookalike("--config", daemon.config_path, "tag", "delete", "space")
    assert refused.returncode == ExitCode.STORE and "HTTP API instead (DELETE /v1/tags/space" in refused.stderr

    assert daemon.stop()[0] == 0
    daemon.start().ready()
    assert daemon.cli("alerts", "--json") == {"version": 1, "alerts": first, "next": 1}
    flipped = images.write_jpeg(photos, "chelsea-flipped.jpg", images.photo("chelsea")[:, ::-1])
    second = daemon.wait(lambda: daemon.cli("alerts", "--since", "1", "--json")["alerts"],
                         "an alert after cursor 1")
    assert [(a["cursor"], a["path"], a["reference"]) for a in second] == [(2, str(flipped), "chelsea.jpg")]
    assert daemon.cli("alerts", "--since", "2", "--json") == {"version": 1, "alerts": [], "next": 2}
    daemon.wait(lambda: alerts_file_lines(alerts_file) == first + second, "the second alert in the file")
    assert daemon.metric("lookalike_watchlist_matches_total", tag="space") == 1     # counted in this run
    logged = [line for line in daemon.log_text().splitlines() if "watchlist:" in line]
    assert len(logged) == 2, logged
    text = lookalike("--config", daemon.config_path, "alerts")
    assert re.search(rf"^2 .* space .*{re.escape(str(flipped))}", text.stdout, re.M), text.stdout
    assert text.stdout.endswith("next cursor: 2\n")


def test_images_stored_while_the_daemon_was_down_are_checked_when_it_starts(daemons, tmp_path):
    astronaut, _ = references_folder(tmp_path)
    photos = folder(tmp_path)
    daemon = daemons([photos])
    lookalike_json("--config", daemon.config_path, "context", "create")
    lookalike_json("--config", daemon.config_path, "tag", "put", "space", astronaut)
    copy = images.write_png(photos, "astronaut-copy.png", cropped_copy(images.photo("astronaut")))
    assert lookalike_json("--config", daemon.config_path, "scan")["added"] == 1
    daemon.start().ready()
    alerts = daemon.wait(lambda: daemon.cli("alerts", "--json")["alerts"], "an alert for the scanned copy")
    assert [(a["path"], a["tag"]) for a in alerts] == [(str(copy), "space")]
    assert daemon.stop()[0] == 0
