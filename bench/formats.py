"""Extraction time per file for HEIC, AVIF and camera raw next to a JPEG of the same picture.

    nice -n 5 .venv/bin/python bench/formats.py [PHOTOS]

PHOTOS defaults to the development photo set (CALIBRATION.md, "Data").
Pictures: the PICTURES largest photos of that set (1.8 to 8 MP; the largest are a
phone camera's 3264x2448 JPEGs). Each is written, from the same pixels, as
  jpeg              OpenCV, quality 90;
  heic              libheif (x265) through pillow-heif, quality 80;
  avif              libavif through Pillow, quality 70;
  raw, preview      a DNG of the picture's Bayer mosaic (tests/images.py, `dng_bytes`) with a
                    full-size JPEG preview (quality 90), as cameras write: read from the preview;
  raw, demosaic     the same DNG without a preview: LibRaw demosaics it (at half size).
Each file is extracted (lookalike's whole extract stage, `extract_file`) REPEATS times,
interleaved, in one process on one core; the best time counts. Also recorded: the similarity
of each encoding to the JPEG, and of the preview-read DNG to the demosaiced one, with the bits
their fingerprints differ by (CALIBRATION.md, "Camera raw: preview or demosaic"). The files are
written to bench/.data/formats once (encoding 8 MP HEICs takes minutes); delete it to write them
again. Writes bench/results/formats.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

from lookalike.extract import extract_file
from lookalike.match import compare
from lookalike.search import query_candidate
from lookalike.settings import ExtractionSettings
from runinfo import machine, revision
from testhelpers import images


PHOTOS = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/photos")
DATA = Path("bench/.data/formats")
OUT = Path("bench/results/formats.json")
PICTURES = 10
REPEATS = 3
SETTINGS = ExtractionSettings()


def encodings(rgb) -> dict[str, bytes]:
    jpeg = images.jpeg_bytes(rgb, 90)
    return {"jpeg": jpeg, "heic": images.heic_bytes(rgb, 80), "avif": images.avif_bytes(rgb, 70),
            "raw, preview": images.dng_bytes(rgb, jpeg), "raw, demosaic": images.dng_bytes(rgb)}


EXTENSION = {"jpeg": ".jpg", "heic": ".heic", "avif": ".avif", "raw, preview": "-preview.dng",
             "raw, demosaic": "-demosaic.dng"}


LOAD = os.getloadavg()


def main() -> None:
    cv2.setNumThreads(1)
    manifest = json.loads((PHOTOS / "manifest.json").read_text())
    chosen = sorted(manifest, key=lambda e: -e["width"] * e["height"])[:PICTURES]
    DATA.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Path]] = {}
    for entry in chosen:
        bgr = cv2.imread(str(PHOTOS / entry["file"]), cv2.IMREAD_COLOR)     # bench input, trusted
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        stem = Path(entry["file"]).stem
        paths = {kind: DATA / (stem + EXTENSION[kind]) for kind in EXTENSION}
        if not all(path.exists() for path in paths.values()):
            for kind, data in encodings(rgb).items():
                images.write_bytes(DATA, paths[kind].name, data)
            print(f"written {entry['file']}", file=sys.stderr)
        files[entry["file"]] = paths

    best: dict[tuple[str, str], float] = {}
    extracted = {}
    for _ in range(REPEATS):
        for name, kinds in files.items():
            for kind, path in kinds.items():
                started = time.perf_counter()
                extracted[name, kind] = extract_file(str(path), SETTINGS)
                elapsed = time.perf_counter() - started
                best[name, kind] = min(best.get((name, kind), elapsed), elapsed)

    def similarity(name: str, first: str, second: str) -> float:
        return compare(query_candidate(extracted[name, first]), query_candidate(extracted[name, second]),
                       SETTINGS.detector).similarity

    per_picture = []
    for entry in chosen:
        name = entry["file"]
        per_picture.append({
            "file": name, "width": entry["width"], "height": entry["height"],
            "bytes": {kind: path.stat().st_size for kind, path in files[name].items()},
            "extract_ms": {kind: round(best[name, kind] * 1000, 1) for kind in EXTENSION},
            "similarity_to_jpeg": {kind: round(similarity(name, kind, "jpeg"), 1) for kind in EXTENSION if kind != "jpeg"},
            "preview_vs_demosaic": round(similarity(name, "raw, preview", "raw, demosaic"), 1),
            "preview_vs_demosaic_fingerprint_bits": bin(extracted[name, "raw, preview"].fingerprint
                                                        ^ extracted[name, "raw, demosaic"].fingerprint).count("1"),
        })
    summary = {kind: {"median_extract_ms": round(statistics.median(p["extract_ms"][kind] for p in per_picture), 1),
                      "median_ratio_to_jpeg": round(statistics.median(p["extract_ms"][kind] / p["extract_ms"]["jpeg"]
                                                                      for p in per_picture), 2)}
               for kind in EXTENSION}
    import PIL
    import pillow_heif
    import rawpy
    from PIL import features
    versions = {"pillow": PIL.__version__, "libavif": features.version("avif"),
                "pillow-heif": pillow_heif.__version__, "libheif": pillow_heif.libheif_version(),
                "rawpy": rawpy.__version__, "libraw": ".".join(map(str, rawpy.libraw_version)),
                "opencv": cv2.__version__}
    result = {"machine": machine(), "revision": revision(), "versions": versions, "load_average_at_start": LOAD, "load_average_at_end": os.getloadavg(),
              "repeats": REPEATS,
              "opencv_threads": 1, "working_size": SETTINGS.working_size, "summary": summary,
              "preview_vs_demosaic_min": min(p["preview_vs_demosaic"] for p in per_picture),
              "preview_vs_demosaic_fingerprint_bits_max": max(p["preview_vs_demosaic_fingerprint_bits"]
                                                              for p in per_picture),
              "similarity_to_jpeg_min": {kind: min(p["similarity_to_jpeg"][kind] for p in per_picture)
                                         for kind in EXTENSION if kind != "jpeg"},
              "pictures": per_picture}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
