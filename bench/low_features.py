"""Low-feature copies of the calibration photos: dark, washed-out, and 25:1 panoramas.

    .venv/bin/python bench/low_features.py [--method floor|stretch|clahe|none] [--min-grey-range N] [--out F]

For every photo of bench/.data/calibration/photos/images (bench/dataset.py):
  dark        the photo at x0.12 brightness, and its half-size copy;
  washed_out  the photo at a quarter of its contrast lifted to 190-253, and its half-size copy;
  smooth      the photo blurred (sigma 1/20 of its longest side), and its half-size copy; and
              the smooth photo against the previous photo's (different pictures: must not match);
and panoramas: the photos, 800 pixels high, side by side in strips of 20000 x 800 (25:1), each
with its 5000 x 200 copy. Each pair is compared both ways (match.compare, the score the
duplicates pass uses); a pair is found when the lower score reaches the duplicate threshold
(found_one_way: the higher one).
The edited photo against its original is scored too. Also counts the photos (unedited) whose
keypoints fall below the few-features limit, and gives the spread of their grey ranges
(features.stretched_contrast's measure: MIN_GREY_RANGE is set below nearly all of them).

--method picks the contrast normalisation before detection: floor (lookalike's: stretch a
range narrower than --min-grey-range to it), stretch (every photo to 0-255), clahe (OpenCV's
CLAHE, clip 2, 8x8 tiles), none. Writes bench/results/low_features-METHOD.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from lookalike.extract import extract_file, few_features
from lookalike.imaging import features
from lookalike.match import Candidate, compare
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from runinfo import machine, revision

SETTINGS = ExtractionSettings()
EDITS = {
    "dark": lambda p: (p.astype(np.float32) * 0.12).astype(np.uint8),
    "washed_out": lambda p: (p.astype(np.float32) * 0.25 + 190).astype(np.uint8),
    # Out of focus beyond any keypoint: found only through the few-features path (pixels).
    "smooth": lambda p: cv2.GaussianBlur(p, (0, 0), max(p.shape[:2]) / 20),
}


def _full_stretch(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, [100 * features.STRETCH_CLIPPED, 100 * (1 - features.STRETCH_CLIPPED)])
    if high <= low:
        return pixels
    return np.clip((pixels.astype(np.float32) - low) * (255 / (high - low)) + 0.5, 0, 255).astype(np.uint8)


METHODS = {
    "floor": None,
    "stretch": _full_stretch,
    "clahe": lambda pixels: cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(pixels),
    "none": lambda pixels: pixels,
}


def _candidate(path: Path):
    f = extract_file(str(path), SETTINGS)
    return f, Candidate(f.local, f.thumbnail, f.content_hash, f.width, f.height)


def _score(first: Path, second: Path) -> dict:
    (fa, a), (fb, b) = _candidate(first), _candidate(second)
    scores = (compare(a, b, SETTINGS.detector).similarity, compare(b, a, SETTINGS.detector).similarity)
    return {"keypoints": [fa.local.count, fb.local.count], "similarity": [round(s, 1) for s in scores],
            "found": min(scores) >= DEFAULT_DUPLICATE_THRESHOLD,
            "found_one_way": max(scores) >= DEFAULT_DUPLICATE_THRESHOLD}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("bench/.data/calibration/photos/images"))
    parser.add_argument("--method", choices=list(METHODS), default="floor")
    parser.add_argument("--min-grey-range", type=int, default=features.MIN_GREY_RANGE)
    parser.add_argument("--scratch", type=Path, default=Path("bench/.data/low_features"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    features.MIN_GREY_RANGE = args.min_grey_range
    if METHODS[args.method] is not None:
        features.stretched_contrast = METHODS[args.method]
    args.scratch.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in args.photos.rglob("*") if p.is_file())
    cv2.setNumThreads(1)
    started = time.perf_counter()

    results: dict = {kind: {"half_size": [], "original": []} for kind in EDITS}
    few, grey_ranges, different = [], [], []
    previous_smooth = None
    strip_tiles: list[np.ndarray] = []
    for photo in photos:
        pixels = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if pixels is None:
            continue
        original = args.scratch / "original.png"
        cv2.imwrite(str(original), pixels)
        if few_features(extract_file(str(original), SETTINGS).local.count):
            few.append(str(photo.relative_to(args.photos)))
        grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
        low, high = np.percentile(grey, [100 * features.STRETCH_CLIPPED, 100 * (1 - features.STRETCH_CLIPPED)])
        grey_ranges.append(float(high - low))
        height, width = pixels.shape[:2]
        for kind, edit in EDITS.items():
            edited = edit(pixels)
            full, half = args.scratch / f"{kind}.jpg", args.scratch / f"{kind}-half.jpg"
            cv2.imwrite(str(full), edited, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(half), cv2.resize(edited, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            results[kind]["half_size"].append({"photo": photo.name, **_score(full, half)})
            results[kind]["original"].append({"photo": photo.name, **_score(original, full)})
        smooth = args.scratch / "smooth.jpg"
        if previous_smooth is not None:
            different.append({"photo": photo.name, **_score(previous_smooth, smooth)})
        previous_smooth = args.scratch / "smooth-previous.jpg"
        smooth.replace(previous_smooth)
        strip_tiles.append(cv2.resize(pixels, (max(1, round(width * 800 / height)), 800), interpolation=cv2.INTER_AREA))

    panoramas = []
    strip = np.hstack(strip_tiles)
    for number, left in enumerate(range(0, strip.shape[1] - 20000 + 1, 20000)):
        wide = np.ascontiguousarray(strip[:, left:left + 20000])
        full, small = args.scratch / "panorama.jpg", args.scratch / "panorama-small.jpg"
        cv2.imwrite(str(full), wide, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(small), cv2.resize(wide, (5000, 200), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        panoramas.append({"panorama": number, **_score(full, small)})

    def summary(rows: list[dict]) -> dict:
        return {"found": sum(r["found"] for r in rows), "found_one_way": sum(r["found_one_way"] for r in rows),
                "of": len(rows),
                "median_keypoints": float(np.median([min(r["keypoints"]) for r in rows])) if rows else None}

    document = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "lookalike": revision(),
        "method": args.method, "min_grey_range": args.min_grey_range if args.method == "floor" else None,
        "threshold": DEFAULT_DUPLICATE_THRESHOLD, "photos": len(photos),
        "photos_with_few_features": few,
        "grey_range_percentiles": dict(zip(("min", "p5", "p10", "p25", "median"),
                                           np.percentile(grey_ranges, [0, 5, 10, 25, 50]).round(1).tolist())),
        "photos_below_min_grey_range": int(sum(r < features.MIN_GREY_RANGE for r in grey_ranges)),
        "summary": {**{f"{kind}_vs_{which}": summary(rows) for kind, by in results.items() for which, rows in by.items()},
                    "panorama_vs_quarter_size": summary(panoramas),
                    "smooth_vs_previous_photos_smooth": summary(different)},
        "seconds": round(time.perf_counter() - started, 1),
        "pairs": {**results, "panoramas": panoramas, "smooth_different_photos": different},
    }
    out = args.out or Path(f"bench/results/low_features-{args.method}.json")
    out.write_text(json.dumps(document, indent=1))
    print(json.dumps({k: document[k] for k in ("method", "min_grey_range", "photos_with_few_features",
                                               "grey_range_percentiles", "photos_below_min_grey_range", "summary")}, indent=1))


if __name__ == "__main__":
    main()
