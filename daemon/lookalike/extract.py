"""The extract stage: a file path -> everything the context stores about that image.

A pure function of the file's bytes and the settings, safe to run in worker processes: it never
touches the search context. `extract_file` raises ImageError with the path and a reason;
`examine`, the daemon's unit of work, returns every result as data (an Outcome) so that it can
cross a process boundary and be recorded, never lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import ImageError
from .imaging.decode import LoadedFile, content_hasher, decode, read_file, scaled
from .imaging.features import LocalFeatures, extract_local, fingerprint, thumbnail
from .match import MIN_INLIERS
from .settings import ExtractionSettings
from .types import FileIdentity


@dataclass(frozen=True)
class ImageFeatures:
    path: str                 # absolute; str with surrogate escapes for non-UTF-8 names
    identity: FileIdentity | None     # None for bytes that are no file (an upload)
    content_hash: bytes
    format: str
    width: int                # original size, as displayed
    height: int
    local: LocalFeatures
    fingerprint: int
    thumbnail: np.ndarray     # uint8 greyscale, 160 pixels on the working length
    decode_seconds: float
    extract_seconds: float


def few_features(keypoints: int) -> bool:
    return keypoints < MIN_INLIERS


@dataclass(frozen=True)
class Query:
    """An image to look up: its features, and its working pixels when its file was read for the
    look-up, so that it can be described again at a smaller scale (search.similar)."""
    features: ImageFeatures
    working: np.ndarray | None = None     # None: a stored image's features, its file not read again

    def local_at(self, scale: float, settings: ExtractionSettings) -> LocalFeatures | None:
        """The local features of the working image scaled by `scale`, at the detector's first
        threshold only; None without the pixels. They are look-up keys, never stored: at a
        smaller scale most images fill less than half the keypoint budget, and lowering the
        threshold for them would cost a query up to two more detections."""
        if self.working is None:
            return None
        return extract_local(scaled(self.working, scale), settings.detector, settings.max_features, faint_retry=False)


def extract_file(path: str, settings: ExtractionSettings) -> ImageFeatures:
    return query_file(path, settings).features


def query_file(path: str, settings: ExtractionSettings) -> Query:
    started = time.perf_counter()
    return _extract(path, read_file(path, settings.limits), settings, started)


def query_data(name: str, data: bytes, settings: ExtractionSettings) -> Query:
    """The query of bytes that are no file (an upload to the API): `name` stands for the path
    in messages and the result, and its extension tells a camera raw file, as a path's does."""
    started = time.perf_counter()
    if not data:
        raise ImageError(name, "empty", "no bytes were sent")
    if len(data) > settings.limits.max_file_bytes:
        raise ImageError(name, "too_large", f"{len(data)} bytes is over the cap of {settings.limits.max_file_bytes}")
    return _extract(name, LoadedFile(data, None, content_hasher(data).digest()), settings, started)


def _extract(path: str, loaded: LoadedFile, settings: ExtractionSettings, started: float) -> Query:
    image = decode(path, loaded.data, settings.limits, settings.working_size)
    decoded = time.perf_counter()
    local = extract_local(image.pixels, settings.detector, settings.max_features)
    return Query(ImageFeatures(
        path=path,
        identity=loaded.identity,
        content_hash=loaded.content_hash,
        format=image.format,
        width=image.width,
        height=image.height,
        local=local,
        fingerprint=fingerprint(image.pixels),
        thumbnail=thumbnail(image.pixels),
        decode_seconds=decoded - started,
        extract_seconds=time.perf_counter() - started,
    ), image.pixels)


@dataclass(frozen=True)
class Extracted:
    features: ImageFeatures

    @property
    def identity(self) -> FileIdentity:
        return self.features.identity


@dataclass(frozen=True)
class SameContent:
    """The bytes hash to what the context already holds: only the file's identity changed."""

    path: str
    identity: FileIdentity


@dataclass(frozen=True)
class Unreadable:
    path: str
    reason: str               # one of ImageError.REASONS
    detail: str
    identity = None           # the file was not read whole


Outcome = Extracted | SameContent | Unreadable


def examine(path: str, settings: ExtractionSettings, known_hash: bytes | None) -> Outcome:
    """Read a file once; extract its features unless its content is already stored."""
    started = time.perf_counter()
    try:
        loaded = read_file(path, settings.limits)
        if loaded.content_hash == known_hash:
            return SameContent(path, loaded.identity)
        return Extracted(_extract(path, loaded, settings, started).features)
    except ImageError as exc:
        return Unreadable(path, exc.reason, exc.detail)
