"""Recognise an image format and read its pixel dimensions from the header alone.

Decoding is the expensive and dangerous step: a 48 KB PNG can claim 20000x20000 pixels and cost
gigabytes. Reading the dimensions first lets the decoder refuse such a file before it allocates
anything. Pure Python, no OpenCV: this module only looks at bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Header:
    format: str          # "jpeg", "png", "webp", "gif", "bmp", "tiff"
    width: int
    height: int


class HeaderError(ValueError):
    """The bytes are not a recognisable image header; `reason` follows ImageError.REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Enough bytes to find the dimensions of every format below except JPEGs with large EXIF or
# ICC segments before the frame header; for those the whole buffer is scanned.
HEADER_PROBE_BYTES = 64 * 1024

EXTENSIONS = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".jfif": "jpeg",
    ".png": "png", ".webp": "webp", ".gif": "gif", ".bmp": "bmp", ".dib": "bmp",
    ".tif": "tiff", ".tiff": "tiff",
}


def sniff(data: bytes) -> Header:
    """Format and dimensions of an encoded image, from its first bytes."""
    if len(data) == 0:
        raise HeaderError("empty", "the file is empty")
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:2] == b"BM":
        return _bmp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif"):
        raise HeaderError("unsupported", "HEIF/AVIF images are not supported by this build")
    raise HeaderError("unsupported", "not a JPEG, PNG, WebP, GIF, BMP or TIFF image")


def _need(data: bytes, size: int, fmt: str) -> None:
    if len(data) < size:
        raise HeaderError("truncated", f"{fmt} header is cut short")


def _png(data: bytes) -> Header:
    _need(data, 24, "PNG")
    if data[12:16] != b"IHDR":
        raise HeaderError("corrupt", "PNG without an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return Header("png", width, height)


def _gif(data: bytes) -> Header:
    _need(data, 10, "GIF")
    width, height = struct.unpack("<HH", data[6:10])
    return Header("gif", width, height)


def _bmp(data: bytes) -> Header:
    _need(data, 26, "BMP")
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return Header("bmp", abs(width), abs(height))


def _webp(data: bytes) -> Header:
    _need(data, 30, "WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
        if data[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("corrupt", "WebP VP8 frame without a start code")
        width, height = struct.unpack("<HH", data[26:30])
        return Header("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise HeaderError("corrupt", "WebP VP8L without its signature byte")
        bits = int.from_bytes(data[21:25], "little")
        return Header("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return Header("webp", width, height)
    raise HeaderError("corrupt", f"WebP with an unknown first chunk {chunk!r}")


_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(data: bytes):
    """(offset, marker, length) of each marker segment, from after SOI to the first scan."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise HeaderError("corrupt", f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:          # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        yield pos, marker, length
        if marker == 0xDA:
            return
        pos += 2 + length


def _jpeg(data: bytes) -> Header:
    for pos, marker, _ in _jpeg_segments(data):
        if marker in _JPEG_FRAME_MARKERS:
            _need(data, pos + 9, "JPEG")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return Header("jpeg", width, height)
        if marker in (0xDA, 0xD9):
            raise HeaderError("corrupt", "JPEG without a frame header before its scan")
    raise HeaderError("truncated", "JPEG ends before its frame header")


def _tiff(data: bytes) -> Header:
    order = "<" if data[:2] == b"II" else ">"
    _need(data, 8, "TIFF")
    offset = struct.unpack(order + "I", data[4:8])[0]
    _need(data, offset + 2, "TIFF")
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    fields: dict[int, int] = {}
    for i in range(count):
        entry = offset + 2 + 12 * i
        _need(data, entry + 12, "TIFF")
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257):
            value = data[entry + 8:entry + 12]
            fields[tag] = (struct.unpack(order + "H", value[:2])[0] if kind == 3
                           else struct.unpack(order + "I", value)[0])
    if 256 not in fields or 257 not in fields:
        raise HeaderError("corrupt", "TIFF without ImageWidth/ImageLength")
    return Header("tiff", fields[256], fields[257])


def is_complete(fmt: str, data: bytes) -> bool:
    """Whether the file ends where its format says an image ends.

    libjpeg decodes a JPEG cut in half without an error (it pads the rest with grey), so the
    end-of-image marker is checked here. Other formats' decoders notice truncation themselves,
    but cannot tell it from damage, so PNG's IEND trailer, GIF's trailer and the length a WebP's
    RIFF header gives are checked too: the reason says what happened.
    """
    tail = data[-64:].rstrip(b"\x00")
    if fmt == "jpeg":
        return tail.endswith(b"\xff\xd9") or _jpeg_has_end(data)
    if fmt == "png":
        return b"IEND" in tail
    if fmt == "gif":
        return tail.endswith(b"\x3b")
    if fmt == "webp":
        return len(data) >= 8 + struct.unpack("<I", data[4:8])[0]
    return True


def _jpeg_has_end(data: bytes) -> bool:
    """Whether an end-of-image marker follows the first scan, wherever the file ends.

    Phones append data after the JPEG (Google's motion photos an MP4 video, Samsung a SEFT
    trailer), so EOI need not be the last two bytes. Inside entropy-coded data FF is always
    followed by 00 or a restart marker, so an FF D9 after the first scan starts ends the image;
    one before it may belong to an EXIF thumbnail and proves nothing.
    """
    try:
        scans = [pos for pos, marker, _ in _jpeg_segments(data) if marker == 0xDA]
    except HeaderError:
        return False
    return bool(scans) and data.find(b"\xff\xd9", scans[0]) != -1
