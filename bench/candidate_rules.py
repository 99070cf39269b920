"""The descriptor index's two rules, measured: which buckets are too crowded to read
(index.CROWDED_BUCKET) and how many descriptors a candidate must share (MIN_SHARED_DESCRIPTORS).

    .venv/bin/python bench/candidate_rules.py copies   # the real copies on the 1,424-file dataset
    .venv/bin/python bench/candidate_rules.py scale    # chance candidates among 100,000 images

`copies`: on the peers benchmark's context (bench/peers.py builds it), every pair of an image
and another member of its cluster (an original and its transformed copies) that verifies at the
duplicate threshold but that neither the content hash nor the fingerprint finds, so only the
descriptor index can propose it; for each, how many query descriptors share a bucket with it.
A rule of k shared descriptors loses the pairs below k.

`scale`: on the scale benchmark's 100,000-image context (bench/scale.py build, then passes, so
that the 1,000 held-back real images are in it with their copies), the 200 held-back query
images of bench/scale.py, both orientations as a query does: for each crowding limit, the
look-up time and postings read; for each limit and k, the images that share at least k
descriptors, split into the query's own cluster and chance.

Writes bench/results/candidate_rules.json (the part run replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import scale
from lookalike.imaging.features import fingerprint_variants, mirrored
from lookalike.match import compare
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD
from lookalike.store import SearchContext, index, inspection
from runinfo import machine, revision

RESULTS = Path("bench/results/candidate_rules.json")
SHARED = (3, 4, 5, 6, 8, 10)
CROWDING = (4000, 1000, 300, 100, 30)


def best_of(orientations: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[int, int]:
    """image number -> query descriptors sharing an uncrowded bucket with it, best orientation."""
    best: dict[int, int] = {}
    for nums, shared, _ in orientations:
        for num, count in zip(nums.tolist(), shared.tolist()):
            best[num] = max(best.get(num, 0), count)
    return best


def shared_counts(context: SearchContext, local, crowded: int) -> dict[int, int]:
    with inspection.lsh_postings(context) as cursor:
        return best_of([index.shared_buckets(cursor, inspection.hasher(context), features.descriptors, crowded)
                        for features in (local, mirrored(local, context.settings.detector))])


def copies(args) -> dict:
    records = scale.real_records(args.source)
    cluster = scale.cluster_of(records)
    context = SearchContext.open(args.source)
    images = {image.path: image for image in context.images()}
    loaded = {path: context.candidate(image.num)[1] for path, image in images.items()}
    members: dict[str, list[str]] = {}
    for path in images:
        members.setdefault(cluster[path], []).append(path)
    pairs = []
    for path, image in images.items():
        variants = set(fingerprint_variants(image.fingerprint).values())
        shared = shared_counts(context, loaded[path].local, index.CROWDED_BUCKET)
        for other in members[cluster[path]]:
            stored = images[other]
            found_otherwise = (stored.content_hash == image.content_hash or
                               min(bin(stored.fingerprint ^ v).count("1") for v in variants) <= index.FINGERPRINT_RADIUS)
            if other == path or found_otherwise:
                continue
            if compare(loaded[path], loaded[other], context.settings.detector).similarity >= DEFAULT_DUPLICATE_THRESHOLD:
                pairs.append((path, other, shared.get(stored.num, 0)))
    context.close()
    counts = np.array([p[2] for p in pairs])
    # A pair is lost only when neither image proposes the other.
    both_ways = {}
    for a, b, count in pairs:
        key = tuple(sorted((a, b)))
        both_ways[key] = max(both_ways.get(key, 0), count)
    copies_dir = str(args.source_data / "copies")
    lost = {k: {"directed": int((counts < k).sum()), "both_ways": sum(c < k for c in both_ways.values()),
                "both_ways_with_the_original": sum(c < k and not (a.startswith(copies_dir) and b.startswith(copies_dir))
                                                   for (a, b), c in both_ways.items()),
                "example_pairs": [[Path(a).parent.name + "/" + Path(a).name, Path(b).parent.name + "/" + Path(b).name]
                                  for (a, b), c in sorted(both_ways.items()) if c < k][:10]}
            for k in SHARED}
    return {"verified_pairs_only_the_descriptor_index_finds": len(pairs), "unordered": len(both_ways),
            "shared_percentiles_1_5_10_50": np.percentile(counts, [1, 5, 10, 50]).tolist(), "lost_below_k": lost}


def scale_rules(args) -> dict:
    records = scale.held_back_last(scale.real_records(args.source))
    held = {r.path for r in records[-scale.HELD_BACK:]}
    cluster = scale.cluster_of(records)
    queries = scale.query_set(records)
    context = SearchContext.open(args.work / "context")
    path_of: dict[int, str] = {}
    for image in context.images():
        if image.path in cluster:
            path_of[image.num] = image.path
    if not held <= set(path_of.values()):
        sys.exit(f"{args.work / 'context'}: the held-back images are not in it; run bench/scale.py passes first")
    out = {"images": context.count(), "queries": len(queries), "by_crowding": {}}
    for crowded in CROWDING:
        timings, postings, found = [], [], []
        hasher = inspection.hasher(context)
        with inspection.lsh_postings(context) as cursor:
            for query in queries:
                started = time.perf_counter()
                orientations = [index.shared_buckets(cursor, hasher, features.descriptors, crowded)
                                for features in (query.local, mirrored(query.local, context.settings.detector))]
                timings.append(time.perf_counter() - started)
                found.append(best_of(orientations))
                keys = index.lsh_keys(hasher, query.local.descriptors)
                sizes = index.bucket_sizes(cursor, keys)
                postings.append(int(sizes[sizes <= crowded].sum()))
        by_shared = {}
        for k in SHARED:
            own, chance = 0, []
            for query, shared in zip(queries, found):
                mine = [num for num, count in shared.items() if count >= k and path_of.get(num) != query.path]
                same = sum(cluster.get(path_of.get(num, ""), None) == cluster[query.path] for num in mine)
                own += same
                chance.append(len(mine) - same)
            by_shared[k] = {"own_cluster": own, "chance_per_query_p50": float(np.percentile(chance, 50)),
                            "chance_per_query_p95": float(np.percentile(chance, 95)), "chance_total": int(sum(chance))}
        out["by_crowding"][crowded] = {
            "descriptor_lookup_ms_p50": round(1000 * float(np.percentile(timings, 50)), 1),
            "descriptor_lookup_ms_p95": round(1000 * float(np.percentile(timings, 95)), 1),
            "postings_read_per_orientation": round(float(np.mean(postings))), "by_shared": by_shared}
        print(crowded, json.dumps(out["by_crowding"][crowded]), flush=True)
    context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("copies", "scale"))
    parser.add_argument("--source", type=Path, default=scale.SOURCE)
    parser.add_argument("--work", type=Path, default=scale.WORK)
    parser.add_argument("--source-data", type=Path, default=Path("bench/.data/calibration").resolve(),
                        help="the dataset the source context was built from (copies/ holds the copies)")
    args = parser.parse_args()
    result = {"copies": copies, "scale": scale_rules}[args.part](args)
    result.update(machine=machine(), lookalike=revision(), date=time.strftime("%Y-%m-%d"), command=" ".join(sys.argv))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.part] = result
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(result if args.part == "copies" else result["by_crowding"], indent=1))


if __name__ == "__main__":
    main()
