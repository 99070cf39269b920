"""Is the original kept? The keeper rules (keeper.py, match.outside_is_canvas, match.overlaid) on
real photos they were not set on.

    nice -n 5 .venv/bin/python bench/keeper_rules.py [--photos PHOTOS] [--limit N]

The rules' constants were set on scikit-image's photos (tests/test_keeper.py); this run holds
those out and takes every other photo of PHOTOS/images (CALIBRATION.md, "Data"). Each photo, as
its file is (with whatever EXIF it has), and thirteen copies people make of it, written without
metadata: the test's twelve (resized, quality 15, cropped, rotated, mirrored, captioned,
bordered, caption band, viewer screenshot, 256-colour GIF, palette PNG, ellipse PNG) and a
caption drawn over the picture. Every copy's path sorts before the original's. The copies are
written after the original, as copies are made; with --copies-older their modification time is
set a day before the original's, so that only the pictures and the original's own metadata can
keep it (a mirror image then loses: nothing in the pixels tells it from the photo). One search
context, `find_groups` at the default threshold; per family, who is kept and why. Writes
bench/results/keeper_rules.json (keeper_rules-copies-older.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from lookalike.duplicates import find_groups
from lookalike.extract import extract_file
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext
from runinfo import PROJECT, machine, revision
from testhelpers import images

RESULTS = PROJECT / "bench" / "results" / "keeper_rules.json"

LONGEST = 1000          # copies are made from the photo at most this large (speed)


# the test's copies (tests/test_keeper.py), and a caption drawn over the picture
COPIES = {**images.PHOTO_COPIES,
          "caption_over": lambda folder, name, p: images.write_jpeg(folder, name + ".jpg", images.caption_over(p))}


def _pixels(path: Path) -> np.ndarray | None:
    decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        return None
    scale = min(1.0, LONGEST / max(decoded.shape[:2]))
    if scale < 1.0:
        decoded = cv2.resize(decoded, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--limit", type=int, default=None, help="the first N photos only")
    parser.add_argument("--copies-older", action="store_true", help="date every copy a day before its original")
    args = parser.parse_args()
    manifest = json.loads((args.photos / "manifest.json").read_text())
    chosen = [entry["file"] for entry in manifest
              if entry["set"] == "images" and not entry["file"].startswith("images/skimage/")][:args.limit]
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="keeper-rules-"))
    try:
        originals, files = {}, []
        for number, name in enumerate(chosen):
            pixels = _pixels(args.photos / name)
            if pixels is None:
                continue
            family = work / f"f{number:03d}"
            family.mkdir()
            original = family / ("original" + Path(name).suffix.lower())
            shutil.copyfile(args.photos / name, original)
            stamp = os.stat(original).st_mtime_ns
            originals[str(original)] = name
            files.append(original)
            for kind, write in COPIES.items():
                copy = write(family, f"copy-{kind}", pixels)
                dated = stamp + (-86_400 if args.copies_older else 60) * 10**9
                os.utime(copy, ns=(dated, dated))
                files.append(copy)
        settings = ExtractionSettings()
        with ThreadPoolExecutor() as pool:
            extracted = list(pool.map(lambda path: extract_file(str(path), settings), files))
        with SearchContext.create(work / "context") as context:
            context.upsert_many(extracted)
            groups = find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)
        group_of = {member.image.path: group for group in groups for member in group.members}
        kept, reasons, wrong, ungrouped = 0, Counter(), {}, []
        for original, name in originals.items():
            group = group_of.get(original)
            if group is None:
                ungrouped.append(name)
                continue
            if group.keeper.path == original:
                kept += 1
                reasons[group.keeper_reason] += 1
            else:
                wrong[name] = [Path(group.keeper.path).stem, group.keeper_reason]
        grouped = len(originals) - len(ungrouped)
        result = {
            "benchmark": "keeper_rules", "revision": revision(), "machine": machine(),
            "photos": str(args.photos), "families": len(originals), "copies_per_family": len(COPIES),
            "copies": "a day older than the original" if args.copies_older else "a minute newer than the original",
            "threshold": DEFAULT_DUPLICATE_THRESHOLD,
            "families_grouped": grouped, "original_kept": kept,
            "original_kept_share": round(kept / grouped, 4) if grouped else None,
            "keeper_reasons_when_kept": dict(reasons.most_common()),
            "copy_kept_instead": wrong, "original_in_no_group": ungrouped,
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    target = RESULTS.with_name("keeper_rules-copies-older.json") if args.copies_older else RESULTS
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
