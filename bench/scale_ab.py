"""One side of an A/B comparison of two revisions on the 100,000-image scale context.

    git worktree add /tmp/base REV
    PYTHONPATH=/tmp/base/daemon .venv/bin/python bench/scale_ab.py full 1024   # revision REV
    .venv/bin/python bench/scale_ab.py full 1024                               # this checkout
    .venv/bin/python bench/scale_ab.py similar

Run the two sides in turn, twice (ABAB), in one sitting: the machine is shared, so only their
ratio means something. `full N` queues every image again (a threshold change does) and times
the first N images of the full pass; `similar` times the 200 queries of bench/scale.py, whose
14 copies each are in the context once `bench/scale.py passes` has run. Needs the context of
`bench/scale.py build` and `passes`. Prints one JSON line, naming the code it ran.
"""

from __future__ import annotations

import argparse
import json

import lookalike
import scale
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD as THRESHOLD
from lookalike.store import SearchContext
from lookalike.store.changes import Relink


def full_pass_sample(context: SearchContext, images: int) -> dict:
    context.commit([Relink(THRESHOLD + 0.001)])      # another threshold queues every image again
    context.commit([Relink(THRESHOLD)])
    matched, seconds = scale.time_full_pass_sample(context, images)
    return {"matched": matched, "ms_per_image": round(1000 * seconds / matched, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("full", "similar"))
    parser.add_argument("images", type=int, nargs="?", default=1024, help="full: images of the pass to time")
    args = parser.parse_args()
    with SearchContext.open(scale.WORK / "context") as context:
        if args.mode == "full":
            result = full_pass_sample(context, args.images)
        else:
            result = scale.time_queries(context, scale.query_set(scale.held_back_last(scale.real_records(scale.SOURCE))))
    print(json.dumps({"code": lookalike.__file__, "mode": args.mode, **result}))


if __name__ == "__main__":
    main()
