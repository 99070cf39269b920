"""Pairwise verification: are two images copies of one picture, and how alike are they (0-100)?

Three kinds of evidence, each measured, then weighed by a model fitted on real photos
(bench/calibrate.py; figures in CALIBRATION.md):

1. Descriptor matches (ratio test) that agree on one affine transform (RANSAC). Copies, even
   cropped, rotated, flipped or rescaled, are related by an affine map; different shots of one
   scene are not (parallax, perspective), so they keep fewer and looser inliers. When another
   shot does fit, it fits on one plane of the scene (a facade) and only nearly: its inliers span
   little of the common area, and a curved map fits them better than the affine one, which a
   copy's inliers never need.
2. Repeatability: the share of keypoints inside the common area that found their partner.
3. Pixels: the stored thumbnails, one warped onto the other by the transform found, must show
   the same structure (gradient magnitudes correlate tile by tile). Two shots of one building
   line up in geometry but not in light, sky and passers-by.

A flipped copy is matched through the mirrored descriptors (imaging.features.mirrored), so no
second extraction is needed. The result carries its evidence: transform, flip, crop boxes.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .imaging.decode import working_length
from .imaging.features import LocalFeatures, mirrored

RATIO_TEST = 0.8
RANSAC_THRESHOLD = 4.0       # pixels at the working size
TIGHT_RESIDUAL = 1.5         # in Candidate.pixel_unit: keypoint localisation noise
MIN_INLIERS = 8
MAX_ANISOTROPY = 4.0         # a stretched copy (4:3 -> 1:1 is 1.33) stays well below this
# A copy shows the picture at a comparable size once both are at the working size (a half crop
# is 2x). A fit that shrinks one image to a sliver of the other is a handful of coincidental
# matches on a tiny common area, whose repeatability would look perfect.
MAX_SCALE = 8.0
PHOTO_TILES = 6
# A tile is flat where one grey level (FLAT_LEVELS wide) holds over MAX_FLAT_SHARE of its
# pixels: a background, a band, a window's panel, with or without text on it. Where the inliers
# lie is weighed on the other tiles when there are MIN_TEXTURED_TILES of them.
FLAT_LEVELS = 4
MAX_FLAT_SHARE = 0.3
MIN_TEXTURED_TILES = 3
# An unmirrored fit this repeatable is never beaten by the mirrored one, which is then not
# tried: most copies are not flipped. Of 9,677 copy pairs the mirrored fit won at 0.1 or more
# once, at 0.286, on a near-symmetric moon that scored 98.5 unmirrored (bench/mirror_rule.py;
# CALIBRATION.md).
MIRROR_NEEDLESS_ABOVE = 0.3
# A copy's inliers are found wherever its descriptors match; two pictures that share only a
# caption, a logo or a date stamp in one font agree on that patch alone, while their chance
# matches are strewn over the frame. Of the cells of a 12 x 12 grid that hold a match, copies
# have an inlier in 0.43 and more, pictures sharing a caption in 0.14 and fewer
# (CALIBRATION.md, "Inlier spread").
MIN_INLIER_SPREAD = 0.25
SPREAD_GRID = 12

# Logistic model over the evidence, fitted by bench/calibrate.py on the calibration set (real photos,
# their copies and hard negatives; CALIBRATION.md). similarity = 100 * sigmoid(w . features + b).
MODEL_FEATURES = ("residual", "photo_low", "content_inliers", "photo_median", "inlier_span", "affinity")
MODEL_WEIGHTS = (-4.335, 9.684, 14.241, 0.53, 3.667, 33.059)
MODEL_BIAS = -47.919

# What names the scores a context has recorded: pairs scored by another model are scored again
# (duplicates.match_pending), or a refit would leave the old model's groups standing. Raise
# EVIDENCE_VERSION when a change to how the evidence is measured changes scores without a refit.
EVIDENCE_VERSION = 1
SCORING = hashlib.sha256(repr((EVIDENCE_VERSION, MODEL_FEATURES, MODEL_WEIGHTS, MODEL_BIAS)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Transform:
    """How the first image maps onto the second."""

    matrix: tuple[tuple[float, ...], ...]   # 2x3 affine, first working image -> second
    flipped: bool                           # the first image was mirrored left-right first
    rotation_degrees: float
    scale: float                            # how many times larger the picture is in the second
    crop_first: tuple[float, float, float, float]   # common area in the first, fractions x0,y0,x1,y1
    crop_second: tuple[float, float, float, float]  # and in the second

    def to_json(self) -> dict:
        # + 0.0 turns the -0.0 that rounding a tiny negative angle gives into 0.0
        return {"flipped": self.flipped, "rotation_degrees": round(self.rotation_degrees, 1) + 0.0,
                "scale": round(self.scale, 3),
                "common_area_first": [round(v, 3) for v in self.crop_first],
                "common_area_second": [round(v, 3) for v in self.crop_second],
                "coverage_first": round(_area(self.crop_first), 3),
                "coverage_second": round(_area(self.crop_second), 3)}


def _area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


@dataclass(frozen=True)
class Evidence:
    matches: int
    inliers: int
    tight_inliers: int
    repeatability: float      # tight inliers / keypoints inside the common area (smaller side)
    residual: float           # median inlier residual, in Candidate.pixel_unit
    spread: float             # share of the grid cells with a match that hold an inlier (smaller side)
    photo_median: float       # median tile correlation of structure, -1..1
    photo_low: float          # 25th percentile of the same
    content_inliers: float    # share of the tiles textured in both images that hold an inlier
    inlier_span: float        # share of the common area inside the inliers' convex hull
    affinity: float           # a quadratic map's residual spread over the affine one's: 1 for a copy

    def features(self, names: tuple[str, ...] = MODEL_FEATURES) -> tuple[float, ...]:
        """The model's inputs (MODEL_FEATURES), each capped where more says nothing more."""
        capped = {"repeatability": min(self.repeatability, 1.0), "residual": min(self.residual, 3.0),
                  "affinity": min(self.affinity, 1.0)}
        return tuple(capped.get(name, getattr(self, name)) for name in names)


