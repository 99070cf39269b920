"""The extract stage alone, one file at a time on one core: what one image costs to extract.

    .venv/bin/python bench/extract_time.py [FOLDER]

Runs extract_file (read, hash, decode, contrast stretch, AKAZE, fingerprint, thumbnail) on every
file under FOLDER (default: the calibration photos, bench/.data/calibration/photos/images) once,
with OpenCV on one thread as in a worker, and prints the files, seconds and ms per image. Time it
from outside, side by side with another revision, to compare extractions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from lookalike.extract import extract_file
from lookalike.settings import ExtractionSettings


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.data/calibration/photos/images")
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    cv2.setNumThreads(1)
    settings = ExtractionSettings()
    started = time.perf_counter()
    for path in files:
        extract_file(path, settings)
    seconds = time.perf_counter() - started
    print(f"{len(files)} files, {seconds:.2f} s, {1000 * seconds / len(files):.1f} ms per image")


if __name__ == "__main__":
    main()
