"""One side of an A/B comparison of two revisions on the 100,000-image scale context.

    git worktree add BASE REV                                                  # BASE: any new folder
    PYTHONPATH=BASE/daemon .venv/bin/python bench/scale_ab.py full 1024        # revision REV
    .venv/bin/python bench/scale_ab.py full 1024                               # this checkout
    .venv/bin/python bench/scale_ab.py similar

Run the two sides in turn, twice (ABAB), in one sitting: the machine is shared, so only their
ratio means something. `full N` queues every image again (a threshold change does) and times
the first N images of the full pass; `similar` times the 200 queries of bench/scale.py, whose
14 copies each are in the context once `bench/scale.py passes` has run. Needs the context of
`bench/scale.py build` and `passes`. Prints one JSON line, naming the code it ran.

A revision that wrote the index in an older format (before 813c54c: chunk postings without the
fingerprint) needs a context of its own: copy the context before this checkout first opens it
(it rewrites the format on open), and give the copy to the old side with `--work`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lookalike
import scale
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD as THRESHOLD
from lookalike.store import SearchContext
from lookalike.match import SCORING
from lookalike.store.changes import Relink


def full_pass_sample(context: SearchContext, images: int) -> dict:
    context.commit([Relink(THRESHOLD + 0.001, SCORING)])      # another threshold queues every image again
    context.commit([Relink(THRESHOLD, SCORING)])
    matched, seconds = scale.time_full_pass_sample(context, images)
    return {"matched": matched, "ms_per_image": round(1000 * seconds / matched, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("full", "similar"))
    parser.add_argument("images", type=int, nargs="?", default=1024, help="full: images of the pass to time")
    parser.add_argument("--work", type=Path, default=scale.WORK, help="the folder holding the context")
    args = parser.parse_args()
    with SearchContext.open(args.work / "context") as context:
        if args.mode == "full":
            result = full_pass_sample(context, args.images)
        else:
            result = scale.time_queries(context, scale.query_set(scale.held_back_last(scale.real_records(scale.SOURCE))))
    print(json.dumps({"code": lookalike.__file__, "mode": args.mode, **result}))


if __name__ == "__main__":
    main()
