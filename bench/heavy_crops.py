"""Does `similar` list the original first when asked with a heavy crop of it?

    python bench/heavy_crops.py [--data bench/.data/calibration] [--kind crop_heavy] [--scale S] [--out F]

A context holds the originals of the dataset (bench/dataset.py); each copy of --kind (by
default the centre crops keeping 36 % of the area at JPEG quality 60) is the query. Counts the
queries whose first result is their original, lists every result that is not the query's
original (another photo: a false hit), and lists the missed queries with what was found and,
for the descriptor index, how many of the query's descriptors share an uncrowded bucket with
the original and at most with any other image (a candidate needs index.MIN_SHARED_DESCRIPTORS).
With --kind hard_negatives the context holds the hard negatives, each of them the query: the
same-scene photos (other shots of one scene) and the framed files (photos in a frame that other
photos are shown in too) with the photos they show; a result is a false hit unless the dataset
lists the pair as neither copy nor stranger (its excluded pairs: a photo and its framed copy,
the ISO pairs shot from a tripod).
--scale replaces search.CROP_LOOKUP_SCALE, the scale of the second look-up, to compare choices.
Writes bench/results/heavy_crops.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from lookalike import search
from lookalike.extract import extract_file, query_file
from lookalike.imaging.features import mirrored
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext, index, inspection
from runinfo import machine, revision

SIMILAR_THRESHOLD = 20.0       # the CLI's default
HARD_NEGATIVES = "hard_negatives"      # a --kind: see the docstring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    parser.add_argument("--kind", default="crop_heavy", help=f"a copy kind, or {HARD_NEGATIVES}")
    parser.add_argument("--scale", type=float, default=search.CROP_LOOKUP_SCALE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/heavy_crops.json"))
    args = parser.parse_args()
    search.CROP_LOOKUP_SCALE = args.scale
    data = args.data.resolve()
    truth = json.loads((data / "truth.json").read_text())
    allowed = {frozenset(str(data / name) for name in pair) for pair in truth.get("excluded_pairs", [])}
    if args.kind == HARD_NEGATIVES:
        names = [name for group in truth.get("same_scene", []) for name in group["files"]]
        names += [name for framed in truth.get("framed", []) for name in (framed["file"], *framed["shows"])]
        queries = dict.fromkeys((str(data / name) for name in names), None)
        stored = list(queries)
    else:
        queries = {str(data / copy): str(data / cluster["original"]) for cluster in truth["clusters"]
                   for copy, kind in cluster["copies"].items() if kind == args.kind}
        stored = sorted(set(queries.values()))
    settings = ExtractionSettings()
    with tempfile.TemporaryDirectory() as state, SearchContext.create(Path(state) / "context", settings) as context, \
            ProcessPoolExecutor(args.workers) as pool:
        context.upsert_many(list(pool.map(partial(extract_file, settings=settings), stored, chunksize=4)))
        first, missed, others, seconds = 0, [], [], []
        for query, looked_up in zip(queries, pool.map(partial(query_file, settings=settings), queries, chunksize=4)):
            started = time.perf_counter()
            hits = search.similar(context, looked_up, SIMILAR_THRESHOLD, None)
            seconds.append(time.perf_counter() - started)
            expected = queries[query]
            others += [(str(Path(query).relative_to(data)), str(Path(hit.image.path).relative_to(data)),
                        round(hit.match.similarity, 1)) for hit in hits
                       if hit.image.path != expected and frozenset((query, hit.image.path)) not in allowed]
            if hits and hits[0].image.path == expected:
                first += 1
            elif expected is not None:
                shared = _shared_descriptors(context, looked_up.features.local)
                original = context.image(expected).num
                missed.append({"query": str(Path(query).relative_to(data)),
                               "found": [(str(Path(h.image.path).relative_to(data)), round(h.match.similarity, 1))
                                         for h in hits[:3]],
                               "descriptors_shared_with_original": shared.pop(original, 0),
                               "most_shared_by_another_image": max(shared.values(), default=0)})
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "lookalike": revision(),
              "data": str(args.data), "kind": args.kind, "queries": len(queries), "original_first": first,
              "min_shared_descriptors": index.MIN_SHARED_DESCRIPTORS, "crop_lookup_scale": args.scale,
              "share": round(first / max(len(queries), 1), 3),
              "similar_ms_median": round(1000 * sorted(seconds)[len(seconds) // 2], 1), "missed": missed,
              "other_results": others}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _shared_descriptors(context: SearchContext, local) -> dict[int, int]:
    """image number -> the query's descriptors sharing an uncrowded bucket with it, in the better
    of the two orientations a look-up tries."""
    best: dict[int, int] = {}
    with inspection.lsh_postings(context) as cursor:
        for side in (local, mirrored(local, context.settings.detector)):
            nums, shared, _ = index.shared_buckets(cursor, inspection.hasher(context), side.descriptors)
            for num, count in zip(nums.tolist(), shared.tolist()):
                best[num] = max(best.get(num, 0), count)
    return best


if __name__ == "__main__":
    main()
