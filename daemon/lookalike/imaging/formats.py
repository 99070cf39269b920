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
    format: str          # "jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif", "raw"
    width: int           # for "raw" 0: LibRaw reads a camera's sizes when it opens the file
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
    ".heic": "heif", ".heif": "heif", ".hif": "heif", ".avif": "avif",
    ".dng": "raw", ".cr2": "raw", ".cr3": "raw", ".nef": "raw", ".nrw": "raw", ".arw": "raw",
    ".orf": "raw", ".raf": "raw", ".rw2": "raw", ".pef": "raw", ".srw": "raw",
}

# ISO base media file brands (the `ftyp` box): HEIF holds HEVC, AVIF AV1, Canon's CR3 a raw image.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_RAW_BRANDS = {b"crx "}
# Camera raw files that are not TIFFs from their first bytes: Olympus ORF, Panasonic RW2, Fuji RAF.
_RAW_MAGIC = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")


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
    if data[4:8] == b"ftyp":
        return _isobmff(data)
    if data.startswith(_RAW_MAGIC):
        return Header("raw", 0, 0)
    raise HeaderError("unsupported", "not a JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF, AVIF or camera raw image")


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


_NEW_SUBFILE_TYPE = 254
_DNG_VERSION = 50706


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
        if tag in (_NEW_SUBFILE_TYPE, 256, 257, _DNG_VERSION):
            value = data[entry + 8:entry + 12]
            fields[tag] = (struct.unpack(order + "H", value[:2])[0] if kind == 3
                           else struct.unpack(order + "I", value)[0])
    # A DNG says so; Canon's CR2 marks its TIFF header; Nikon's NEF, Sony's ARW and DNGs begin
    # with a reduced-resolution preview, which no plain TIFF does.
    if _DNG_VERSION in fields or data[8:10] == b"CR" or fields.get(_NEW_SUBFILE_TYPE, 0) & 1:
        return Header("raw", 0, 0)
    if 256 not in fields or 257 not in fields:
        raise HeaderError("corrupt", "TIFF without ImageWidth/ImageLength")
    return Header("tiff", fields[256], fields[257])


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, box end) of each ISO base media box between `start` and `end`;
    a box's end may lie past `end` when the data is cut short."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:                        # a 64-bit size follows the type
            if pos + 16 > end:
                return
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:                      # the box runs to the end of the file
            size = end - pos
        if size < header:
            raise HeaderError("corrupt", f"ISO media box {kind!r} at byte {pos} has size {size}")
        yield kind, pos + header, pos + size
        pos += size


# Boxes on the way from the file to the image properties: meta (a full box: 4 bytes of version
# and flags before its children) -> iprp -> ipco -> ispe, the image spatial extents.
_PROPERTY_PATH = ((b"meta", 4), (b"iprp", 0), (b"ipco", 0))


def _isobmff(data: bytes) -> Header:
    _need(data, 16, "ISO media")
    ftyp_size = struct.unpack(">I", data[:4])[0]
    _need(data, ftyp_size, "ISO media")
    brands = {data[8:12]} | {data[pos:pos + 4] for pos in range(16, ftyp_size - 3, 4)}
    if brands & _RAW_BRANDS:
        return Header("raw", 0, 0)
    if brands & _AVIF_BRANDS:
        fmt = "avif"
    elif brands & _HEIF_BRANDS:
        fmt = "heif"
    else:
        raise HeaderError("unsupported", f"an ISO media file of brands {sorted(brands)} is not a still image")
    # Every image item (the primary one, its grid tiles, thumbnails) has its extents here; the
    # largest bounds the primary image, which is what the pixel cap needs before decoding.
    levels = [(0, len(data))]
    for wanted, skip in _PROPERTY_PATH:
        found = [(begin + skip, end) for start, stop in levels
                 for kind, begin, end in _boxes(data, start, stop) if kind == wanted]
        if any(end > len(data) for _, end in found) or (not found and not _whole(data)):
            raise HeaderError("truncated", f"{fmt.upper()} data ends inside its {wanted.decode()} box or before it")
        if not found:
            raise HeaderError("corrupt", f"{fmt.upper()} without a {wanted.decode()} box")
        levels = found
    extents = [struct.unpack(">II", data[begin + 4:begin + 12]) for start, stop in levels
               for kind, begin, end in _boxes(data, start, stop) if kind == b"ispe" and end - begin >= 12]
    if not extents:
        raise HeaderError("corrupt", f"{fmt.upper()} without image extents (ispe)")
    width, height = max(extents, key=lambda size: size[0] * size[1])
    return Header(fmt, width, height)


def _whole(data: bytes) -> bool:
    """Whether the top-level boxes of an ISO media file end where the file does."""
    try:
        return all(end <= len(data) for _, _, end in _boxes(data, 0, len(data)))
    except HeaderError:
        return False


def _tiff_data_end(data: bytes) -> int:
    """Where the last strip, tile or embedded JPEG of any IFD (SubIFDs and EXIF too) ends."""
    order = "<" if data[:2] == b"II" else ">"
    pending, seen, end = [struct.unpack(order + "I", data[4:8])[0]], set(), 0
    while pending:
        offset = pending.pop()
        if offset in seen or offset + 2 > len(data):
            continue
        seen.add(offset)
        count = struct.unpack(order + "H", data[offset:offset + 2])[0]
        values: dict[int, list[int]] = {}
        for i in range(count):
            entry = offset + 2 + 12 * i
            if entry + 12 > len(data):
                break
            tag, kind, n = struct.unpack(order + "HHI", data[entry:entry + 8])
            if kind not in (3, 4, 13) or tag not in _TIFF_POINTERS:
                continue
            width = 2 if kind == 3 else 4
            at = entry + 8 if n * width <= 4 else struct.unpack(order + "I", data[entry + 8:entry + 12])[0]
            if at + n * width > len(data):
                return len(data) + 1
            values[tag] = list(struct.unpack(f"{order}{n}{'H' if kind == 3 else 'I'}", data[at:at + n * width]))
        for offsets, counts in ((273, 279), (324, 325), (513, 514)):
            for start, length in zip(values.get(offsets, ()), values.get(counts, ())):
                end = max(end, start + length)
        pending += values.get(330, []) + values.get(34665, [])
        if offset + 2 + 12 * count + 4 <= len(data):
            pending.append(struct.unpack(order + "I", data[offset + 2 + 12 * count:offset + 6 + 12 * count])[0])
    return end


# StripOffsets/Counts, TileOffsets/Counts, JPEGInterchangeFormat/Length, SubIFDs, ExifIFD
_TIFF_POINTERS = {273, 279, 324, 325, 513, 514, 330, 34665}


def is_complete(fmt: str, data: bytes) -> bool:
    """Whether the file ends where its format says an image ends.

    libjpeg decodes a JPEG cut in half without an error (it pads the rest with grey), so the
    end-of-image marker is checked here. Other formats' decoders notice truncation themselves,
    but cannot tell it from damage, so PNG's IEND trailer, GIF's trailer and the length a WebP's
    RIFF header gives are checked too: the reason says what happened. HEIF and AVIF files must
    hold their boxes whole; a TIFF-based camera raw file every strip and tile its IFDs point to.
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
    if fmt in ("heif", "avif") or (fmt == "raw" and data[4:8] == b"ftyp"):
        return _whole(data)
    if fmt == "raw" and data[:4] in (b"II*\x00", b"MM\x00*"):
        # LibRaw pads a cut raw image and drops a cut preview without an error.
        return _tiff_data_end(data) <= len(data)
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
