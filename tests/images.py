"""Test images, built at test time: good files in every format we read, and every kind of bad one.

Nothing here is a committed image file. Real pictures come from scikit-image's bundled photos
(`photo`), are encoded with OpenCV, and where OpenCV cannot produce what a test needs (a palette
PNG, a CMYK JPEG, EXIF orientation, a decompression bomb) the bytes are assembled by hand from
the format's structure, as documented at each builder.

Conventions: pixel arrays are RGB (or RGBA, or 2-D grey) as scikit-image returns them; the BGR
swap OpenCV wants happens in `encode` only. Every function that writes a file takes the
directory first, writes one file there and returns its `Path` (a bytes name comes back as a
Path holding surrogate escapes, as os.fsdecode gives); `*_bytes` functions return the bytes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@lru_cache(maxsize=None)
def photo(name: str = "coffee") -> np.ndarray:
    """A real RGB photo (uint8, H x W x 3, read-only). "coffee" is 400x600: not square, so
    orientation swaps show."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    pixels = getattr(skimage.data, name)()
    pixels.setflags(write=False)
    return pixels


def shapes(seed: int, side: int = 128, count: int = 12, smallest: int = 8, noise: int = 0) -> np.ndarray:
    """A small picture of its own for each seed: `count` random filled shapes, corners for the
    detector, and (`noise` > 0) uniform noise of up to that many levels on every pixel."""
    rng = np.random.default_rng(seed)
    canvas = np.full((side, side, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, side, 2))
        w, h = (int(v) for v in rng.integers(smallest, side // 2, 2))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, -1)
        else:
            cv2.circle(canvas, (x, y), w // 2, colour, -1)
    if noise:
        canvas = np.clip(canvas.astype(np.int16) + rng.integers(-noise, noise + 1, canvas.shape), 0, 255).astype(np.uint8)
    return canvas


# Close-up textures (2-D grey, 512x512): their heavy crops share too few descriptor buckets with
# them for the index's look-up of the crop's own descriptors.
TEXTURES = ("grass", "gravel")


@lru_cache(maxsize=None)
def texture(name: str = "grass") -> np.ndarray:
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose one of {', '.join(TEXTURES)}")
    pixels = getattr(skimage.data, name)()
    pixels.setflags(write=False)
    return pixels


def centre_crop(pixels: np.ndarray, side: float) -> np.ndarray:
    """The centre of the picture, `side` of its width and height (0.6 keeps 36 % of the area)."""
    height, width = pixels.shape[:2]
    top, left = round(height * (1 - side) / 2), round(width * (1 - side) / 2)
    return pixels[top:height - top, left:width - left]


def grey(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    return cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)


def resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


# What a viewer shows for each EXIF Orientation value, given the stored pixels.
ORIENTATIONS = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.swapaxes(a, 0, 1),                  # transpose
    6: lambda a: np.rot90(a, -1),                       # turn 90 degrees clockwise
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),     # transverse
    8: lambda a: np.rot90(a, 1),                        # turn 90 degrees anticlockwise
}


def displayed(pixels: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(ORIENTATIONS[orientation](pixels))


# --- encoding -----------------------------------------------------------------------------

def _bgr(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    code = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def encode(ext: str, pixels: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    """`pixels` (RGB/RGBA/grey) encoded by OpenCV as `ext` (".jpg", ".png", ...)."""
    ok, buf = cv2.imencode(ext, _bgr(pixels), list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


def write_bytes(directory: Path, name: str | bytes, data: bytes) -> Path:
    """Write with os.open so that bytes names (not valid UTF-8) work as well as str ones."""
    path = os.path.join(os.fsencode(directory), os.fsencode(name))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return Path(os.fsdecode(path))


def jpeg_bytes(pixels: np.ndarray, quality: int = 90, progressive: bool = False) -> bytes:
    return encode(".jpg", pixels, (cv2.IMWRITE_JPEG_QUALITY, quality,
                                   cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)))


def write_jpeg(directory: Path, name: str, pixels: np.ndarray, quality: int = 90,
               progressive: bool = False) -> Path:
    return write_bytes(directory, name, jpeg_bytes(pixels, quality, progressive))


def write_png(directory: Path, name: str, pixels: np.ndarray) -> Path:
    """PNG of grey, RGB or RGBA pixels; uint16 pixels give a 16-bit PNG."""
    return write_bytes(directory, name, encode(".png", pixels))


def webp_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    """Lossy (VP8, or VP8X when there is alpha) up to quality 100; lossless (VP8L) above."""
    return encode(".webp", pixels, (cv2.IMWRITE_WEBP_QUALITY, quality))


def write_webp(directory: Path, name: str, pixels: np.ndarray, quality: int = 90) -> Path:
    return write_bytes(directory, name, webp_bytes(pixels, quality))


def write_tiff(directory: Path, name: str, pixels: np.ndarray) -> Path:
    return write_bytes(directory, name, encode(".tiff", pixels))


def write_bmp(directory: Path, name: str, pixels: np.ndarray) -> Path:
    return write_bytes(directory, name, encode(".bmp", pixels))


def write_gif(directory: Path, name: str, pixels: np.ndarray) -> Path:
    """A still GIF (OpenCV 5 quantises to a 256-colour palette)."""
    return write_bytes(directory, name, encode(".gif", pixels))


def animated_gif(directory: Path, frames: list[np.ndarray], name: str = "animated.gif",
                 duration_ms: int = 100) -> Path:
    """A looping GIF of `frames` (all the same size), via OpenCV 5's animation encoder."""
    animation = cv2.Animation()
    animation.frames = [_bgr(frame) for frame in frames]
    animation.durations = [duration_ms] * len(frames)
    ok, buf = cv2.imencodeanimation(".gif", animation)
    if not ok:
        raise RuntimeError("OpenCV could not encode an animated GIF")
    return write_bytes(directory, name, buf.tobytes())


def large_jpeg(directory: Path, width: int = 4000, height: int = 3000, name: str = "large.jpg") -> Path:
    """A camera-sized JPEG: a real photo upscaled to `width` x `height`."""
    return write_jpeg(directory, name, resized(photo("rocket"), width, height), quality=85)


# --- bad files ----------------------------------------------------------------------------

def _truncated(directory: Path, name: str, data: bytes, fraction: float, length: int | None) -> Path:
    return write_bytes(directory, name, data[:int(len(data) * fraction) if length is None else length])


def truncated_jpeg(directory: Path, name: str = "half.jpg", fraction: float = 0.5,
                   length: int | None = None, data: bytes | None = None) -> Path:
    """The first half (or `length` bytes) of a valid JPEG (default: the photo's): what a copy in
    progress looks like."""
    return _truncated(directory, name, jpeg_bytes(photo()) if data is None else data, fraction, length)


def truncated_png(directory: Path, name: str = "half.png", fraction: float = 0.5,
                  length: int | None = None) -> Path:
    return _truncated(directory, name, encode(".png", photo()), fraction, length)


def truncated_webp(directory: Path, name: str = "half.webp", fraction: float = 0.5,
                   length: int | None = None) -> Path:
    return _truncated(directory, name, webp_bytes(photo()), fraction, length)


def zero_byte(directory: Path, name: str = "empty.jpg") -> Path:
    return write_bytes(directory, name, b"")


def random_bytes(directory: Path, name: str = "x.jpg", size: int = 4096, seed: int = 0) -> Path:
    return write_bytes(directory, name, np.random.default_rng(seed).bytes(size))


def text_file_named_png(directory: Path, name: str = "notes.png") -> Path:
    return write_bytes(directory, name, b"shopping list\n- milk\n- eggs\n" * 20)


def heic_like(directory: Path, name: str = "x.heic") -> Path:
    """The opening of an ISO-BMFF HEIC file (an `ftyp` box with brand heic) and filler."""
    ftyp = struct.pack(">I4s4sI", 24, b"ftyp", b"heic", 0) + b"mif1heic"
    return write_bytes(directory, name, ftyp + bytes(1000))


def fifo(directory: Path, name: str = "pipe.jpg") -> Path:
    """A named pipe with an image's name: a plain open() for reading blocks until a writer comes."""
    path = Path(directory) / name
    os.mkfifo(path)
    return path


def non_utf8_name(directory: Path, pixels: np.ndarray | None = None) -> Path:
    """A valid JPEG named b"caf\\xe9.jpg" (Latin-1, not UTF-8); the Path holds a surrogate escape."""
    return write_bytes(directory, b"caf\xe9.jpg", jpeg_bytes(photo() if pixels is None else pixels))


def long_name(directory: Path, pixels: np.ndarray | None = None) -> Path:
    """A valid JPEG whose name is 250 bytes, two directories deep, so the path is > 600 bytes."""
    nested = Path(directory) / ("d" * 200) / ("e" * 200)
    nested.mkdir(parents=True)
    path = write_bytes(nested, "n" * 246 + ".jpg", jpeg_bytes(photo() if pixels is None else pixels))
    assert len(os.fsencode(path)) > 600
    return path


# --- PNG by hand --------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes,
         before_idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + before_idat
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


@lru_cache(maxsize=8)
def png_bomb_bytes(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels, built in milliseconds.

    The image data is side rows of zeros (filter byte 0, then zero bits). Deflating hundreds of
    megabytes of zeros would take about a second, so one 1 MiB block is deflated once, ending
    with a full flush (which resets the compressor, making every later identical block compress
    to identical bytes), and that output is repeated. The zlib trailer is the Adler-32 of n zero
    bytes, which is simply (n mod 65521) << 16 | 1.
    """
    total = side * (1 + (side + 7) // 8)
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(bytes(total % block)) + compressor.flush(zlib.Z_FINISH)
    adler = (total % 65521) << 16 | 1
    idat = b"\x78\xda" + repeated * (total // block) + tail + struct.pack(">I", adler)
    return _png(side, side, 1, 0, idat)


def png_bomb(directory: Path, side: int = 20000, name: str | None = None) -> Path:
    """A decompression bomb: ~48 KB on disk for side=20000 (~300 KB for 50000), side^2 pixels."""
    return write_bytes(directory, name or f"bomb{side}.png", png_bomb_bytes(side))


def palette_png(directory: Path, pixels: np.ndarray | None = None, name: str = "palette.png") -> Path:
    """An 8-bit indexed-colour PNG (colour type 3): RGB quantised to a 6x6x6 colour cube.

    OpenCV's PNG writer has no palette mode, so the chunks are written here.
    """
    rgb = photo() if pixels is None else pixels
    levels = (rgb.astype(np.uint16) * 6 // 256).astype(np.uint8)
    indices = levels[..., 0] * 36 + levels[..., 1] * 6 + levels[..., 2]
    cube = np.stack(np.meshgrid(range(6), range(6), range(6), indexing="ij"), -1).reshape(-1, 3) * 51
    rows = np.hstack([np.zeros((indices.shape[0], 1), np.uint8), indices])   # filter 0 per row
    height, width = indices.shape
    return write_bytes(directory, name, _png(width, height, 8, 3, zlib.compress(rows.tobytes()),
                                             _chunk(b"PLTE", cube.astype(np.uint8).tobytes())))


def sixteen_bit_png(directory: Path, pixels: np.ndarray | None = None, name: str = "deep.png") -> Path:
    rgb = photo() if pixels is None else pixels
    return write_png(directory, name, rgb.astype(np.uint16) * 257)


def alpha_png(directory: Path, pixels: np.ndarray | None = None, name: str = "alpha.png") -> Path:
    """RGBA PNG whose alpha fades from opaque (left) to 25% (right)."""
    rgb = photo() if pixels is None else pixels
    alpha = np.broadcast_to(np.linspace(255, 64, rgb.shape[1]).astype(np.uint8), rgb.shape[:2])
    return write_png(directory, name, np.dstack([rgb, alpha]))


# --- JPEG by hand -------------------------------------------------------------------------

def _segments(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments before the first scan, and the rest (SOS segment onwards)."""
    assert jpeg[:2] == b"\xff\xd8"
    segments, pos = [], 2
    while jpeg[pos + 1] != 0xDA:
        marker = jpeg[pos + 1]
        length = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        segments.append((marker, jpeg[pos + 4:pos + 2 + length]))
        pos += 2 + length
    return segments, jpeg[pos:]


def _segment(marker: int, payload: bytes) -> bytes:
    assert len(payload) + 2 <= 0xFFFF
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def with_segments(jpeg: bytes, *extra: bytes) -> bytes:
    """`jpeg` with `extra` marker segments inserted after its JFIF APP0 (or after SOI)."""
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos += 2 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + b"".join(extra) + jpeg[pos:]


def exif_segment(orientation: int = 1, thumbnail: bytes = b"") -> bytes:
    """APP1 Exif: a little-endian TIFF whose IFD0 holds only Orientation (tag 0x0112, SHORT),
    and, given a `thumbnail` JPEG, an IFD1 pointing at it as cameras store theirs."""
    ifd1_at = 8 + 2 + 12 + 4
    tiff = b"II*\x00" + struct.pack("<I", 8)
    tiff += struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack("<I", ifd1_at if thumbnail else 0)
    if thumbnail:
        data_at = ifd1_at + 2 + 2 * 12 + 4
        tiff += struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, data_at)
        tiff += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)) + struct.pack("<I", 0) + thumbnail
    return _segment(0xE1, b"Exif\x00\x00" + tiff)


def exif_rotated_jpeg(directory: Path, pixels: np.ndarray | None = None, orientation: int = 6,
                      name: str | None = None) -> Path:
    """A JPEG storing `pixels` as they are, with EXIF telling viewers to show `displayed(pixels, o)`."""
    stored = photo() if pixels is None else pixels
    return write_bytes(directory, name or f"exif{orientation}.jpg",
                       with_segments(jpeg_bytes(stored), exif_segment(orientation)))


BROKEN_EXIF = {
    # IFD0 offset far beyond the end of the segment.
    "ifd_offset_out_of_range": b"II*\x00" + struct.pack("<I", 0xFFFFFF00),
    # IFD0 claims 4000 entries; the segment holds one, an Orientation of type LONG, count 2^32-1.
    "ifd_overruns_segment": b"II*\x00" + struct.pack("<IHHHII", 8, 4000, 0x0112, 4, 0xFFFFFFFF, 6),
    # Byte-order mark neither II nor MM.
    "bad_byte_order": b"XX*\x00" + struct.pack("<I", 8) + bytes(20),
    # "Exif" and then nothing.
    "empty": b"",
}


def broken_exif_jpeg(directory: Path, kind: str = "ifd_offset_out_of_range",
                     pixels: np.ndarray | None = None) -> Path:
    """A valid JPEG carrying a malformed APP1 Exif segment (one of BROKEN_EXIF)."""
    segment = _segment(0xE1, b"Exif\x00\x00" + BROKEN_EXIF[kind])
    return write_bytes(directory, f"broken-exif-{kind}.jpg",
                       with_segments(jpeg_bytes(photo() if pixels is None else pixels), segment))


def thumbnailed_jpeg_bytes(pixels: np.ndarray | None = None) -> bytes:
    """A JPEG with an EXIF thumbnail, so an end-of-image marker occurs long before the end."""
    stored = photo() if pixels is None else pixels
    thumbnail = jpeg_bytes(resized(stored, 160, max(1, stored.shape[0] * 160 // stored.shape[1])))
    return with_segments(jpeg_bytes(stored), exif_segment(1, thumbnail))


def motion_photo(directory: Path, pixels: np.ndarray | None = None, name: str = "PXL_MP.jpg") -> Path:
    """A JPEG followed by an MP4 (as in Google's motion photos): data after the end-of-image."""
    video = struct.pack(">I4s4sI", 24, b"ftyp", b"mp42", 0) + b"isommp42"
    video += struct.pack(">I4s", 8 + 100_000, b"mdat") + np.random.default_rng(1).bytes(100_000)
    return write_bytes(directory, name, thumbnailed_jpeg_bytes(pixels) + video)


def padded_jpeg(directory: Path, padding: int = 100_000, name: str = "padded.jpg") -> Path:
    """A valid JPEG with `padding` bytes of APP2 segments before its frame header.

    Cameras put large EXIF/ICC/MakerNote segments there; past formats.HEADER_PROBE_BYTES the
    dimensions are not in the probe and the whole file has to be scanned.
    """
    pieces, left = [], padding
    while left > 0:
        size = min(left, 60_000)
        pieces.append(_segment(0xE2, b"PAD\x00" + bytes(size)))
        left -= size
    return write_bytes(directory, name, with_segments(jpeg_bytes(photo()), *pieces))


def cmyk_jpeg(directory: Path, pixels: np.ndarray | None = None, name: str = "cmyk.jpg",
              quality: int = 90) -> Path:
    """A 4-component (Adobe, inverted) CMYK JPEG, assembled from four greyscale JPEGs.

    OpenCV only writes grey and YCbCr JPEGs. A baseline JPEG may code its components in
    separate (non-interleaved) scans, and a one-component scan of a component with 1x1
    sampling is coded exactly like a greyscale JPEG's scan. So each ink plane is encoded as a
    greyscale JPEG and its entropy-coded data reused as one scan of the CMYK frame, each with
    its own quantisation table slot and its Huffman tables redefined just before its scan.

    Values are stored inverted, as Photoshop writes CMYK behind an Adobe APP14 marker
    (transform 0 = no colour transform): K' = max(R,G,B), C' = 255 R / max, and so on; a
    reader that multiplies C' by K' gets R back.
    """
    rgb = (photo() if pixels is None else pixels).astype(np.float32)
    k = rgb.max(axis=2)
    inks = np.where(k[..., None] > 0, rgb * 255.0 / np.maximum(k, 1)[..., None], 255.0)
    planes = [np.clip(inks[..., i] + 0.5, 0, 255).astype(np.uint8) for i in range(3)]
    planes.append(np.clip(k + 0.5, 0, 255).astype(np.uint8))
    height, width = k.shape

    adobe = _segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    tables, scans = [], []
    frame = struct.pack(">BHHB", 8, height, width, 4)
    for slot, plane in enumerate(planes):
        segments, scan = _segments(jpeg_bytes(plane, quality))
        (dqt,) = [payload for marker, payload in segments if marker == 0xDB]
        dht = [payload for marker, payload in segments if marker == 0xC4]
        assert len(dqt) == 65 and dqt[0] == 0, "expected one 8-bit quantisation table"
        assert not any(marker == 0xDD for marker, _ in segments), "restart intervals not handled"
        tables.append(_segment(0xDB, bytes([slot]) + dqt[1:]))
        frame += bytes((slot + 1, 0x11, slot))
        entropy = scan[2 + struct.unpack(">H", scan[2:4])[0]:]
        assert entropy.endswith(b"\xff\xd9")
        header = _segment(0xDA, bytes((1, slot + 1, 0x00, 0, 63, 0)))
        scans.append(b"".join(_segment(0xC4, t) for t in dht) + header + entropy[:-2])
    data = (b"\xff\xd8" + adobe + b"".join(tables) + _segment(0xC0, frame)
            + b"".join(scans) + b"\xff\xd9")
    return write_bytes(directory, name, data)


# --- TIFF by hand -------------------------------------------------------------------------

def big_endian_tiff(directory: Path, pixels: np.ndarray | None = None, name: str = "motorola.tif") -> Path:
    """An uncompressed greyscale "MM" TIFF with SHORT width and LONG height (OpenCV writes "II")."""
    plane = grey(photo() if pixels is None else pixels)
    height, width = plane.shape
    entries = [(256, 3, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, plane.size)]
    ifd_size = 2 + 12 * len(entries) + 4
    entries[5] = (273, 4, 8 + ifd_size)            # pixel data right after the IFD
    ifd = struct.pack(">H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack(">HH", value, 0) if kind == 3 else struct.pack(">I", value)
        ifd += struct.pack(">HHI", tag, kind, 1) + packed
    ifd += struct.pack(">I", 0)
    return write_bytes(directory, name, b"MM\x00*" + struct.pack(">I", 8) + ifd + plane.tobytes())


# --- phone and camera formats -------------------------------------------------------------

def _pillow_bytes(pixels: np.ndarray, fmt: str, quality: int, orientation: int) -> bytes:
    """`pixels` encoded by Pillow; an EXIF `orientation` other than 1 is written as the format's
    rotation and mirroring properties (irot, imir), as phones do."""
    from PIL import Image
    image = Image.fromarray(np.ascontiguousarray(pixels))
    exif = image.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format=fmt, quality=quality, exif=exif.tobytes())
    return out.getvalue()


def heic_bytes(pixels: np.ndarray, quality: int = 80, orientation: int = 1) -> bytes:
    """HEIC encoded by libheif (x265), as a phone writes it."""
    import pillow_heif
    pillow_heif.register_heif_opener()
    return _pillow_bytes(pixels, "HEIF", quality, orientation)


def ten_bit_heic(directory: Path, pixels: np.ndarray | None = None, name: str = "hdr.heic") -> Path:
    """A 10-bit HEIC, as iPhones write HDR photos."""
    import pillow_heif
    deep = np.ascontiguousarray(photo() if pixels is None else pixels).astype(np.uint16) * 257
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(deep.shape[1], deep.shape[0]), data=deep.tobytes())
    out = io.BytesIO()
    heif.save(out, quality=80, save_to_12bit=False)
    return write_bytes(directory, name, out.getvalue())


def avif_bytes(pixels: np.ndarray, quality: int = 70, orientation: int = 1) -> bytes:
    """AVIF encoded by libavif through Pillow."""
    return _pillow_bytes(pixels, "AVIF", quality, orientation)


def huge_heic_bytes(side: int = 100_000) -> bytes:
    """A valid small HEIC whose every `ispe` box (image spatial extents) claims side x side pixels."""
    data = bytearray(heic_bytes(resized(photo(), 64, 64)))
    start = 0
    while (found := data.find(b"ispe", start)) != -1:
        # ispe: 4-byte size, "ispe", version and flags (4 bytes), width, height (32-bit each)
        data[found + 8:found + 16] = struct.pack(">II", side, side)
        start = found + 4
    return bytes(data)


# A DNG is a TIFF: IFD0 carries the camera tags and either the raw image itself or, as cameras
# and converters write it, a preview, with the raw image in a SubIFD. The raw image is a Bayer
# mosaic (RGGB) of the photo's pixels in linear light, 12 bits in 16-bit samples; ColorMatrix1
# is XYZ -> linear sRGB, so the camera's colours are sRGB's and a demosaic gives the photo back.
_XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
_TIFF_FORMATS = {1: "B", 3: "H", 4: "I"}


def _ifd(entries: list[tuple[int, int, object]], at: int) -> bytes:
    """A little-endian IFD placed at offset `at`, its out-of-line values right after it.
    Each entry is (tag, type, values): a list of numbers, (numerator, denominator) pairs for
    RATIONAL (5) and SRATIONAL (10), or bytes for ASCII (2)."""
    entries = sorted(entries, key=lambda entry: entry[0])
    table = struct.pack("<H", len(entries))
    extra = b""
    end_of_table = at + 2 + 12 * len(entries) + 4
    for tag, kind, values in entries:
        if kind == 2:
            payload, count = values, len(values)
        elif kind in (5, 10):
            payload = b"".join(struct.pack("<ii" if kind == 10 else "<II", *pair) for pair in values)
            count = len(values)
        else:
            payload, count = struct.pack("<" + _TIFF_FORMATS[kind] * len(values), *values), len(values)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", end_of_table + len(extra))
            extra += payload + b"\x00" * (len(payload) % 2)
        table += struct.pack("<HHI", tag, kind, count) + field
    return table + struct.pack("<I", 0) + extra


def dng_bytes(pixels: np.ndarray, preview: bytes | None = None, orientation: int = 1) -> bytes:
    """A DNG of the RGB `pixels` as a camera would record them; with `preview` (JPEG bytes) in
    IFD0 as an embedded preview. `orientation` is the EXIF Orientation tag."""
    height, width = pixels.shape[:2]
    linear = (pixels.astype(np.float64) / 255) ** 2.2
    mosaic = np.empty((height, width))
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    raw = (mosaic * 4095).round().astype("<u2").tobytes()
    camera = [(50706, 1, [1, 4, 0, 0]), (50707, 1, [1, 1, 0, 0]), (271, 2, b"lookalike\x00"),
              (272, 2, b"test DNG\x00"), (50708, 2, b"lookalike test DNG\x00"),
              (50721, 10, [(round(v * 10000), 10000) for row in _XYZ_TO_SRGB for v in row]),
              (50728, 5, [(1, 1)] * 3), (50778, 3, [21]), (274, 3, [orientation])]

    def raw_ifd(data_at: int) -> list:
        return [(254, 4, [0]), (256, 4, [width]), (257, 4, [height]), (258, 3, [16]), (259, 3, [1]),
                (262, 3, [32803]), (273, 4, [data_at]), (277, 3, [1]), (278, 4, [height]),
                (279, 4, [len(raw)]), (284, 3, [1]), (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2]),
                (50714, 4, [0]), (50717, 4, [4095])]

    # Tables first and pixel data after them, as cameras write: a cut file loses pixels, not tags.
    if preview is None:
        size = len(_ifd(camera + raw_ifd(0), 8))
        tables = _ifd(camera + raw_ifd(8 + size), 8)
        blobs = raw
    else:
        preview_height, preview_width = cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_GRAYSCALE).shape

        def preview_ifd(sub_at: int, data_at: int) -> list:
            return camera + [(254, 4, [1]), (256, 4, [preview_width]), (257, 4, [preview_height]),
                             (258, 3, [8, 8, 8]), (259, 3, [7]), (262, 3, [6]), (273, 4, [data_at]),
                             (277, 3, [3]), (278, 4, [preview_height]), (279, 4, [len(preview)]),
                             (330, 4, [sub_at])]
        first = len(_ifd(preview_ifd(0, 0), 8))
        second = len(_ifd(raw_ifd(0), 0))
        data_at = 8 + first + second
        tables = (_ifd(preview_ifd(8 + first, data_at + len(raw)), 8)
                  + _ifd(raw_ifd(data_at), 8 + first))
        blobs = raw + preview
    return b"II*\x00" + struct.pack("<I", 8) + tables + blobs


def write_heic(directory: Path, name: str, pixels: np.ndarray, quality: int = 80) -> Path:
    return write_bytes(directory, name, heic_bytes(pixels, quality))


def write_avif(directory: Path, name: str, pixels: np.ndarray, quality: int = 70) -> Path:
    return write_bytes(directory, name, avif_bytes(pixels, quality))


def write_dng(directory: Path, name: str, pixels: np.ndarray, preview: bytes | None = None,
              orientation: int = 1) -> Path:
    return write_bytes(directory, name, dng_bytes(pixels, preview, orientation))


def truncated_heic(directory: Path, name: str = "half.heic", fraction: float = 0.5) -> Path:
    return _truncated(directory, name, heic_bytes(photo()), fraction, None)


def truncated_avif(directory: Path, name: str = "half.avif", fraction: float = 0.5) -> Path:
    return _truncated(directory, name, avif_bytes(photo()), fraction, None)


def truncated_dng(directory: Path, name: str = "cut.dng", fraction: float = 0.5) -> Path:
    """A DNG with a full-size preview, cut: half of it loses raw pixels and the whole preview,
    0.95 of it only the end of the preview (LibRaw then finds no preview and demosaics without
    an error)."""
    return _truncated(directory, name, dng_bytes(photo(), jpeg_bytes(photo())), fraction, None)


def huge_heic(directory: Path, name: str = "huge.heic", side: int = 100_000) -> Path:
    return write_bytes(directory, name, huge_heic_bytes(side))


# --- the copies people make of a photo ------------------------------------------------------

def camera_jpeg(directory: Path, name: str, pixels: np.ndarray, captured: str = "2019:07:14 10:32:05",
                quality: int = 95) -> Path:
    """A JPEG as a camera writes it: EXIF make, model and capture time (DateTimeOriginal)."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 80D"
    exif.get_ifd(0x8769)[0x9003] = captured
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return write_bytes(directory, name, out.getvalue())


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple, thickness: int = 2) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def captioned(pixels: np.ndarray) -> np.ndarray:
    """A meme: white bands above and below the picture, with a caption in each."""
    h, w = pixels.shape[:2]
    band = max(40, h // 6)
    canvas = np.full((h + 2 * band, w, 3), 255, np.uint8)
    canvas[band:band + h] = pixels
    scale = w / 600
    _text(canvas, "WHEN THE CODE WORKS", int(w * 0.05), int(band * 0.7), scale, (0, 0, 0), max(2, int(3 * scale)))
    _text(canvas, "ON THE FIRST TRY", int(w * 0.1), band + h + int(band * 0.7), scale, (0, 0, 0), max(2, int(3 * scale)))
    return canvas


def bordered(pixels: np.ndarray) -> np.ndarray:
    """A white border all round, a twelfth of the longer side."""
    side = max(pixels.shape[:2]) // 12
    return cv2.copyMakeBorder(np.ascontiguousarray(pixels), side, side, side, side, cv2.BORDER_CONSTANT,
                              value=(255, 255, 255))


def caption_band(pixels: np.ndarray) -> np.ndarray:
    """A photo club's post: the picture enlarged to 900 pixels wide in a black frame, a caption
    band with a logo under it."""
    h, w = pixels.shape[:2]
    height = h * 900 // w
    canvas = np.zeros((height + 200, 960, 3), np.uint8)
    canvas[30:30 + height, 30:930] = resized(pixels, 900, height)
    cv2.circle(canvas, (90, height + 115), 40, (240, 180, 40), -1, cv2.LINE_AA)
    _text(canvas, "Summer Festival 2026", 160, height + 100, 1.0, (255, 255, 255))
    _text(canvas, "photo of the week - vote at club.example", 160, height + 142, 1.0, (255, 255, 255))
    return canvas


def viewer_screenshot(pixels: np.ndarray) -> np.ndarray:
    """A screenshot of an image viewer showing the picture: title bar, toolbar, a sidebar of
    albums, a status bar; the picture scaled to fit the rest."""
    canvas = np.full((800, 1280, 3), 38, np.uint8)
    canvas[:34] = 64
    _text(canvas, "Photos - Holiday 2026 - IMG_0412.JPG", 420, 23, 0.6, (230, 230, 230), 1)
    canvas[34:80, 250:] = 52
    for number, label in enumerate(["Import", "Edit", "Rotate", "Share", "Delete", "Slideshow"]):
        cv2.rectangle(canvas, (262 + number * 110, 44), (362 + number * 110, 70), (90, 90, 90), 1)
        _text(canvas, label, 272 + number * 110, 63, 0.5, (220, 220, 220), 1)
    canvas[34:, :250] = 28
    for number, album in enumerate(["Library", "Favourites", "Recent", "Camera Roll", "Family", "Beach 2024",
                                    "Mountains", "Birthday", "Garden", "Paris trip", "Scans", "Archive 2019"]):
        cv2.rectangle(canvas, (14, 52 + number * 36), (34, 72 + number * 36), (120, 160, 200), -1)
        _text(canvas, album, 44, 68 + number * 36, 0.55, (210, 210, 210), 1)
    canvas[772:, 250:] = 52
    _text(canvas, "2.4 MB   f/1.8   1/120 s   ISO 100   12 of 431", 262, 792, 0.5, (200, 200, 200), 1)
    h, w = pixels.shape[:2]
    scale = min(1010 / w, 680 / h)
    fitted = resized(pixels, int(w * scale), int(h * scale))
    top, left = 86 + (680 - fitted.shape[0]) // 2, 260 + (1010 - fitted.shape[1]) // 2
    canvas[top:top + fitted.shape[0], left:left + fitted.shape[1]] = fitted
    return canvas


def ellipse_cut(pixels: np.ndarray) -> np.ndarray:
    """RGBA: the picture inside the largest ellipse its frame holds, transparent (and black) outside."""
    h, w = pixels.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    return np.dstack([np.where(mask[..., None] > 0, pixels, 0).astype(np.uint8), mask])


def caption_over(pixels: np.ndarray) -> np.ndarray:
    """A caption drawn over the lower part of the picture, in white."""
    out = np.ascontiguousarray(pixels).copy()
    h, w = out.shape[:2]
    _text(out, "LAUNCH DAY", w // 16, h * 7 // 8, w / 320, (255, 255, 255), max(2, w // 120))
    return out


def _rotated_5(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(pixels), cv2.getRotationMatrix2D((w / 2, h / 2), 5.0, 1.0), (w, h))


def _jpeg_of(make, quality: int = 90):
    return lambda directory, name, pixels: write_jpeg(directory, name + ".jpg", make(pixels), quality)


# The copies people make of a photo: kind -> writer(folder, name without extension, RGB pixels).
PHOTO_COPIES = {
    "resized": _jpeg_of(lambda p: resized(p, p.shape[1] // 2, p.shape[0] // 2)),
    "quality15": _jpeg_of(lambda p: p, 15),
    "cropped": _jpeg_of(lambda p: np.ascontiguousarray(p[p.shape[0] // 8:-(p.shape[0] // 8), p.shape[1] // 6:])),
    "rotated": _jpeg_of(_rotated_5),
    "mirrored": _jpeg_of(lambda p: np.ascontiguousarray(p[:, ::-1])),
    "captioned": _jpeg_of(captioned),
    "bordered": _jpeg_of(bordered),
    "caption_band": _jpeg_of(caption_band),
    "screenshot": lambda directory, name, p: write_png(directory, name + ".png", viewer_screenshot(p)),
    "gif256": lambda directory, name, p: write_gif(directory, name + ".gif", p),
    "palette_png": lambda directory, name, p: palette_png(directory, p, name + ".png"),
    "ellipse_png": lambda directory, name, p: write_png(directory, name + ".png", ellipse_cut(p)),
}
