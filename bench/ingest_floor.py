"""Ingest against the decoder's floor: what extracting an image costs next to only decoding it.

    .venv/bin/python bench/ingest_floor.py

Files: every photo in images/ of the development photo set (CALIBRATION.md, "Data"): 20 JPEGs
and 72 PNGs, 0.2 to 3.9 MP; and six large JPEGs made from the three largest of them: scaled to
12 MP (4000x3000) and 24 MP (6000x4000) with film-like grain (Gaussian, sigma 4) so that they
hold as much entropy-coded detail as a camera's file rather than the smooth gradients of an
upscale; quality 92.

For each file, in one process on one core, interleaved and best of REPEATS:
  extract    lookalike's whole extract stage (extract_file: read, hash, decode, AKAZE,
             fingerprint, thumbnail);
  full       read the file and decode it to greyscale at full size;
  reduced    read it and decode it as lookalike does: a JPEG at the largest DCT reduction (1/2,
             1/4, 1/8) that still covers the working size; other formats have no such shortcut.
Entropy decoding cannot be skipped, so `reduced` is the floor. Writes bench/results/ingest_floor.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lookalike.extract import extract_file
from lookalike.imaging import decode, formats
from lookalike.settings import ExtractionSettings
from runinfo import machine, revision

PHOTOS = Path("../shared/photos/images")
LARGE = Path("bench/.data/large")
OUT = Path("bench/results/ingest_floor.json")
REPEATS = 3
SIZES = {"12mp": (4000, 3000), "24mp": (6000, 4000)}


def make_large(photos: list[Path]) -> list[Path]:
    LARGE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261121)
    made = []
    largest = sorted(photos, key=lambda p: -np.prod(cv2.imread(str(p)).shape[:2]))[:3]
    for photo in largest:
        pixels = cv2.imread(str(photo))
        if pixels.shape[0] > pixels.shape[1]:
            pixels = np.ascontiguousarray(np.rot90(pixels))
        for label, size in SIZES.items():
            target = LARGE / f"{photo.stem}-{label}.jpg"
            if not target.exists():
                big = cv2.resize(pixels, size, interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
                big += rng.normal(0, 4, big.shape).astype(np.float32)
                cv2.imwrite(str(target), np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
            made.append(target)
    return made


def decode_only(path: Path, reduced: bool, working_size: int) -> None:
    data = path.read_bytes()
    flag = cv2.IMREAD_GRAYSCALE
    if reduced:
        header = formats.sniff(data[:formats.HEADER_PROBE_BYTES])
        flag = decode._flag(header, working_size, cv2.IMREAD_GRAYSCALE, decode._REDUCED_GREY)
    cv2.imdecode(np.frombuffer(data, np.uint8), flag)


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure(files: list[Path], settings: ExtractionSettings) -> dict:
    best = {name: [float("inf")] * len(files) for name in ("extract", "full", "reduced")}
    for _ in range(REPEATS):
        for i, path in enumerate(files):
            runs = {"extract": lambda: extract_file(str(path), settings),
                    "full": lambda: decode_only(path, False, settings.working_size),
                    "reduced": lambda: decode_only(path, True, settings.working_size)}
            for name, work in runs.items():
                best[name][i] = min(best[name][i], timed(work))
    total = {name: sum(values) for name, values in best.items()}
    headers = [formats.sniff(p.read_bytes()[:formats.HEADER_PROBE_BYTES]) for p in files]
    megapixels = sum(h.width * h.height for h in headers) / 1e6
    return {"files": len(files), "megapixels": round(float(megapixels), 1),
            "ms_per_image": {name: round(1000 * t / len(files), 1) for name, t in total.items()},
            "extract_over_reduced_decode": round(total["extract"] / total["reduced"], 2),
            "extract_over_full_decode": round(total["extract"] / total["full"], 2),
            "images_per_second_per_core": round(len(files) / total["extract"], 1)}


def main() -> None:
    cv2.setNumThreads(1)                  # one core: the daemon runs one extraction per worker
    photos = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    large = make_large(photos)
    settings = ExtractionSettings()
    results = {"machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
               "repeats": REPEATS, "opencv": cv2.__version__,
               "sets": {"shared photos (JPEG)": measure([p for p in photos if p.suffix == ".jpg"], settings),
                        "shared photos (PNG)": measure([p for p in photos if p.suffix == ".png"], settings),
                        "12 MP JPEG": measure([p for p in large if "12mp" in p.name], settings),
                        "24 MP JPEG": measure([p for p in large if "24mp" in p.name], settings)}}
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["sets"], indent=1))


if __name__ == "__main__":
    main()
