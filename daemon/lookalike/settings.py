"""The settings a search context is created with, and their defaults (the only place they live).

They are stored in the context: features extracted with one detector or working size cannot be
matched against another's, so a context keeps the settings it was created with and refuses to be
opened with different ones. The values are calibrated, not guessed: see CALIBRATION.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .imaging.decode import DecodeLimits
from .imaging.features import DETECTORS

# Pairs scoring at or above this are duplicates (CALIBRATION.md, "Threshold").
DEFAULT_DUPLICATE_THRESHOLD = 50.0
# `similar` lists anything at least this alike: lookalikes too, not only duplicates.
DEFAULT_SIMILAR_THRESHOLD = 20.0
# A duplicate group keeps a file of these formats first, in this order (config `keep.formats`):
# a camera's raw file over the JPEG the camera made from it.
DEFAULT_KEEP_FORMATS = ("raw",)


@dataclass(frozen=True)
class ExtractionSettings:
    detector: str = "akaze"
    max_features: int = 500
    working_size: int = 640          # longest side, pixels
    max_pixels: int = 150_000_000    # refuse images claiming more (decompression bombs)
    max_file_bytes: int = 512 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {self.detector!r}")
        for name in ("max_features", "working_size", "max_pixels", "max_file_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.working_size < 64:
            raise ValueError("working_size must be at least 64 pixels")

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.max_file_bytes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ExtractionSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