# Why a pair has no transform and evidence (Match.reason).
# An image with fewer keypoints than a match needs inliers can never be verified geometrically;
# it is still found by its content hash and fingerprint (identical and near-identical copies).
FEW_FEATURES = "few_features"
NO_MATCH_REASONS = {
    FEW_FEATURES: "one of the images has too few keypoints to fit a transform, and it is no near-exact copy",
    "too_few_matches": "too few descriptors match between the images",
    "no_geometric_fit": "the matching descriptors agree on no single transform",
    "fit_on_small_patch": "the only fit holds on one small patch (a caption, logo or stamp)",
}


@dataclass(frozen=True)
class Match:
    similarity: float                 # 0..100
    evidence: Evidence | None
    transform: Transform | None
    kinds: tuple[str, ...] = ()       # what the second is of the first (COPY_KINDS)
    reason: str | None = None         # why there is no transform (NO_MATCH_REASONS)

    def to_json(self) -> dict:
        out: dict = {"similarity": round(self.similarity, 1)}
        if self.kinds:
            out["kinds"] = list(self.kinds)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.transform is not None:
            out["transform"] = self.transform.to_json()
        if self.evidence is not None:
            out["evidence"] = {"matches": self.evidence.matches, "inliers": self.evidence.inliers,
                               "tight_inliers": self.evidence.tight_inliers,
                               "repeatability": round(self.evidence.repeatability, 3),
                               "residual_px": round(self.evidence.residual, 2),
                               "pixel_agreement": round(self.evidence.photo_median, 3),
                               "content_with_inliers": round(self.evidence.content_inliers, 3),
                               "inlier_span": round(self.evidence.inlier_span, 3),
                               "affinity": round(self.evidence.affinity, 3)}
        return out


IDENTICAL = Match(100.0, None, None, ("identical",))


def score(evidence: Evidence) -> float:
    z = MODEL_BIAS + sum(w * f for w, f in zip(MODEL_WEIGHTS, evidence.features()))
    return 100.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class Candidate:
    """One side of a comparison: what the context stores about an image."""

    local: LocalFeatures
    thumbnail: np.ndarray
    content_hash: bytes
    width: int               # original size: tells how far the working image was scaled up
    height: int

    def mirror(self, detector: str) -> LocalFeatures | None:
        """The features of the left-right mirrored image (None for detectors without a table),
        derived once: one image is compared with several."""
        cached = self.__dict__.get("_mirror")
        if cached is None or cached[0] != detector:
            cached = self.__dict__["_mirror"] = (detector, mirrored(self.local, detector))
        return cached[1]

    @property
    def pixel_unit(self) -> float:
        """Working pixels per pixel of localisation noise.

        Keypoints are located to about a pixel of whichever is coarser: the image's own pixels
        (when it was scaled up to the working size) or a 640-pixel grid over its working length.
        """
        working = working_length(self.local.width, self.local.height)
        return max(working / 640.0, working / working_length(self.width, self.height))


def compare(first: Candidate, second: Candidate, detector: str) -> Match:
    """How alike two images are, and how the first maps onto the second.

    One score per pair: the fit is made once, with the images in an order their contents fix
    (never their names), and every measure of it is taken so that it favours neither image
    (the residual in the coarser frame, the pixels compared at the coarser resolution, the
    inliers placed on the content of both). Compared the other way round, a pair gives the same similarity and
    evidence and the inverse transform."""
    if first.content_hash == second.content_hash:
        return IDENTICAL
    if min(first.local.count, second.local.count) < MIN_INLIERS:
        return _near_exact(first, second)
    swapped = first.content_hash > second.content_hash
    if swapped:
        first, second = second, first
    fit = _fit(first, second, detector)
    if isinstance(fit, str):
        return Match(0.0, None, None, reason=fit)
    matrix, flipped, geometry, inliers_first, inliers_second = fit
    photo_median, photo_low, content_inliers, inlier_span, tone, drawn_over = _pixel_agreement(
        first, second, matrix, flipped, inliers_first, inliers_second)
    evidence = Evidence(photo_median=photo_median, photo_low=photo_low, content_inliers=content_inliers,
                        inlier_span=inlier_span, **geometry)
    if swapped:
        matrix = _inverse(matrix, flipped, first.local, second.local)
        first, second = second, first
    transform = _describe(matrix, flipped, first, second)
    return Match(score(evidence), evidence, transform, _kinds(first, second, transform, evidence, tone, drawn_over))


