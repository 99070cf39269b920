"""The daemon end to end: how fast files land in the context, and how long each one takes.

    python bench/daemon_ingest.py [--photos PHOTOS] [--workers 2] [--settle 2]

PHOTOS defaults to the development photo set (CALIBRATION.md, "Data").

Starts a real `lookalike run` on an empty folder, then copies the real photos in twice:
  trickle  one file every 0.5 s: latency from a file's last byte to its record, as a user
           dropping photos in one by one sees it (the settle time is most of it, by design);
  flood    every file at once: ingest rate (files/s from the first landed to the last stored)
           and latency under a backlog.
Latency is `added` (the record's commit time, written by the store) minus the copy's end.
Peak memory is the daemon's resident set plus its workers', sampled every 0.2 s.
Writes bench/results/daemon_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lookalike.store import SearchContext
from testhelpers import harness

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_stored(context_dir: Path, paths: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (context_dir / "data.mdb").exists():
            with SearchContext.open(context_dir) as context:
                added = {i.path: i.added for i in context.images() if i.path in set(paths)}
            if len(added) == len(paths):
                return added
        time.sleep(0.2)
    raise TimeoutError(f"only some of {len(paths)} files were stored within {timeout} s")


def copy_in(files: list[Path], folder: Path, prefix: str, interval: float) -> dict[str, float]:
    landed = {}
    for i, source in enumerate(files):
        target = folder / f"{prefix}-{i:03d}{source.suffix.lower()}"
        shutil.copyfile(source, target)
        landed[str(target)] = time.time()
        if interval:
            time.sleep(interval)
    return landed


def summarise(landed: dict[str, float], added: dict[str, float]) -> dict:
    latencies = [added[p] - landed[p] for p in landed]
    span = max(added.values()) - min(landed.values())
    return {"files": len(landed), "seconds": round(span, 2), "files_per_second": round(len(landed) / span, 2),
            "latency_p50_s": round(percentile(latencies, 0.5), 2), "latency_p95_s": round(percentile(latencies, 0.95), 2),
            "latency_max_s": round(max(latencies), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/daemon_ingest.json"))
    args = parser.parse_args()
    files = sorted(p for p in args.photos.resolve().rglob("*") if p.suffix.lower() in EXTENSIONS)
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as scratch:
        scratch = Path(scratch)
        folder = scratch / "photos"
        folder.mkdir()
        config = scratch / "config.yaml"
        config.write_text(json.dumps({
            "watch": [str(folder)], "state_dir": str(scratch / "state"), "workers": args.workers,
            "settle_seconds": args.settle, "duplicates": {"interval": "1h"},
            "metrics": {"listen": f"127.0.0.1:{harness.free_port()}"}}))
        daemon = subprocess.Popen([str(harness.LOOKALIKE), "run", "--config", str(config)],
                                  stderr=subprocess.DEVNULL)
        peak = [0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.2):
                peak[0] = max(peak[0], harness.tree_rss(daemon.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            time.sleep(3)                                        # workers spawned, first reconcile done
            context_dir = scratch / "state" / "context"
            trickle = copy_in(files[:20], folder, "trickle", 0.5)
            trickle_result = summarise(trickle, wait_stored(context_dir, list(trickle), 120))
            flood = copy_in(files, folder, "flood", 0)
            flood_result = summarise(flood, wait_stored(context_dir, list(flood), 600))
        finally:
            sampling.set()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()}), Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "bench/daemon_ingest.py", *sys.argv[1:]]),
        "photos": f"{len(files)} files from the development photo set, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB",
        "workers": args.workers, "settle_seconds": args.settle,
        "trickle_one_every_0.5s": trickle_result, "flood_all_at_once": flood_result,
        "peak_rss_bytes_daemon_and_workers": peak[0],
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
