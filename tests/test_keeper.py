"""The keeper is the original: real photos and the copies people make of them.

Eleven families made at test time from scikit-image's photos: a camera's JPEG (EXIF make, model,
capture time) and its resized, quality-15, cropped, rotated, mirrored, captioned, bordered and
caption-band copies, a screenshot of a viewer showing it, a 256-colour GIF, a palette PNG and a
PNG cut to an ellipse. Several copies have more pixels (the caption band, the screenshot) or
more bytes (the GIF and PNGs) than the original, and every copy's path sorts before it. One copy
of each family lies in another folder, for `keep.reference` and `keep.prefer`. Each family
must keep its original (95 % at least), a file in a reference folder always.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import images
from lookalike.duplicates import find_groups
from lookalike.extract import extract_file
from lookalike.keeper import KEEPER_REASONS, KeepRules
from lookalike.reports import to_csv, to_document
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext

pytestmark = pytest.mark.slow

FAMILIES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
            "camera", "moon", "coins", "cell")


def _photo(name: str) -> np.ndarray:
    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if max(pixels.shape[:2]) > 1000:
        scale = 1000 / max(pixels.shape[:2])
        pixels = images.resized(pixels, int(pixels.shape[1] * scale), int(pixels.shape[0] * scale))
    return np.ascontiguousarray(pixels[..., :3])


COPIES = images.PHOTO_COPIES
# Copies that show the picture as it is (no canvas added, nothing cut away): a preferred folder
# holding one is kept over the original.
SAME_PICTURE = ("resized", "quality15", "rotated", "mirrored", "gif256", "palette_png", "ellipse_png")


class Families:
    def __init__(self, folder: Path, originals: dict[str, str], elsewhere: dict[str, tuple[str, str]],
                 context: SearchContext):
        self.folder = folder
        self.originals = originals          # family -> path
        self.elsewhere = elsewhere          # family -> (kind, path) of its copy in the other folder
        self.context = context

    def keepers(self, rules: KeepRules = KeepRules()) -> dict[str, tuple[str, str]]:
        """path -> (keeper path, keeper reason) of its group, for every grouped image."""
        groups = find_groups(self.context, DEFAULT_DUPLICATE_THRESHOLD, rules=rules)
        return {member.image.path: (group.keeper.path, group.keeper_reason)
                for group in groups for member in group.members}

    def grouped(self, keepers: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """The copies in the other folder that are in a group (all but one family's at least)."""
        found = {family: (kind, path) for family, (kind, path) in self.elsewhere.items() if path in keepers}
        assert len(found) >= len(FAMILIES) - 1, f"copies in no group: {set(self.elsewhere) - set(found)}"
        return found


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> Families:
    folder = tmp_path_factory.mktemp("keeper")
    library, other = folder / "library", folder / "other"
    other.mkdir()
    originals, elsewhere, files = {}, {}, []
    for number, family in enumerate(FAMILIES):
        pixels = _photo(family)
        (library / family).mkdir(parents=True)
        original = images.camera_jpeg(library / family, "original.jpg", pixels,
                                      captured=f"2019:07:{number + 1:02d} 10:32:05")
        originals[family] = str(original)
        files.append(original)
        moved = list(COPIES)[number % len(COPIES)]
        for kind, write in COPIES.items():
            path = write(other if kind == moved else library / family, f"copy-{family}-{kind}", pixels)
            files.append(path)
            if kind == moved:
                elsewhere[family] = (kind, str(path))
    settings = ExtractionSettings()
    with ThreadPoolExecutor() as pool:
        extracted = list(pool.map(lambda path: extract_file(str(path), settings), files))
    context = SearchContext.create(folder / "context")
    context.upsert_many(extracted)
    yield Families(other, originals, elsewhere, context)
    context.close()


def test_the_original_is_kept_in_nearly_every_family(families):
    keepers = families.keepers()
    wrong = {family: keepers.get(original) for family, original in families.originals.items()
             if keepers.get(original, (None,))[0] != original}
    assert len(wrong) <= 0.05 * len(FAMILIES), f"a copy kept instead of the original (keeper, reason): {wrong}"
    assert {reason for _, reason in keepers.values()} <= set(KEEPER_REASONS)


def test_a_file_in_a_reference_folder_is_always_kept(families):
    keepers = families.keepers(KeepRules(reference=(families.folder,)))
    for family, (kind, path) in families.grouped(keepers).items():
        assert keepers[path] == (path, "reference folder"), f"{family}: the {kind} copy in the reference folder"


def test_a_preferred_folder_wins_unless_its_copy_is_derived(families):
    keepers = families.keepers(KeepRules(prefer=(families.folder,)))
    for family, (kind, path) in families.grouped(keepers).items():
        if kind in SAME_PICTURE:
            assert keepers[path] == (path, "preferred folder"), family
        else:        # a crop, or canvas added: the comparison shows it is not the original
            assert keepers[path][0] == families.originals[family], family


def test_every_report_says_why_its_keeper_was_chosen(families):
    groups = find_groups(families.context, DEFAULT_DUPLICATE_THRESHOLD)
    document = to_document(groups, DEFAULT_DUPLICATE_THRESHOLD, "context")
    assert all(group["keeper_reason"] in KEEPER_REASONS for group in document["groups"])
    # Families of an original and its edited copies: evidence decides each, never the path alone.
    assert "first path" not in {group["keeper_reason"] for group in document["groups"]}
    rows = to_csv(document).splitlines()
    assert rows[0].split(",")[-1] == "keeper_reason"
    keeper_rows = [row for row in rows[1:] if ",yes," in row]
    assert [row.rsplit(",", 1)[1] for row in keeper_rows] == [g["keeper_reason"] for g in document["groups"]]


def test_a_caption_drawn_over_the_picture_marks_the_copy(tmp_path):
    """An editor that keeps the EXIF: the copy with a caption over the picture has the same size,
    metadata and frame as the original, and its path sorts first."""
    settings = ExtractionSettings()
    with SearchContext.create(tmp_path / "context") as context:
        originals = []
        for name in ("rocket", "coffee", "chelsea"):
            pixels = _photo(name)
            originals.append(str(images.camera_jpeg(tmp_path, f"{name}.jpg", pixels)))
            copy = images.camera_jpeg(tmp_path, f"{name}-captioned.jpg", images.caption_over(pixels))
            context.upsert_many([extract_file(originals[-1], settings), extract_file(str(copy), settings)])
        groups = find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)
    assert sorted((g.keeper.path, g.keeper_reason) for g in groups) == \
        sorted((path, "no overlay") for path in originals)
