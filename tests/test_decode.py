"""Decoding untrusted files (imaging/formats.py, imaging/decode.py, through extract.extract_file).

Every kind of bad input must end as an ImageError that names the file and gives the right
closed `reason`, quickly and without blocking or crashing the process; every good input, in
each format and colour model we accept, must give the same features as a plain JPEG of the same
picture. All files are built at test time by tests/images.py (shared notes, section 5).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import images
from lookalike.errors import ImageError, display_path
from lookalike.extract import extract_file
from lookalike.imaging import decode as decode_module
from lookalike.imaging import formats
from lookalike.imaging.features import fingerprint, fingerprint_variants
from lookalike.settings import ExtractionSettings

SETTINGS = ExtractionSettings()
PHOTO = images.photo()                       # 400 rows x 600 columns
HEIGHT, WIDTH = PHOTO.shape[:2]
# Fingerprints of the same picture after re-encoding differ by a few bits at most.
SAME_PICTURE_BITS = 6


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


class Hung(Exception):
    """Not an OSError (as TimeoutError is), so the code under test cannot mistake it for one."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: SIGALRM interrupts even a blocking open() of a FIFO."""
    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def rejected(path: Path, reason: str) -> ImageError:
    with deadline(5), pytest.raises(ImageError) as caught:
        extract_file(os.fspath(path), SETTINGS)
    error = caught.value
    assert error.reason == reason, str(error)
    assert display_path(path) in str(error)
    return error


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Features of the photo as a plain JPEG: what every other encoding should reproduce."""
    return extract_file(str(images.write_jpeg(tmp_path_factory.mktemp("ref"), "plain.jpg", PHOTO)), SETTINGS)


# --- bad inputs ---------------------------------------------------------------------------

BAD_FILES = {
    "zero bytes": (images.zero_byte, "empty"),
    "random bytes named .jpg": (images.random_bytes, "unsupported"),
    "text named .png": (images.text_file_named_png, "unsupported"),
    "HEIC of an ftyp box and zeros": (images.heic_like, "corrupt"),
    "half a HEIC": (images.truncated_heic, "truncated"),
    "HEIC cut inside its header": (lambda d: images.truncated_heic(d, fraction=0.001), "truncated"),
    "half an AVIF": (images.truncated_avif, "truncated"),
    "half a DNG": (images.truncated_dng, "truncated"),
    # LibRaw itself drops the cut preview without an error and demosaics the raw image.
    "DNG cut inside its preview": (lambda d: images.truncated_dng(d, fraction=0.95), "truncated"),
    "HEIC claiming 100000x100000 pixels": (images.huge_heic, "too_large"),
    "an MP4 video named .heic": (lambda d: images.write_bytes(
        d, "video.heic", struct.pack(">I4s4sI", 24, b"ftyp", b"isom", 0) + b"isommp41" + bytes(100)),
        "unsupported"),
    # libjpeg decodes half a JPEG without complaint; the missing end-of-image marker is caught.
    "half a JPEG": (images.truncated_jpeg, "truncated"),
    "JPEG cut before its frame header": (lambda d: images.truncated_jpeg(d, length=40), "truncated"),
    # Its EXIF thumbnail ends with an end-of-image marker; the picture itself does not.
    "half a JPEG with an EXIF thumbnail":
        (lambda d: images.truncated_jpeg(d, data=images.thumbnailed_jpeg_bytes()), "truncated"),
    "half a PNG": (images.truncated_png, "truncated"),
    "PNG cut inside IHDR": (lambda d: images.truncated_png(d, length=20), "truncated"),
    "WebP cut inside its header": (lambda d: images.truncated_webp(d, length=20), "truncated"),
    "half a WebP": (images.truncated_webp, "truncated"),              # shorter than its RIFF header says
}


@pytest.mark.parametrize("build, reason", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_rejected_with_its_reason(tmp_path, build, reason):
    path = build(tmp_path)
    error = rejected(path, reason)
    assert error.path == os.fspath(path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "album.jpg").mkdir()
    rejected(tmp_path / "album.jpg", "not_a_file")


def test_fifo_named_jpg_is_not_a_file_and_does_not_block(tmp_path):
    rejected(images.fifo(tmp_path), "not_a_file")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_device_is_not_a_file(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    rejected(Path(device), "not_a_file")


def test_missing_file(tmp_path):
    rejected(tmp_path / "gone.jpg", "missing")


def test_missing_file_with_non_utf8_name_is_reported_readably(tmp_path):
    error = rejected(Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"na\xefve.jpg"))), "missing")
    assert "na\\xefve.jpg" in str(error)


def test_unreadable_file(tmp_path):
    path = images.write_jpeg(tmp_path, "locked.jpg", PHOTO)
    path.chmod(0)
    if os.geteuid() != 0:
        rejected(path, "unreadable")
        return
    # Root reads any file whatever its mode, so ask a child process running as nobody. It looks
    # the file up relative to its working directory, needing no access to tmp_path's parents.
    tmp_path.chmod(0o711)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            os.chdir(tmp_path)
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError as exc:
                os.write(writer, f"skip\ncannot become nobody: {exc}".encode())
            else:
                try:
                    extract_file("locked.jpg", SETTINGS)
                    os.write(writer, b"read\n")
                except ImageError as exc:
                    os.write(writer, f"{exc.reason}\n{exc}".encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        outcome, _, message = pipe.read().decode().partition("\n")
    os.waitpid(pid, 0)
    if outcome == "skip":
        pytest.skip(message)
    assert outcome == "unreadable"
    assert message.startswith("locked.jpg: ")


@pytest.mark.parametrize("side", [20000, 50000])
def test_png_bomb_is_refused_quickly_without_allocating(tmp_path, side):
    path = images.png_bomb(tmp_path, side)
    assert path.stat().st_size < 400_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss      # KiB on Linux
    started = time.perf_counter()
    error = rejected(path, "too_large")
    elapsed = time.perf_counter() - started
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert elapsed < 1.0
    assert growth_mb < 300
    assert f"{side}x{side}" in str(error)


def test_png_bomb_is_a_valid_png():
    """The bomb is refused for its size, not for being malformed: the same bytes, smaller, decode."""
    assert formats.sniff(images.png_bomb_bytes(50000)) == formats.Header("png", 50000, 50000)
    small = cv2.imdecode(np.frombuffer(images.png_bomb_bytes(300), np.uint8), cv2.IMREAD_UNCHANGED)
    assert small.shape == (300, 300) and not small.any()
    data = images.png_bomb_bytes(20000)
    idat = data[8 + 25 + 8:-4 - 12]     # after signature, IHDR, IDAT length+type; before CRC, IEND
    inflater, inflated, pending = zlib.decompressobj(), 0, idat
    while pending:
        chunk = inflater.decompress(pending, 1 << 24)
        assert not chunk.strip(b"\x00")
        inflated += len(chunk)
        pending = inflater.unconsumed_tail
    assert inflater.eof                              # and zlib checked the Adler-32
    assert inflated == 20000 * (1 + 20000 // 8)


# --- good inputs --------------------------------------------------------------------------

GOOD_FILES = {
    "png": (lambda d: images.write_png(d, "a.png", PHOTO), "png"),
    "grey png": (lambda d: images.write_png(d, "grey.png", images.grey(PHOTO)), "png"),
    "16-bit png": (images.sixteen_bit_png, "png"),
    "palette png": (images.palette_png, "png"),
    "alpha png": (images.alpha_png, "png"),
    "progressive jpeg": (lambda d: images.write_jpeg(d, "p.jpg", PHOTO, progressive=True), "jpeg"),
    "cmyk jpeg": (images.cmyk_jpeg, "jpeg"),
    "jpeg with 100 KB of segments before its frame": (images.padded_jpeg, "jpeg"),
    "jpeg with an EXIF thumbnail":
        (lambda d: images.write_bytes(d, "thumb.jpg", images.thumbnailed_jpeg_bytes(PHOTO)), "jpeg"),
    "jpeg followed by a video (motion photo)": (images.motion_photo, "jpeg"),
    "webp lossy": (lambda d: images.write_webp(d, "a.webp", PHOTO), "webp"),
    "webp lossless": (lambda d: images.write_webp(d, "l.webp", PHOTO, quality=101), "webp"),
    "tiff": (lambda d: images.write_tiff(d, "a.tiff", PHOTO), "tiff"),
    "big-endian tiff": (images.big_endian_tiff, "tiff"),
    "bmp": (lambda d: images.write_bmp(d, "a.bmp", PHOTO), "bmp"),
    "gif": (lambda d: images.write_gif(d, "a.gif", PHOTO), "gif"),
    "non-utf8 name": (images.non_utf8_name, "jpeg"),
    "path over 600 bytes": (images.long_name, "jpeg"),
    "heic": (lambda d: images.write_heic(d, "a.heic", PHOTO), "heif"),
    "10-bit heic": (images.ten_bit_heic, "heif"),
    "avif": (lambda d: images.write_avif(d, "a.avif", PHOTO), "avif"),
    "dng, demosaiced": (lambda d: images.write_dng(d, "a.dng", PHOTO), "raw"),
    "dng with a preview": (lambda d: images.write_dng(d, "p.dng", PHOTO, images.jpeg_bytes(PHOTO)), "raw"),
    "DNG named .tif": (lambda d: images.write_dng(d, "a.tif", PHOTO), "raw"),
}


def test_a_tiff_named_as_a_camera_raw_file_goes_to_libraw(tmp_path):
    """Some cameras' raw files are TIFFs with no mark of one in their first IFD: the name decides,
    so such a file is never decoded as the small TIFF image in front of the raw data."""
    tiff = images.write_tiff(tmp_path, "scan.tif", PHOTO)
    assert extract_file(str(tiff), SETTINGS).format == "tiff"
    error = rejected(images.write_bytes(tmp_path, "DSC_0001.NEF", tiff.read_bytes()), "unsupported")
    assert "LibRaw" in error.detail


@pytest.mark.parametrize("build, fmt", GOOD_FILES.values(), ids=GOOD_FILES.keys())
def test_good_file_gives_the_features_of_its_picture(tmp_path, reference, build, fmt):
    path = build(tmp_path)
    with deadline(10):
        features = extract_file(os.fspath(path), SETTINGS)
    assert features.path == os.fspath(path)
    assert (features.format, features.width, features.height) == (fmt, WIDTH, HEIGHT)
    assert features.local.count > 50
    assert hamming(features.fingerprint, reference.fingerprint) <= SAME_PICTURE_BITS


PNG_KINDS = {   # builder: (bit depth, colour type) in IHDR
    images.sixteen_bit_png: (16, 2),
    images.palette_png: (8, 3),
    images.alpha_png: (8, 6),
}


@pytest.mark.parametrize("build, ihdr", PNG_KINDS.items(), ids=[f.__name__ for f in PNG_KINDS])
def test_png_fixtures_are_what_they_claim(tmp_path, build, ihdr):
    data = build(tmp_path).read_bytes()
    assert (data[24], data[25]) == ihdr


def test_cmyk_fixture_is_a_four_component_jpeg_of_the_photo(tmp_path):
    data = images.cmyk_jpeg(tmp_path).read_bytes()
    sof = data.index(b"\xff\xc0")
    assert data[sof + 9] == 4 and data[2:4] == b"\xff\xee" and data[6:11] == b"Adobe"
    colour = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(colour.astype(int) - cv2.cvtColor(PHOTO, cv2.COLOR_RGB2BGR)).mean() < 4


def test_non_utf8_name_keeps_its_bytes(tmp_path):
    path = images.non_utf8_name(tmp_path)
    features = extract_file(os.fspath(path), SETTINGS)
    assert os.fsencode(features.path).endswith(b"/caf\xe9.jpg")


def test_animated_gif_is_indexed_from_its_first_frame(tmp_path, reference):
    others = [images.resized(images.photo(name), WIDTH, HEIGHT) for name in ("rocket", "chelsea")]
    features = extract_file(str(images.animated_gif(tmp_path, [PHOTO, *others])), SETTINGS)
    assert (features.format, features.width, features.height) == ("gif", WIDTH, HEIGHT)
    assert hamming(features.fingerprint, reference.fingerprint) <= SAME_PICTURE_BITS
    second = extract_file(str(images.write_gif(tmp_path, "second.gif", others[0])), SETTINGS)
    assert hamming(features.fingerprint, second.fingerprint) > 16


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_features_of_the_displayed_picture(tmp_path, orientation):
    shown = images.displayed(PHOTO, orientation)
    features = extract_file(str(images.exif_rotated_jpeg(tmp_path, PHOTO, orientation)), SETTINGS)
    plain = extract_file(str(images.write_jpeg(tmp_path, "shown.jpg", shown)), SETTINGS)
    assert (features.width, features.height) == (shown.shape[1], shown.shape[0])
    assert (features.local.width, features.local.height) == (plain.local.width, plain.local.height)
    assert hamming(features.fingerprint, plain.fingerprint) <= SAME_PICTURE_BITS
    if orientation == 6:
        assert (features.width, features.height) == (HEIGHT, WIDTH)


@pytest.mark.parametrize("kind", images.BROKEN_EXIF)
def test_broken_exif_still_decodes(tmp_path, kind):
    with deadline(10):
        features = extract_file(str(images.broken_exif_jpeg(tmp_path, kind, PHOTO)), SETTINGS)
    assert features.local.count > 50
    # OpenCV may salvage an orientation from a damaged block (it does for "ifd_overruns_segment",
    # which it reads as 6); whichever it applied, the size and the features must agree with it.
    matches = [o for o in images.ORIENTATIONS
               if hamming(features.fingerprint, fingerprint(images.grey(images.displayed(PHOTO, o))))
               <= SAME_PICTURE_BITS]
    assert matches, "features match no orientation of the picture"
    shown = images.displayed(PHOTO, matches[0])
    assert (features.width, features.height) == (shown.shape[1], shown.shape[0])


def imdecode_flags(monkeypatch) -> list[int]:
    """The flags every cv2.imdecode call of the decode module is made with, from now on."""
    flags = []
    real_imdecode = cv2.imdecode

    def spy(buf, flag):
        flags.append(flag)
        return real_imdecode(buf, flag)

    monkeypatch.setattr(decode_module.cv2, "imdecode", spy)
    return flags


def test_large_jpeg_is_decoded_reduced(tmp_path, monkeypatch):
    path = images.large_jpeg(tmp_path, 4000, 3000)
    flags = imdecode_flags(monkeypatch)
    features = extract_file(str(path), SETTINGS)
    assert flags == [cv2.IMREAD_REDUCED_GRAYSCALE_4]     # 1000x750 by DCT scaling, then resized
    assert (features.width, features.height) == (4000, 3000)
    assert (features.local.width, features.local.height) == (640, 480)
    assert features.local.count > 50
    image = decode_module.decode(str(path), path.read_bytes(), SETTINGS.limits, SETTINGS.working_size)
    assert image.pixels.shape == (480, 640) and image.pixels.dtype == np.uint8


# --- formats.sniff --------------------------------------------------------------------------

ODD = images.resized(PHOTO, 123, 77)     # odd sizes catch off-by-one fields (VP8L stores size-1)
ODD_ALPHA = np.dstack([ODD, np.full(ODD.shape[:2], 128, np.uint8)])

ENCODED = {
    "jpeg": (lambda d: images.write_jpeg(d, "a.jpg", ODD), "jpeg"),
    "progressive jpeg": (lambda d: images.write_jpeg(d, "p.jpg", ODD, progressive=True), "jpeg"),
    "jpeg, frame past 64 KB": (images.padded_jpeg, "jpeg"),
    "cmyk jpeg": (lambda d: images.cmyk_jpeg(d, ODD), "jpeg"),
    "exif jpeg": (lambda d: images.exif_rotated_jpeg(d, ODD, 6), "jpeg"),
    "png": (lambda d: images.write_png(d, "a.png", ODD), "png"),
    "palette png": (lambda d: images.palette_png(d, ODD), "png"),
    "webp lossy (VP8)": (lambda d: images.write_webp(d, "a.webp", ODD), "webp"),
    "webp lossless (VP8L)": (lambda d: images.write_webp(d, "l.webp", ODD, quality=101), "webp"),
    "webp with alpha (VP8X)": (lambda d: images.write_webp(d, "x.webp", ODD_ALPHA), "webp"),
    "gif": (lambda d: images.write_gif(d, "a.gif", ODD), "gif"),
    "bmp": (lambda d: images.write_bmp(d, "a.bmp", ODD), "bmp"),
    "tiff": (lambda d: images.write_tiff(d, "a.tiff", ODD), "tiff"),
    "big-endian tiff": (lambda d: images.big_endian_tiff(d, ODD), "tiff"),
}


@pytest.mark.parametrize("build, fmt", ENCODED.values(), ids=ENCODED.keys())
def test_sniff_reads_the_encoded_size(tmp_path, build, fmt):
    data = build(tmp_path).read_bytes()
    header = formats.sniff(data)
    stored = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION    # the header gives the stored size
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), stored)
    assert (header.format, header.width, header.height) == (fmt, decoded.shape[1], decoded.shape[0])
    assert formats.is_complete(fmt, data)


def test_sniff_webp_chunk_kinds(tmp_path):
    """The three WebP layouts each have their own size fields; make sure each was exercised."""
    chunks = {images.webp_bytes(pixels, quality)[12:16] for pixels, quality in
              ((ODD, 90), (ODD, 101), (ODD_ALPHA, 90))}
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}


HEADER_ERRORS = {
    "empty": (b"", "empty"),
    "png cut in IHDR": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIH", "truncated"),
    "png without IHDR": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIDAT" + bytes(16), "corrupt"),
    "jpeg scan before frame": (b"\xff\xd8\xff\xda\x00\x08" + bytes(16), "corrupt"),
    "jpeg garbage after SOI": (b"\xff\xd8\xff\xe0\x00\x04\x00\x00junk" + bytes(8), "corrupt"),
    "webp unknown chunk": (b"RIFF\x00\x00\x00\x00WEBPVP9 " + bytes(20), "corrupt"),
    "tiff without size tags": (b"II*\x00\x08\x00\x00\x00\x00\x00" + bytes(4), "corrupt"),
    "avif without a meta box": (b"\x00\x00\x00\x1cftypavif" + bytes(16), "corrupt"),
    "heic cut inside its ftyp box": (b"\x00\x00\x00\x40ftypheic" + bytes(8), "truncated"),
}


@pytest.mark.parametrize("data, reason", HEADER_ERRORS.values(), ids=HEADER_ERRORS.keys())
def test_sniff_rejects_bad_headers(data, reason):
    with pytest.raises(formats.HeaderError) as caught:
        formats.sniff(data)
    assert caught.value.reason == reason


# --- fingerprint_variants -------------------------------------------------------------------

# EXIF orientation n shows the stored picture transformed as fingerprint_variants names it.
VARIANT_OF_ORIENTATION = {1: "identity", 2: "flip_horizontal", 3: "rotate_180", 4: "flip_vertical",
                          5: "transpose", 6: "rotate_90", 7: "transverse", 8: "rotate_270"}


@pytest.mark.parametrize("name", ["coffee", "astronaut"])
def test_fingerprint_variants_predict_each_orientation(name):
    pixels = images.grey(images.photo(name))
    variants = fingerprint_variants(fingerprint(pixels))
    assert set(variants) == set(VARIANT_OF_ORIENTATION.values())
    distances = {}
    for orientation, variant in VARIANT_OF_ORIENTATION.items():
        actual = fingerprint(images.displayed(pixels, orientation))
        distances[variant] = {other: hamming(actual, value) for other, value in variants.items()}
    report = {variant: row[variant] for variant, row in distances.items()}
    assert all(d <= 8 for d in report.values()), f"distance to the predicted variant: {report}"
    # And the prediction is the right one: every other variant is much further away.
    for variant, row in distances.items():
        nearest_other = min(d for other, d in row.items() if other != variant)
        assert nearest_other > row[variant] + 8, f"{variant}: {row}"


def test_no_code_reads_images_through_cv2_imread():
    """cv2.imread segfaults the whole process on a non-UTF-8 path; files are opened by decode.py."""
    source = Path(__file__).resolve().parent.parent / "daemon"
    offenders = [str(p) for p in source.rglob("*.py") if "cv2.imread(" in p.read_text()]
    assert offenders == []


# --- colour thumbnails (for the HTML report) -------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_colour_thumbnail_shows_the_displayed_picture(tmp_path, orientation):
    path = images.exif_rotated_jpeg(tmp_path, PHOTO, orientation)
    thumb = decode_module.colour_thumbnail(str(path), path.read_bytes(), SETTINGS.limits, 200)
    shown = images.displayed(PHOTO, orientation)
    assert thumb.dtype == np.uint8 and thumb.ndim == 3 and thumb.shape[2] == 3
    assert max(thumb.shape[:2]) == 200
    assert (thumb.shape[0] > thumb.shape[1]) == (shown.shape[0] > shown.shape[1])
    wanted = cv2.cvtColor(images.resized(shown, thumb.shape[1], thumb.shape[0]), cv2.COLOR_RGB2BGR)
    assert np.abs(thumb.astype(int) - wanted).mean() < 12


def test_colour_thumbnail_of_a_large_jpeg_is_decoded_reduced(tmp_path, monkeypatch):
    path = images.large_jpeg(tmp_path, 4000, 3000)
    flags = imdecode_flags(monkeypatch)
    thumb = decode_module.colour_thumbnail(str(path), path.read_bytes(), SETTINGS.limits, 200)
    assert flags == [cv2.IMREAD_REDUCED_COLOR_8] and thumb.shape == (150, 200, 3)


def test_colour_thumbnail_is_never_enlarged_and_always_colour(tmp_path):
    small = images.write_jpeg(tmp_path, "small.jpg", images.resized(PHOTO, 90, 60))
    assert decode_module.colour_thumbnail(str(small), small.read_bytes(), SETTINGS.limits, 200).shape == (60, 90, 3)
    grey = images.write_png(tmp_path, "grey.png", images.grey(PHOTO))
    assert decode_module.colour_thumbnail(str(grey), grey.read_bytes(), SETTINGS.limits, 200).shape == (133, 200, 3)


@pytest.mark.parametrize("build, reason", [
    (images.truncated_jpeg, "truncated"),
    (lambda d: images.png_bomb(d, 20000), "too_large"),
    (images.text_file_named_png, "unsupported"),
])
def test_colour_thumbnail_refuses_what_decode_refuses(tmp_path, build, reason):
    path = build(tmp_path)
    with pytest.raises(ImageError) as caught:
        decode_module.colour_thumbnail(str(path), path.read_bytes(), SETTINGS.limits, 200)
    assert caught.value.reason == reason
