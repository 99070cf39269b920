"""The daemon under a flood: N small images created as fast as possible in a watched folder.

    .venv/bin/python bench/flood.py [--files 100000] [--workers 2] [--out bench/results/flood.json]

Starts a real `lookalike run` on an empty folder at the default settings (settle 2 s, reconcile
every hour, duplicates every 15 min; only the metrics port is a free one), waits for its first
reconcile, then writes N distinct 96x96 JPEGs into the folder in a tight loop (the bytes are made
beforehand, in this process, so the loop only writes). Each picture is drawn from its own seed:
random filled shapes plus noise, so no two are alike (overlapping crops of a few photos would be
near-duplicates of each other, and the periodic duplicates pass would then measure grouping, not
ingest).

While the daemon works, every second: the resident set (VmRSS) of the daemon and of each process
under it (the extraction workers, multiprocessing's resource tracker), split into anonymous memory
(RssAnon: what a leak or an unbounded queue grows) and mapped files (RssFile: libraries, and the
pages of the LMDB map the process touched, which grow with the context and which the kernel can
drop), and its metrics endpoint (images stored, paths waiting to settle or for a worker, changes
waiting for the writer, context size). Done
when `lookalike_context_images` reaches N; then the context is opened once to check that it holds
exactly the N files and no failure, and the daemon is stopped with SIGTERM.

Reports: files created per second; ingest rate (N over the time from the first file written to
the last record committed, the records' own commit times); time to drain (last file written to
last record committed); peak RSS of the tree and of the daemon's main process; RSS at 10, 50 and
90 % of the run; the main process's RssAnon as each tenth of the N images is stored (flat
memory is a flat row); the settle-stage backlog's peak (`lookalike_files_queued`). Writes
bench/results/flood.json, with every 10th sample of the time series.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from lookalike.store import SearchContext
from runinfo import machine, revision
from testhelpers import harness, images

BENCH = Path(__file__).resolve().parent
SIDE = 96
SAMPLE_SECONDS = 1.0
KEPT_SAMPLE = 10               # the results file keeps every 10th sample
STALL_SECONDS = 600            # no new record for this long: the run is abandoned as stuck
IDLE_SECONDS = 20              # no new record and nothing waiting for this long: files were lost
PIPELINE = ("lookalike_files_queued", "lookalike_files_in_flight", "lookalike_store_queue_changes")
GAUGES = ("lookalike_context_images", "lookalike_files_queued", "lookalike_files_in_flight",
          "lookalike_store_queue_changes", "lookalike_context_size_bytes")


def picture(seed: int) -> bytes:
    """A 96x96 JPEG of its own: a background, 10 filled shapes, noise."""
    ok, encoded = cv2.imencode(".jpg", images.shapes(seed, SIDE, count=10, smallest=6, noise=6),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def cpu_seconds(pid: int) -> float:
    """User + system time of a live process (its reaped children not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gauge(samples: dict[tuple[str, frozenset], float], name: str) -> float | None:
    """An unlabelled series' value in a scrape, None before the daemon serves it."""
    return samples.get((name, frozenset()))


class Sampler(threading.Thread):
    """Every second: elapsed time, files written so far, RSS of the daemon and its tree, gauges."""

    def __init__(self, pid: int, port: int, written: list[int]):
        super().__init__(name="sampler", daemon=True)
        self.pid, self.port, self.written = pid, port, written
        self.started = time.time()
        self.samples: list[dict] = []
        self.latest: dict[tuple[str, frozenset], float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            due = time.monotonic() + SAMPLE_SECONDS
            children = harness.descendants(self.pid)
            sizes = {pid: harness.memory(pid) for pid in [self.pid, *children]}
            try:
                self.latest = harness.scrape(self.port)
            except OSError:
                pass
            self.samples.append({
                "t": round(time.time() - self.started, 2), "written": self.written[0],
                "rss_main": sizes[self.pid]["VmRSS"], "rss_tree": sum(m["VmRSS"] for m in sizes.values()),
                "anon_main": sizes[self.pid]["RssAnon"], "file_main": sizes[self.pid]["RssFile"],
                "anon_tree": sum(m["RssAnon"] for m in sizes.values()), "processes": len(sizes),
                **{name: gauge(self.latest, name) for name in GAUGES}})
            self.stopping.wait(max(0.0, due - time.monotonic()))


def anon_by_stored(samples: list[dict], n: int) -> dict[str, int]:
    """The main process's RssAnon (MB) when each tenth of the N images had been stored: flat
    memory is a flat row."""
    row = {}
    for tenth in range(1, 11):
        stored = n * tenth // 10
        first = next((s for s in samples if (s["lookalike_context_images"] or 0) >= stored), None)
        if first is not None:
            row[str(stored)] = first["anon_main"] >> 20
    return row


def at_fraction(samples: list[dict], start: float, end: float, fraction: float) -> dict:
    moment = start + fraction * (end - start)
    return min(samples, key=lambda s: abs(s["t"] - moment))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "flood.json")
    parser.add_argument("--scratch", type=Path, default=None, help="where the folder and state go (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the folder, the state and the daemon's log")
    args = parser.parse_args()
    n = args.files

    started = time.monotonic()
    blobs = [picture(i) for i in range(n)]
    generate_seconds = time.monotonic() - started
    print(f"{n} pictures made in {generate_seconds:.1f} s, {sum(map(len, blobs)) / 1e6:.0f} MB", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="lookalike-flood-", dir=args.scratch))
    folder = scratch / "photos"
    folder.mkdir()
    port = harness.free_port()
    config = scratch / "config.yaml"
    config.write_text(json.dumps({"watch": [str(folder)], "state_dir": str(scratch / "state"),
                                  "workers": args.workers, "metrics": {"listen": f"127.0.0.1:{port}"}}))
    log = open(scratch / "daemon.log", "wb")
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
    daemon = subprocess.Popen([str(harness.LOOKALIKE), "run", "--config", str(config)], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT, env=environ)
    written = [0]
    sampler = None
    try:
        deadline = time.monotonic() + 60
        while True:                                       # metrics up and the first reconcile done
            try:
                if (gauge(harness.scrape(port), "lookalike_reconcile_runs_total") or 0) >= 1:
                    break
            except OSError:
                pass
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start; see {scratch / 'daemon.log'}")
            time.sleep(0.2)
        time.sleep(2)                                     # and its first (empty) duplicates pass
        before = harness.scrape(port)
        sampler = Sampler(daemon.pid, port, written)
        sampler.start()
        time.sleep(3)                                     # a few samples of the idle daemon

        flood_start = time.time()
        for i, data in enumerate(blobs):
            fd = os.open(folder / f"{i:06d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
            written[0] = i + 1
        flood_end = time.time()
        create_seconds = flood_end - flood_start
        print(f"{n} files written in {create_seconds:.2f} s ({n / create_seconds:,.0f} files/s)", flush=True)

        stored, last_change, last_count = 0, time.monotonic(), -1
        while stored < n:
            time.sleep(1)
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}); see {scratch / 'daemon.log'}")
            stored = int(gauge(sampler.latest, "lookalike_context_images") or 0)
            if stored != last_count:
                last_change, last_count = time.monotonic(), stored
                print(f"  {time.time() - flood_start:7.0f} s: {stored} stored, "
                      f"{gauge(sampler.latest, 'lookalike_files_queued')} queued", flush=True)
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise SystemExit(f"no progress for {STALL_SECONDS} s at {stored} of {n}; see {scratch / 'daemon.log'}")
            elif time.monotonic() - last_change > IDLE_SECONDS and all(
                    gauge(sampler.latest, name) == 0 for name in PIPELINE):
                # Nothing waits anywhere, yet files are missing: lost until the next reconcile (hourly).
                with SearchContext.open(scratch / "state" / "context") as context:
                    have = {image.path for image in context.images()}
                lost = sorted({str(p) for p in folder.iterdir()} - have)
                raise SystemExit(f"the pipeline is empty at {stored} of {n}: lost {lost}; see {scratch / 'daemon.log'}")
        time.sleep(2 * SAMPLE_SECONDS)                     # a sample or two of the drained daemon
        after = harness.scrape(port)
        cpu = sum(cpu_seconds(pid) for pid in [daemon.pid, *harness.descendants(daemon.pid)])
        sampler.stopping.set()
        sampler.join()

        with SearchContext.open(scratch / "state" / "context") as context:
            records = {image.path: image.added for image in context.images()}
            failures = [{"path": f.path, "reason": f.reason} for f in context.failures()]
            count = context.count()
            size = context.size_on_disk()
        expected = {str(folder / f"{i:06d}.jpg") for i in range(n)}
        missing, extra = sorted(expected - set(records)), sorted(set(records) - expected)
        assert count == n and not missing and not extra, (count, missing[:5], extra[:5])
        assert not failures, failures[:5]
        last_commit = max(records.values())
        first_commit = min(records.values())
    finally:
        if sampler is not None:
            sampler.stopping.set()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        log.close()
    warnings = [line for line in (scratch / "daemon.log").read_text(errors="replace").splitlines()
                if " WARNING " in line or " ERROR " in line]
    if not args.keep:
        shutil.rmtree(scratch)

    samples = sampler.samples
    run_start, run_end = flood_start - sampler.started, last_commit - sampler.started
    ingest_seconds = last_commit - flood_start
    during = [s for s in samples if run_start <= s["t"] <= run_end + SAMPLE_SECONDS]

    def counted(name: str) -> float:
        return harness.total(after, name) - harness.total(before, name)

    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(flood_start)),
        "command": " ".join([".venv/bin/python", "bench/flood.py", *sys.argv[1:]]),
        "lookalike": revision(),
        "files": n, "side_px": SIDE, "bytes": sum(map(len, blobs)),
        "settings": {"workers": args.workers,
                     "everything else": "defaults (settle 2 s, reconcile 1 h, duplicates 15 min)"},
        "generate_seconds": round(generate_seconds, 2),
        "create_seconds": round(create_seconds, 3),
        "created_per_second": round(n / create_seconds),
        "first_commit_after_s": round(first_commit - flood_start, 2),
        "ingest_seconds": round(ingest_seconds, 1),
        "ingest_files_per_second": round(n / ingest_seconds, 1),
        "drain_seconds_after_last_file": round(last_commit - flood_end, 1),
        "stored": count, "failed": len(failures), "missing": len(missing),
        "context_bytes": size,
        "cpu_seconds_daemon_and_workers": round(cpu, 1),
        "cpu_ms_per_file": round(1000 * cpu / n, 2),
        "peak_rss_tree_bytes": max(s["rss_tree"] for s in during),
        "peak_rss_main_bytes": max(s["rss_main"] for s in during),
        "peak_anon_tree_bytes": max(s["anon_tree"] for s in during),
        "peak_anon_main_bytes": max(s["anon_main"] for s in during),
        "peak_file_main_bytes": max(s["file_main"] for s in during),
        "idle_rss_tree_bytes_before": samples[0]["rss_tree"],
        "idle_rss_main_bytes_before": samples[0]["rss_main"],
        "idle_anon_main_bytes_before": samples[0]["anon_main"],
        "rss_at": {f"{int(f * 100)}%": {k: at_fraction(samples, run_start, run_end, f)[k]
                                         for k in ("t", "rss_main", "rss_tree", "anon_main", "file_main", "anon_tree",
                                                   "lookalike_context_images", "lookalike_files_queued")}
                   for f in (0.1, 0.5, 0.9)},
        "anon_main_mb_by_images_stored": anon_by_stored(samples, n),
        "peak_files_queued": max(s["lookalike_files_queued"] or 0 for s in during),
        "peak_store_queue_changes": max(s["lookalike_store_queue_changes"] or 0 for s in during),
        "counters_during_run": {name: counted(name) for name in (
            "lookalike_files_indexed_total", "lookalike_files_seen_total", "lookalike_files_unchanged_total",
            "lookalike_watch_events_total", "lookalike_watch_overflows_total", "lookalike_watch_events_dropped_total",
            "lookalike_reconcile_runs_total",
            "lookalike_duplicates_runs_total", "lookalike_internal_errors_total", "lookalike_files_failed_total")},
        "extract_seconds_mean": round(counted("lookalike_extract_duration_seconds_sum")
                                      / max(1, counted("lookalike_extract_duration_seconds_count")), 4),
        "daemon_exit_code": code,
        "daemon_warnings": warnings[:20],
        "sample_seconds": SAMPLE_SECONDS,
        "flood_started_at_t": round(run_start, 2),
        "samples": samples[::KEPT_SAMPLE],
        "samples_note": f"every {KEPT_SAMPLE}th one-second sample is kept here; the figures above were computed "
                        "from all of them",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
