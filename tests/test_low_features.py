"""Images poor in keypoints: dark, washed-out and blurred photos, and extreme panoramas.

Their copies are made at test time from scikit-image's photos. Each must be found with its
copies, or, when it has too few keypoints to be matched geometrically, be reported as
`few_features` and still be found by its identical and near-identical copies.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

import images
from harness import folder, lookalike, lookalike_json
from lookalike.duplicates import find_groups
from lookalike.errors import ExitCode, StoreError
from lookalike.extract import extract_file, few_features
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext

SETTINGS = ExtractionSettings()


def darkened(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) * 0.12).astype(np.uint8)


def washed_out(pixels: np.ndarray) -> np.ndarray:
    """A quarter of the range, lifted to the top: 190-253."""
    return (pixels.astype(np.float32) * 0.25 + 190).astype(np.uint8)


def panorama(width: int = 20000, height: int = 800) -> np.ndarray:
    """A 25:1 strip of different pictures: the photos, turned and mirrored, side by side."""
    tiles = []
    for name in images.PHOTOS:
        for pixels in (images.photo(name), np.rot90(images.photo(name))):
            tile = images.resized(np.ascontiguousarray(pixels), round(pixels.shape[1] * height / pixels.shape[0]), height)
            tiles += [tile, tile[:, ::-1], tile[::-1], tile[::-1, ::-1]]
    strip = np.hstack(tiles)
    assert strip.shape[1] >= width
    return np.ascontiguousarray(strip[:, :width])


def blurred(name: str) -> np.ndarray:
    """So smooth that no keypoint survives: a photo out of focus."""
    return cv2.GaussianBlur(images.photo(name), (0, 0), 30)


def faint(name: str, detail: float) -> np.ndarray:
    """Mist or soft clouds: the picture's broad shading over its full range, its detail at
    `detail` of its contrast, so that the grey range is wide and every gradient weak."""
    pixels = images.grey(images.photo(name)).astype(np.float32)
    shading = cv2.GaussianBlur(pixels, (0, 0), 25)
    spread = (shading - shading.min()) / (shading.max() - shading.min()) * 200 + 20
    return np.clip(spread + detail * (pixels - shading), 0, 255).astype(np.uint8)


def grouped(folder_path: Path, files: list[Path]) -> list[set[str]]:
    with SearchContext.create(folder_path / "context") as context:
        context.upsert_many([extract_file(str(path), SETTINGS) for path in files])
        return [{Path(m.image.path).name for m in group.members}
                for group in find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)]


@pytest.mark.parametrize("kind", ["dark", "washed_out"])
def test_dark_and_washed_out_photos_are_grouped_with_their_copies_and_the_original(tmp_path, kind):
    edit = darkened if kind == "dark" else washed_out
    files, expected = [], []
    for name in images.PHOTOS:
        pixels = images.photo(name)
        edited = edit(pixels)
        height, width = pixels.shape[:2]
        files += [images.write_jpeg(tmp_path, f"{name}.jpg", pixels),
                  images.write_jpeg(tmp_path, f"{name}-{kind}.jpg", edited),
                  images.write_jpeg(tmp_path, f"{name}-{kind}-half.jpg", images.resized(edited, width // 2, height // 2))]
        expected.append({f"{name}.jpg", f"{name}-{kind}.jpg", f"{name}-{kind}-half.jpg"})
    groups = grouped(tmp_path, files)
    assert sorted(map(sorted, groups)) == sorted(map(sorted, expected))


def test_faint_photos_get_keypoints_at_a_lower_threshold_and_are_grouped_with_their_crops_and_mirrors(tmp_path):
    files, expected = [images.write_jpeg(tmp_path, "coffee.jpg", images.photo("coffee"))], []
    for name, detail in (("chelsea", 0.2), ("rocket", 0.3)):
        pixels = faint(name, detail)
        height, width = pixels.shape[:2]
        crop = pixels[height // 5: height - height // 5, width // 5: width - width // 5]
        files += [images.write_jpeg(tmp_path, f"{name}.jpg", pixels, 95),
                  images.write_jpeg(tmp_path, f"{name}-crop.jpg", crop, 80),
                  images.write_jpeg(tmp_path, f"{name}-mirror.jpg", np.ascontiguousarray(pixels[:, ::-1]), 80)]
        expected.append({f"{name}.jpg", f"{name}-crop.jpg", f"{name}-mirror.jpg"})
    assert min(extract_file(str(path), SETTINGS).local.count for path in files) >= SETTINGS.max_features // 2
    assert sorted(map(sorted, grouped(tmp_path, files))) == sorted(map(sorted, expected))


def test_a_25_to_1_panorama_is_grouped_with_its_quarter_size_copy(tmp_path):
    pixels = panorama()
    files = [images.write_jpeg(tmp_path, "panorama.jpg", pixels),
             images.write_jpeg(tmp_path, "panorama-small.jpg", images.resized(pixels, 5000, 200)),
             images.write_jpeg(tmp_path, "coffee.jpg", images.photo("coffee"))]
    assert grouped(tmp_path, files) == [{"panorama.jpg", "panorama-small.jpg"}]


def test_only_long_strips_get_another_working_size_and_within_a_budget(tmp_path):
    def worked(name: str, pixels: np.ndarray) -> tuple[int, int]:
        local = extract_file(str(images.write_png(tmp_path, name, pixels)), SETTINGS).local
        return local.width, local.height

    assert worked("chelsea.png", images.photo("chelsea")) == (640, 426)                  # 451 x 300
    assert worked("rocket-tall.png", np.rot90(images.photo("rocket"))) == (427, 640)     # 427 x 640
    width, height = worked("panorama.png", images.resized(panorama(), 5000, 200))
    assert height >= 100 and width * height <= SETTINGS.working_size ** 2
    strip = np.tile(np.arange(256, dtype=np.uint8), (2, 400))                           # 102400 x 2
    assert worked("strip.png", strip)[0] <= 8 * SETTINGS.working_size


def test_an_image_with_too_few_features_is_listed_and_still_finds_its_identical_and_near_copies(tmp_path):
    photos = folder(tmp_path)
    smooth = blurred("chelsea")
    height, width = smooth.shape[:2]
    original = images.write_jpeg(photos, "smooth.jpg", smooth)
    identical = images.write_bytes(photos, "smooth-same-bytes.jpg", original.read_bytes())
    near = images.write_jpeg(photos, "smooth-half.jpg", images.resized(smooth, width // 2, height // 2), 75)
    other = images.write_jpeg(photos, "other-smooth.jpg", blurred("coffee"))
    sharp = images.write_jpeg(photos, "astronaut.jpg", images.photo("astronaut"))
    context = tmp_path / "context"

    lookalike_json("--context", context, "context", "create")
    lookalike_json("--context", context, "features", "add", photos)
    listed = {Path(i["path"]).name: i for i in lookalike_json("--context", context, "features", "list")["images"]}
    assert {name: entry["reason"] for name, entry in listed.items()} == {
        "smooth.jpg": "few_features", "smooth-same-bytes.jpg": "few_features", "smooth-half.jpg": "few_features",
        "other-smooth.jpg": "few_features", "astronaut.jpg": None}
    assert all(few_features(listed[p.name]["features"]) for p in (original, identical, near, other))

    compared = lookalike_json("compare", original, other)
    assert compared["similarity"] == 0 and compared["reason"] == "few_features"
    assert compared["few_features"] == [str(original), str(other)]
    assert "reason" not in lookalike_json("compare", sharp, images.write_jpeg(tmp_path, "half.jpg", images.resized(
        images.photo("astronaut"), 256, 256)))

    report = lookalike_json("--context", context, "duplicates")
    groups = [{Path(i["path"]).name for i in group["images"]} for group in report["groups"]]
    assert groups == [{original.name, identical.name, near.name}], groups


def test_the_daemon_logs_and_counts_an_image_with_too_few_features(daemons, tmp_path):
    photos = folder(tmp_path)
    smooth = images.write_jpeg(photos, "smooth.jpg", blurred("rocket"))
    sharp = images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    daemon = daemons([photos]).start().ready()
    daemon.wait_records([smooth, sharp])
    assert daemon.metric("lookalike_files_few_features_total") == 1
    lines = [line for line in daemon.log_tail(200).splitlines() if "few_features" in line]
    assert len(lines) == 1 and str(smooth) in lines[0], daemon.log_tail()


def test_a_context_filled_by_an_older_extraction_is_refused_with_the_way_to_rebuild(tmp_path):
    directory = tmp_path / "context"
    SearchContext.create(directory).close()
    with lmdb.open(str(directory), max_dbs=16) as env:       # as the extraction before versions left it
        with env.begin(write=True) as txn:
            assert txn.delete(b"extraction", db=env.open_db(b"meta", txn=txn))
    with pytest.raises(StoreError, match="extraction version 1.*context rebuild"):
        SearchContext.open(directory)
    result = lookalike("--context", directory, "features", "list")
    assert result.returncode == ExitCode.STORE, result.stderr
    assert "extraction version 1" in result.stderr and str(directory) in result.stderr
