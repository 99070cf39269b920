"""lookalike at 1,000, 10,000 and 100,000 images: query time, duplicate passes, memory, size.

    .venv/bin/python bench/scale.py build      # 99,000 images, timing `similar` at 1k and 10k (about 15 minutes)
    .venv/bin/python bench/scale.py passes     # duplicate passes, then 1,000 new images and `similar` at 100k
    .venv/bin/python bench/scale.py build --images 11000 --work bench/.data/scale-small
                                               # `similar` at 1k and 10k again, without the 100k build

The records are synthesised, but nothing in them is invented: every descriptor, keypoint,
fingerprint and thumbnail comes from a real photo. The source is the context of the peers
benchmark (bench/peers.py): 1,424 images extracted from the development photo set
(CALIBRATION.md, "Data") and their transformed copies. All 1,424 real records go in unchanged,
so the context holds real duplicate clusters; the other images are distractors, each made of 500
keypoints drawn from all the real ones at random (with their positions), with 5 % of the varying
descriptor bits flipped (a similar patch, not the same one), the thumbnail of one real image,
and a real fingerprint with 20 of its 64 bits flipped (so it is never within the fingerprint
radius of its source). Distractors are distinct images as far as the index can tell, with the
bit statistics of real AKAZE descriptors, which are what make LSH buckets crowded.

The last 1,000 real images (whole clusters) are held back and added after the full pass, for
the incremental pass. Seeded: the same command builds the same context.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from lookalike.extract import ImageFeatures, Query
from lookalike.imaging.features import LocalFeatures
from lookalike.store import SearchContext
from lookalike.types import FileIdentity

from runinfo import machine, revision
from testhelpers import harness

SOURCE = Path("bench/.data/peers/lookalike-context")
WORK = Path("bench/.data/scale")
RESULTS = Path("bench/results/scale.json")
SIZES = (1_000, 10_000, 100_000)
HELD_BACK = 1_000
FINGERPRINT_FLIPS = 20
SEED = 20261121


def real_records(source: Path) -> list[ImageFeatures]:
    with SearchContext.open(source) as context:
        records = []
        for image in context.images():
            stored, candidate = context.candidate(image.num)
            records.append(ImageFeatures(image.path, image.identity, image.content_hash, image.format,
                                         image.width, image.height, candidate.local, image.fingerprint,
                                         candidate.thumbnail, 0.0, 0.0))
    return records


def cluster_of(records: list[ImageFeatures]) -> dict[str, str]:
    """path -> its cluster (an original and its copies, from the dataset's truth.json); an image
    in no cluster is its own."""
    data = Path("bench/.data/calibration").resolve()
    truth = json.loads((data / "truth.json").read_text())
    cluster = {r.path: r.path for r in records}
    for entry in truth["clusters"]:
        for member in [entry["original"], *entry["copies"]]:
            cluster[str(data / member)] = entry["original"]
    return cluster


def held_back_last(records: list[ImageFeatures]) -> list[ImageFeatures]:
    """The records in insertion order: whole clusters of HELD_BACK images at the end."""
    by_cluster: dict[str, list[ImageFeatures]] = {}
    cluster = cluster_of(records)
    for record in records:
        by_cluster.setdefault(cluster[record.path], []).append(record)
    clusters = sorted(by_cluster.values(), key=lambda c: (-len(c), c[0].path))
    held, rest = [], []
    for cluster in clusters:
        (held if len(held) + len(cluster) <= HELD_BACK else rest).extend(cluster)
    rest.extend(held[HELD_BACK:])
    return rest + held[:HELD_BACK]


class Distractors:
    def __init__(self, records: list[ImageFeatures]):
        self.records = records
        self.descriptors = np.concatenate([r.local.descriptors for r in records])
        # Keypoints in a 640 x 480 working frame, wherever their own image had them.
        self.keypoints = np.concatenate([r.local.keypoints * [640 / r.local.width, 480 / r.local.height, 1, 1]
                                         for r in records]).astype(np.float32)

    def make(self, number: int) -> ImageFeatures:
        rng = np.random.default_rng([SEED, number])
        picks = rng.choice(len(self.keypoints), 500, replace=False)
        keypoints, descriptors = self.keypoints[picks], self.descriptors[picks]
        look = self.records[int(rng.integers(len(self.records)))]
        fingerprint = look.fingerprint
        for bit in rng.choice(64, FINGERPRINT_FLIPS, replace=False):
            fingerprint ^= 1 << int(bit)
        identity = FileIdentity(size=int(rng.integers(200_000, 6_000_000)), mtime_ns=1_700_000_000_000_000_000 + number,
                                ctime_ns=1_700_000_000_000_000_000 + number, inode=number, device=0)
        return ImageFeatures(f"/synthetic/{number // 1000:03d}/{number:06d}.jpg", identity,
                             hashlib.sha256(f"synthetic {number}".encode()).digest(), "jpeg", look.width, look.height,
                             LocalFeatures(keypoints, descriptors, 640, 480), fingerprint,
                             look.thumbnail, 0.0, 0.0)


def insertion_order(records: list[ImageFeatures], total: int) -> list[tuple[str, int]]:
    """("real", index) or ("distractor", number) for each image: the real records not held back
    spread evenly over the first part, the held-back ones last."""
    base_real = len(records) - HELD_BACK
    distractors = total - len(records)
    order: list[tuple[str, int]] = []
    step = (base_real + distractors) / max(base_real, 1)
    real_at = {int(i * step) for i in range(base_real)}
    real, synthetic = iter(range(base_real)), iter(range(distractors))
    for position in range(base_real + distractors):
        order.append(("real", next(real)) if position in real_at else ("distractor", next(synthetic)))
    order.extend(("real", i) for i in range(base_real, len(records)))
    return order


def memory() -> dict:
    """This process's resident memory in MB, split as harness.memory splits it."""
    now = harness.memory(os.getpid())
    return {"rss_mb": now["VmRSS"] / 2**20, "rss_anon_mb": now["RssAnon"] / 2**20, "rss_file_mb": now["RssFile"] / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def query_set(records: list[ImageFeatures]) -> list[ImageFeatures]:
    """200 of the held-back images, the same at every size."""
    held = records[-HELD_BACK:]
    return [held[i] for i in np.random.default_rng(SEED).choice(len(held), 200, replace=False)]


def time_queries(context: SearchContext, queries: list[ImageFeatures]) -> dict:
    """`similar` as the CLI runs it, minus extraction: the index's candidates, then each one verified."""
    from lookalike.search import similar
    from lookalike.settings import DEFAULT_SIMILAR_THRESHOLD
    lookup, total, verified = [], [], []
    for features in queries:
        started = time.perf_counter()
        found = list(context.candidates_for(features.content_hash, features.fingerprint, features.local))
        lookup.append(time.perf_counter() - started)
        started = time.perf_counter()
        similar(context, Query(features), DEFAULT_SIMILAR_THRESHOLD, None)
        total.append(time.perf_counter() - started)
        verified.append(len(found))
    ms = lambda values, q: round(1000 * float(np.percentile(values, q)), 2)    # noqa: E731
    return {"images": context.count(), "queries": len(queries),
            "candidates_ms": {"p50": ms(lookup, 50), "p95": ms(lookup, 95)},
            "similar_ms": {"p50": ms(total, 50), "p95": ms(total, 95), "max": ms(total, 100)},
            "candidates_per_query": {"mean": round(float(np.mean(verified)), 1), "max": int(np.max(verified))}}


def build(args) -> None:
    records = held_back_last(real_records(args.source))
    distractors = Distractors(records[:-HELD_BACK])
    order = insertion_order(records, args.images)
    queries = query_set(records)
    base = args.work / "context"
    if (base / "data.mdb").exists():
        SearchContext.delete(base)
    results = {"machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"),
               "command": " ".join(sys.argv), "source": str(args.source), "real_images": len(records), "held_back": HELD_BACK,
               "distractor_recipe": {"keypoints": "500 drawn from the real images not held back",
                                     "fingerprint_flips": FINGERPRINT_FLIPS}, "queries": []}
    checkpoints = {size for size in SIZES if size <= len(order) - HELD_BACK}
    started = time.perf_counter()
    with SearchContext.create(base) as context:
        batch = []
        for position, (kind, number) in enumerate(order[:-HELD_BACK], 1):
            batch.append(records[number] if kind == "real" else distractors.make(number))
            if len(batch) == 256 or position in checkpoints or position == len(order) - HELD_BACK:
                context.upsert_many(batch)
                batch = []
            if position in checkpoints:
                results["queries"].append(time_queries(context, queries))
                print(json.dumps(results["queries"][-1]), flush=True)
            if position % 10_000 == 0:
                print(f"{position} images, {time.perf_counter() - started:.0f} s", flush=True)
        results["build_seconds"] = round(time.perf_counter() - started, 1)
        results["base_images"] = context.count()
        results["size_bytes_per_image"] = round(context.size_on_disk() / context.count())
    write_results(results if args.work == WORK else
                  {"queries": results["queries"], "queries_command": results["command"], "queries_lookalike": revision()})


def passes(args) -> None:
    """On the built context: the full pass over its 99,000 images (every image queued, as when a
    context is first filled or the threshold changes), then the 1,000 held-back images added and
    the incremental pass that finds their groups, scored against the clusters they came from;
    `similar` at 100k before and after they are added. Run again on a context it has run on, it
    first removes the held-back images it added."""
    from lookalike.duplicates import PassStats, find_groups
    from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD as threshold
    from lookalike.match import SCORING
    from lookalike.store.changes import Relink, Remove
    records = held_back_last(real_records(args.source))
    held = records[-HELD_BACK:]
    context = SearchContext.open(args.work / "context")
    if context.count() == args.images:              # an earlier run added them: start from its base
        context.commit([Remove(r.path) for r in held])
    if context.count() != args.images - HELD_BACK:
        sys.exit(f"{args.work / 'context'}: holds {context.count()} images, not {args.images - HELD_BACK}; run build again")
    context.commit([Relink(threshold + 0.001, SCORING)])      # another threshold queues every image again
    context.commit([Relink(threshold, SCORING)])
    results: dict = {"images_before": context.count()}
    stats = PassStats()
    started = time.perf_counter()
    groups = find_groups(context, threshold, stats=stats)
    seconds = time.perf_counter() - started
    results["full_pass"] = {"images_matched": stats.matched, "verified": stats.verified, "groups": len(groups),
                            "seconds": round(seconds, 1), "ms_per_image": round(1000 * seconds / stats.matched, 2),
                            "memory": memory()}
    print(json.dumps(results["full_pass"]), flush=True)
    # The queries' clusters are not stored yet: the same workload as the 1k and 10k timings.
    results["queries_100k_without_copies"] = time_queries(context, query_set(records))
    print(json.dumps(results["queries_100k_without_copies"]), flush=True)

    context.upsert_many(held)
    stats = PassStats()
    started = time.perf_counter()
    groups = find_groups(context, threshold, stats=stats)
    seconds = time.perf_counter() - started
    held_paths = {r.path for r in held}
    found = [frozenset(m.image.path for m in g.members) & held_paths for g in groups]
    results["incremental_pass"] = {"new_images": len(held), "images": context.count(), "seconds": round(seconds, 1),
                                   "matched": stats.matched, "verified": stats.verified,
                                   "held_back_pairs": score_pairs(found, held), "memory": memory()}
    print(json.dumps(results["incremental_pass"]), flush=True)
    results["queries_100k"] = time_queries(context, query_set(records))
    print(json.dumps(results["queries_100k"]), flush=True)
    results["size_bytes_per_image_100k"] = round(context.size_on_disk() / context.count())
    results["peak_memory"] = memory()
    context.close()
    write_results({"passes": results, "passes_command": " ".join(sys.argv), "passes_date": time.strftime("%Y-%m-%d"),
                   "passes_lookalike": revision()})


class _Enough(Exception):
    pass


def time_full_pass_sample(context: SearchContext, images: int) -> tuple[int, float]:
    """Match the queue's first `images` (whole pages) as a full pass does, then stop: (images
    matched, seconds)."""
    from lookalike.duplicates import match_pending
    from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD as threshold

    def stop_after(done: int, total: int) -> None:
        if done >= images:
            raise _Enough()

    started = time.perf_counter()
    try:
        match_pending(context, threshold, progress=stop_after)
    except _Enough:
        pass
    return context.count() - context.pending_count(), time.perf_counter() - started


def score_pairs(groups: list[frozenset[str]], held: list[ImageFeatures]) -> dict:
    """Pairwise precision and recall of the held-back images' groups against their clusters."""
    cluster = cluster_of(held)
    paths = [r.path for r in held]
    truth = {(a, b) for a in paths for b in paths if a < b and cluster[a] == cluster[b]}
    predicted = {(a, b) for g in groups for a in g for b in g if a < b}
    hits = len(truth & predicted)
    return {"true_pairs": len(truth), "predicted": len(predicted), "found": hits,
            "precision": round(hits / max(len(predicted), 1), 4), "recall": round(hits / max(len(truth), 1), 4)}


def write_results(update: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(update)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def growth_exponent(points: list[tuple[int, float]]) -> float:
    """The slope of log(time) against log(images), least squares."""
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("build", "passes"))
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--images", type=int, default=SIZES[-1])
    parser.add_argument("--work", type=Path, default=WORK,
                        help="where the context is built; anywhere else only the query timings are kept")
    args = parser.parse_args()
    if not (args.source / "data.mdb").exists():
        sys.exit(f"{args.source}: no context; run bench/peers.py first (it builds it)")
    {"build": build, "passes": passes}[args.phase](args)


if __name__ == "__main__":
    main()
