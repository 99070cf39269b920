"""Time a whole duplicates pass and `similar` on a prepared context, for side-by-side runs of
two revisions (each run is one process, timed from outside).

    python bench/pass_timing.py prepare --data bench/.data/calibration --photos 40 [--unstored DATA] --out DIR
    python bench/pass_timing.py pass DIR          # every pair forgotten, then one full pass
    python bench/pass_timing.py similar DIR       # `similar` for each query listed in DIR

`prepare` stores the first --photos originals of the dataset with all their copies (and the
framed files) in DIR/context and lists one copy of each kind per photo as queries (with
--unstored, every file of that dataset's first --photos photos instead: none is stored, so each
query pays `similar`'s second look-up, search.CROP_LOOKUP_SCALE); the store
format is the same in the revisions compared, so one prepared context serves both. `pass`
forgets the recorded pairs and queues every image (as a threshold change does), then runs
find_groups. `similar` extracts each query and looks it up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lookalike.duplicates import find_groups
from lookalike.extract import extract_file, query_file
from lookalike.search import similar
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext
from lookalike.match import SCORING
from lookalike.store.changes import Relink

QUERY_KINDS = ("crop_half", "border", "text_overlay", "resize")


def prepare(data: Path, photos: int, out: Path, unstored: Path | None) -> None:
    truth = json.loads((data / "truth.json").read_text())
    clusters = truth["clusters"][:photos]
    files = [data / name for c in clusters for name in (c["original"], *c["copies"])]
    files += [data / f["file"] for f in truth.get("framed", [])]
    settings = ExtractionSettings()
    with SearchContext.create(out / "context", settings) as context:
        context.upsert_many([extract_file(str(f), settings) for f in files])
    if unstored is None:
        queries = [str(data / copy) for c in clusters for copy, kind in c["copies"].items() if kind in QUERY_KINDS]
    else:
        others = json.loads((unstored / "truth.json").read_text())["clusters"][:photos]
        queries = [str(unstored / name) for c in others for name in (c["original"], *c["copies"])]
    (out / "queries.json").write_text(json.dumps(queries))


def full_pass(directory: Path) -> None:
    with SearchContext.open(directory / "context") as context:
        context.commit([Relink(DEFAULT_DUPLICATE_THRESHOLD, SCORING)])
        groups = find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)
    print(len(groups), "groups")


def similar_queries(directory: Path) -> None:
    with SearchContext.open(directory / "context") as context:
        for query in json.loads((directory / "queries.json").read_text()):
            similar(context, query_file(query, context.settings), 20.0, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("prepare")
    made.add_argument("--data", type=Path, default=Path("bench/.data/calibration"))
    made.add_argument("--photos", type=int, default=40)
    made.add_argument("--unstored", type=Path)
    made.add_argument("--out", type=Path, required=True)
    for name in ("pass", "similar"):
        commands.add_parser(name).add_argument("directory", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.data, args.photos, args.out, args.unstored)
    elif args.command == "pass":
        full_pass(args.directory)
    else:
        similar_queries(args.directory)


if __name__ == "__main__":
    main()
