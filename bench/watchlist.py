"""The watchlist check against extraction: what checking one newly stored image against 1,000
tag references costs next to extracting it.

    nice -n 5 .venv/bin/python bench/watchlist.py [--photos PHOTOS] [--references 1000]
        [--brute 5] [--out bench/results/watchlist.json]

PHOTOS (default: the development photo set, CALIBRATION.md "Data"): its `images/` photos, sorted,
are split in two halves. The references are crops of the first half's photos (each crop a
different window, 55-95 % of each side; REFERENCES of them, in 10 tags), stored as tags of a
fresh context in a temporary folder. The queries are the second half's photos as they are (no
reference matches them) and, for each of the first half's photos, a copy of one of its
references, scaled to 80 % and saved as JPEG quality 85 (it must raise an alert).

Per query, on one thread as in a worker: extract_file (timed), the image stored (not timed),
then watchlist.check against every tag (timed: the look-up in the references' index and the
comparisons it proposes; how many it proposes is recorded too). For --brute queries of each kind it also times comparing the image
with every reference outright, the method the index replaces. Prints a table, writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runinfo import machine, revision  # noqa: E402

from lookalike.extract import extract_file  # noqa: E402
from lookalike.match import compare  # noqa: E402
from lookalike.search import query_candidate  # noqa: E402
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD  # noqa: E402
from lookalike.store import SearchContext  # noqa: E402
from lookalike.store.changes import PutTag  # noqa: E402
from lookalike.store.tags import Reference  # noqa: E402
from lookalike.watchlist import check  # noqa: E402

TAGS = 10
SEED = 20261206


def crops(pixels: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    height, width = pixels.shape[:2]
    found = []
    for _ in range(count):
        w, h = int(width * rng.uniform(0.55, 0.95)), int(height * rng.uniform(0.55, 0.95))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        found.append(pixels[y:y + h, x:x + w])
    return found


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "mean": round(statistics.fmean(ordered), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--references", type=int, default=1000)
    parser.add_argument("--brute", type=int, default=5, help="queries of each kind also compared with every reference")
    parser.add_argument("--out", type=Path, default=Path("bench/results/watchlist.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(SEED)
    photos = sorted(p for p in (args.photos / "images").rglob("*") if p.is_file())
    sources, held_out = photos[: len(photos) // 2], photos[len(photos) // 2:]
    per_photo = -(-args.references // len(sources))

    with tempfile.TemporaryDirectory(prefix="lookalike-watchlist-") as scratch:
        scratch = Path(scratch)
        files = scratch / "files"
        files.mkdir()
        context = SearchContext.create(scratch / "context")
        references, copies = [], []
        for i, photo in enumerate(sources):
            pixels = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            for j, crop in enumerate(crops(pixels, per_photo, rng)):
                path = files / f"ref-{i:03d}-{j:02d}.png"
                cv2.imwrite(str(path), crop)
                references.append(path)
                if j == 0:
                    copy = files / f"copy-{i:03d}.jpg"
                    scaled = cv2.resize(crop, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
                    cv2.imwrite(str(copy), scaled, [cv2.IMWRITE_JPEG_QUALITY, 85])
                    copies.append(copy)
        references = references[: args.references]
        started = time.perf_counter()
        extracted = [Reference.of_file(extract_file(str(path), context.settings)) for path in references]
        size = -(-len(extracted) // TAGS)
        for t in range(TAGS):
            context.commit([PutTag(f"tag{t}", tuple(extracted[t * size:(t + 1) * size]))])
        print(f"{len(extracted)} references in {TAGS} tags stored in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)

        results = {}
        for kind, queries in (("no match (held-out photos)", held_out), ("a copy of a reference", copies)):
            extract_ms, check_ms, brute_ms, alerted, proposed = [], [], [], 0, []
            for n, path in enumerate(queries):
                began = time.perf_counter()
                features = extract_file(str(path), context.settings)
                extract_ms.append(1000 * (time.perf_counter() - began))
                num = context.upsert(features)
                began = time.perf_counter()
                alerts = check(context, num, DEFAULT_DUPLICATE_THRESHOLD)
                check_ms.append(1000 * (time.perf_counter() - began))
                alerted += bool(alerts)
                proposed.append(len(context.reference_candidates(features.content_hash, features.fingerprint,
                                                                 features.local)))
                if n < args.brute:
                    query = query_candidate(features)
                    began = time.perf_counter()
                    for reference in context.references([f"tag{t}" for t in range(TAGS)]):
                        compare(reference.candidate, query, context.settings.detector)
                    brute_ms.append(1000 * (time.perf_counter() - began))
            results[kind] = {"queries": len(queries), "alerted": alerted, "extract_ms": percentiles(extract_ms),
                             "check_ms": percentiles(check_ms),
                             "references_proposed": {"p50": statistics.median(proposed), "max": max(proposed)},
                             "check_to_extract_p50": round(statistics.median(check_ms) / statistics.median(extract_ms), 3),
                             "brute_force_ms": percentiles(brute_ms) if brute_ms else None,
                             "brute_force_queries": len(brute_ms)}
        context.close()

    document = {"benchmark": "watchlist", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                "revision": revision(), "references": len(extracted), "tags": TAGS,
                "threshold": DEFAULT_DUPLICATE_THRESHOLD,
                "command": f"nice -n 5 .venv/bin/python bench/watchlist.py --photos PHOTOS --references "
                           f"{args.references} --brute {args.brute}",
                "results": results}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print("| queries | n | alerted | extract p50 / p95 ms | check p50 / p95 ms | check/extract (p50) | "
          "compare with every reference, ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, r in results.items():
        brute = r["brute_force_ms"]
        print(f"| {kind} | {r['queries']} | {r['alerted']} | {r['extract_ms']['p50']} / {r['extract_ms']['p95']} | "
              f"{r['check_ms']['p50']} / {r['check_ms']['p95']} | {r['check_to_extract_p50']} | "
              f"{brute['p50'] if brute else '-'} (p50 of {r['brute_force_queries']}) |")


if __name__ == "__main__":
    main()
