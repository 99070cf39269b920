"""Phone and camera formats: HEIC/HEIF, AVIF and camera raw, everywhere a JPEG works.

The HEIC and AVIF files are encoded at test time by libheif and libavif from scikit-image's
photos. No Debian or PyPI package installable here ships real camera raw files (rawpy's test
files are not in its wheel), so the raw files are DNGs written at test time by tests/images.py
from the photos' Bayer-mosaiced pixels, with and without an embedded preview; LibRaw reads them
as it reads a camera's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

import images
from lookalike import cli
from lookalike.config import parse
from lookalike.duplicates import find_groups
from lookalike.keeper import KeepRules
from lookalike.errors import ConfigError, ExitCode
from lookalike.extract import extract_file
from lookalike.match import compare
from lookalike.reports.html import to_html
from lookalike.search import query_candidate
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext

SETTINGS = ExtractionSettings()
PICTURE = images.photo("astronaut")
OTHER = images.photo("chelsea")
SAME_PICTURE_BITS = 6


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def similarity(first, second) -> float:
    return compare(query_candidate(first), query_candidate(second), SETTINGS.detector).similarity


def features(path) -> object:
    return extract_file(os.fspath(path), SETTINGS)


WRITERS = {
    "heic": lambda d, name, pixels: images.write_heic(d, f"{name}.heic", pixels),
    "avif": lambda d, name, pixels: images.write_avif(d, f"{name}.avif", pixels),
    "dng, demosaiced": lambda d, name, pixels: images.write_dng(d, f"{name}.dng", pixels),
    "dng with a preview": lambda d, name, pixels: images.write_dng(d, f"{name}-p.dng", pixels,
                                                                   images.jpeg_bytes(pixels, 95)),
}


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_each_format_matches_its_resized_recompressed_jpeg_copy_and_not_another_picture(tmp_path, write):
    copy = features(images.write_jpeg(tmp_path, "copy.jpg", images.resized(PICTURE, 300, 300), quality=70))
    other = features(images.write_jpeg(tmp_path, "other.jpg", OTHER, quality=70))
    original = features(write(tmp_path, "original", PICTURE))
    assert (original.width, original.height) == (512, 512)
    assert similarity(original, copy) >= DEFAULT_DUPLICATE_THRESHOLD
    assert similarity(original, other) < DEFAULT_DUPLICATE_THRESHOLD


@pytest.mark.parametrize("preview", [False, True], ids=["demosaiced", "preview"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_raw_files_orientation_is_applied(tmp_path, orientation, preview):
    coffee = images.photo("coffee")                              # 600 x 400
    shown = images.displayed(coffee, orientation)
    reference = features(images.write_jpeg(tmp_path, "shown.jpg", shown))
    raw = features(images.write_dng(tmp_path, "turned.dng", coffee,
                                    images.jpeg_bytes(coffee) if preview else None, orientation))
    assert (raw.format, raw.width, raw.height) == ("raw", shown.shape[1], shown.shape[0])
    assert hamming(raw.fingerprint, reference.fingerprint) <= SAME_PICTURE_BITS


@pytest.mark.parametrize("encode", [images.heic_bytes, images.avif_bytes], ids=["heic", "avif"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_phone_files_rotation_is_applied(tmp_path, encode, orientation):
    coffee = images.photo("coffee")                              # 600 x 400
    shown = images.displayed(coffee, orientation)
    reference = features(images.write_jpeg(tmp_path, "shown.jpg", shown))
    turned = features(images.write_bytes(tmp_path, "turned", encode(coffee, orientation=orientation)))
    assert (turned.width, turned.height) == (shown.shape[1], shown.shape[0])
    assert hamming(turned.fingerprint, reference.fingerprint) <= SAME_PICTURE_BITS


def test_a_raw_file_is_read_from_its_preview_when_it_is_large_enough(tmp_path):
    # A preview of another picture shows which of the two the features came from.
    square_cat = images.resized(OTHER, 512, 512)                 # as large as the raw image
    cat = features(images.write_jpeg(tmp_path, "cat.jpg", square_cat))
    astronaut = features(images.write_jpeg(tmp_path, "astronaut.jpg", PICTURE))
    full = features(images.write_dng(tmp_path, "full.dng", PICTURE, images.jpeg_bytes(square_cat)))
    assert hamming(full.fingerprint, cat.fingerprint) <= SAME_PICTURE_BITS
    small_preview = images.jpeg_bytes(images.resized(OTHER, 160, 120))      # a camera's thumbnail
    small = features(images.write_dng(tmp_path, "small.dng", PICTURE, small_preview))
    assert hamming(small.fingerprint, astronaut.fingerprint) <= SAME_PICTURE_BITS


def test_a_huge_heic_is_refused_from_its_header_before_the_decoder_sees_it(tmp_path, monkeypatch):
    from lookalike.imaging import codecs

    def decoder(*args):
        raise AssertionError("the decoder was given a file over the pixel cap")

    monkeypatch.setattr(codecs, "decode_pillow", decoder)
    path = images.huge_heic(tmp_path)
    with pytest.raises(Exception) as caught:
        features(path)
    assert caught.value.reason == "too_large"
    assert "100000x100000" in str(caught.value) and str(path) in str(caught.value)


# --- RAW+JPEG pairs and the keeper ------------------------------------------------------------

@pytest.fixture
def raw_jpeg_pair(tmp_path):
    """A camera's pair (raw with its preview, the JPEG it wrote), an enlarged JPEG copy of the
    same picture and an unrelated photo, in one context."""
    camera_jpeg = images.jpeg_bytes(PICTURE, 92)
    files = {"raw": images.write_dng(tmp_path, "IMG_0001.DNG", PICTURE, camera_jpeg),
             "jpeg": images.write_bytes(tmp_path, "IMG_0001.JPG", camera_jpeg),
             "enlarged": images.write_jpeg(tmp_path, "IMG_0001-print.jpg", images.resized(PICTURE, 1024, 1024)),
             "other": images.write_jpeg(tmp_path, "cat.jpg", OTHER)}
    context = SearchContext.create(tmp_path / "context")
    context.upsert_many([features(path) for path in files.values()])
    yield context, {name: str(path) for name, path in files.items()}
    context.close()


def test_a_raw_jpeg_pair_is_one_group_keeping_the_raw_file_by_default(raw_jpeg_pair):
    context, files = raw_jpeg_pair
    groups = find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)
    assert len(groups) == 1
    assert sorted(m.image.path for m in groups[0].members) == sorted([files["raw"], files["jpeg"], files["enlarged"]])
    # Kept over the enlarged copy, which has more pixels: `keep.formats` comes first.
    assert groups[0].keeper.path == files["raw"]


def test_keep_formats_decides_the_keeper(raw_jpeg_pair):
    context, files = raw_jpeg_pair
    assert find_groups(context, DEFAULT_DUPLICATE_THRESHOLD, rules=KeepRules(formats=("jpeg",)))[0].keeper.path == files["enlarged"]
    assert find_groups(context, DEFAULT_DUPLICATE_THRESHOLD, rules=KeepRules(formats=()))[0].keeper.path == files["enlarged"]


# --- configuration ----------------------------------------------------------------------------

def config_document(tmp_path, **extra) -> dict:
    (tmp_path / "photos").mkdir(exist_ok=True)
    return {"watch": [str(tmp_path / "photos")], "state_dir": str(tmp_path / "state"), **extra}


def test_keep_formats_is_read_and_checked(tmp_path):
    assert parse(config_document(tmp_path), tmp_path / "c.yaml").keep_formats == ("raw",)
    chosen = parse(config_document(tmp_path, keep={"formats": ["heif", "raw"]}), tmp_path / "c.yaml")
    assert chosen.keep_formats == ("heif", "raw")
    for bad in (["nef"], "raw", ["raw", "raw"]):
        with pytest.raises(ConfigError) as caught:
            parse(config_document(tmp_path, keep={"formats": bad}), tmp_path / "c.yaml")
        assert [p for p in caught.value.problems if p.startswith("keep.formats: ")], caught.value.problems


def test_config_check_names_a_bad_keep_format(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_document(tmp_path, keep={"formats": ["cr2"]})))
    assert cli.main(["config", "check", str(path)]) == ExitCode.CONFIG
    assert "keep.formats" in capsys.readouterr().err


# --- the command line -------------------------------------------------------------------------

@pytest.fixture
def album(tmp_path):
    photos = tmp_path / "album"
    photos.mkdir()
    return {"heic": images.write_heic(photos, "IMG_0002.HEIC", PICTURE),
            "avif": images.write_avif(photos, "phone.avif", PICTURE),
            "raw": images.write_dng(photos, "DSC_0003.NEF", PICTURE, images.jpeg_bytes(PICTURE)),
            "jpeg": images.write_jpeg(photos, "copy.jpg", images.resized(PICTURE, 300, 300), 70),
            "cat": images.write_jpeg(photos, "cat.jpg", OTHER),
            "cut": images.truncated_heic(photos, "cut.heic")}


def run_json(capsys, *args, expect=ExitCode.OK):
    code = cli.main([os.fspath(a) for a in args])
    out, err = capsys.readouterr()
    assert code == expect, err
    return json.loads(out)


def test_the_cli_adds_finds_compares_and_reports_these_formats(tmp_path, album, capsys):
    for name in ("heic", "avif", "raw"):
        extracted = run_json(capsys, "features", "extract", album[name])
        assert extracted["ImageId"] == str(album[name]) and extracted["FeaturesCount"] > 50
    context = tmp_path / "context"
    run_json(capsys, "--context", context, "context", "create")
    added = run_json(capsys, "--context", context, "features", "add", album["heic"].parent, expect=ExitCode.FAILED)
    assert added["added"] == 5
    assert [(f["path"], f["reason"]) for f in added["failures"]] == [(str(album["cut"]), "truncated")]

    for query in ("heic", "avif", "raw"):
        hits = run_json(capsys, "--context", context, "similar", album[query])["results"]
        assert {str(album[name]) for name in ("heic", "avif", "raw", "jpeg")} - {str(album[query])} <= \
            {hit["path"] for hit in hits}
        assert str(album["cat"]) not in {hit["path"] for hit in hits}
    assert run_json(capsys, "compare", album["heic"], album["raw"])["similarity"] >= DEFAULT_DUPLICATE_THRESHOLD

    report = run_json(capsys, "--context", context, "duplicates")
    (group,) = report["groups"]
    assert group["images"][0]["path"] == str(album["raw"])          # keep.formats: raw first
    page = to_html(report)
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page)) == 4     # a thumbnail for each
    assert "No thumbnail" not in page


# --- the daemon -------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_daemon_indexes_these_formats_and_records_a_cut_one(daemons, tmp_path, album):  # noqa: F811
    good = [album[name] for name in ("heic", "avif", "raw", "jpeg", "cat")]
    daemon = daemons([album["heic"].parent], reports={"keep": 3, "formats": ["json", "html"]}).start().ready()
    records = daemon.wait_records(good)
    assert {records[str(album[name])].format for name in ("heic", "avif", "raw")} == {"heif", "avif", "raw"}
    daemon.wait(lambda: str(album["cut"]) in daemon.failures(), "the cut HEIC recorded as failed")
    failed = daemon.cli("features", "failed")["failed"]
    assert [(f["path"], f["reason"]) for f in failed] == [(str(album["cut"]), "truncated")]
    daemon.wait_metric("lookalike_duplicates_runs_total", lambda v: v >= 1, "the first duplicate pass")
    latest = json.loads((daemon.reports / "duplicates-latest.json").read_text())
    assert [sorted(i["path"] for i in g["images"]) for g in latest["groups"]] == \
        [sorted(str(album[name]) for name in ("heic", "avif", "raw", "jpeg"))]
    assert "No thumbnail" not in (daemon.reports / "duplicates-latest.html").read_text()


def test_without_pillow_heif_a_heic_is_unsupported_and_says_why(tmp_path):
    """An installation without the package (a distribution that split it out): the file is
    recorded `unsupported` with the reason, not skipped and not a crash."""
    path = images.write_heic(tmp_path, "IMG_0004.HEIC", PICTURE)
    script = ("import sys; sys.modules['pillow_heif'] = None\n"           # import fails as if absent
              "from lookalike.errors import ImageError\n"
              "from lookalike.extract import extract_file\n"
              "from lookalike.settings import ExtractionSettings\n"
              "try:\n    extract_file(sys.argv[1], ExtractionSettings())\n"
              "except ImageError as exc:\n    print(exc.reason, exc.detail, sep='\\n')\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines() == ["unsupported", "HEIF decoding needs the pillow-heif package, "
                                                         "which is not installed"], result.stderr
