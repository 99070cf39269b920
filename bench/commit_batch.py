"""What a write transaction's size costs: time per image and resident memory, by images per commit.

    .venv/bin/python bench/commit_batch.py [--context bench/.data/scale/context] [--out bench/results/commit_batch.json]
    .venv/bin/python bench/commit_batch.py --grow 20000 [--out bench/results/commit_batch_grow.json]

The context is one `bench/scale.py build` made (100,000 images by default; its records are
synthesised from real photos' descriptors, see scale.py). Into it go batches of 1, 2, 4 ... 64
new distractor images, REPEATS commits per size, smallest first; each commit is timed, and this
process's RssAnon read after it. Right after the daemon's own batch size (store/writer.py,
BATCH), and before any larger one, SUSTAINED more commits of that size, with RssAnon read every
20th: the writer's memory under a long ingest. The images added
are removed again at the end, so the context holds what it held before (its file keeps the pages
it grew by).

Why smallest first: LMDB keeps every page a write transaction dirtied on a free list in the
writing process's heap until the environment closes, so RssAnon only ever rises to what the
largest transaction so far dirtied. Read in this order, the memory column is the resident cost of
allowing a batch of that size. store/writer.py's BATCH is chosen from this table.

With --grow N, a new context in a temporary folder instead: N distractor images committed BATCH
at a time, the way the daemon's writer commits, in a process that does nothing else, with
RssAnon read every GROW_STEP images. It says how much of the daemon's memory growth under a
flood (BENCHMARKS.md, "A flood of small files") the writer's LMDB pages alone explain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import scale
from lookalike.store import SearchContext
from lookalike.store.changes import Remove
from testhelpers import harness
from lookalike.store.writer import BATCH
from runinfo import machine, revision

SIZES = (1, 2, 4, 8, 16, 32, 64)
REPEATS = 3
SUSTAINED = 200
FIRST_NUMBER = 900_000          # far past the numbers scale.py's distractors use
GROW_STEP = 1_000


def anon_mb() -> float:
    return harness.memory(os.getpid())["RssAnon"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=Path, default=scale.WORK / "context")
    parser.add_argument("--grow", type=int, metavar="N", help="N images into a new context instead (see above)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    distractors = scale.Distractors(scale.real_records(scale.SOURCE))
    if args.grow:
        grow(distractors, args.grow, args.out or Path("bench/results/commit_batch_grow.json"))
        return
    rows, added = [], []
    with SearchContext.open(args.context) as context:

        def commit_new(size: int) -> float:
            """Commit `size` new distractors in one transaction; its seconds."""
            batch = [distractors.make(FIRST_NUMBER + len(added) + i) for i in range(size)]
            started = time.perf_counter()
            context.upsert_many(batch)
            seconds = time.perf_counter() - started
            added.extend(record.path for record in batch)
            return seconds

        images = context.count()
        commit_new(1)                                          # the first commit pages the tree in
        before = anon_mb()
        sustained = []
        for size in SIZES:
            seconds = [commit_new(size) for _ in range(REPEATS)]
            rows.append({"images_per_commit": size, "ms_per_image_median": round(statistics.median(seconds) * 1000 / size, 1),
                         "ms_per_commit": [round(s * 1000) for s in seconds], "rss_anon_mb_after": round(anon_mb())})
            print(json.dumps(rows[-1]), flush=True)
            if size != BATCH:
                continue
            # Before any larger transaction, which would set the memory for good.
            for commit in range(1, SUSTAINED + 1):
                commit_new(BATCH)
                if commit % 20 == 0:
                    sustained.append({"commits": commit, "rss_anon_mb": round(anon_mb())})
                    print(json.dumps(sustained[-1]), flush=True)
        for start in range(0, len(added), BATCH):
            context.commit([Remove(path) for path in added[start:start + BATCH]])
    results = {"machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"),
               "command": " ".join(sys.argv), "context_images": images, "rss_anon_mb_before": round(before),
               "repeats": REPEATS, "rows": rows,
               "sustained": {"images_per_commit": BATCH, "commits": SUSTAINED,
                             "note": "run right after the rows up to that size", "rss_anon": sustained}}
    (args.out or Path("bench/results/commit_batch.json")).write_text(json.dumps(results, indent=1) + "\n")


def grow(distractors: scale.Distractors, images: int, out: Path) -> None:
    samples = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as state, SearchContext.create(Path(state) / "context") as context:
        samples.append({"images": 0, "rss_anon_mb": round(anon_mb(), 1)})
        for start in range(0, images, BATCH):
            context.upsert_many([distractors.make(FIRST_NUMBER + n) for n in range(start, min(start + BATCH, images))])
            if (start + BATCH) % GROW_STEP == 0:
                samples.append({"images": start + BATCH, "rss_anon_mb": round(anon_mb(), 1),
                                "seconds": round(time.perf_counter() - started)})
                print(json.dumps(samples[-1]), flush=True)
        size = context.size_on_disk()
    results = {"machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"),
               "command": " ".join(sys.argv), "images_per_commit": BATCH, "context_bytes": size,
               "rss_anon": samples}
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
