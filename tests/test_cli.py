"""The command line (cli.py): every subcommand, its JSON on stdout and its exit code.

Most commands run in-process through `cli.main` (fast; output read with capsys); a few run the
installed console script and `python -m lookalike` to prove the entry points and that exit
codes reach the shell.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import images
from harness import LOOKALIKE
from lookalike import cli
from lookalike.errors import ExitCode
from lookalike.statedir import state_lock

COPIES = ("astronaut", "astronaut-small", "astronaut-flip", "astronaut-crop")     # one picture


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([os.fspath(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args, expect: int = ExitCode.OK):
    code, out, err = run(capsys, *args)
    assert code == expect, f"exit {code}, stderr: {err}"
    return json.loads(out)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Originals and edited copies; `other` holds a picture not in the main folder."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = images.photo("astronaut")
    out = {name: images.write_jpeg(folder, f"{name}.jpg", images.photo(name))
           for name in ("astronaut", "chelsea", "coffee")}
    out["astronaut-small"] = images.write_jpeg(folder, "astronaut-small.jpg", images.resized(astronaut, 256, 256), 80)
    out["astronaut-flip"] = images.write_jpeg(folder, "astronaut-flip.jpg", np.ascontiguousarray(astronaut[:, ::-1]))
    out["astronaut-crop"] = images.write_jpeg(folder, "astronaut-crop.jpg", astronaut[100:300, 100:300].copy())
    other = folder / "other"
    other.mkdir()
    out["rocket"] = images.write_jpeg(other, "rocket.jpg", images.photo("rocket"))
    return out


@pytest.fixture
def context(tmp_path, capsys) -> Path:
    directory = tmp_path / "ctx"
    run_json(capsys, "--context", directory, "context", "create")
    return directory


@pytest.fixture(scope="module")
def stored_once(photos, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("stored") / "ctx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["--context", str(directory), "context", "create"]) == 0
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(["--context", str(directory), "features", "add", *map(str, photos.values())]) == 0
    assert json.loads(out.getvalue())["added"] == len(photos)
    return directory


@pytest.fixture
def stored(stored_once, tmp_path) -> Path:
    """A context holding every photo of the fixture (a copy of one built once: a closed LMDB
    environment is two plain files)."""
    return Path(shutil.copytree(stored_once, tmp_path / "ctx"))


# --- context ------------------------------------------------------------------------------

def test_context_create_info_delete(tmp_path, capsys):
    directory = tmp_path / "ctx"
    created = run_json(capsys, "--context", directory, "context", "create", "--max-features", "300")
    assert created["images"] == 0 and created["status"] == "idle"
    assert created["settings"]["max_features"] == 300 and created["settings"]["detector"] == "akaze"
    info = run_json(capsys, "--context", directory, "context", "info")
    assert info["context"] == str(directory) and info["images"] == 0 and info["schema"] == 1
    assert info["size_bytes"] > 0 and info["map_size_bytes"] > 0

    code, _, err = run(capsys, "--context", directory, "context", "create")
    assert code == ExitCode.STORE and "already exists" in err

    assert run_json(capsys, "--context", directory, "context", "delete") == {"deleted": str(directory)}
    assert not (directory / "data.mdb").exists()
    code, out, err = run(capsys, "--context", directory, "context", "info")
    assert code == ExitCode.NOT_FOUND and out == "" and "no search context" in err
    code, _, _ = run(capsys, "--context", directory, "context", "delete")
    assert code == ExitCode.NOT_FOUND


@pytest.mark.parametrize("named_by", ["--context", "--config"])
def test_context_delete_is_refused_while_the_state_directory_is_locked(tmp_path, capsys, named_by):
    state = tmp_path / "state"
    (tmp_path / "photos").mkdir()
    config = write_config(tmp_path / "lookalike.yaml", tmp_path / "photos", state)
    run_json(capsys, "--config", config, "context", "create")
    where = ["--context", state / "context"] if named_by == "--context" else ["--config", config]
    with state_lock(state):                     # what a running daemon (or a rebuild) holds
        code, out, err = run(capsys, *where, "context", "delete")
        assert code == ExitCode.STORE and out == "" and "stop it first" in err
        rebuild_code, _, rebuild_err = run(capsys, "--config", config, "context", "rebuild")
        assert (rebuild_code, rebuild_err) == (code, err)        # the same refusal as a rebuild's
    assert (state / "context" / "data.mdb").exists()
    assert run_json(capsys, *where, "context", "delete") == {"deleted": str(state / "context")}


@pytest.mark.parametrize("args, named", [
    (["--max-features", "0"], "max_features"), (["--max-features", "-5"], "max_features"),
    (["--working-size", "10"], "working_size")])
def test_context_create_with_bad_settings_is_a_usage_error(tmp_path, capsys, args, named):
    code, out, err = run(capsys, "--context", tmp_path / "ctx", "context", "create", *args)
    assert code == ExitCode.USAGE and out == "" and named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ctx").exists()


def test_context_create_on_a_file_is_a_usage_error(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, out, err = run(capsys, "--context", a_file, "context", "create")
    assert code == ExitCode.USAGE and out == "" and str(a_file) in err and len(err.splitlines()) == 1
    code, out, err = run(capsys, "--context", a_file / "ctx", "context", "create")
    assert code == ExitCode.STORE and out == "" and str(a_file / "ctx") in err and len(err.splitlines()) == 1
    assert a_file.read_text() == "mine"


def test_no_context_named_is_a_usage_error(capsys):
    for args in (["context", "info"], ["features", "list"], ["features", "add", "x.jpg"], ["duplicates"],
                 ["similar", "x.jpg"], ["scan"]):
        code, out, err = run(capsys, *args)
        assert code == ExitCode.USAGE, args
        assert out == "" and ("--context" in err or "--config" in err)


def test_a_relative_context_directory_is_made_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    created = run_json(capsys, "--context", "ctx", "context", "create")
    assert created["context"] == str(tmp_path / "ctx")


# --- features -----------------------------------------------------------------------------

def test_features_add_files_and_folders_recursively(context, photos, capsys):
    folder = photos["astronaut"].parent
    hidden = folder / ".hidden.jpg"
    shutil.copy(photos["coffee"], hidden)
    (folder / "notes.txt").write_text("not an image")
    try:
        summary = run_json(capsys, "--context", context, "features", "add", folder)
    finally:
        hidden.unlink()
        (folder / "notes.txt").unlink()
    assert summary == {"added": len(photos), "updated": 0, "unchanged": 0, "failed": 0, "failures": []}
    listed = run_json(capsys, "--context", context, "features", "list")["images"]
    assert sorted(i["path"] for i in listed) == sorted(str(p) for p in photos.values())   # rocket from other/
    assert all(i["features"] > 0 and i["size"] > 0 and i["mtime"] > 0 for i in listed)

    # Unchanged files are not extracted again; a file named twice counts twice.
    again = run_json(capsys, "--context", context, "features", "add", folder, photos["coffee"])
    assert (again["added"], again["unchanged"], again["failed"]) == (0, len(photos) + 1, 0)
    info = run_json(capsys, "--context", context, "context", "info")
    assert info["images"] == len(photos) and info["status"] == "idle"


def test_features_add_counts_a_changed_file_as_updated(context, tmp_path, capsys):
    path = images.write_jpeg(tmp_path, "changing.jpg", images.photo("coffee"))
    assert run_json(capsys, "--context", context, "features", "add", path)["added"] == 1
    images.write_jpeg(tmp_path, "changing.jpg", images.photo("rocket"))
    os.utime(path, ns=(1, 1))
    summary = run_json(capsys, "--context", context, "features", "add", path)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (0, 1, 0)
    assert run_json(capsys, "--context", context, "features", "list")["images"][0]["mtime"] == 1e-9


def test_features_add_with_bad_files_exits_1_and_lists_them(context, photos, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated = images.truncated_jpeg(bad, "half.jpg")
    text = images.text_file_named_png(bad)
    empty = images.zero_byte(bad, "empty.webp")
    missing = tmp_path / "missing.jpg"
    code, out, err = run(capsys, "--context", context, "features", "add", bad, photos["chelsea"], missing)
    assert code == ExitCode.FAILED
    summary = json.loads(out)
    assert (summary["added"], summary["failed"]) == (1, 4)
    reasons = {f["path"]: f["reason"] for f in summary["failures"]}
    assert reasons == {str(truncated): "truncated", str(text): "unsupported", str(empty): "empty",
                       str(missing): "missing"}
    for path in reasons:
        assert path in err
    failed = run_json(capsys, "--context", context, "features", "failed")["failed"]
    # The files that exist are remembered (not retried until they change).
    assert {f["path"]: f["reason"] for f in failed} == {str(truncated): "truncated", str(text): "unsupported",
                                                        str(empty): "empty"}
    assert all(f["detail"] for f in failed)
    assert [i["path"] for i in run_json(capsys, "--context", context, "features", "list")["images"]] == [
        str(photos["chelsea"])]


def check_features_document(document: dict, path: Path) -> bytes:
    assert set(document) == {"ImageId", "FeaturesCount", "FeatureLengthInBits", "Features"}
    assert document["ImageId"] == str(path)
    assert document["FeatureLengthInBits"] == 488
    assert 0 < document["FeaturesCount"] <= 500
    raw = base64.b64decode(document["Features"], validate=True)
    assert len(raw) == document["FeaturesCount"] * 61
    return raw


def test_features_extract_needs_no_context(photos, capsys):
    document = run_json(capsys, "features", "extract", photos["coffee"])
    check_features_document(document, photos["coffee"])
    assert document["FeaturesCount"] == 500


def test_features_extract_uses_the_named_contexts_settings(tmp_path, photos, capsys):
    run_json(capsys, "--context", tmp_path / "ctx", "context", "create", "--max-features", "200")
    document = run_json(capsys, "--context", tmp_path / "ctx", "features", "extract", photos["coffee"])
    check_features_document(document, photos["coffee"])
    assert document["FeaturesCount"] == 200


def test_features_get_gives_the_extract_document(stored, photos, capsys):
    for name in ("coffee", "rocket"):
        extracted = run_json(capsys, "features", "extract", photos[name])
        assert run_json(capsys, "--context", stored, "features", "get", photos[name]) == extracted


def test_features_get_accepts_a_relative_id(stored, photos, capsys, monkeypatch):
    monkeypatch.chdir(photos["coffee"].parent)
    document = run_json(capsys, "--context", stored, "features", "get", "coffee.jpg")
    assert document["ImageId"] == str(photos["coffee"])


def test_features_update_replaces_the_stored_features(stored, photos, capsys):
    updated = run_json(capsys, "--context", stored, "features", "update", photos["coffee"], photos["rocket"])
    rocket = run_json(capsys, "features", "extract", photos["rocket"])
    assert updated == {**rocket, "ImageId": str(photos["coffee"])}
    assert run_json(capsys, "--context", stored, "features", "get", photos["coffee"]) == updated
    listed = run_json(capsys, "--context", stored, "features", "list")["images"]
    assert len(listed) == len(photos) and sorted(i["path"] for i in listed) == sorted(str(p) for p in photos.values())


def test_features_delete(stored, photos, capsys):
    assert run_json(capsys, "--context", stored, "features", "delete", photos["chelsea"]) == {
        "deleted": str(photos["chelsea"]), "images": 1}
    listed = run_json(capsys, "--context", stored, "features", "list")["images"]
    assert str(photos["chelsea"]) not in [i["path"] for i in listed] and len(listed) == len(photos) - 1


def test_features_delete_of_a_folder_needs_the_folder_flag_and_says_how_many_went(stored, photos, capsys):
    folder = photos["chelsea"].parent
    code, out, err = run(capsys, "--context", stored, "features", "delete", folder)
    assert code == ExitCode.USAGE and out == "" and str(folder) in err and "--folder" in err
    assert len(run_json(capsys, "--context", stored, "features", "list")["images"]) == len(photos)

    assert run_json(capsys, "--context", stored, "features", "delete", "--folder", folder) == {
        "deleted": str(folder), "images": len(photos)}
    assert run_json(capsys, "--context", stored, "features", "list")["images"] == []


@pytest.mark.parametrize("action", ["get", "delete", "update"])
def test_unknown_id_is_not_found(stored, photos, tmp_path, capsys, action):
    unknown = tmp_path / "never-added.jpg"
    extra = [photos["coffee"]] if action == "update" else []
    code, out, err = run(capsys, "--context", stored, "features", action, unknown, *extra)
    assert code == ExitCode.NOT_FOUND == 3
    assert out == "" and str(unknown) in err and "not in the search context" in err
    assert len(run_json(capsys, "--context", stored, "features", "list")["images"]) == len(photos)


def test_bad_image_exits_4(context, photos, tmp_path, capsys):
    truncated = images.truncated_jpeg(tmp_path)
    run_json(capsys, "--context", context, "features", "add", photos["coffee"])
    for args in (["features", "extract", truncated], ["compare", truncated, photos["coffee"]],
                 ["--context", context, "similar", truncated],
                 ["--context", context, "features", "update", photos["coffee"], truncated]):
        code, out, err = run(capsys, *args)
        assert code == ExitCode.BAD_IMAGE == 4, args
        assert out == "" and str(truncated) in err and "truncated" in err


def test_missing_image_file(photos, tmp_path, capsys):
    code, out, err = run(capsys, "features", "extract", tmp_path / "nothing.jpg")
    assert code == ExitCode.BAD_IMAGE and "missing" in err


def test_non_utf8_and_long_paths_through_the_cli(context, tmp_path, capsys):
    latin1 = images.non_utf8_name(tmp_path)
    long_path = images.long_name(tmp_path, images.photo("rocket"))
    summary = run_json(capsys, "--context", context, "features", "add", tmp_path)
    assert summary["added"] == 2 and summary["failed"] == 0
    listed = sorted(i["path"] for i in run_json(capsys, "--context", context, "features", "list")["images"])
    assert listed == sorted([str(latin1), str(long_path)])
    assert run_json(capsys, "--context", context, "features", "get", latin1)["ImageId"] == str(latin1)
    run_json(capsys, "--context", context, "features", "delete", latin1)
    run_json(capsys, "--context", context, "features", "delete", long_path)
    assert run_json(capsys, "--context", context, "features", "list") == {"images": []}


def test_the_csv_report_is_utf8_with_the_jsons_escape_for_undecodable_bytes(context, tmp_path, capsys):
    photos_dir = tmp_path / "photos"
    photos_dir.mkdir()
    latin1 = images.non_utf8_name(photos_dir)
    images.write_jpeg(photos_dir, "plain.jpg", images.photo())
    run_json(capsys, "--context", context, "features", "add", photos_dir)
    report = tmp_path / "dups.csv"
    run(capsys, "--context", context, "duplicates", "--output", report)
    text = report.read_bytes().decode("utf-8")                # strict: raises on a raw byte
    paths = {row["path"] for row in csv.DictReader(io.StringIO(text))}
    assert paths == {str(photos_dir / "plain.jpg"), str(photos_dir) + "/caf\\udce9.jpg"}
    run(capsys, "--context", context, "duplicates", "--output", tmp_path / "dups.json")
    json_text = (tmp_path / "dups.json").read_text()
    assert "caf\\udce9.jpg" in json_text                    # the same escape, as JSON writes it
    assert str(latin1) in {i["path"] for g in json.loads(json_text)["groups"] for i in g["images"]}


# --- compare and similar ------------------------------------------------------------------

def test_compare(photos, capsys):
    copy = run_json(capsys, "compare", photos["astronaut"], photos["astronaut-small"])
    assert copy["similarity"] >= 80
    assert abs(copy["transform"]["rotation_degrees"]) < 2 and copy["transform"]["flipped"] is False
    assert copy["evidence"]["inliers"] >= 8
    flipped = run_json(capsys, "compare", photos["astronaut"], photos["astronaut-flip"])
    assert flipped["similarity"] >= 80 and flipped["transform"]["flipped"] is True
    different = run_json(capsys, "compare", photos["astronaut"], photos["coffee"])
    assert different["similarity"] < 20
    assert run_json(capsys, "compare", photos["coffee"], photos["coffee"]) == {"similarity": 100.0, "kinds": ["identical"]}


def test_compare_says_why_when_it_gives_only_a_similarity(photos, tmp_path, capsys):
    """A bare similarity told nothing: same bytes, no features and no fit all printed the same."""
    coffee = images.photo("coffee")
    png = images.write_png(tmp_path, "coffee.png", coffee)
    # The same pixels in other bytes: PNG's deflate level changes the file, never a pixel.
    recoded = images.write_bytes(tmp_path, "coffee-recoded.png", images.encode(".png", coffee, (cv2.IMWRITE_PNG_COMPRESSION, 9)))
    assert png.read_bytes() != recoded.read_bytes()
    assert run_json(capsys, "compare", png, recoded)["kinds"] == ["same_pixels"]
    assert run_json(capsys, "compare", png, png) == {"similarity": 100.0, "kinds": ["identical"]}
    flat = images.write_png(tmp_path, "flat.png", np.full((300, 400, 3), 90, np.uint8))
    assert run_json(capsys, "compare", flat, png) == {"similarity": 0.0, "reason": "few_features", "few_features": [str(flat)]}
    assert run_json(capsys, "compare", photos["astronaut"], photos["coffee"]) == {"similarity": 0.0, "reason": "no_geometric_fit"}


def test_similar_finds_copies_and_excludes_the_query(stored, photos, capsys):
    result = run_json(capsys, "--context", stored, "similar", photos["astronaut"])
    assert result["version"] == 1 and result["query"] == str(photos["astronaut"]) and result["threshold"] == 20
    paths = [hit["path"] for hit in result["results"]]
    assert set(paths) == {str(photos[n]) for n in COPIES} - {str(photos["astronaut"])}
    assert paths[-1] == str(photos["astronaut-crop"])      # a crop is less alike than a whole copy
    similarities = [hit["similarity"] for hit in result["results"]]
    assert similarities == sorted(similarities, reverse=True) and similarities[-1] >= 50
    assert all("transform" in hit and "evidence" in hit for hit in result["results"])

    top = run_json(capsys, "--context", stored, "similar", photos["astronaut"], "--max-count", "1")
    assert [hit["path"] for hit in top["results"]] == paths[:1]
    two = run_json(capsys, "--context", stored, "similar", photos["astronaut"], "--max-count", "2")
    assert [hit["path"] for hit in two["results"]] == paths[:2]

    # The model is sure of every copy here (the crop too shows 100.0, rounded), so the threshold is
    # checked on either side of all of them.
    above = run_json(capsys, "--context", stored, "similar", photos["astronaut"], "--threshold", "50")
    assert [hit["path"] for hit in above["results"]] == paths and above["threshold"] == 50
    assert run_json(capsys, "--context", stored, "similar", photos["astronaut"], "--threshold", "100")["results"] == []


def test_similar_finds_a_transformed_copy_of_an_unstored_query(stored, photos, tmp_path, capsys):
    astronaut = images.photo("astronaut")
    h, w = astronaut.shape[:2]
    rotated = cv2.warpAffine(np.ascontiguousarray(astronaut), cv2.getRotationMatrix2D((w / 2, h / 2), 5, 1.0), (w, h))
    query = images.write_jpeg(tmp_path, "query.jpg", np.rot90(rotated).copy(), 70)
    result = run_json(capsys, "--context", stored, "similar", query)
    assert result["results"][0]["path"] in {str(photos["astronaut"]), str(photos["astronaut-small"])}
    assert {hit["path"] for hit in result["results"]} <= {str(photos[n]) for n in COPIES}


@pytest.mark.parametrize("name", images.TEXTURES)
def test_similar_finds_the_original_of_a_heavy_crop(context, tmp_path, capsys, name):
    """A crop keeping 36 % of the area is worked at the working size like any image, its content
    1.67x larger than the original's; its own descriptors share too few index buckets with the
    original's for a candidate, but described again at the original's scale they do."""
    pixels = images.texture(name)
    original = images.write_jpeg(tmp_path, "original.jpg", pixels)
    run_json(capsys, "--context", context, "features", "add", original)
    crop = images.write_jpeg(tmp_path, "crop.jpg", images.centre_crop(pixels, 0.6), quality=60)
    found = run_json(capsys, "--context", context, "similar", crop)["results"]
    assert [hit["path"] for hit in found] == [str(original)] and found[0]["similarity"] >= 90


@pytest.mark.parametrize("args", [["--threshold", "101"], ["--threshold", "-1"], ["--max-count", "0"]])
def test_bad_option_values_are_usage_errors(stored, photos, capsys, args):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--context", str(stored), "similar", str(photos["coffee"]), *args])
    assert caught.value.code == ExitCode.USAGE


# --- duplicates ---------------------------------------------------------------------------

def check_report(document: dict, photos: dict[str, Path], threshold: float = 50.0) -> None:
    assert document["version"] == 1 and document["threshold"] == threshold
    [group] = document["groups"]
    paths = [image["path"] for image in group["images"]]
    assert sorted(paths) == sorted(str(photos[n]) for n in COPIES)
    keeper = group["images"][0]
    assert keeper["keeper"] is True and keeper["similarity"] == 100.0
    assert (keeper["width"], keeper["height"]) == (512, 512)      # the larger picture is kept
    for image in group["images"]:
        assert set(image) >= {"path", "similarity", "width", "height", "size", "mtime", "keeper"}
        assert image["size"] == os.path.getsize(image["path"]) and image["similarity"] >= threshold
    assert group["reclaimable_bytes"] == sum(i["size"] for i in group["images"][1:])
    small = next(i for i in group["images"] if i["path"] == str(photos["astronaut-small"]))
    # Nothing in the pictures tells the photo from its mirror image (same pixels, no metadata).
    assert keeper["path"] == str(photos["astronaut"]) and group["keeper_reason"] == "oldest file"
    assert (small["width"], small["height"]) == (256, 256) and small["transform"]["flipped"] is False
    assert "resized" in small["kinds"] and "kinds" not in keeper


def test_duplicates_json_to_stdout(stored, photos, capsys):
    document = run_json(capsys, "--context", stored, "duplicates")
    check_report(document, photos)
    assert document["context"] == str(stored)


def test_duplicates_csv_to_stdout(stored, photos, capsys):
    code, out, _ = run(capsys, "--context", stored, "duplicates", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["group", "path", "similarity", "keeper", "width", "height", "size", "mtime", "kinds",
                            "keeper_reason"]
    assert rows[0]["keeper_reason"] == "oldest file" and not any(r["keeper_reason"] for r in rows[1:])
    assert sorted(r["path"] for r in rows) == sorted(str(photos[n]) for n in COPIES)
    assert [r["keeper"] for r in rows] == ["yes", "no", "no", "no"] and {r["group"] for r in rows} == {"1"}
    assert rows[0]["kinds"] == "" and all(r["kinds"] for r in rows[1:])


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("format_given", [True, False])
def test_duplicates_output_file(stored, photos, tmp_path, capsys, fmt, format_given):
    target = tmp_path / "reports" / f"dups.{fmt}"
    target.parent.mkdir()
    code, out, _ = run(capsys, "--context", stored, "duplicates", *(["--format", fmt] if format_given else []),
                       "--output", target, "--threshold", "40")
    assert code == 0 and out == ""
    text = target.read_text()
    if fmt == "json":
        check_report(json.loads(text), photos, threshold=40.0)
    else:
        assert len(list(csv.DictReader(io.StringIO(text)))) == len(COPIES)
    assert [p.name for p in target.parent.iterdir()] == [target.name]      # no temporary file left


@pytest.mark.parametrize("output, extra, says", [
    ("{tmp}", [], "is a folder"),
    ("{tmp}/absent/dir/out.json", [], "does not exist"),
    ("{tmp}/dups.csv", ["--format", "json"], "the name says csv, --format says json"),
    ("{tmp}/dups.txt", [], "cannot tell the format")])
def test_duplicates_output_that_cannot_be_right_is_a_usage_error(stored, tmp_path, capsys, output, extra, says):
    target = output.format(tmp=tmp_path / "out")
    (tmp_path / "out").mkdir()
    code, out, err = run(capsys, "--context", stored, "duplicates", "--output", target, *extra)
    assert code == ExitCode.USAGE and out == "" and says in err and target in err and len(err.splitlines()) == 1
    assert list((tmp_path / "out").iterdir()) == []             # nothing written, no folder made


def test_duplicates_of_an_empty_context(context, capsys):
    document = run_json(capsys, "--context", context, "duplicates")
    assert document["groups"] == []


# --- scan and config ----------------------------------------------------------------------

def write_config(path: Path, photos_dir: Path, state_dir: Path, extra: str = "") -> Path:
    path.write_text(f"watch:\n  - path: {photos_dir}\nstate_dir: {state_dir}\n{extra}")
    return path


def test_scan_writes_the_duplicates_report(photos, tmp_path, capsys):
    config = write_config(tmp_path / "lookalike.yaml", photos["astronaut"].parent, tmp_path / "state")
    result = run_json(capsys, "--config", config, "scan")
    report = tmp_path / "state" / "reports" / "duplicates-latest.json"
    assert result == {"scanned": len(photos), "added": len(photos), "updated": 0, "unchanged": 0, "failed": 0,
                      "groups": 1, "images_in_groups": len(COPIES), "report": str(report)}
    check_report(json.loads(report.read_text()), photos)
    assert len(list(csv.DictReader(io.StringIO((report.parent / "duplicates-latest.csv").read_text())))) == len(COPIES)

    again = run_json(capsys, "--config", config, "scan")
    assert (again["added"], again["unchanged"], again["groups"]) == (0, len(photos), 1)
    info = run_json(capsys, "--config", config, "context", "info")
    assert info["context"] == str(tmp_path / "state" / "context") and info["images"] == len(photos)


def test_features_add_walks_a_folder_with_the_patterns_the_daemon_uses(photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(photos["astronaut"].parent, folder)
    (folder / ".thumbnails").mkdir()
    extra = [folder / ".thumbnails" / "coffee.jpg", folder / "~coffee.jpg", folder / "coffee.jpeg"]
    for path in extra:
        shutil.copy(photos["coffee"], path)
    copied = [str(folder / path.relative_to(photos["astronaut"].parent)) for path in photos.values()]

    def added(*where) -> list[str]:
        run_json(capsys, *where, "context", "create")
        run_json(capsys, *where, "features", "add", folder)
        return sorted(image["path"] for image in run_json(capsys, *where, "features", "list")["images"])

    # No config: the default patterns, which leave out hidden folders and `~` files.
    assert added("--context", tmp_path / "ctx") == sorted(copied + [str(extra[2])])
    # A folder inside a watched one: that folder's patterns, here replacing the defaults.
    config = tmp_path / "lookalike.yaml"
    config.write_text(f"watch:\n  - path: {folder}\n    exclude: ['*.jpeg', 'other']\n"
                      f"state_dir: {tmp_path / 'state'}\n")
    assert added("--config", config) == sorted([p for p in copied if "/other/" not in p] + list(map(str, extra[:2])))


def test_scan_publishes_the_reports_as_the_daemon_does_pruning_old_ones(photos, tmp_path, capsys):
    config = write_config(tmp_path / "lookalike.yaml", photos["astronaut"].parent, tmp_path / "state",
                          "reports:\n  keep: 2\n  formats: [json, csv]\n")
    reports = tmp_path / "state" / "reports"
    reports.mkdir(parents=True)
    old = ["duplicates-20200101T000000Z", "duplicates-20200102T000000Z", "duplicates-20200103T000000Z"]
    for name in old:
        for fmt in ("json", "csv"):
            (reports / f"{name}.{fmt}").write_text("an earlier pass")
    result = run_json(capsys, "--config", config, "scan")
    latest = json.loads((reports / "duplicates-latest.json").read_text())
    stamp = latest["generated"].replace("-", "").replace(":", "")
    for fmt in ("json", "csv"):
        # The newest earlier report and this pass's, stamped like the daemon's; the rest pruned.
        assert sorted(p.name for p in reports.glob(f"duplicates-2*.{fmt}")) == [f"{old[-1]}.{fmt}",
                                                                              f"duplicates-{stamp}.{fmt}"]
    assert (reports / f"duplicates-{stamp}.json").read_text() == (reports / "duplicates-latest.json").read_text()
    assert result["report"] == str(reports / "duplicates-latest.json") and result["groups"] == 1


def test_scan_refuses_a_context_made_with_other_settings(photos, tmp_path, capsys):
    config = write_config(tmp_path / "lookalike.yaml", photos["astronaut"].parent, tmp_path / "state",
                          "extraction:\n  max_features: 300\n")
    run_json(capsys, "--context", tmp_path / "state" / "context", "context", "create")
    code, out, err = run(capsys, "--config", config, "scan")
    assert code == ExitCode.STORE and "max_features" in err and out == ""


def test_scan_with_an_invalid_config_exits_78(tmp_path, capsys):
    config = write_config(tmp_path / "lookalike.yaml", tmp_path / "photos", tmp_path / "state", "workers: many\n")
    code, out, err = run(capsys, "--config", config, "scan")
    assert code == ExitCode.CONFIG == 78 and "workers" in err and out == ""


def test_reading_commands_work_while_a_watched_folder_is_missing(photos, tmp_path, capsys):
    share = tmp_path / "share"
    shutil.copytree(photos["astronaut"].parent, share)
    config = write_config(tmp_path / "lookalike.yaml", share, tmp_path / "state")
    run_json(capsys, "--config", config, "scan")
    share.rename(tmp_path / "unmounted")
    for args in (["context", "info"], ["features", "list"], ["duplicates"], ["similar", photos["astronaut"]]):
        code, out, err = run(capsys, "--config", config, *args)
        assert code == ExitCode.OK and json.loads(out) and err == "", (args, err)
    code, out, _ = run(capsys, "--config", config, "report", "show")
    assert code == ExitCode.OK and "Groups:" in out
    checked = run_json(capsys, "config", "check", config)
    assert checked["valid"] is True and len(checked["warnings"]) == 1
    assert checked["warnings"][0].startswith(f"watch[0].path: folder {share} does not exist")
    code, _, err = run(capsys, "config", "check", config)
    assert err == f"lookalike: warning: {checked['warnings'][0]}\n"           # the typo'd path is seen


def test_config_check(photos, tmp_path, capsys):
    config = write_config(tmp_path / "good.yaml", photos["astronaut"].parent, tmp_path / "state")
    checked = run_json(capsys, "config", "check", config)
    assert checked == {"config": str(config), "valid": True, "watch": [str(photos["astronaut"].parent)],
                       "state_dir": str(tmp_path / "state"), "warnings": []}

    bad = tmp_path / "bad.yaml"
    bad.write_text("watch:\n  - path: relative/photos\nstate_dir: /tmp/x\nlog:\n  level: loud\ncolour: red\n")
    code, out, err = run(capsys, "config", "check", bad)
    assert code == ExitCode.CONFIG == 78 and out == ""
    for key in ("watch[0].path", "log.level", "colour"):
        assert key in err
    code, _, err = run(capsys, "config", "check", tmp_path / "missing.yaml")
    assert code == 78 and "file not found" in err


# --- the installed entry points ------------------------------------------------------------

def test_console_script_and_module_exit_codes(stored, photos, tmp_path):
    assert LOOKALIKE.exists()
    listed = subprocess.run([LOOKALIKE, "--context", stored, "features", "list"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["images"]) == len(photos)
    missing = subprocess.run([sys.executable, "-m", "lookalike", "--context", stored, "features", "get",
                              tmp_path / "nope.jpg"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 3 and missing.stdout == "" and "not in the search context" in missing.stderr
    usage = subprocess.run([LOOKALIKE, "features", "list"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    bad = subprocess.run([LOOKALIKE, "config", "check", tmp_path / "missing.yaml"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 78


def test_a_failed_file_is_not_read_again_until_it_changes(context, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    truncated = images.truncated_jpeg(folder, "half.jpg")
    assert run_json(capsys, "--context", context, "features", "add", folder, expect=ExitCode.FAILED)["failed"] == 1
    again = run_json(capsys, "--context", context, "features", "add", folder)
    assert (again["failed"], again["unchanged"]) == (0, 1)
    truncated.write_bytes(truncated.read_bytes() + b"\x00")       # it changed: read again
    os.utime(truncated, ns=(0, 10**18))
    assert run_json(capsys, "--context", context, "features", "add", folder, expect=ExitCode.FAILED)["failed"] == 1
