"""What `compare` says a copy is (match.COPY_KINDS), per transform kind of the dataset.

    python bench/kinds.py [--data bench/.data/calibration] [--out bench/results/kinds.json]

Compares every original of the dataset (bench/dataset.py) with each of its copies and counts,
for each transform kind, how often each copy kind is named. A caption or a logo drawn over the
picture should read `edited`; a recompressed, resized or blurred copy should not.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from lookalike.extract import extract_file
from lookalike.match import compare
from lookalike.search import query_candidate
from lookalike.settings import ExtractionSettings
from runinfo import machine, revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/kinds.json"))
    args = parser.parse_args()
    data = args.data.resolve()
    clusters = json.loads((data / "truth.json").read_text())["clusters"]
    pairs = [(cluster["original"], copy, kind) for cluster in clusters for copy, kind in cluster["copies"].items()]
    files = sorted({name for pair in pairs for name in pair[:2]})
    settings = ExtractionSettings()
    with ProcessPoolExecutor(args.workers) as pool:
        features = dict(zip(files, pool.map(partial(extract_file, settings=settings),
                                             [str(data / name) for name in files], chunksize=8)))
    named: dict[str, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    for original, copy, kind in pairs:
        match = compare(query_candidate(features[original]), query_candidate(features[copy]), settings.detector)
        counts[kind] += 1
        named[kind].update(match.kinds if match.similarity > 0 else ("no_match",))
    table = {kind: {"pairs": counts[kind], **dict(sorted(named[kind].items()))} for kind in sorted(counts)}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "lookalike": revision(),
              "data": str(args.data), "kinds_named": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for kind, row in table.items():
        print(f"{kind:16} " + ", ".join(f"{name} {n}" for name, n in row.items()))


if __name__ == "__main__":
    main()
