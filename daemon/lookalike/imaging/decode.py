"""Bytes on disk -> a greyscale working image (and a colour thumbnail for reports), safely.

The traps this module exists for (see shared notes, section 5):
- `cv2.imread` segfaults on a path that is not valid UTF-8, so the file is opened here (any path,
  str or bytes) and the bytes handed to `cv2.imdecode`. `cv2.imread` is not used anywhere.
- A FIFO or device named like an image would block a plain `open()`; the file is opened with
  O_NONBLOCK and rejected unless `fstat` says it is a regular file.
- A small file can claim billions of pixels; the header is read first and the file refused
  before any pixel is allocated.
- libjpeg decodes a half-written JPEG without complaint; the end-of-image marker is checked.
- A file rewritten while being read is noticed by comparing `fstat` before and after.

HEIF, AVIF and camera raw files pass the same checks, then go to imaging/codecs.py.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ImageError
from ..types import FileIdentity
from . import codecs, formats


def unchanged(now: FileIdentity, known: FileIdentity | None) -> bool:
    """Whether a file is taken as the one last seen (stored, or failed) without reading it:
    the same size and mtime. The one rule for every way in: the CLI's ingest, the daemon's
    check and the reconcile."""
    return known is not None and (known.size, known.mtime_ns) == (now.size, now.mtime_ns)


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    max_file_bytes: int


@dataclass(frozen=True)
class LoadedFile:
    data: bytes
    identity: FileIdentity | None     # None for bytes that are no file (extract.query_data)
    content_hash: bytes      # BLAKE2b-128 of the bytes: finds byte-identical copies without matching


@dataclass(frozen=True)
class WorkingImage:
    pixels: np.ndarray       # uint8, 2-D, at the working size (see working_length)
    format: str
    width: int               # as displayed, after EXIF orientation
    height: int


def read_file(path: str | bytes, limits: DecodeLimits) -> LoadedFile:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(path, "missing", "no such file") from None
    except PermissionError:
        raise ImageError(path, "unreadable", "permission denied") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", exc.strerror or str(exc)) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ImageError(path, "not_a_file", "not a regular file")
        if before.st_size == 0:
            raise ImageError(path, "empty", "the file is empty")
        if before.st_size > limits.max_file_bytes:
            raise ImageError(path, "too_large",
                             f"{before.st_size} bytes is over the cap of {limits.max_file_bytes}")
        try:
            data = _read_all(fd, before.st_size)
        except OSError as exc:
            raise ImageError(path, "unreadable", exc.strerror or str(exc)) from None
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != after.st_size:
        raise ImageError(path, "changed", "the file changed while it was being read")
    return LoadedFile(data, FileIdentity.of(after), content_hasher(data).digest())


def content_hasher(data: bytes = b""):
    """The content hash every record stores (BLAKE2b-128); `update` it to hash a file in pieces."""
    return hashlib.blake2b(data, digest_size=16)


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 22))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


_REDUCED_GREY = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_REDUCED_COLOUR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                   8: cv2.IMREAD_REDUCED_COLOR_8}


def decode(path: str | bytes, data: bytes, limits: DecodeLimits, working_size: int) -> WorkingImage:
    """Decode to greyscale, EXIF orientation applied, at the working size (see `working_length`)."""
    header = _checked_header(path, data, limits)
    grey, width, height = _pixels(path, header, data, limits, working_size, colour=False)
    return WorkingImage(to_working_size(grey, working_size), header.format, width, height)


def colour_thumbnail(path: str | bytes, data: bytes, limits: DecodeLimits, longest: int) -> np.ndarray:
    """A BGR picture for people to look at (reports), longest side at most `longest`, never enlarged.

    The same checks as `decode` (pixel cap, truncation) and the same EXIF orientation, so a
    thumbnail shows the picture the features were taken from.
    """
    header = _checked_header(path, data, limits)
    pixels, _, _ = _pixels(path, header, data, limits, longest, colour=True)
    if max(pixels.shape[:2]) > longest:
        pixels = scaled(pixels, longest / max(pixels.shape[:2]))
    return pixels


def _pixels(path: str | bytes, header: formats.Header, data: bytes, limits: DecodeLimits, wanted: int,
            colour: bool) -> tuple[np.ndarray, int, int]:
    """The picture as displayed (BGR or grey), at least `wanted` pixels on its longest side when
    it has them, and the full picture's displayed width and height."""
    full, reduced = (cv2.IMREAD_COLOR, _REDUCED_COLOUR) if colour else (cv2.IMREAD_GRAYSCALE, _REDUCED_GREY)
    if header.format in ("heif", "avif"):
        decoded = codecs.decode_pillow(path, data, header.format, colour)
        return decoded.pixels, decoded.width, decoded.height
    if header.format == "raw":
        def preview(jpeg: formats.Header, encoded: bytes) -> np.ndarray:
            flag = _flag(jpeg, wanted, full, reduced) | cv2.IMREAD_IGNORE_ORIENTATION
            return _imdecode(path, jpeg, encoded, flag)
        decoded = codecs.decode_raw(path, data, limits.max_pixels, colour, wanted, preview)
        return decoded.pixels, decoded.width, decoded.height
    pixels = _imdecode(path, header, data, _flag(header, wanted, full, reduced))
    width, height = header.width, header.height
    rotated = (pixels.shape[1] >= pixels.shape[0]) != (width >= height) and width != height
    if rotated:     # EXIF orientation 5-8 turned the picture on its side
        width, height = height, width
    return pixels, width, height


