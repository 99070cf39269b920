"""End-to-end accuracy of `lookalike duplicates` on the calibration dataset.

    python bench/dataset.py && python bench/evaluate.py [--threshold T] [--workers 2] [--working-size PX] [--out F]

Builds a fresh context from every file of bench/.data/calibration (extraction in worker
processes), runs the same duplicate detection as the CLI (index candidates -> verification ->
connected components) and scores the groups pairwise against truth.json: a pair of images is
predicted duplicate when they share a group, and truly duplicate when they belong to one cluster
(an original and its copies). The ISO pairs (same tripod and framing) are left out of the
scores and reported on their own. Writes bench/results/evaluation.json and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from lookalike.duplicates import find_groups
from lookalike.extract import extract_file
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext
from runinfo import machine, revision


def _extract(path: str, settings: ExtractionSettings):
    return extract_file(path, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    parser.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--working-size", type=int, default=ExtractionSettings.working_size,
                        help="longest side AKAZE works at (the default is the default's)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/evaluation.json"))
    args = parser.parse_args()
    settings = ExtractionSettings(working_size=args.working_size)
    data = args.data.resolve()
    truth = json.loads((data / "truth.json").read_text())
    files = sorted(str(p) for p in data.rglob("*") if p.is_file() and p.name != "truth.json")

    with tempfile.TemporaryDirectory() as state, SearchContext.create(Path(state) / "context", settings) as context:
        started = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            for features in pool.map(partial(_extract, settings=settings), files, chunksize=8):
                context.upsert(features)
        ingest = time.perf_counter() - started
        started = time.perf_counter()
        groups = find_groups(context, args.threshold)
        detect = time.perf_counter() - started
        size = context.info()["size_bytes"]

    relative = {str(Path(f).relative_to(data)) for f in files}
    predicted = set()
    for group in groups:
        paths = sorted(str(Path(m.image.path).relative_to(data)) for m in group.members)
        predicted.update(itertools.combinations(paths, 2))

    cluster_of, kind_of = {}, {}
    for index, cluster in enumerate(truth["clusters"]):
        cluster_of[cluster["original"]] = index
        for copy, kind in cluster["copies"].items():
            cluster_of[copy] = index
            kind_of[copy] = "labelled" if cluster.get("labelled") else kind
    actual = {tuple(sorted(p)) for c in truth["clusters"]
              for p in itertools.combinations([c["original"], *c["copies"]], 2)}
    excluded = {tuple(sorted(p)) for group in truth["excluded_pairs"] for p in itertools.combinations(group, 2)}
    scored = predicted - excluded
    true_positives = len(scored & actual)
    precision = true_positives / max(len(scored), 1)
    recall = true_positives / max(len(actual), 1)

    per_kind = {}
    for cluster in truth["clusters"]:
        for copy in cluster["copies"]:
            pair = tuple(sorted((cluster["original"], copy)))
            found = per_kind.setdefault(kind_of[copy], [0, 0])
            found[0] += pair in predicted
            found[1] += 1
    scene_violations = []
    for group in truth["same_scene"]:
        for pair in itertools.combinations(sorted(group["files"]), 2):
            if pair in predicted and pair not in excluded:
                scene_violations.append(pair)
    near_duplicate_pairs = [tuple(sorted(p)) for c in truth["clusters"] if c.get("labelled")
                            for p in itertools.combinations([c["original"], *c["copies"]], 2)]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "lookalike": revision(),
        "load_average_at_end": round(os.getloadavg()[0], 1),
        "threshold": args.threshold,
        "working_size": settings.working_size,
        "files": len(relative),
        "pairwise": {"precision": round(precision, 4), "recall": round(recall, 4),
                     "predicted_pairs": len(scored), "true_pairs": len(actual), "true_positives": true_positives},
        "recall_original_to_copy_by_kind": {k: {"found": f, "of": n, "recall": round(f / n, 3)}
                                            for k, (f, n) in sorted(per_kind.items())},
        "near_duplicates_found": sum(p in predicted for p in near_duplicate_pairs),
        "near_duplicates_pairs": len(near_duplicate_pairs),
        "same_scene_pairs_grouped": scene_violations,
        "iso_pairs_grouped": sorted(p for p in excluded if p in predicted),
        "false_pairs": sorted(scored - actual)[:20],
        "seconds": {"ingest": round(ingest, 1), "duplicates": round(detect, 1)},
        "context_bytes": size,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "false_pairs"}, indent=1))


if __name__ == "__main__":
    main()
