"""End-to-end accuracy of `lookalike duplicates` on the calibration or the held-out dataset.

    python bench/dataset.py && python bench/evaluate.py [--threshold T] [--workers 2] [--working-size PX] [--out F]
    python bench/dataset.py --held-out && python bench/evaluate.py --data bench/.data/held-out --out bench/results/evaluation-held-out.json

Builds a fresh context from every file of bench/.data/calibration (extraction in worker
processes), runs the same duplicate detection as the CLI (index candidates -> verification ->
connected components) and scores the groups pairwise against truth.json: a pair of images is
predicted duplicate when they share a group, and truly duplicate when they belong to one cluster
(an original and its copies). The ISO pairs (same tripod and framing) and each framed file with
the picture it shows are left out of the scores; the ISO pairs are reported on their own. Also
checked: hard negatives (two framed files of one frame: different pictures) grouped, groups
holding two clusters, members below the threshold against their keeper, and `compare` both ways
round on a seeded sample of pairs. Writes bench/results/evaluation.json and prints the table;
the digest of every grouped pair tells whether two runs (two revisions) grouped the same pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from lookalike.duplicates import find_groups
from lookalike.errors import NotFoundError
from lookalike.extract import extract_file
from lookalike.match import compare
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
        asymmetry = _both_ways(context, data, truth)

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
    hard_negatives: dict[str, list] = {}
    for kind in truth.get("frame_kinds", []):
        framed = sorted(f["file"] for f in truth["framed"] if f["frame"] == kind)
        hard_negatives[kind] = [pair for pair in itertools.combinations(framed, 2) if pair in predicted]
    mixed_groups, below_threshold = [], []
    for group in groups:
        paths = [str(Path(m.image.path).relative_to(data)) for m in group.members]
        clusters = {cluster_of[p] for p in paths if p in cluster_of}
        if len(clusters) > 1:
            mixed_groups.append(paths)
        below_threshold += [(paths[0], str(Path(m.image.path).relative_to(data)), round(m.similarity, 1))
                            for m in group.members[1:] if m.similarity < args.threshold]
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
        "hard_negative_pairs": {kind: len(list(itertools.combinations(
            [f for f in truth["framed"] if f["frame"] == kind], 2))) for kind in truth.get("frame_kinds", [])},
        "hard_negatives_grouped": hard_negatives,
        "groups": len(groups),
        "groups_holding_two_clusters": mixed_groups,
        "members_below_threshold": below_threshold,
        "compare_both_ways": asymmetry,
        "near_duplicates_found": sum(p in predicted for p in near_duplicate_pairs),
        "near_duplicates_pairs": len(near_duplicate_pairs),
        "same_scene_pairs_grouped": scene_violations,
        "iso_pairs_grouped": sorted(tuple(sorted(p)) for g in truth["same_scene"] if g["id"].endswith("_iso")
                                    for p in itertools.combinations(g["files"], 2) if tuple(sorted(p)) in predicted),
        "false_pairs": sorted(scored - actual)[:20],
        "grouped_pairs": len(predicted),
        "grouped_pairs_sha256": hashlib.sha256(
            "\n".join(" ".join(pair) for pair in sorted(predicted)).encode()).hexdigest(),
        "seconds": {"ingest": round(ingest, 1), "duplicates": round(detect, 1)},
        "context_bytes": size,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "false_pairs"}, indent=1))


def _both_ways(context: SearchContext, data: Path, truth: dict, sample: int = 300) -> dict:
    """`compare` A B against B A on a seeded sample of the pairs of one cluster and of one frame."""
    pairs = [pair for c in truth["clusters"] for pair in itertools.combinations([c["original"], *c["copies"]], 2)]
    pairs += [pair for kind in truth.get("frame_kinds", [])
              for pair in itertools.combinations([f["file"] for f in truth["framed"] if f["frame"] == kind], 2)]
    differences = []
    for first, second in random.Random(2).sample(pairs, min(sample, len(pairs))):
        try:
            a, b = (context.candidate(context.image(str(data / name)).num)[1] for name in (first, second))
        except NotFoundError:
            continue
        differences.append(abs(compare(a, b, context.settings.detector).similarity
                               - compare(b, a, context.settings.detector).similarity))
    return {"pairs": len(differences), "largest_difference": round(max(differences, default=0.0), 3)}


if __name__ == "__main__":
    main()
