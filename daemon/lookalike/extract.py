"""The extract stage: a file path -> everything the context stores about that image.

A pure function of the file's bytes and the settings, safe to run in worker processes: it never
touches the search context. Failures are raised as ImageError with the path and a reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .imaging.decode import FileIdentity, decode, read_file
from .imaging.features import LocalFeatures, extract_local, fingerprint, thumbnail
from .settings import ExtractionSettings


@dataclass(frozen=True)
class ImageFeatures:
    path: str                 # absolute; str with surrogate escapes for non-UTF-8 names
    identity: FileIdentity
    content_hash: bytes
    format: str
    width: int                # original size, as displayed
    height: int
    local: LocalFeatures
    fingerprint: int
    thumbnail: np.ndarray     # uint8 greyscale, 160 pixels on the longest side
    decode_seconds: float
    extract_seconds: float


def extract_file(path: str, settings: ExtractionSettings) -> ImageFeatures:
    started = time.perf_counter()
    loaded = read_file(path, settings.limits)
    image = decode(path, loaded.data, settings.limits, settings.working_size)
    decoded = time.perf_counter()
    local = extract_local(image.pixels, settings.detector, settings.max_features)
    return ImageFeatures(
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
    )
