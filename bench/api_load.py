"""The HTTP API: POST /v1/similar against the in-process `similar`, then a bounded load test.

    nice -n 5 .venv/bin/python bench/api_load.py [--photos PHOTOS] [--images 10000]
    nice -n 5 .venv/bin/python bench/api_load.py --state bench/.data/scale --out bench/results/api_load-100k.json

PHOTOS defaults to the development photo set (CALIBRATION.md, "Data"). Writes
bench/results/api_load.json.

The context: the first half of the photos, indexed by the daemon from its watched folder, among
`--images` in all; the rest are the synthetic distractors of bench/scale.py (real descriptors and
fingerprints, re-drawn), stored before the daemon starts, with their duplicate pass done. With
`--state`, the daemon runs on that state folder's context instead (bench/scale.py's, built by
`scale.py build`: 100,000 images after `scale.py passes`); whatever it holds unmatched is matched
before the daemon starts, and what the daemon indexed is removed from it at the end. The
queries are the indexed photos recompressed (JPEG q70) at half size, outside the watched folder.

1. Latency, the daemon otherwise idle: each query as an upload to POST /v1/similar (a new
   connection each, as curl makes), and `similar` in this process on the same context
   (extraction included: query_file, then search.similar), alternating which goes first.
2. Load: `--clients` threads for `--seconds`, each posting queries to /v1/similar (one request
   in ten a GET /v1/status) as fast as answers come, while a photo is copied into the watched
   folder every 0.5 s. Recorded: every status code, the daemon's resident memory (its own
   process, and with its workers) before, after, and 10 s after, and what it indexed meanwhile.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from lookalike.duplicates import find_groups
from lookalike.extract import extract_file, query_file
from lookalike.search import similar
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_SIMILAR_THRESHOLD, ExtractionSettings
from lookalike.store import SearchContext
from lookalike.store.changes import Remove
from runinfo import machine, revision
from scale import Distractors
from testhelpers import harness

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
FEED_SECONDS = 0.5
SEED = 20261206


def percentiles(seconds: list[float]) -> dict:
    ms = lambda q: round(1000 * float(np.percentile(seconds, q)), 1)    # noqa: E731
    return {"p50": ms(50), "p95": ms(95), "max": ms(100), "n": len(seconds)}


def post(port: int, path: str, body: bytes | None = None, method: str = "POST") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def store_distractors(directory: Path, photos: list[Path], total: int) -> dict:
    settings = ExtractionSettings()
    records = [extract_file(str(path), settings) for path in photos]
    distractors = Distractors(records)
    started = time.perf_counter()
    with SearchContext.create(directory, settings) as context:
        batch = []
        for number in range(total):
            batch.append(distractors.make(number))
            if len(batch) == 256:
                context.upsert_many(batch)
                batch = []
        context.upsert_many(batch)
    return {"distractors": total, "store_seconds": round(time.perf_counter() - started, 1)}


def match_before_start(directory: Path) -> dict:
    """The duplicates pass over what the context holds unmatched, so that the daemon's first pass
    does not run during the measurement."""
    started = time.perf_counter()
    with SearchContext.open(directory) as context:
        find_groups(context, DEFAULT_DUPLICATE_THRESHOLD)
        images = context.count()
    return {"images_before_start": images, "duplicate_pass_seconds": round(time.perf_counter() - started, 1)}


def make_queries(photos: list[Path], folder: Path) -> list[Path]:
    queries = []
    for path in photos:
        pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
        half = cv2.resize(pixels, (pixels.shape[1] // 2, pixels.shape[0] // 2), interpolation=cv2.INTER_AREA)
        query = folder / f"{path.stem}-query.jpg"
        cv2.imwrite(str(query), half, [cv2.IMWRITE_JPEG_QUALITY, 70])
        queries.append(query)
    return queries


def latency(daemon: harness.Daemon, queries: list[Path]) -> dict:
    api, local, agreeing = [], [], 0
    with SearchContext.open(daemon.context_dir) as context:
        for round_ in range(2):
            for i, query in enumerate(queries):
                data = query.read_bytes()

                def over_http():
                    started = time.perf_counter()
                    status, body = post(daemon.api_port, "/v1/similar", data)
                    api.append(time.perf_counter() - started)
                    assert status == 200, body
                    return [hit["path"] for hit in json.loads(body)["results"]]

                def in_process():
                    started = time.perf_counter()
                    hits = similar(context, query_file(str(query), context.settings), DEFAULT_SIMILAR_THRESHOLD, None)
                    local.append(time.perf_counter() - started)
                    return [hit.image.path for hit in hits]

                first, second = (over_http, in_process) if (i + round_) % 2 else (in_process, over_http)
                answers = [first(), second()]
                agreeing += answers[0] == answers[1]
    api_p, local_p = percentiles(api), percentiles(local)
    return {"post_similar_ms": api_p, "in_process_similar_ms": local_p,
            "ratio_p50": round(api_p["p50"] / local_p["p50"], 2), "ratio_p95": round(api_p["p95"] / local_p["p95"], 2),
            "same_results": f"{agreeing}/{len(api)}"}


def load(daemon: harness.Daemon, queries: list[Path], incoming: list[Path], folder: Path, clients: int,
         seconds: float) -> dict:
    bodies = [q.read_bytes() for q in queries]
    statuses: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    times: list[float] = []

    def client(number: int) -> None:
        rng = random.Random(SEED + number)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if rng.random() < 0.1:
                    status, _ = post(daemon.api_port, "/v1/status", method="GET")
                else:
                    status, _ = post(daemon.api_port, "/v1/similar", rng.choice(bodies))
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1
                if status == 200:
                    times.append(time.perf_counter() - started)

    def feed() -> None:
        for n in range(10**6):
            if stop.wait(FEED_SECONDS):
                return
            source = incoming[n % len(incoming)]
            shutil.copyfile(source, folder / f"incoming-{n:05d}{source.suffix.lower()}")

    def memory() -> dict:
        return {"daemon_mb": round(harness.rss_bytes(daemon.pid) / 2**20),
                "with_workers_mb": round(harness.tree_rss(daemon.pid) / 2**20)}

    before = {"memory": memory(), "images": daemon.metric("lookalike_context_images"),
              "indexed": daemon.metric("lookalike_files_indexed_total")}
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)] + [threading.Thread(target=feed)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    indexed_midway = daemon.metric("lookalike_files_indexed_total")
    time.sleep(seconds / 2)
    stop.set()
    for thread in threads:
        thread.join()
    after = {"memory": memory(), "images": daemon.metric("lookalike_context_images"),
             "indexed": daemon.metric("lookalike_files_indexed_total")}
    time.sleep(10)
    return {"clients": clients, "seconds": seconds, "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "answered_200_ms": percentiles(times) if times else None,
            "before": before, "midway_indexed": indexed_midway, "after": after,
            "ten_seconds_later": {"memory": memory(), "indexed": daemon.metric("lookalike_files_indexed_total")},
            "files_fed": int(seconds / FEED_SECONDS), "daemon_alive": daemon.alive()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--images", type=int, default=10_000, help="images in the context, distractors included")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--state", type=Path, help="a state folder whose context is built already "
                        "(bench/scale.py's: bench/.data/scale), instead of --images")
    parser.add_argument("--out", type=Path, default=Path("bench/results/api_load.json"))
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.resolve().rglob("*") if p.suffix.lower() in EXTENSIONS)
    random.Random(SEED).shuffle(photos)
    indexed, incoming = photos[: len(photos) // 2], photos[len(photos) // 2:]
    with tempfile.TemporaryDirectory(prefix="lookalike-api-load-") as scratch:
        root = Path(scratch)
        folder = harness.folder(root)
        queries = make_queries(indexed, harness.folder(root, "queries"))
        for path in indexed:
            shutil.copyfile(path, folder / f"{path.parent.name}-{path.name}")
        daemon = harness.Daemon(root, [folder], state=args.state.resolve() if args.state else None)
        daemon.write_config([folder], workers=1, duplicates={"interval": "1h"},
                            api={"listen": f"127.0.0.1:{daemon.api_port}"})
        print("preparing the context", flush=True)
        context = {} if args.state else store_distractors(daemon.context_dir, photos, args.images - len(indexed))
        context.update(match_before_start(daemon.context_dir))
        print(json.dumps(context), flush=True)
        try:
            daemon.start().ready()
            daemon.wait(lambda: daemon.metric("lookalike_files_indexed_total")
                        + daemon.metric_sum("lookalike_files_failed_total") >= len(indexed), "the photos indexed",
                        timeout=1200)
            daemon.wait_idle()
            daemon.wait_metric("lookalike_duplicates_runs_total", lambda runs: runs >= 1, "the duplicates pass")
            print("latency", flush=True)
            quiet = latency(daemon, queries)
            print(json.dumps(quiet), flush=True)
            print("load", flush=True)
            loaded = load(daemon, queries, incoming, folder, args.clients, args.seconds)
            print(json.dumps(loaded), flush=True)
        finally:
            left = harness.stop_group(daemon.process, timeout=30)
            daemon.close()
            if args.state:
                with SearchContext.open(daemon.context_dir) as prebuilt:
                    prebuilt.commit([Remove(str(folder))])
    results = {"machine": machine(), "lookalike": revision(), "date": time.strftime("%Y-%m-%d"),
               "load_average_at_end": os.getloadavg(), "command": f"bench/api_load.py {f'--state {args.state}' if args.state else f'--images {args.images}'} "
                          f"--clients {args.clients} --seconds {args.seconds:g}",
               "photos": f"{len(photos)} files of the development photo set: {len(indexed)} indexed, "
                         f"{len(incoming)} fed in during the load",
               "images": context["images_before_start"] + len(indexed), "context": context, "latency": quiet, "load": loaded, "left_behind": left}
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
