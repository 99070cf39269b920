"""What a reconcile holds while it walks a large folder: Python's peak allocation and the time.

    .venv/bin/python bench/reconcile_memory.py [--files 100000] [--folders 1] [--work bench/.data/reconcile] [--profile]

Makes N empty files named *.jpg, spread over K folders under one watched folder, and a context
that knows N paths there: nine in ten of the files, as they are now, plus N/10 that are gone
(failure records, which the reconcile treats as any known path and which cost nothing to make).
Then runs the daemon's reconcile over it, with an emit that only counts, under tracemalloc: the
peak is what the reconcile itself allocated (the folder's listing, the context's paths, the
comparison), which is the part that grows with the collection. Prints JSON: files, known
paths, the summary's counts, the peak in MB, the seconds; with --profile, instead of the peak,
the cumulative seconds of the reconcile's costliest lookalike functions under cProfile (which
slows the run).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import threading
import time
import tracemalloc
from pathlib import Path

from lookalike.config import WatchedFolder
from lookalike.reconcile import reconcile
from lookalike.store import SearchContext
from lookalike.store.changes import Fail
from lookalike.types import FileIdentity
from lookalike.watch.folders import Folders
from runinfo import machine, revision

BENCH = Path(__file__).resolve().parent
COMMIT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1, help="subfolders the files are spread over")
    parser.add_argument("--work", type=Path, default=BENCH / ".data" / "reconcile")
    parser.add_argument("--profile", action="store_true", help="where the reconcile's time goes, under cProfile")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    root = args.work / "photos"
    root.mkdir(parents=True)
    names = [f"{n % args.folders:04}/{n:07}.jpg" for n in range(args.files)]
    for folder in range(args.folders):
        (root / f"{folder:04}").mkdir()
    for name in names:
        (root / name).touch()
    # Known as the file is now (unchanged), or gone: a reconcile's common case.
    known = [(str(root / name), FileIdentity.of((root / name).stat())) for n, name in enumerate(names) if n % 10] + \
            [(str(root / f"{n % args.folders:04}/gone-{n:07}.jpg"), None) for n in range(args.files // 10)]
    with SearchContext.create(args.work / "context") as context:
        for start in range(0, len(known), COMMIT):
            context.commit([Fail(path, identity, "corrupt", "made by the benchmark")
                            for path, identity in known[start:start + COMMIT]])
        emitted = 0

        def count(intent) -> None:
            nonlocal emitted
            emitted += 1

        profile = cProfile.Profile()
        if args.profile:
            profile.enable()          # instead of tracemalloc, whose cost per allocation would skew it
        else:
            tracemalloc.start()
        started = time.monotonic()
        summary = reconcile(Folders((WatchedFolder(root),)), context, count, lambda folder: True,
                            threading.Event())
        seconds = time.monotonic() - started
        profile.disable()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine(), "lookalike": revision(),
                      "files": args.files, "folders": args.folders, "known_paths": len(known), "files_walked": summary.files,
                      "new": summary.new, "changed": summary.changed, "missing": summary.missing,
                      "emitted": emitted, "seconds": round(seconds, 1),
                      **({"profile_seconds": costliest(profile)} if args.profile
                         else {"peak_traced_mb": round(peak / 1e6, 1)})},
                     indent=1))


def costliest(profile: cProfile.Profile, count: int = 20) -> dict[str, dict]:
    """The lookalike functions the reconcile spent most time in (cumulative), with their calls."""
    timed = [(f"{Path(file).name}:{name}", calls, cumulative)
             for (file, _, name), (_, calls, _, cumulative, _) in pstats.Stats(profile).stats.items()
             if "/lookalike/" in file]
    return {name: {"calls": calls, "cumulative": round(cumulative, 3)}
            for name, calls, cumulative in sorted(timed, key=lambda t: -t[2])[:count]}


if __name__ == "__main__":
    main()