def _fit(first: Candidate, second: Candidate, detector: str) -> tuple | str:
    """(matrix, flipped, geometry, inliers in first, inliers in second) of the affine fit of first
    onto second (mirrored first if that fits better), or why there is none."""
    best = _verify(first.local, second.local, first.pixel_unit, second.pixel_unit)
    unmirrored_repeatability = best[1]["repeatability"] if not isinstance(best, str) else 0.0
    mirror = first.mirror(detector) if unmirrored_repeatability < MIRROR_NEEDLESS_ABOVE else None
    flipped = False
    if mirror is not None:
        fit = _verify(mirror, second.local, first.pixel_unit, second.pixel_unit)
        if not isinstance(fit, str) and (isinstance(best, str) or fit[1]["tight_inliers"] > best[1]["tight_inliers"]):
            best, flipped = fit, True
    if isinstance(best, str):
        return best
    return best[0], flipped, best[1], best[2], best[3]


def _inverse(matrix: np.ndarray, flipped: bool, first: LocalFeatures, second: LocalFeatures) -> np.ndarray:
    """The transform of second onto first, given `matrix` of (mirrored, if `flipped`) first onto
    second: with M = matrix and F the left-right mirror of an image (features.mirrored), it is
    F_first . M^-1 . F_second, so that mirroring the second and applying it lands on the first."""
    inverse = np.vstack([cv2.invertAffineTransform(matrix), [0, 0, 1]])
    if not flipped:
        return inverse[:2]
    return (_mirror(first.width) @ inverse @ _mirror(second.width))[:2]


def _mirror(width: int) -> np.ndarray:
    """The left-right mirror of an image `width` working pixels wide, as features.mirrored
    mirrors keypoints (3 x 3)."""
    return np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]])


# An image with fewer keypoints than a fit needs inliers (a smooth or nearly flat picture) can
# only be matched by its pixels: a copy of the same shape whose thumbnail differs by at most this
# many grey levels on average is a near-exact copy (recompressed or resized, CALIBRATION.md).
NEAR_EXACT_GREY_LEVELS = 4.0


def _near_exact(first: Candidate, second: Candidate) -> Match:
    """The match of two images too poor in keypoints to fit a transform: a near-exact copy scores
    100 down to 50 as its thumbnail drifts from the other's by up to NEAR_EXACT_GREY_LEVELS. The
    thumbnails are compared at the smaller one's size, whichever image is first."""
    a, b = first.thumbnail, second.thumbnail
    if abs(a.shape[0] - b.shape[0]) > 1 or abs(a.shape[1] - b.shape[1]) > 1:
        return Match(0.0, None, None, reason=FEW_FEATURES)
    size = (min(a.shape[1], b.shape[1]), min(a.shape[0], b.shape[0]))
    a, b = (t if t.shape[:2] == size[::-1] else cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in (a, b))
    drift = float(cv2.norm(a, b, cv2.NORM_L1)) / a.size
    if drift > NEAR_EXACT_GREY_LEVELS:
        return Match(0.0, None, None, reason=FEW_FEATURES)
    matrix = ((second.local.width / first.local.width, 0.0, 0.0), (0.0, second.local.height / first.local.height, 0.0))
    whole = (0.0, 0.0, 1.0, 1.0)
    transform = Transform(matrix, False, 0.0, second.width / first.width, whole, whole)
    if (first.width, first.height) != (second.width, second.height):
        kinds = ("resized",)
    elif _same_pixels(first, second):
        kinds = ("same_pixels",)
    else:
        kinds = ("recompressed",)
    return Match(100.0 - 50.0 * drift / NEAR_EXACT_GREY_LEVELS, None, transform, kinds)


