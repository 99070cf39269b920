"""Which image of a duplicate group is kept, and why: the original, judged from evidence.

Two images are weighed rule by rule, in this order; the first rule that tells them apart
decides, and names the keeper's reason (KEEPER_REASONS):

1. a file in a `keep.reference` folder is kept over one outside them;
2. the image that contains the other's picture and adds nothing around it: a border, caption,
   caption band, letterbox or a viewer's chrome is canvas outside the common area, so the side
   that adds it is the derived one; a crop shows less than the picture it was cut from;
3. a file in an earlier `keep.prefer` folder (a "Camera Roll" before "Downloads");
4. a format earlier in `keep.formats` (a camera's raw file over the JPEG made from it);
5. more pixels on the picture the two share (not file size: a palette PNG is often larger);
6. full colour over palette, 256-colour or grey;
7. camera metadata (EXIF capture time, make or model) over none;
8. the older capture time;
9. of two copies of one frame, the one without strokes drawn over part of the picture (a
   caption, a date stamp, a logo); weaker evidence than canvas, as a cut-away corner or a
   re-encoded sky can look alike, so it only decides between files the facts cannot;
10. the older file (modification time: a copy is usually made after its original);
11. the path first in order.

Rules 2 and 9 need the comparison of the two images (its common area in each) and their stored
thumbnails; the others are facts of each image. The facts of rules 6 to 8 are read from the file's header when a group is formed
(never stored: a context made by an older lookalike keeps working), and remembered by path and
content. `duplicates.find_groups` starts from the image the facts rank first (`provisional`),
compares it with the others, and hands the group to a member that beats it (`verdict`).
"""

from __future__ import annotations

import functools
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .match import CROPPED_BELOW, ROTATED_ABOVE, outside_is_canvas, overlaid
from .settings import DEFAULT_KEEP_FORMATS
from .store import StoredImage

