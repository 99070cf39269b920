"""A working image -> local features (keypoints + descriptors) and a global fingerprint.

Local features carry the geometric evidence that two images are copies of each other (crops,
rotations, overlays). The fingerprint is a 64-bit DCT sign hash: cheap to compare, and its
rotations and flips are bit operations on the stored value, so one stored hash answers all eight
orientations of a query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from .decode import scaled, working_length

DETECTORS = ("akaze", "orb", "sift", "brisk")
# Features of one version of the extraction (detector input, working geometry) do not match
# another's: a search context records the version it was filled with and refuses any other.
# 2: contrast stretched before detection; panoramas worked at their working length.
# 3: AKAZE's threshold lowered for an image that yields few keypoints (AKAZE_THRESHOLDS).
EXTRACTION_VERSION = 3


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    binary: bool            # Hamming-matched bytes; else float32 matched by L2
    bits_per_descriptor: int


def _xfeatures(name: str):
    # OpenCV 5 moved AKAZE and BRISK into the contrib module; 4.x had them in cv2 itself.
    contrib = getattr(cv2, "xfeatures2d", None)
    return getattr(contrib, name, None) or getattr(cv2, name)


# AKAZE's response thresholds, tried in turn while an image yields fewer keypoints than
# ENOUGH_KEYPOINTS of its budget (see `_detected`). The first is below OpenCV's 0.001 so that most photos fill the
# budget at once (the strongest are kept anyway). A smooth photo (clouds, mist, a soft focus)
# responds weakly everywhere and got a handful of keypoints, too few to match even its own
# resized copy. A lower threshold only adds weaker keypoints, so an image and its copy detected
# at different thresholds still share the stronger ones (CALIBRATION.md, "Low-feature images").
AKAZE_THRESHOLDS = (0.0003, 0.0001, 0.00003)
ENOUGH_KEYPOINTS = 0.5


def create_detector(name: str, max_features: int, akaze_threshold: float = AKAZE_THRESHOLDS[0]):
    if name == "akaze":
        return _xfeatures("AKAZE_create")(threshold=akaze_threshold)
    if name == "orb":
        return cv2.ORB_create(nfeatures=max_features, fastThreshold=10)
    if name == "sift":
        return cv2.SIFT_create(nfeatures=max_features)
    if name == "brisk":
        return _xfeatures("BRISK_create")(thresh=20)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


@lru_cache(maxsize=None)
def detector_info(name: str) -> DetectorInfo:
    detector = create_detector(name, 10)
    size = detector.descriptorSize()
    binary = detector.descriptorType() == cv2.CV_8U
    return DetectorInfo(name, binary, size * 8 if binary else size * 32)


@dataclass(frozen=True)
class LocalFeatures:
    keypoints: np.ndarray    # float32 (N, 4): x, y, size, angle in degrees, in working-image pixels
    descriptors: np.ndarray  # uint8 (N, bytes) for binary detectors, float32 (N, 128) for SIFT
    width: int               # working image size the keypoints refer to
    height: int

    @property
    def count(self) -> int:
        return len(self.keypoints)


# A working image thinner than this (a 2000x2 strip is worked at 5120x5) has no room for a keypoint,
# and the detectors fail on it instead of saying so: AKAZE's scale space asks for 2^64 bytes,
# ORB and BRISK (up to 5 pixels) assert in their pyramids.
MIN_DETECTOR_SIDE = 8


def extract_local(pixels: np.ndarray, detector_name: str, max_features: int, faint_retry: bool = True) -> LocalFeatures:
    """The strongest `max_features` keypoints, spread over the picture, and their descriptors;
    without `faint_retry`, at the first of AKAZE_THRESHOLDS only."""
    keypoints, descriptors = ((), None)
    if min(pixels.shape[:2]) >= MIN_DETECTOR_SIDE:
        keypoints, descriptors = _detected(stretched_contrast(pixels), detector_name, max_features, faint_retry)
    info = detector_info(detector_name)
    if descriptors is None or not keypoints:
        width = create_detector(detector_name, max_features).descriptorSize()
        empty = np.zeros((0, width), np.uint8 if info.binary else np.float32)
        return LocalFeatures(np.zeros((0, 4), np.float32), empty, pixels.shape[1], pixels.shape[0])
    points = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in keypoints], np.float32)
    responses = np.array([k.response for k in keypoints], np.float32)
    keep = spread_strongest(points, responses, pixels.shape, max_features)
    return LocalFeatures(points[keep], np.ascontiguousarray(descriptors[keep]), pixels.shape[1], pixels.shape[0])


def _detected(pixels: np.ndarray, detector_name: str, max_features: int, faint_retry: bool) -> tuple:
    """Keypoints and descriptors of the detector: AKAZE's at the highest of AKAZE_THRESHOLDS that
    yields enough of them. An image that yields enough at none keeps the first threshold's: a
    blurred or nearly flat picture then gets a few keypoints more of blur and noise, which match
    its own copies less often than the pixel check of an image with too few keypoints does."""
    def detect(threshold: float) -> tuple:
        return create_detector(detector_name, max_features, threshold).detectAndCompute(pixels, None)

    first = detect(AKAZE_THRESHOLDS[0])
    if not faint_retry or detector_name != "akaze" or len(first[0]) >= ENOUGH_KEYPOINTS * max_features:
        return first
    for threshold in AKAZE_THRESHOLDS[1:]:
        lower = detect(threshold)
        if len(lower[0]) >= ENOUGH_KEYPOINTS * max_features:
            return lower
    return first


# The share of pixels let go dark or bright at each end when the grey range is measured: a few
# specular highlights or black borders must not count as contrast.
STRETCH_CLIPPED = 0.005
# A picture whose grey range (between those ends) is narrower than this is stretched to it;
# wider ones, nearly every photo, are left as they are (CALIBRATION.md, "Contrast").
MIN_GREY_RANGE = 128


def stretched_contrast(pixels: np.ndarray) -> np.ndarray:
    """The grey levels stretched linearly to a range of at least MIN_GREY_RANGE.

    The detectors' thresholds are absolute: a photo darkened to a tenth, or washed out to a
    fifth of the range, has its gradients cut as much and yields few keypoints or none. A
    global stretch restores them and, unlike a tiled equalisation (CLAHE), maps every pixel
    the same way, so a cropped copy gets the same structure as its original. The stretch
    grows smoothly from none at MIN_GREY_RANGE, and keeps the range where it was in 0-255:
    copies on either side of the limit stay alike, and photos of ordinary contrast keep their
    keypoints: stretching every photo made AKAZE describe more keypoints, slower, for nothing.
    """
    # calcHist, not np.bincount: bincount widens every pixel to 64 bits first, a fresh buffer
    # of 8 bytes a pixel for each image.
    counts = np.cumsum(cv2.calcHist([pixels], [0], None, [256], [0, 256]).ravel())
    low = int(np.searchsorted(counts, STRETCH_CLIPPED * counts[-1], side="right"))
    high = int(np.searchsorted(counts, (1 - STRETCH_CLIPPED) * counts[-1], side="left"))
    spread = high - low
    if spread >= MIN_GREY_RANGE or spread <= 0:
        return pixels           # enough contrast, or flat: nothing to stretch
    gain = MIN_GREY_RANGE / spread
    # The stretched range starts where the unused grey levels below and above it keep their ratio.
    start = low * (255 - MIN_GREY_RANGE) / (255 - spread)
    levels = (np.arange(256, dtype=np.float32) - low) * gain + start
    return cv2.LUT(pixels, np.clip(levels + 0.5, 0, 255).astype(np.uint8))


GRID_CELLS = 6


def spread_strongest(points: np.ndarray, responses: np.ndarray, shape: tuple, count: int) -> np.ndarray:
    """Indices of the strongest `count` keypoints, spread over the picture.

    Taking the strongest keypoints outright lets a caption or watermark, whose sharp strokes
    respond far above any texture of the photo, take most of the budget; its copy without the
    text then shares few keypoints with it. So keypoints are taken round-robin over the cells
    of a grid: every cell's strongest, then every cell's second strongest, and so on.
    """
    order = np.argsort(-responses, kind="stable")
    if len(order) <= count:
        return order
    height, width = shape[:2]
    cell = (np.minimum(points[order, 1] * GRID_CELLS // height, GRID_CELLS - 1) * GRID_CELLS
            + np.minimum(points[order, 0] * GRID_CELLS // width, GRID_CELLS - 1)).astype(np.intp)
    by_cell = np.argsort(cell, kind="stable")      # strongest first within each cell
    cell_start = np.searchsorted(cell[by_cell], np.arange(GRID_CELLS * GRID_CELLS))
    rank_in_cell = np.empty(len(order), np.intp)
    rank_in_cell[by_cell] = np.arange(len(order)) - cell_start[cell[by_cell]]
    round_robin = np.argsort(rank_in_cell, kind="stable")
    return order[round_robin[:count]]


# --- thumbnail ------------------------------------------------------------------------------

THUMBNAIL_SIDE = 160


def thumbnail(working: np.ndarray) -> np.ndarray:
    """The working image at 160 pixels (its working length, so a panorama's stays more than a
    few pixels high): enough for match.py to check that pixels agree."""
    return scaled(working, THUMBNAIL_SIDE / working_length(working.shape[1], working.shape[0]))


# --- global fingerprint -------------------------------------------------------------------

FINGERPRINT_SIDE = 32


def fingerprint(pixels: np.ndarray) -> int:
    """Signs of the 8x8 lowest DCT frequencies of a 32x32 thumbnail (DC bit always 0)."""
    thumb = cv2.resize(pixels, (FINGERPRINT_SIDE, FINGERPRINT_SIDE), interpolation=cv2.INTER_AREA)
    thumb = thumb.astype(np.float32)
    coefficients = cv2.dct(thumb - thumb.mean())[:8, :8]
    bits = (coefficients > 0).ravel()
    bits[0] = False
    return int(np.packbits(bits).view(">u8")[0])


def _bit_masks() -> tuple[int, int]:
    rows, cols = np.indices((8, 8))
    odd_col = np.packbits((cols % 2 == 1).ravel()).view(">u8")[0]
    odd_row = np.packbits((rows % 2 == 1).ravel()).view(">u8")[0]
    return int(odd_col), int(odd_row)


_ODD_COLUMN, _ODD_ROW = _bit_masks()


def _transpose(value: int) -> int:
    bits = np.unpackbits(np.array([value], ">u8").view(np.uint8)).reshape(8, 8)
    return int(np.packbits(bits.T.ravel()).view(">u8")[0])


def fingerprint_variants(value: int) -> dict[str, int]:
    """The fingerprint each orientation of the image would have, keyed by transform name.

    Mirroring the image left-right negates the DCT coefficients of odd horizontal frequency,
    mirroring it top-bottom those of odd vertical frequency, and transposing it transposes the
    coefficients; the eight rotations and flips are compositions of these.
    """
    flip_h = value ^ _ODD_COLUMN
    flip_v = value ^ _ODD_ROW
    both = value ^ _ODD_COLUMN ^ _ODD_ROW
    return {
        "identity": value,
        "flip_horizontal": flip_h,
        "flip_vertical": flip_v,
        "rotate_180": both,
        "transpose": _transpose(value),
        "rotate_90": _transpose(flip_v),     # clockwise: transpose, then mirror left-right
        "rotate_270": _transpose(flip_h),
        "transverse": _transpose(both),
    }


# --- mirrored descriptors -----------------------------------------------------------------

@lru_cache(maxsize=None)
def mirror_table(detector_name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Bit permutation and inversion mask that turn a descriptor into its mirror image's.

    AKAZE's MLDB descriptor compares cells of a grid laid over the keypoint's oriented patch;
    mirroring the patch permutes the cells and negates one gradient component, so each bit of
    the mirrored descriptor is (nearly always) one bit of the original, possibly inverted. The
    table was learned from real photos by bench/derive_mirror_table.py. Detectors with random
    sampling patterns (ORB, BRISK) have no such table; SIFT is not handled.
    """
    if detector_name != "akaze":
        return None
    text = resources.files(__package__).joinpath("akaze_mirror.json").read_text()
    table = json.loads(text)
    return np.array(table["permutation"], np.intp), np.array(table["invert"], bool)


def mirrored(features: LocalFeatures, detector_name: str) -> LocalFeatures | None:
    """The features the left-right mirror image would have, or None if the detector has no table."""
    table = mirror_table(detector_name)
    if table is None:
        return None
    permutation, invert = table
    bits = np.unpackbits(features.descriptors, axis=1)
    flipped = np.packbits(bits[:, permutation] ^ invert, axis=1)
    points = features.keypoints.copy()
    points[:, 0] = (features.width - 1) - points[:, 0]
    points[:, 3] = (180.0 - points[:, 3]) % 360.0
    return LocalFeatures(points, flipped, features.width, features.height)