def _ratio_matches(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(query index, train index) pairs passing Lowe's ratio test."""
    if len(first) < 2 or len(second) < 2:
        return np.zeros((0, 2), np.intp)
    if first.dtype == np.uint8:
        # batchDistance is what BFMatcher.knnMatch runs, without a Python object per match; and
        # OpenCV counts bits a vector at a time, so AKAZE's 61 bytes cost a third more than 64
        # zero-padded ones, which have the same distances.
        distances, nearest = cv2.batchDistance(_aligned(first), _aligned(second), cv2.CV_32S,
                                               normType=cv2.NORM_HAMMING, K=2)
    else:
        distances, nearest = cv2.batchDistance(first, second, cv2.CV_32F, normType=cv2.NORM_L2, K=2)
    passed = np.flatnonzero(distances[:, 0] < RATIO_TEST * distances[:, 1])
    return np.column_stack([passed, nearest[passed, 0]]).astype(np.intp)


def _aligned(descriptors: np.ndarray) -> np.ndarray:
    count, width = descriptors.shape
    if width % 32 == 0:
        return descriptors
    padded = np.zeros((count, width + 32 - width % 32), np.uint8)
    padded[:, :width] = descriptors
    return padded


def _inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _verify(first: LocalFeatures, second: LocalFeatures, first_unit: float, second_unit: float):
    """(matrix, geometry, inliers in first, inliers in second) of the affine fit of first onto
    second, or the reason there is none."""
    pairs = _ratio_matches(first.descriptors, second.descriptors)
    if len(pairs) < MIN_INLIERS:
        return "too_few_matches"
    p1 = first.keypoints[pairs[:, 0], :2]
    p2 = second.keypoints[pairs[:, 1], :2]
    matrix, mask = cv2.estimateAffine2D(p1, p2, ransacReprojThreshold=RANSAC_THRESHOLD,
                                        maxIters=2000, confidence=0.995)
    if matrix is None:
        return "no_geometric_fit"
    inliers = mask.ravel().astype(bool)
    if inliers.sum() < MIN_INLIERS:
        return "no_geometric_fit"
    spread = min(_cell_share(p1, inliers, first), _cell_share(p2, inliers, second))
    if spread < MIN_INLIER_SPREAD:
        return "fit_on_small_patch"      # a caption, logo or date stamp
    singular = np.linalg.svd(matrix[:, :2], compute_uv=False)
    if singular[1] < 1e-3 or singular[0] / singular[1] > MAX_ANISOTROPY:
        return "no_geometric_fit"        # a degenerate fit to a handful of coincidental matches
    if not 1 / MAX_SCALE <= math.sqrt(singular[0] * singular[1]) <= MAX_SCALE:
        return "no_geometric_fit"
    inverse = cv2.invertAffineTransform(matrix)
    # Keypoints are located to about a unit of the coarser image; in the finer image's frame
    # that noise is magnified by the scale between them. The residual is taken in the frame
    # where it is smaller, whichever image is first.
    forward = np.hypot(*(_apply(matrix, p1) - p2).T) / second_unit
    backward = np.hypot(*(_apply(inverse, p2) - p1).T) / first_unit
    residuals, residual = min(((r, _quantile(np.sort(r[inliers]), 0.5)) for r in (forward, backward)),
                              key=lambda found: found[1])
    tight = int((residuals < TIGHT_RESIDUAL).sum())
    in_second = _inside(_apply(matrix, first.keypoints[:, :2]), second.width, second.height).sum()
    in_first = _inside(_apply(inverse, second.keypoints[:, :2]), first.width, first.height).sum()
    common = max(min(in_first, in_second), 1)
    geometry = {"matches": len(pairs), "inliers": int(inliers.sum()), "tight_inliers": tight,
                "repeatability": float(tight / common), "residual": residual, "spread": spread,
                "affinity": _affinity(p1[inliers], p2[inliers], first.width, first.height)}
    return matrix, geometry, p1[inliers], p2[inliers]


AFFINE_TERMS, QUADRATIC_TERMS = 3, 6     # per coordinate: 1, x, y; and x*x, x*y, y*y


def _affinity(first: np.ndarray, second: np.ndarray, width: int, height: int) -> float:
    """How well one affine map explains the inliers against a quadratic one: the ratio of their
    least-squares residual spreads, each per remaining degree of freedom, so that keypoint noise
    alone gives about 1 however few the inliers. A copy is an affine map of its picture (turned,
    scaled, cropped, stretched, mirrored); another shot of a scene is not, and its inliers bend
    (perspective across a facade, parallax between planes), so the quadratic fits them better."""
    count = len(first)
    if count <= 2 * QUADRATIC_TERMS:
        return 1.0                       # too few inliers to tell a bend from noise
    x, y = first[:, 0] / width, first[:, 1] / height       # unit scale keeps the squares well conditioned
    quadratic = np.column_stack([np.ones(count), x, y, x * x, x * y, y * y])
    spreads = []
    for terms in (AFFINE_TERMS, QUADRATIC_TERMS):
        design = quadratic[:, :terms]
        coefficients = np.linalg.lstsq(design, second, rcond=None)[0]
        spreads.append(float(((design @ coefficients - second) ** 2).sum()) / (count - terms))
    return math.sqrt(spreads[1] / spreads[0]) if spreads[0] > 0 else 1.0


def _cell_share(points: np.ndarray, inliers: np.ndarray, features: LocalFeatures) -> float:
    """Of the cells of a SPREAD_GRID x SPREAD_GRID grid over the image that hold a descriptor
    match, the share that hold an inlier. Counting cells, not area, keeps a chance inlier or two
    far from the rest from looking like spread."""
    cells = (np.minimum((points * SPREAD_GRID / (features.width, features.height)).astype(np.intp), SPREAD_GRID - 1)
             @ (SPREAD_GRID, 1))
    matched = np.bincount(cells, minlength=SPREAD_GRID * SPREAD_GRID) > 0
    fitted = np.bincount(cells[inliers], minlength=SPREAD_GRID * SPREAD_GRID) > 0
    return int(fitted.sum()) / int(matched.sum())


def _describe(matrix: np.ndarray, flipped: bool, first_image: Candidate, second_image: Candidate) -> Transform:
    first, second = first_image.local, second_image.local
    (a, b, _), (c, d, _) = matrix.tolist()
    rotation = math.degrees(math.atan2(c, a))
    # The matrix maps working pixels; in original pixels the picture's size changes by this much.
    scale_factor = (math.sqrt(abs(a * d - b * c))
                    * (first.width / first_image.width) * (second_image.width / second.width))
    # The common area: each frame's corners mapped into the other, clipped to it. Keypoints are
    # at pixel centres, so a frame's edges lie half a pixel outside them (and the mirror maps
    # one frame exactly onto itself). Plain floats: numpy's clip and det cost more than the
    # arithmetic on these few values (BENCHMARKS.md, "Verifying while looking up").
    def box(points: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = points.min(axis=0).tolist(), points.max(axis=0).tolist()
        return ((min(max(x0, -0.5), width - 0.5) + 0.5) / width, (min(max(y0, -0.5), height - 0.5) + 0.5) / height,
                (min(max(x1, -0.5), width - 0.5) + 0.5) / width, (min(max(y1, -0.5), height - 0.5) + 0.5) / height)

    def corners(side: LocalFeatures) -> np.ndarray:
        return np.float32([[-0.5, -0.5], [side.width - 0.5, -0.5], [side.width - 0.5, side.height - 0.5],
                           [-0.5, side.height - 0.5]])
    in_second = box(_apply(matrix, corners(first)), second.width, second.height)
    back = cv2.invertAffineTransform(matrix)
    if flipped:     # back to the mirrored first image, then mirrored to the first
        back = (_mirror(first.width) @ np.vstack([back, [0, 0, 1]]))[:2]
    in_first = box(_apply(back, corners(second)), first.width, first.height)
    return Transform(tuple(map(tuple, matrix.tolist())), flipped, rotation, scale_factor, in_first, in_second)


# What a copy is of the picture it was compared with (Match.kinds; README, "Report formats").
COPY_KINDS = {
    "identical": "the same bytes",
    "same_pixels": "the same picture, pixel for pixel as far as the working size shows, in other bytes",
    "flipped": "mirrored left-right",
    "rotated": "turned",
    "resized": "scaled",
    "cropped": "shows part of the picture (transform.coverage_first is the share kept)",
    "extended": "shows more around the picture: a border, or the picture is a crop of it",
    "recoloured": "brightness, contrast or tone changed",
    "edited": "part of the picture differs: text, a logo, a retouch",
    "recompressed": "re-encoded, nothing else changed",
}
ROTATED_ABOVE = 0.5           # degrees
RESIZED_BEYOND = 0.02         # relative change of scale
CROPPED_BELOW = 0.97          # share of the frame in the common area
RECOLOURED_ABOVE = 8.0        # median grey-level difference of the aligned thumbnails
EDITED_BELOW = 0.8            # 25th percentile of the tiles' structure correlation; or an overlay (`overlaid`)


def _same_pixels(first: Candidate, second: Candidate) -> bool:
    """The same picture in other bytes, as far as the store can tell without the pixels: the
    same size, thumbnail, keypoints and descriptors."""
    return ((first.width, first.height) == (second.width, second.height)
            and np.array_equal(first.thumbnail, second.thumbnail)
            and np.array_equal(first.local.keypoints, second.local.keypoints)
            and np.array_equal(first.local.descriptors, second.local.descriptors))


def _kinds(first: Candidate, second: Candidate, transform: Transform, evidence: Evidence,
           tone: float, drawn_over: bool) -> tuple[str, ...]:
    if _same_pixels(first, second):
        return ("same_pixels",)
    rotation = abs((transform.rotation_degrees + 180.0) % 360.0 - 180.0)
    recoloured = tone > RECOLOURED_ABOVE
    # A recolouring (a gamma curve) strengthens the structure of some tiles more than others, as
    # strokes drawn over them would: then only the tiles' correlation tells an edit.
    drawn_over = drawn_over and not recoloured
    found = [kind for kind, present in (
        ("flipped", transform.flipped),
        ("rotated", rotation > ROTATED_ABOVE),
        ("resized", abs(transform.scale - 1.0) > RESIZED_BEYOND),
        ("cropped", _area(transform.crop_first) < CROPPED_BELOW),
        ("extended", _area(transform.crop_second) < CROPPED_BELOW),
        ("recoloured", recoloured),
        ("edited", evidence.photo_low < EDITED_BELOW or drawn_over)) if present]
    return tuple(found) or ("recompressed",)


# Canvas: what a copy adds around a picture (a border, a caption band, a letterbox, a viewer's
# or app's chrome) is panels of a few grey levels with strokes on them, and unlike the picture
# it frames. What lies around a crop in its original is more of the picture: even where it is
# as flat (space, a retina's black surround, the moon) its grey levels are the picture's. The
# part of a thumbnail outside the common area is canvas when its CANVAS_LEVELS most common
# grey levels (FLAT_LEVELS wide) hold CANVAS_SHARE of its pixels, and either its histogram
# (LIKENESS_BIN levels a bin) shares less than CANVAS_LIKENESS with the common area's, or the
# picture stops at the common area's edge: across it, from a strip outside to one inside, grey
# levels step CANVAS_STEP times as far as from that strip to the next one in (a white band
# above a pale sky is as white as the sky, but not as smooth across the edge). EDGE_MARGIN
# thumbnail pixels along the edge, which blend both sides, count for neither; strips are
# EDGE_STRIP pixels deep.
CANVAS_LEVELS = 3
CANVAS_SHARE = 0.7
CANVAS_LIKENESS = 0.5
CANVAS_STEP = 3.0
LIKENESS_BIN = 8
EDGE_MARGIN = 2
EDGE_STRIP = 3


def outside_is_canvas(thumbnail: np.ndarray, common_area: tuple[float, float, float, float]) -> bool:
    """Whether the part of the image (its grey thumbnail) outside `common_area` (fractions
    x0, y0, x1, y1, as Transform.crop_first/crop_second) is canvas rather than more picture;
    False when there is no such part to speak of."""
    height, width = thumbnail.shape[:2]
    x0, y0 = int(common_area[0] * width), int(common_area[1] * height)
    x1, y1 = math.ceil(common_area[2] * width), math.ceil(common_area[3] * height)
    near = np.zeros((height, width), bool)
    near[max(0, y0 - EDGE_MARGIN):y1 + EDGE_MARGIN, max(0, x0 - EDGE_MARGIN):x1 + EDGE_MARGIN] = True
    outside = thumbnail[~near].astype(np.intp)
    common = thumbnail[y0 + EDGE_MARGIN:y1 - EDGE_MARGIN, x0 + EDGE_MARGIN:x1 - EDGE_MARGIN].astype(np.intp)
    if outside.size == 0 or common.size == 0:
        return False
    levels = np.bincount(outside.ravel() // FLAT_LEVELS)
    if float(np.sort(levels)[-CANVAS_LEVELS:].sum()) < CANVAS_SHARE * outside.size:
        return False
    bins = 256 // LIKENESS_BIN
    around = np.bincount(outside.ravel() // LIKENESS_BIN, minlength=bins) / outside.size
    framed = np.bincount(common.ravel() // LIKENESS_BIN, minlength=bins) / common.size
    return (float(np.minimum(around, framed).sum()) < CANVAS_LIKENESS
            or _edge_step(thumbnail.astype(np.float32), x0, y0, x1, y1) >= CANVAS_STEP)


def _edge_step(pixels: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> float:
    """How far grey levels step across the edges of the box x0, y0, x1, y1 (pixels) that have
    room outside, against how far they go on from there inward (outside_is_canvas); 0 when no
    edge has room."""
    near, far = EDGE_MARGIN, EDGE_MARGIN + EDGE_STRIP
    # (strip outside, strip inside, the next strip in), each averaged across its depth: the top
    # and bottom edges, then the left and right ones (the same, on the transposed image)
    strips = []
    if x1 - x0 > 2 * far + EDGE_STRIP and y1 - y0 > 2 * far + EDGE_STRIP:
        for grid, (start, end), (across_start, across_end) in ((pixels, (y0, y1), (x0, x1)),
                                                               (pixels.T, (x0, x1), (y0, y1))):
            def strip(first: int, last: int, grid=grid, span=slice(across_start, across_end)) -> np.ndarray:
                return grid[first:last, span].mean(axis=0)
            if start >= far:
                strips.append((strip(start - far, start - near), strip(start + near, start + far),
                               strip(start + far, start + far + EDGE_STRIP)))
            if grid.shape[0] - end >= far:
                strips.append((strip(end + near, end + far), strip(end - far, end - near),
                               strip(end - far - EDGE_STRIP, end - far)))
    if not strips:
        return 0.0
    across = sum(float(np.abs(outside - inside).sum()) for outside, inside, _ in strips)
    inward = sum(float(np.abs(inside - deeper).sum()) for _, inside, deeper in strips)
    return across / max(inward, 1e-6)


# An overlay (a caption, a date stamp, a logo drawn over the picture) changes a few tiles, and
# adds strokes there over the picture's own: of two copies of one frame whose structure differs
# (tile correlation below EDITED_BELOW) in at most OVERLAY_TILES of the tiles, the one with
# OVERLAY_GAIN times the other's structure in those tiles carries the overlay. Only tiles where
# both show the picture count: where one is nearly flat (under OVERLAY_TEXTURE of its median
# tile's structure: a sky's re-encoding noise, a corner cut away) nothing was drawn over it.
# A blur or a re-encode changes every tile a little, not a few a lot.
OVERLAY_TILES = 0.5
OVERLAY_GAIN = 1.3
OVERLAY_TEXTURE = 0.5


def overlaid(first: np.ndarray, second: np.ndarray) -> int:
    """Which of two grey thumbnails of one frame (same picture, same framing; the second is
    resized to the first) has strokes drawn over the picture that the other lacks: 1 the first,
    2 the second, 0 neither, or no telling."""
    height, width = first.shape[:2]
    if (second.shape[1], second.shape[0]) != (width, height):
        second = cv2.resize(second, (width, height), interpolation=cv2.INTER_AREA)
    tiles = _tile_statistics(_structure(first.astype(np.float32)), _structure(second.astype(np.float32)),
                             np.ones((height, width), bool))
    return _drawn_over(tiles)


def _drawn_over(tiles: TileStatistics) -> int:
    """`overlaid` of the tiles of two aligned structure images (`_structure`): the tiles less
    than half valid take no part."""
    kept = tiles.count >= 0.5 * tiles.area
    if not kept.any():
        return 0
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.where(tiles.spread > 1e-6, tiles.covariance / tiles.spread, 1.0)
    textured = (kept & (tiles.mean_a >= OVERLAY_TEXTURE * np.median(tiles.mean_a[kept]))
                & (tiles.mean_b >= OVERLAY_TEXTURE * np.median(tiles.mean_b[kept])))
    differing = (correlation < EDITED_BELOW) & textured
    if not differing.any() or differing.sum() > OVERLAY_TILES * kept.sum():
        return 0
    energy_first, energy_second = float(tiles.sum_a[differing].sum()), float(tiles.sum_b[differing].sum())
    if energy_first > OVERLAY_GAIN * energy_second:
        return 1
    if energy_second > OVERLAY_GAIN * energy_first:
        return 2
    return 0


def _to_thumbnail(working_width: int, thumbnail: np.ndarray) -> np.ndarray:
    """Affine map from working-image pixel coordinates to thumbnail pixel coordinates."""
    s = thumbnail.shape[1] / working_width
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])


def _structure(pixels: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(pixels, (0, 0), 1.0)
    return cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))


def _pixel_agreement(first: Candidate, second: Candidate, matrix: np.ndarray, flipped: bool,
                     inliers_first: np.ndarray, inliers_second: np.ndarray) -> tuple[float, float, float, float, float, bool]:
    """(median, 25th percentile) of the tiles' structure correlation, the share of the textured
    tiles holding an inlier, the share of the common area the inliers span (their convex hull),
    the median grey-level difference, and whether one has strokes drawn over the picture that the
    other lacks (`overlaid`: a caption or a logo changes too few tiles to move the 25th
    percentile), of the two thumbnails aligned
    by the fit (`inliers_*`: the inliers' working coordinates, in the mirrored first image when
    `flipped`). The image that shows the common area larger is warped onto the other: enlarging
    the coarser one would blur it and blame the pair for it, and which image that is must not
    depend on which one is first."""
    source = first.thumbnail.astype(np.float32)
    if flipped:
        source = np.ascontiguousarray(source[:, ::-1])
    target = second.thumbnail.astype(np.float32)
    working = np.vstack([matrix, [0, 0, 1]])
    to_target = _to_thumbnail(second.local.width, target)
    from_source = np.linalg.inv(_to_thumbnail(first.local.width, source))
    warp = to_target @ working @ from_source
    inliers = _apply(to_target[:2], inliers_second)
    if abs(np.linalg.det(warp[:2, :2])) > 1:
        source, target, warp = target, source, np.linalg.inv(warp)
        inliers = _apply(np.linalg.inv(from_source)[:2], inliers_first)
    size = (target.shape[1], target.shape[0])
    warped = cv2.warpAffine(source, warp[:2], size, flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.ones(source.shape, np.uint8), warp[:2], size, flags=cv2.INTER_NEAREST)
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8)) > 0
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if len(rows) == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, False
    # The tiles divide the common area, not the frame: a border or a cropped-away margin would
    # leave fewer tiles, and an overlay on the rest would outweigh them.
    common = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    warped, target, valid = warped[common], target[common], valid[common]
    tiles = _tile_statistics(_structure(warped), _structure(target), valid)
    correlations = np.sort(_correlations(tiles))
    if len(correlations) == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, False
    # Content, not frame: two pictures in one frame (a viewer window, a slide or meme template,
    # a shop's white background) fit on the frame's text and lines, which are flat areas with
    # strokes on them, and their inliers stay there, off the pictures. A copy's inliers are all
    # over its textured tiles, an overlay's strokes aside.
    textured = _textured_tiles(warped, target, valid)
    height, width = valid.shape
    pixels = np.floor(inliers - (cols[0] - 0.5, rows[0] - 0.5)).astype(np.intp)    # the pixel each inlier is in
    pixels = pixels[(pixels >= 0).all(axis=1) & (pixels[:, 0] < width) & (pixels[:, 1] < height)]
    if textured.sum() >= MIN_TEXTURED_TILES and len(pixels):
        # The inliers' share on the textured tiles against those tiles' share of the area.
        on_content = textured.ravel()[_tile_index(height, width)[pixels[:, 1], pixels[:, 0]]].mean()
        content_inliers = float(min(1.0, on_content * textured.size / textured.sum()))
    else:
        content_inliers = 1.0       # no textured content to speak of: the fit is all there is
    # Another shot of a scene fits on one plane of it (a facade), a copy wherever its picture is.
    inlier_span = min(1.0, cv2.contourArea(cv2.convexHull(inliers.astype(np.float32))) / float(valid.sum()))
    tone = float(np.median(np.abs(warped[valid] - target[valid])))
    drawn_over = _drawn_over(tiles) != 0
    return _quantile(correlations, 0.5), _quantile(correlations, 0.25), content_inliers, inlier_span, tone, drawn_over


def _quantile(ordered: np.ndarray, q: float) -> float:
    """np.quantile(ordered, q) of sorted values: numpy's median and percentile spend more on
    the call than on a few values, and a comparison took three (BENCHMARKS.md, "Verifying while
    looking up")."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _textured_tiles(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """PHOTO_TILES x PHOTO_TILES: whether the tile is textured in `a` or `b` (grey thumbnails):
    no grey level (within FLAT_LEVELS) holds more than MAX_FLAT_SHARE of its valid pixels. A
    frame's panels, bands and backgrounds are one grey with strokes on it, even where text
    covers them; a photograph's texture spreads over many."""
    levels = 256 // FLAT_LEVELS + 1
    tile = _tile_index(*valid.shape)[valid]
    count = np.maximum(np.bincount(tile, minlength=PHOTO_TILES ** 2), 1)
    textured = np.zeros(PHOTO_TILES ** 2, bool)
    for pixels in (a, b):
        level = pixels[valid].astype(np.intp) // FLAT_LEVELS
        bins = np.bincount(tile * levels + level, minlength=PHOTO_TILES ** 2 * levels)
        textured |= bins.reshape(PHOTO_TILES ** 2, levels).max(axis=1) <= MAX_FLAT_SHARE * count
    return textured.reshape(PHOTO_TILES, PHOTO_TILES)


@functools.lru_cache(maxsize=4096)
def _tile_index(height: int, width: int) -> np.ndarray:
    """height x width: the number of the tile each pixel is in (row-major)."""
    index = _tile_band(height)[:, None] * PHOTO_TILES + _tile_band(width)[None, :]
    index.flags.writeable = False        # shared by every comparison
    return index


def _tile_correlations(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The correlation of `a` and `b` over the valid pixels of each of PHOTO_TILES x PHOTO_TILES
    tiles that are at least half valid (and not flat)."""
    return _correlations(_tile_statistics(a, b, valid))


def _correlations(tiles: TileStatistics) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = tiles.spread * tiles.count
        kept = (tiles.count >= 0.5 * tiles.area) & (spread > 1e-3)
        return (tiles.covariance * tiles.count / spread)[kept]


@dataclass(frozen=True)
class TileStatistics:
    """Per tile (PHOTO_TILES x PHOTO_TILES) of two aligned images, over their valid pixels."""
    count: np.ndarray         # valid pixels
    area: np.ndarray          # pixels
    sum_a: np.ndarray
    sum_b: np.ndarray
    mean_a: np.ndarray
    mean_b: np.ndarray
    covariance: np.ndarray
    spread: np.ndarray        # the product of the standard deviations


def _tile_statistics(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> TileStatistics:
    """Each sum over all tiles at once is two small matrix products, a band of tiles by the
    image by a band of tiles: faster than picking out the valid pixels and counting them per
    tile, and as exact (BENCHMARKS.md, "Verifying while looking up"). (Summed-area tables are
    faster still, but a dark tile's sums come out as differences of the whole image's.)"""
    height, width = valid.shape
    rows, cols = _tile_bands(height), _tile_bands(width)
    mask = valid.astype(np.float64)
    x, y = a * mask, b * mask
    count, sa, sb, saa, sbb, sab = (rows @ plane @ cols.T for plane in (mask, x, y, x * x, y * y, x * y))
    pixels = np.maximum(count, 1)
    mean_a, mean_b = sa / pixels, sb / pixels
    spread = np.sqrt(np.maximum(saa / pixels - mean_a * mean_a, 0) * np.maximum(sbb / pixels - mean_b * mean_b, 0))
    return TileStatistics(count, rows.sum(axis=1)[:, None] * cols.sum(axis=1)[None, :], sa, sb, mean_a, mean_b,
                          sab / pixels - mean_a * mean_b, spread)


@functools.lru_cache(maxsize=None)
def _tile_bands(length: int) -> np.ndarray:
    """PHOTO_TILES x length: row k is 1 over the pixels of the k-th band of tiles."""
    bands = (_tile_band(length)[None, :] == np.arange(PHOTO_TILES)[:, None]).astype(np.float64)
    bands.flags.writeable = False        # shared by every comparison
    return bands


@functools.lru_cache(maxsize=None)
def _tile_band(length: int) -> np.ndarray:
    """The band of tiles each of `length` pixels is in: band k starts at pixel
    k * length // PHOTO_TILES. The one tile grid of every per-tile measure (the correlations,
    the textured tiles, the tiles the inliers are on), so that they all speak of the same tiles."""
    edges = np.arange(1, PHOTO_TILES) * length // PHOTO_TILES
    band = np.searchsorted(edges, np.arange(length), side="right")
    band.flags.writeable = False         # shared by every comparison
    return band