# Why a group's keeper was chosen (Group.keeper_reason, the report's `keeper_reason`), in the
# order the rules are applied. README, "Which copy is kept".
KEEPER_REASONS = {
    "reference folder": "the only file of the group in a keep.reference folder",
    "contains the others": "the others are its picture cut down, or with a border, caption, band or chrome added",
    "preferred folder": "in a keep.prefer folder listed before the others' folders",
    "preferred format": "in a format keep.formats lists before the others' formats",
    "most pixels": "the most pixels on the picture the copies share",
    "full colour": "full colour, where the others are palette, 256-colour or grey",
    "camera metadata": "it has camera metadata (EXIF capture time, make or model); the others have none",
    "oldest capture": "the oldest EXIF capture time",
    "no overlay": "the others have a caption, stamp or logo drawn over the picture",
    "oldest file": "nothing in the pictures told them apart: the oldest modification time",
    "first path": "nothing else told the copies apart: the path first in order",
}
# Pixel counts this close are the same picture's (a re-encode, a copy turned a few degrees):
# rule 5 does not decide between them.
PIXELS_ALIKE = 0.01
# What an image shows around the area it shares with another (rule 2), best first.
MORE_PICTURE, NOTHING, CANVAS = 0, 1, 2
_CAPTURE_TIME = re.compile(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d")
_EXIF_MAKE, _EXIF_MODEL, _EXIF_IFD, _EXIF_CAPTURED = 0x010F, 0x0110, 0x8769, 0x9003
_FULL_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
_FACTS_REMEMBERED = 65536


@dataclass(frozen=True)
class KeepRules:
    """The person's part in the choice (config `keep`)."""

    formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS
    reference: tuple[Path, ...] = ()
    prefer: tuple[Path, ...] = ()


def under(path: str, folder: str | Path) -> bool:
    """Whether `path` is `folder` or inside it (by name: nothing is resolved)."""
    return path == str(folder) or path.startswith(str(folder).rstrip("/") + "/")


@dataclass(frozen=True)
class Facts:
    """What a file's header says about where it came from; nothing known counts for nothing."""

    full_colour: bool = False
    camera: bool = False
    captured: str | None = None       # EXIF DateTimeOriginal, "YYYY:MM:DD HH:MM:SS"


def facts(image: StoredImage) -> Facts:
    return _read_facts(image.path, image.content_hash)


@functools.lru_cache(maxsize=_FACTS_REMEMBERED)
def _read_facts(path: str, content_hash: bytes) -> Facts:
    """The header of the file at `path` (`content_hash` keys the memory: other bytes, other
    facts). Pillow reads only the header; a file that is gone, not regular or not readable has
    no facts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return Facts()
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Facts()
        try:
            with warnings.catch_warnings():
                # The pixels are never decoded here; decode.py applies the size limits.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(handle) as image:
                    exif = image.getexif()
                    captured = exif.get_ifd(_EXIF_IFD).get(_EXIF_CAPTURED)
                    captured = captured if isinstance(captured, str) and _CAPTURE_TIME.fullmatch(captured) \
                        and not captured.startswith("0000") else None
                    camera = bool(captured or exif.get(_EXIF_MAKE) or exif.get(_EXIF_MODEL))
                    return Facts(image.mode in _FULL_COLOUR_MODES, camera, captured)
        except Exception:       # noqa: BLE001 - a header Pillow cannot read only has no facts
            return Facts()


@dataclass(frozen=True)
class Contender:
    """An image as the rules see it."""

    image: StoredImage
    facts: Facts
    reference: bool
    preference: int           # index of its keep.prefer folder; past the list when in none
    format_rank: int          # index of its format in keep.formats; past the list when not there

    @classmethod
    def of(cls, image: StoredImage, rules: KeepRules) -> "Contender":
        preference = next((i for i, folder in enumerate(rules.prefer) if under(image.path, folder)),
                          len(rules.prefer))
        format_rank = rules.formats.index(image.format) if image.format in rules.formats else len(rules.formats)
        return cls(image, facts(image), any(under(image.path, folder) for folder in rules.reference),
                   preference, format_rank)

    def ranks(self, pixels: float) -> list[tuple[str, object]]:
        """Its standing on each rule but the comparison's (rule 2), lower first."""
        return [("reference folder", not self.reference), ("preferred folder", self.preference),
                ("preferred format", self.format_rank), ("most pixels", -pixels),
                ("full colour", not self.facts.full_colour), ("camera metadata", not self.facts.camera),
                # "~" sorts after every digit: no capture time comes last
                ("oldest capture", self.facts.captured or "~"), ("oldest file", self.image.identity.mtime_ns),
                ("first path", self.image.path)]


def standing(contender: Contender) -> list:
    """Its place by the facts alone (all rules but the comparison's), first lowest."""
    return [rank for _, rank in contender.ranks(contender.image.width * contender.image.height)]


def provisional(contenders: list[Contender]) -> Contender:
    """The image the facts rank first: where comparing starts."""
    return min(contenders, key=standing)


def surround(common_area: list[float], thumbnail: Callable[[], np.ndarray | None]) -> int:
    """What an image shows around its common area with another: MORE_PICTURE, NOTHING or CANVAS."""
    x0, y0, x1, y1 = common_area
    if (x1 - x0) * (y1 - y0) >= CROPPED_BELOW:
        return NOTHING
    pixels = thumbnail()
    if pixels is None:        # removed meanwhile: nothing to tell
        return NOTHING
    return CANVAS if outside_is_canvas(pixels, tuple(common_area)) else MORE_PICTURE


def _overlay(keeper: Contender, member: Contender, flipped: bool,
             thumbnail: Callable[[int], np.ndarray | None]) -> int:
    """Rule 9: which of two copies of one frame has strokes drawn over the picture (match.overlaid:
    1 the keeper, 2 the member, 0 neither or no telling)."""
    first, second = thumbnail(keeper.image.num), thumbnail(member.image.num)
    if first is None or second is None:
        return 0
    return overlaid(first[:, ::-1] if flipped else first, second)


def verdict(keeper: Contender, member: Contender, transform: dict | None,
            thumbnail: Callable[[int], np.ndarray | None]) -> tuple[str, bool]:
    """(the rule that tells them apart, whether `member` wins) for a comparison keeper -> member
    (`transform` as match.Transform.to_json writes it; None for identical and near-exact copies:
    the same frame). `thumbnail(num)` is an image's stored thumbnail (None if removed)."""
    if transform is None:
        shown = (NOTHING, NOTHING)
        pixels = (1.0, 1.0)
    else:
        shown = (surround(transform["common_area_first"], lambda: thumbnail(keeper.image.num)),
                 surround(transform["common_area_second"], lambda: thumbnail(member.image.num)))
        pixels = (transform["coverage_first"], transform["coverage_second"])
    pixels = (keeper.image.width * keeper.image.height * pixels[0], member.image.width * member.image.height * pixels[1])
    if abs(pixels[0] - pixels[1]) <= PIXELS_ALIKE * max(pixels):
        pixels = (0.0, 0.0)
    keeper_ranks, member_ranks = keeper.ranks(pixels[0]), member.ranks(pixels[1])
    # rule 2 after the reference folders
    keeper_ranks.insert(1, ("contains the others", shown[0]))
    member_ranks.insert(1, ("contains the others", shown[1]))
    for (rule, kept), (_, other) in zip(keeper_ranks, member_ranks):
        # rule 9, the overlay, when rules 1 to 8 tie: only then are the thumbnails compared
        if rule == "oldest file" and transform is not None and shown == (NOTHING, NOTHING) \
                and abs((transform["rotation_degrees"] + 180) % 360 - 180) <= ROTATED_ABOVE:
            drawn_on = _overlay(keeper, member, transform["flipped"], thumbnail)
            if drawn_on:
                return "no overlay", drawn_on == 1
        if kept != other:
            return rule, other < kept
    return "first path", False


def group_reason(rules_that_decided: list[str]) -> str:
    """A group's keeper reason: the rule that set the keeper apart from the member closest to
    it, the last in order of those that decided against each member."""
    order = list(KEEPER_REASONS)
    return max(rules_that_decided, key=order.index, default="first path")
