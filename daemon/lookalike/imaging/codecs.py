"""The decoders OpenCV's wheels lack: HEIF and AVIF through Pillow, camera raw through LibRaw.

HEIF goes through pillow-heif (libheif with libde265), AVIF through Pillow's own plugin
(libavif with dav1d), raw files through rawpy (LibRaw). Like OpenCV they are native code run on
untrusted bytes, so they are only ever given data `decode` has checked: a known format, a size
under the pixel cap, a file that is whole. The daemon runs them in its spawned, time-limited
worker processes (workers.py), as it runs OpenCV.

A camera raw file mostly carries a full-size JPEG preview the camera rendered; features are
taken from it when it is large enough for the working image, which costs a JPEG decode.
Otherwise the raw image is demosaiced, at half size when that is still large enough
(CALIBRATION.md, "Camera raw: preview or demosaic").

Each decoder returns the picture as displayed (orientation applied) in BGR or grey, with the
full picture's displayed size. Colour profiles are not applied, as OpenCV does not apply a
JPEG's: features are taken from grey levels, where a profile changes little.
"""

from __future__ import annotations

import functools
import importlib
import io
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..errors import ImageError
from . import formats


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray       # BGR or grey, as displayed; possibly reduced
    width: int               # the full picture's displayed size
    height: int


def _module(name: str, package: str, path: str | bytes, fmt: str):
    # Imported on first use: a CLI run or worker that sees only JPEGs does not pay for them.
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImageError(path, "unsupported", f"{fmt} decoding needs the {package} package, "
                                              "which is not installed") from None


@functools.cache
def _register_heif_opener(pillow_heif) -> None:
    pillow_heif.register_heif_opener()


def _pillow(path: str | bytes, fmt: str):
    if fmt == "heif":
        _register_heif_opener(_module("pillow_heif", "pillow-heif", path, "HEIF"))
    from PIL import Image, features
    if fmt == "avif" and not features.check("avif"):
        raise ImageError(path, "unsupported", "this Pillow was built without AVIF support")
    return Image


def decode_pillow(path: str | bytes, data: bytes, fmt: str, colour: bool) -> Decoded:
    """A HEIF (the primary image) or AVIF file; `decode` has checked its size and completeness."""
    Image = _pillow(path, fmt)
    from PIL import ImageOps
    try:
        with Image.open(io.BytesIO(data), formats=["HEIF" if fmt == "heif" else "AVIF"]) as image:
            # libheif applies the HEIF rotation and mirroring itself; Pillow's AVIF plugin turns
            # them into an EXIF orientation, which exif_transpose applies.
            shown = ImageOps.exif_transpose(image)
            pixels = np.asarray(shown.convert("RGB" if colour else "L"))
    except Image.DecompressionBombError as exc:
        raise ImageError(path, "too_large", str(exc)) from None
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        reason = "unsupported" if "no decoding plugin" in str(exc).lower() else "corrupt"
        raise ImageError(path, reason, f"the {fmt} decoder: {_first_line(exc)}") from None
    if colour:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return Decoded(pixels, pixels.shape[1], pixels.shape[0])


# LibRaw's `flip` (dcraw's: 4 transposes, 2 flips rows, 1 flips columns) as an EXIF orientation.
_FLIP_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_ORIENT = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


# Decodes a preview JPEG whose header has been checked, orientation not applied.
JpegDecoder = Callable[[formats.Header, bytes], np.ndarray]


def decode_raw(path: str | bytes, data: bytes, max_pixels: int, colour: bool, wanted: int,
               decode_jpeg: JpegDecoder) -> Decoded:
    """A camera raw file: its embedded preview when it has one of at least `wanted` pixels on the
    longest side (or the raw image's size, if smaller), else the raw image demosaiced."""
    rawpy = _module("rawpy", "rawpy", path, "camera raw")
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        raise ImageError(path, "unsupported", "LibRaw does not know this camera raw format") from None
    except (rawpy.LibRawError, OSError) as exc:
        raise ImageError(path, "corrupt", f"LibRaw: {_first_line(exc)}") from None
    with raw:
        sizes = raw.sizes
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise ImageError(path, "too_large", f"{sizes.raw_width}x{sizes.raw_height} raw pixels "
                                                f"are over the cap of {max_pixels}")
        if sizes.width <= 0 or sizes.height <= 0:
            raise ImageError(path, "corrupt", f"LibRaw gives {sizes.width}x{sizes.height} pixels")
        turned = bool(sizes.flip & 4)
        width, height = (sizes.height, sizes.width) if turned else (sizes.width, sizes.height)
        enough = min(wanted, max(width, height))
        preview = _preview(path, raw, rawpy, max_pixels, colour, enough, decode_jpeg)
        if preview is not None:
            orient = _ORIENT.get(_FLIP_ORIENTATION.get(sizes.flip, 1))
            return Decoded(orient(preview) if orient else preview, width, height)
        try:
            # postprocess applies LibRaw's flip itself.
            rgb = raw.postprocess(half_size=min(sizes.width, sizes.height) // 2 >= enough,
                                  use_camera_wb=True, output_bps=8)
        except (rawpy.LibRawError, OSError) as exc:
            raise ImageError(path, "corrupt", f"LibRaw: {_first_line(exc)}") from None
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if colour else cv2.COLOR_RGB2GRAY)
    return Decoded(pixels, width, height)


def _preview(path: str | bytes, raw, rawpy, max_pixels: int, colour: bool, enough: int,
             decode_jpeg: JpegDecoder) -> np.ndarray | None:
    """The embedded preview as stored (orientation not applied), or None when there is no sound
    one of `enough` pixels on its longest side."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except (rawpy.LibRawError, OSError) as exc:
        raise ImageError(path, "corrupt", f"LibRaw, reading the preview: {_first_line(exc)}") from None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        if max(thumb.data.shape[:2]) < enough:
            return None
        return cv2.cvtColor(thumb.data, cv2.COLOR_RGB2BGR if colour else cv2.COLOR_RGB2GRAY)
    try:
        header = formats.sniff(thumb.data)
    except formats.HeaderError:
        return None
    if (header.format != "jpeg" or max(header.width, header.height) < enough
            or header.width * header.height > max_pixels or not formats.is_complete("jpeg", thumb.data)):
        return None
    try:
        return decode_jpeg(header, thumb.data)
    except ImageError:
        return None         # the raw image is still there


def _first_line(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]