def _checked_header(path: str | bytes, data: bytes, limits: DecodeLimits) -> formats.Header:
    """The header, once it is known the decoder may be given the data: sane size, under the cap, complete."""
    try:
        header = formats.sniff(data[:formats.HEADER_PROBE_BYTES])
    except formats.HeaderError as exc:
        if exc.reason == "truncated" and len(data) > formats.HEADER_PROBE_BYTES:
            try:
                header = formats.sniff(data)
            except formats.HeaderError as again:
                raise ImageError(path, again.reason, again.detail) from None
        else:
            raise ImageError(path, exc.reason, exc.detail) from None
    if header.format == "tiff" and _extension(path) in _RAW_EXTENSIONS:
        header = formats.Header("raw", 0, 0)    # a camera's TIFF-based raw file without a mark of one
    if header.format != "raw" and (header.width <= 0 or header.height <= 0):
        raise ImageError(path, "corrupt", f"{header.format} header gives {header.width}x{header.height} pixels")
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise ImageError(path, "too_large", f"{header.width}x{header.height} = {pixels} pixels "
                                            f"is over the cap of {limits.max_pixels}")
    if not formats.is_complete(header.format, data):
        raise ImageError(path, "truncated", f"{header.format} data ends before the image does")
    return header


_RAW_EXTENSIONS = {ext for ext, fmt in formats.EXTENSIONS.items() if fmt == "raw"}


def _extension(path: str | bytes) -> str:
    return os.path.splitext(os.fsdecode(path))[1].lower()


def _flag(header: formats.Header, wanted: int, full: int, reduced: dict[int, int]) -> int:
    # DCT scaling makes a reduced JPEG decode several times cheaper than a full one; other
    # formats have no such shortcut, so they decode at full size and are resized afterwards.
    if header.format == "jpeg":
        for factor in (8, 4, 2):
            if working_length(header.width, header.height) // factor >= wanted:
                return reduced[factor]
    return full


def _imdecode(path: str | bytes, header: formats.Header, data: bytes, flag: int) -> np.ndarray:
    # Every flag used here leaves out IMREAD_IGNORE_ORIENTATION: OpenCV applies EXIF orientation.
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        raise ImageError(path, "corrupt", f"decoder error: {str(exc).strip().splitlines()[-1]}") from None
    if pixels is None or pixels.size == 0:
        raise ImageError(path, "corrupt", f"the {header.format} decoder could not read the data")
    return pixels


# A panorama's short side must keep room for keypoints: at 640 pixels on its longest side a 25:1
# one is 26 pixels high, and AKAZE finds nothing there. An image longer than PANORAMA_ASPECT times
# its short side keeps that side at 1/PANORAMA_ASPECT of the working size, within the pixels of a
# square at the working size; and none is worked longer than MAX_WORKING_STRETCH working sizes,
# which bounds a 1,000,000 x 1 strip.
PANORAMA_ASPECT = 4
MAX_WORKING_STRETCH = 8


def working_length(width: int, height: int) -> float:
    """The length that is scaled to the working size: the longest side, or for an image longer
    than PANORAMA_ASPECT to 1 what keeps its short side a quarter of the working size, or its
    area a square's. Scaling is uniform, so an image and its resized copies share a working size."""
    longest, shortest = max(width, height), min(width, height)
    return min(longest, max(PANORAMA_ASPECT * shortest, math.sqrt(width * height),
                            longest / MAX_WORKING_STRETCH))


def to_working_size(pixels: np.ndarray, working_size: int) -> np.ndarray:
    """Scale so that the picture's `working_length` is `working_size`, up or down.

    Small images are scaled up too: a thumbnail-sized copy then has its keypoints detected at
    the same scales as the full-size original, which is what makes the two match
    (CALIBRATION.md, "Working size").
    """
    return scaled(pixels, working_size / working_length(pixels.shape[1], pixels.shape[0]))


def scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return pixels
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(pixels, size, interpolation=interpolation)
