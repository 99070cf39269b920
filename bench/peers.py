"""lookalike beside its peers, on one dataset, in one run: accuracy, wall time and peak memory.

    .venv/bin/python bench/peers.py                 # everything; about 10 minutes on 2 cores
    .venv/bin/python bench/peers.py --render-only   # BENCHMARKS.md again from bench/results/peers.json

The dataset is bench/dataset.py's (built first if missing): the photos of the development photo
set (CALIBRATION.md, "Data"), one seeded transformed copy of each of the 92 distinct photos per
transform kind, the labelled near-duplicates, and the same-scene groups as hard negatives
(similar, never duplicates).

Every tool runs as its own subprocess, one after the other, on the same folder, at its default
settings: lookalike through its CLI (`context create`, `features add`, `duplicates`);
imagededup's PHash and DHash; ImageHash's phash at the threshold its documentation uses (equal
hashes) and at the best threshold for this data (tuned on the test data, labelled so);
findimagedupes (Debian) at its default 90 %. For each run: wall time, CPU time, and peak
memory two ways: the resident set of the whole process tree sampled every 0.1 s from
/proc/PID/status, and the largest single process's ru_maxrss from wait4.

Every tool's answer becomes groups (its own groups, or the connected components of the pairs it
reports) and groups become pairs the same way for all (every two members of a group), scored
exactly as bench/evaluate.py scores: pairwise precision and recall against truth.json, the ISO
pairs left out, and recall original -> copy for each transform kind.

Peers live in their own venv, bench/.venv (bench/requirements-peers.txt); the machinery that
runs them there is bench/peers_run.py. Writes bench/results/peers.json and the first sections of
BENCHMARKS.md, up to the line HAND_KEPT; what follows that line is left as it is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

from testhelpers import harness

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = BENCH / "requirements-peers.txt"
RUNNER = BENCH / "peers_run.py"
# BENCHMARKS.md between these two lines is what this script writes; the rest is kept by hand, from
# the results files each section names.
WRITTEN_BEGIN = "<!-- The sections below, to the next such line, are written by bench/peers.py. -->"
HAND_KEPT = "<!-- The sections below are kept by hand; bench/peers.py writes only the ones above. -->"
RUSAGE_RUN = BENCH / "rusage_run.py"
SAMPLE_SECONDS = 0.1
TUNE_UP_TO = 24                # ImageHash thresholds tried when tuning: 0..24 bits of 64
# findimagedupes runs a shell function VIEW for every set of duplicates; this one prints the set
# one file a line and a blank line after it (no file name here holds a newline).
FINDIMAGEDUPES_VIEW = 'VIEW(){ for f in "$@"; do printf "%s\\n" "$f"; done; echo; }'


# --- running and measuring -----------------------------------------------------------------

def _field_kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass                                       # gone between listing and reading
    return 0


def tree_memory(pid: int) -> tuple[int, int]:
    """Resident and proportional set bytes of all the descendants of a process, now.

    RSS counts a page shared by forked workers once in each of them; PSS splits it between them,
    so the tree's PSS is what the tree really holds.
    """
    processes = harness.descendants(pid)
    return (sum(_field_kib(f"/proc/{p}/status", "VmRSS:") for p in processes),
            sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in processes))


def measure(command: list[str], log: Path, stdout: Path | None = None) -> dict:
    """Run command to completion under bench/rusage_run.py; its wall time, CPU time and peak memory.

    The tree sampled is everything under rusage_run.py (the tool and its children), not
    rusage_run.py itself.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    usage_file = log.with_suffix(".rusage.json")
    out = open(stdout or os.devnull, "wb")
    err = open(log, "wb")
    load = os.getloadavg()[0]
    process = subprocess.Popen([sys.executable, str(RUSAGE_RUN), str(usage_file), *command],
                               stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while True:
            rss, pss = tree_memory(process.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            if done.wait(SAMPLE_SECONDS):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    process.wait()
    done.set()
    sampler.join()
    out.close()
    err.close()
    usage = json.loads(usage_file.read_text())
    return {"command": command, "returncode": usage["returncode"], "seconds": round(usage["seconds"], 2),
            "cpu_seconds": round(usage["cpu_seconds"], 2),
            "peak_tree_rss_bytes": peak[0], "peak_tree_pss_bytes": peak[1],
            "max_process_rss_bytes": usage["max_process_rss_bytes"],
            "load_average_before": round(load, 2)}


def _check(run: dict, log: Path, allowed=(0,)) -> None:
    if run["returncode"] not in allowed:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{' '.join(run['command'])} exited {run['returncode']}:\n{tail}")


def _combine(stages: dict[str, dict]) -> dict:
    """One tool's figures from the processes it ran one after the other."""
    return {"seconds": round(sum(s["seconds"] for s in stages.values()), 2),
            "cpu_seconds": round(sum(s["cpu_seconds"] for s in stages.values()), 2),
            "peak_tree_rss_bytes": max(s["peak_tree_rss_bytes"] for s in stages.values()),
            "peak_tree_pss_bytes": max(s["peak_tree_pss_bytes"] for s in stages.values()),
            "max_process_rss_bytes": max(s["max_process_rss_bytes"] for s in stages.values()),
            "stages": stages}


# --- groups and pairs ----------------------------------------------------------------------

def components(pairs) -> list[list[str]]:
    """Connected components of a pair graph: how a tool that reports pairs is turned into groups."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def group_pairs(groups) -> set[tuple[str, str]]:
    return {pair for group in groups for pair in itertools.combinations(sorted(group), 2)}


class Truth:
    """truth.json, read once; scores a set of predicted pairs exactly as bench/evaluate.py does."""

    def __init__(self, data: Path):
        truth = json.loads((data / "truth.json").read_text())
        self.kinds = [*truth["transform_kinds"], "labelled"]
        self.actual = {tuple(sorted(p)) for c in truth["clusters"]
                       for p in itertools.combinations([c["original"], *c["copies"]], 2)}
        self.excluded = {tuple(sorted(p)) for g in truth["excluded_pairs"] for p in itertools.combinations(g, 2)}
        self.by_kind: dict[str, list[tuple[str, str]]] = {}
        for cluster in truth["clusters"]:
            for copy, kind in cluster["copies"].items():
                key = "labelled" if cluster.get("labelled") else kind
                self.by_kind.setdefault(key, []).append(tuple(sorted((cluster["original"], copy))))
        self.same_scene = {pair for g in truth["same_scene"] for pair in itertools.combinations(sorted(g["files"]), 2)
                           if pair not in self.excluded}

    def score(self, predicted: set[tuple[str, str]], detail: bool = True) -> dict:
        scored = predicted - self.excluded
        hits = len(scored & self.actual)
        precision = hits / len(scored) if scored else 0.0
        recall = hits / len(self.actual)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        result = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                  "predicted_pairs": len(scored), "true_pairs": len(self.actual), "true_positives": hits}
        if detail:
            result["recall_original_to_copy_by_kind"] = {
                k: {"found": sum(p in predicted for p in self.by_kind[k]), "of": len(self.by_kind[k])}
                for k in self.kinds}
            result["same_scene_pairs_grouped"] = len(predicted & self.same_scene)
            result["same_scene_pairs"] = len(self.same_scene)
            result["iso_pairs_grouped"] = sorted(predicted & self.excluded)
            result["false_pairs_sample"] = sorted(scored - self.actual)[:10]
        return result


# --- the tools -----------------------------------------------------------------------------

def _relative(path: str, data: Path) -> str:
    return str(Path(path).resolve().relative_to(data)) if os.path.isabs(path) else path


def run_lookalike(data: Path, work: Path) -> dict:
    context = work / "lookalike-context"
    report = work / "lookalike-duplicates.json"
    base = [str(harness.LOOKALIKE), "--context", str(context)]
    stages = {}
    for name, args, stdout in [("context create", ["context", "create"], None),
                               ("features add", ["features", "add", str(data)], work / "lookalike-add.json"),
                               ("duplicates", ["duplicates", "--output", str(report), "--format", "json"], None)]:
        log = work / "logs" / f"lookalike-{name.replace(' ', '-')}.log"
        stages[name] = measure(base + args, log, stdout)
        _check(stages[name], log, (0, 1) if name == "features add" else (0,))
    added = json.loads((work / "lookalike-add.json").read_text())
    document = json.loads(report.read_text())
    groups = [[_relative(i["path"], data) for i in g["images"]] for g in document["groups"]]
    return {**_combine(stages), "groups": groups, "files_read": added["added"] + added["updated"],
            "settings": f"defaults (duplicate threshold {document['threshold']:g})"}


def run_imagededup(data: Path, work: Path, method: str, threshold: int = 10) -> dict:
    out = work / f"imagededup-{method}.json"
    log = work / "logs" / f"imagededup-{method}.log"
    run = measure([str(VENV_PYTHON), str(RUNNER), "imagededup", method, str(threshold), str(data), str(out)], log)
    _check(run, log)
    duplicates = json.loads(out.read_text())["duplicates"]
    pairs = {tuple(sorted((a, b))) for a, found in duplicates.items() for b in found}
    return {**_combine({"find_duplicates": run}), "groups": components(pairs), "direct_pairs": sorted(pairs),
            "files_read": len(duplicates),
            "settings": f"defaults (max_distance_threshold {threshold} bits of 64)"}


def run_imagehash(data: Path, work: Path, threshold: int, label: str) -> dict:
    out = work / f"imagehash-{threshold}.json"
    log = work / "logs" / f"imagehash-{threshold}.log"
    run = measure([str(VENV_PYTHON), str(RUNNER), "imagehash", str(threshold), str(data), str(out)], log)
    _check(run, log)
    answer = json.loads(out.read_text())
    pairs = {tuple(sorted((a, b))) for a, b, _ in answer["pairs"]}
    return {**_combine({"phash": run}), "groups": components(pairs), "direct_pairs": sorted(pairs),
            "hashes": answer["hashes"], "files_read": len(answer["hashes"]),
            "settings": f"phash, Hamming distance <= {threshold} ({label})"}


def run_findimagedupes(data: Path, work: Path, images: int) -> dict:
    out = work / "findimagedupes.txt"
    log = work / "logs" / "findimagedupes.log"
    run = measure(["findimagedupes", "-R", "-i", FINDIMAGEDUPES_VIEW, str(data)], log, out)
    _check(run, log)
    groups = [[_relative(line, data) for line in block.splitlines()]
              for block in out.read_text().split("\n\n") if block.strip()]
    # It names a file it could not fingerprint in a warning, "(PATH)" at the end or after "file: ".
    warnings = [line for line in log.read_text(errors="replace").splitlines() if not line.endswith("/truth.json")]
    unread = {m.group(1) or m.group(2) for line in warnings
              if (m := re.search(r"\((/[^()]+)\)$|fingerprint: (/.+)$", line))}
    return {**_combine({"findimagedupes": run}), "groups": groups,
            "files_read": images - len(unread), "warnings": warnings,
            "files_not_read": sorted(_relative(f, data) for f in unread),
            "settings": "defaults (threshold 90 %, i.e. at most 25 of 256 bits differ)"}


def tune_imagehash(hashes: dict[str, str], truth: Truth) -> list[dict]:
    """Scores of ImageHash's phash at every threshold 0..TUNE_UP_TO, from one run's hashes."""
    items = sorted((path, int(h, 16)) for path, h in hashes.items())
    by_distance: dict[int, list[tuple[str, str]]] = {}
    for (a, ha), (b, hb) in itertools.combinations(items, 2):
        distance = (ha ^ hb).bit_count()
        if distance <= TUNE_UP_TO:
            by_distance.setdefault(distance, []).append((a, b))
    curve, pairs = [], []
    for threshold in range(TUNE_UP_TO + 1):
        pairs += by_distance.get(threshold, [])
        grouped = truth.score(group_pairs(components(pairs)), detail=False)
        direct = truth.score(set(pairs), detail=False)
        curve.append({"threshold": threshold, "grouped": grouped, "direct": direct})
    return curve


LEFT_OUT = {
    "imagededup CNN": "it downloads its MobileNetV3 weights at first use; this machine reaches no network "
                      "but the package registries, so it fails (URLError) and is not run",
    "dupeGuru": "the Debian package (dupeguru 4.3.1) is a Qt GUI with no command line and does not start "
                "without a display; its picture engine is reachable only by importing its internal modules, "
                "which is not the tool its users run",
}


# --- setting up ----------------------------------------------------------------------------

def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, pinned = line.split("==")
            pins[name] = pinned
    return pins


def ensure_peers_venv() -> None:
    """bench/.venv with the pinned peers; torch's CPU wheel first, or pip pulls CUDA's."""
    pins = _pins()
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    check = ("import json, sys; from importlib.metadata import version\n"
             "names = json.loads(sys.argv[1]); out = {}\n"
             "for n in names:\n"
             "    try: out[n] = version(n)\n"
             "    except Exception: out[n] = None\n"
             "print(json.dumps(out))")
    have = json.loads(subprocess.run([str(VENV_PYTHON), "-c", check, json.dumps(list(pins))],
                                     check=True, capture_output=True, text=True).stdout)
    if all(have[n] and have[n].split("+")[0] == v for n, v in pins.items()):
        return
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={pins['torch']}"], check=True)
    subprocess.run([*pip, "-c", str(REQUIREMENTS), "-r", str(REQUIREMENTS)], check=True)


def ensure_findimagedupes() -> None:
    if shutil.which("findimagedupes"):
        return
    if os.geteuid() != 0:
        raise SystemExit("findimagedupes is missing: sudo apt-get install -y findimagedupes")
    subprocess.run(["apt-get", "install", "-y", "-q", "findimagedupes"], check=True)


def ensure_dataset(data: Path, photos: Path) -> None:
    if not (data / "truth.json").exists():
        subprocess.run([sys.executable, str(BENCH / "dataset.py"), "--photos", str(photos), "--out", str(data)],
                       check=True, cwd=ROOT)


def warm_cache(data: Path) -> int:
    """Read every file once, so that no tool pays for the first read from disk."""
    total = 0
    for path in sorted(data.rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def _dpkg_version(package: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {"cpu_model": model.group(1).strip() if model else platform.processor(),
            "cores": os.cpu_count(), "memory_bytes": int(memory.group(1)) * 1024 if memory else None,
            "kernel": platform.release(), "os": _os_release()}


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.system()
    found = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.M)
    return found.group(1) if found else platform.system()


def versions(work: Path) -> dict:
    out = work / "peer-versions.json"
    subprocess.run([str(VENV_PYTHON), str(RUNNER), "versions", str(out)], check=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "daemon"], capture_output=True,
                           text=True).stdout.strip()
    lookalike = subprocess.run([str(harness.LOOKALIKE), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "lookalike": {"version": lookalike, "commit": commit + (" (daemon/ had uncommitted changes)" if dirty else ""),
                      "python": platform.python_version(),
                      **{n: version(n) for n in ("opencv-contrib-python-headless", "numpy", "lmdb")}},
        "peers_venv": json.loads(out.read_text()),
        "debian": {p: _dpkg_version(p) for p in ("findimagedupes", "libgraphics-magick-perl", "dupeguru")},
    }


# --- the run -------------------------------------------------------------------------------

def run_all(data: Path, photos: Path, work: Path) -> dict:
    ensure_dataset(data, photos)
    ensure_peers_venv()
    ensure_findimagedupes()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    truth = Truth(data)
    files = [p for p in data.rglob("*") if p.is_file() and p.name != "truth.json"]
    cached = warm_cache(data)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    runs: dict[str, dict] = {}

    def record(name: str, result: dict) -> None:
        predicted = group_pairs(result["groups"])
        result["scores"] = truth.score(predicted)
        if "direct_pairs" in result:
            result["scores_direct_pairs"] = truth.score({tuple(p) for p in result["direct_pairs"]}, detail=False)
        result["groups_found"] = len(result["groups"])
        result["largest_group"] = max((len(g) for g in result["groups"]), default=0)
        s = result["scores"]
        print(f"{name}: P {s['precision']:.3f} R {s['recall']:.3f} F1 {s['f1']:.3f}, {result['seconds']:.1f} s, "
              f"peak {result['peak_tree_rss_bytes'] / 2**20:.0f} MiB", flush=True)
        for key in ("groups", "direct_pairs", "hashes"):
            result.pop(key, None)
        runs[name] = result

    record("lookalike", run_lookalike(data, work))
    record("imagededup PHash", run_imagededup(data, work, "PHash"))
    record("imagededup DHash", run_imagededup(data, work, "DHash"))
    documented = run_imagehash(data, work, 0, "equal hashes, as its README and demo group images")
    curve = tune_imagehash(documented["hashes"], truth)
    best = max(curve, key=lambda c: (c["grouped"]["f1"], -c["threshold"]))
    record("ImageHash phash", documented)
    tuned = run_imagehash(data, work, best["threshold"], "best F1 on this data: tuned on the test data")
    record("ImageHash phash (tuned)", tuned)
    assert runs["ImageHash phash (tuned)"]["scores"]["f1"] == best["grouped"]["f1"], "tuning and run disagree"
    record("findimagedupes", run_findimagedupes(data, work, len(files)))

    return {
        "date": started,
        "machine": machine(),
        "versions": versions(work),
        "dataset": {"path": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data),
                    "files": len(files), "bytes": cached, "true_pairs": len(truth.actual),
                    "excluded_iso_pairs": len(truth.excluded), "same_scene_pairs": len(truth.same_scene),
                    "kinds": truth.kinds},
        "command": "python bench/peers.py",
        "paths": {"data": str(data), "work": str(work)},
        "memory_sampling_seconds": SAMPLE_SECONDS,
        "runs": runs,
        "imagehash_tuning": {"chosen_threshold": best["threshold"], "chosen_on": "grouped F1, all of this dataset",
                             "curve": curve},
        "left_out": LEFT_OUT,
    }


# --- the report ----------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def _command_text(command: list[str], paths: dict) -> str:
    def show(arg: str) -> str:
        arg = arg.replace(paths["data"], "$DATA").replace(paths["work"], "$WORK")
        arg = arg.replace(str(ROOT) + "/", "")
        return f"'{arg}'" if re.search(r"[\s(){};\"$]", arg) and not arg.startswith("$") else arg
    return " ".join(show(a) for a in command)


KIND_HEADERS = {"resize": "resize", "recompress": "recomp", "format_change": "webp", "crop_half": "crop",
                "rotate_90": "rot90", "rotate_180": "rot180", "rotate_270": "rot270", "rotate_small": "rot 2-8°",
                "flip": "flip", "recolour": "recolour", "grayscale": "grey", "blur": "blur", "border": "border",
                "text_overlay": "text", "labelled": "labelled"}


def render(result: dict, evaluation: dict | None, ingest: dict | None, data: Path) -> str:
    m, v, d, runs = result["machine"], result["versions"], result["dataset"], result["runs"]
    tuning = result["imagehash_tuning"]
    lines = [
        "## How each benchmark is measured",
        "",
        "The three sections that follow, from \"lookalike and its peers, side by side\" to \"The daemon's",
        "ingest\", are written by `bench/peers.py` (edit the script, not them): the first from",
        "`bench/results/peers.json`, the next two from `bench/results/evaluation.json` and",
        "`bench/results/daemon_ingest.json`, which the script does not rerun. The sections after them are",
        "kept by hand from the results files they name; the script leaves them as they are.",
        "",
        "## lookalike and its peers, side by side",
        "",
        f"One run, {result['date']}, on the project's development machine: {m['cores']} cores "
        f"({m['cpu_model']}), {m['memory_bytes'] / 2**30:.1f} GiB RAM, {m['os']}, kernel {m['kernel']}.",
        "",
        f"**Dataset** (`bench/dataset.py`, seeded): {d['files']:,} files, {d['bytes'] / 1e6:.0f} MB. The photos of",
        "the development photo set (CALIBRATION.md, Data) (92 distinct photos, 3 labelled near-duplicate groups, 8 same-scene groups) and one",
        f"copy of each of the 92 photos per transform kind, {len(d['kinds']) - 1} kinds (CALIBRATION.md lists them). "
        f"{d['true_pairs']:,} true pairs",
        "(every two files made from one original). The distinct photos are distractors; the same-scene groups are",
        f"hard negatives ({d['same_scene_pairs']} pairs: similar, never duplicates); the {d['excluded_iso_pairs']} ISO "
        "pairs (same tripod, same framing) are left out of",
        "the scores, as `bench/evaluate.py` does.",
        "",
        "**Scoring.** Each tool's answer becomes groups: its own groups (lookalike, findimagedupes) or the",
        "connected components of the pairs it reports (imagededup, ImageHash). Every two members of a group are a",
        "predicted pair, for every tool alike. Precision = true predicted pairs / predicted pairs; recall = true",
        "predicted pairs / true pairs; F1 their harmonic mean. Recall per kind: the share of the 92",
        "original -> copy pairs (7 for the labelled near-duplicates) that the tool put in one group.",
        "",
        "**Time and memory.** Each tool is a subprocess, run one after the other (never two at once), after",
        "every file was read once so the page cache is warm for all. Each is started by a small launcher",
        "(`bench/rusage_run.py`) that forks it, waits for it and reports: wall time from fork to exit (interpreter",
        "start-up and imports included), CPU time (user + system, the tool and its children), and the largest",
        "single process's peak resident set (`ru_maxrss` from `wait4`; exact, not sampled). Meanwhile the whole",
        f"process tree under the launcher is sampled every {result['memory_sampling_seconds']} s: the resident set "
        "summed (`VmRSS` of",
        "`/proc/PID/status`) and the proportional set summed (`Pss` of `/proc/PID/smaps_rollup`, which splits a",
        "page shared by forked workers between them instead of counting it in each); their peaks are given.",
        "",
        "| tool | files read | precision | recall | F1 | predicted pairs | same-scene pairs grouped | wall s | CPU s | peak RSS, tree MiB | peak PSS, tree MiB | largest process MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in runs.items():
        s = r["scores"]
        lines.append(f"| {name} | {_files_read(r)} | {s['precision']:.3f} | {s['recall']:.3f} | **{s['f1']:.3f}** | "
                     f"{s['predicted_pairs']:,} | {s['same_scene_pairs_grouped']} of {s['same_scene_pairs']} | "
                     f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {_mib(r['peak_tree_rss_bytes'])} | "
                     f"{_mib(r['peak_tree_pss_bytes'])} | {_mib(r['max_process_rss_bytes'])} |")
    lines += ["", "Settings:"]
    for name, r in runs.items():
        lines.append(f"- {name}: {r['settings']}.")
    lk = runs["lookalike"]["stages"]
    lines += [
        "",
        f"lookalike's time is its three commands together: `context create` {lk['context create']['seconds']:.1f} s, "
        f"`features add` {lk['features add']['seconds']:.1f} s,",
        f"`duplicates` {lk['duplicates']['seconds']:.1f} s.",
        "",
        "### Recall original -> copy, per transform kind",
        "",
        "| tool | " + " | ".join(KIND_HEADERS.get(k, k) for k in d["kinds"]) + " |",
        "| --- |" + " ---: |" * len(d["kinds"]),
    ]
    for name, r in runs.items():
        by_kind = r["scores"]["recall_original_to_copy_by_kind"]
        lines.append(f"| {name} | " + " | ".join(_fraction(by_kind[k]) for k in d["kinds"]) + " |")
    lines += [
        "",
        "Each cell is found / of as a share (92 pairs a kind; 7 for `labelled`, the near-duplicates others made:",
        "a flip, a resize to 300x300, a 30-degree rotation, grey, an RGBA PNG, a WebP). Abbreviations:",
        "recomp = JPEG quality 25-45, webp = format change, crop = one half kept, rot 2-8° = small rotation with",
        "black corners, text = 2-3 lines of large white text.",
        "",
        "### The hash tools without grouping",
        "",
        "imagededup and ImageHash answer with pairs (each image's neighbours within the threshold), not groups.",
        "The table above joins those pairs into connected components, as lookalike and findimagedupes group; that",
        "can chain unrelated images through intermediate ones. Their pairs scored as they are, with no grouping:",
        "",
        "| tool | precision | recall | F1 | predicted pairs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in runs.items():
        if "scores_direct_pairs" in r:
            s = r["scores_direct_pairs"]
            lines.append(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['predicted_pairs']:,} |")
    lines += [
        "",
        "### ImageHash: the threshold",
        "",
        "ImageHash's documentation gives no distance threshold: its README and its `find_similar_images` demo",
        "group images whose hashes are equal (distance 0) and add that you \"may want to ... require some",
        "manhattan distance (hash1 - hash2 < threshold)\". So it is run at 0, and at the threshold with the best",
        f"grouped F1 on this very data, **{tuning['chosen_threshold']} bits of 64**: tuned on the test data, an upper",
        "bound for it rather than what a user would get. (imagededup's default for the same kind of 64-bit pHash",
        "is 10.) Scores by threshold, from the hashes of one run:",
        "",
        "| threshold (bits) | precision | recall | F1 | F1 without grouping |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for point in tuning["curve"]:
        g, dpair = point["grouped"], point["direct"]
        mark = " (chosen)" if point["threshold"] == tuning["chosen_threshold"] else ""
        lines.append(f"| {point['threshold']}{mark} | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} | "
                     f"{dpair['f1']:.3f} |")
    lines += ["", "pHash sets the bits of the 64 DCT coefficients above their median, so almost every hash has 32 bits",
              "set and the distance between two hashes is even: an odd threshold scores as the even one below it."]
    lines += ["", "### Commands", "",
              "Everything above: `.venv/bin/python bench/peers.py` (the project venv). It builds the dataset with",
              "`bench/dataset.py` if `bench/.data/calibration` is missing, creates `bench/.venv` with",
              "`bench/requirements-peers.txt` if needed (torch's CPU wheel first), installs findimagedupes with apt-get",
              "if it is missing, and runs, with `$DATA` = the dataset folder and `$WORK` = `bench/.data/peers`:", "",
              "```sh"]
    for name, r in runs.items():
        lines.append(f"# {name}")
        for stage in r["stages"].values():
            lines.append(_command_text(stage["command"], result["paths"]))
    lines += ["```", "",
              "`bench/peers_run.py` is the few lines that call each Python peer's own API as its README shows",
              "(imagededup: `PHash().find_duplicates(image_dir=..., recursive=True)`; ImageHash:",
              "`imagehash.phash(Image.open(f))` for every file and `hash1 - hash2` for every pair) and write the",
              "answer untouched; `bench/peers.py` groups and scores it.", "",
              "### Versions", "",
              "| what | version |", "| --- | --- |"]
    lk_v = v["lookalike"]
    lines.append(f"| lookalike | {lk_v['version']}, commit {lk_v['commit']}; Python {lk_v['python']}, "
                 f"opencv-contrib-python-headless {lk_v['opencv-contrib-python-headless']}, numpy {lk_v['numpy']}, "
                 f"lmdb {lk_v['lmdb']} |")
    pv = v["peers_venv"]
    lines.append(f"| imagededup | {pv['imagededup']} (torch {pv['torch']}, torchvision {pv['torchvision']}) |")
    lines.append(f"| ImageHash | {pv['ImageHash']} |")
    lines.append(f"| peers' venv | Python {pv['python']}, numpy {pv['numpy']}, Pillow {pv['Pillow']}, "
                 f"scipy {pv['scipy']}, PyWavelets {pv['PyWavelets']} |")
    lines.append(f"| findimagedupes | {v['debian']['findimagedupes']} (Debian; libgraphics-magick-perl "
                 f"{v['debian']['libgraphics-magick-perl']}) |")
    lines += ["", "torchvision is there only because imagededup imports it (for CNN). Its PyPI wheel is a CUDA build whose",
              "C extension does not load with torch's CPU wheel, and its import then fails; `bench/peers_run.py`",
              "declares the schemas of its two operators that the import registers (nms, qnms) so that it goes",
              "through. The hash methods never touch torch."]
    lines += ["", "### Left out", ""]
    for name, why in LEFT_OUT.items():
        lines.append(f"- **{name}**: {why}.")
    lines += ["", "### What the numbers mean, and what they don't", ""]
    lines += notes(result)
    if evaluation:
        lines += ["", *render_evaluation(evaluation)]
    if ingest:
        lines += ["", *render_ingest(ingest)]
    return "\n".join(lines) + "\n"


def _files_read(run: dict) -> str:
    if run.get("files_read") is not None:
        return f"{run['files_read']:,}"
    warnings = run.get("warnings", [])
    return "all (no warning)" if not warnings else f"? ({len(warnings)} warnings)"


def _fraction(found: dict) -> str:
    return f"{found['found'] / found['of']:.2f}"


GEOMETRIC = ("crop_half", "rotate_90", "rotate_180", "rotate_270", "flip")


def notes(result: dict) -> list[str]:
    """The caveats, with the figures of this run."""
    runs = result["runs"]
    lk = runs["lookalike"]
    peers = {n: r for n, r in runs.items() if n != "lookalike"}
    peer_seconds = sorted(r["seconds"] for r in peers.values())
    loads = [st["load_average_before"] for r in runs.values() for st in r["stages"].values()]
    recall = {n: r["scores"]["recall_original_to_copy_by_kind"] for n, r in peers.items()}
    geometric = max(recall[n][k]["found"] / recall[n][k]["of"] for n in peers for k in GEOMETRIC)
    border = max(recall[n]["border"]["found"] / recall[n]["border"]["of"] for n in peers)
    tuning = result["imagehash_tuning"]
    chosen = tuning["chosen_threshold"]
    looser = [c for c in tuning["curve"] if c["threshold"] in (chosen + 2, chosen + 4)]
    lk_scores = lk["scores"]
    missed = lk_scores["true_pairs"] - lk_scores["true_positives"]
    lk_kinds = lk_scores["recall_original_to_copy_by_kind"]
    copies_missed = sum(v["of"] - v["found"] for v in lk_kinds.values())
    lk_missed = ", ".join(f"{k} {v['of'] - v['found']}" for k, v in lk_kinds.items() if v["found"] < v["of"])
    iso = {n: len(r["scores"]["iso_pairs_grouped"]) for n, r in runs.items()}
    lines = [
        "- **One run each, on a busy machine.** The 2-core virtual machine is shared with other sessions working",
        f"  at the same time: the 1-minute load average before the runs was {min(loads):.1f} to {max(loads):.1f}, "
        "so every tool",
        "  had to share its cores. Times are single runs; expect tens of per cent between runs. The ratios between",
        "  tools are what holds, not the seconds.",
        f"- **lookalike is slower by far**: {lk['seconds']:.0f} s against {peer_seconds[0]:.0f} to "
        f"{peer_seconds[-1]:.0f} s for the peers. It detects and",
        "  describes AKAZE local features in every image and verifies candidate pairs geometrically; the hash",
        "  tools compute one 64-bit hash per image (findimagedupes: 256-bit) and compare hashes. That is what buys",
        "  recall on crops, rotations, mirrors, borders and overlays. lookalike's CLI runs `features add` and",
        "  `duplicates` in one process each (the daemon uses worker processes); imagededup hashes with one worker",
        "  per core (2); ImageHash, as its demo does, and findimagedupes use one process.",
        "- **Memory.** The summed RSS counts a page shared by forked workers once per worker, so it overstates a",
        "  tree of forked processes (imagededup's: a parent and 2 pool workers forked after torch was imported);",
        "  the summed PSS is the fairer tree figure. Sampling every 0.1 s can miss a short peak; `ru_maxrss` cannot,",
        "  but it is one process only. imagededup's memory is mostly torch and torchvision, which it imports even",
        "  to hash.",
        "- **Thresholds.** Every tool runs at its default. A hash tool has one knob, the Hamming threshold; the",
        "  tuned ImageHash row is the best that knob does here, chosen on the data it is scored on. lookalike's",
        "  default (50) was fitted on this same dataset too (CALIBRATION.md), so its figures are in-sample as",
        "  well; a held-out check is still to be done.",
        "- **What the hash tools miss, they miss by design.** A hash of the whole picture changes under a quarter",
        f"  turn, a mirror or a half crop: recall at most {geometric:.2f} for those kinds in every hash row, border at most",
        f"  {border:.2f}. Loosening the threshold past the tuned {chosen} bits does not help: ImageHash's grouped "
        "precision is",
        "  " + ", ".join(f"{c['grouped']['precision']:.3f} at {c['threshold']} bits" for c in looser)
        + " (recall " + ", ".join(f"{c['grouped']['recall']:.3f}" for c in looser) + "), as unrelated photos chain",
        "  into one group.",
    ]
    if missed:
        lines += [
            f"- **lookalike's misses**: {missed} true pairs. Original -> copy it missed {lk_missed}; a copy left",
            "  out of its photo's group loses its pairs with the original and with all the other copies (14 in a",
            f"  full cluster), which is why {copies_missed} missed cop{'ies' if copies_missed > 1 else 'y'} cost that "
            "many pairs.",
        ]
    lines += [
        "- **ISO pairs** (not scored): grouped by " + ", ".join(f"{n} {k}" for n, k in iso.items()) + " (of 2).",
    ]
    fid = runs.get("findimagedupes", {})
    if fid.get("files_not_read"):
        lines += [
            f"- **findimagedupes could not read {len(fid['files_not_read'])} files** "
            f"({', '.join('`' + f + '`' for f in fid['files_not_read'])}): GraphicsMagick",
            "  stops on libpng's warning \"iCCP: known incorrect sRGB profile\" and findimagedupes skips the file",
            "  (its own warnings are in `bench/results/peers.json`). Their pairs with their copies count as missed.",
        ]
    lines += [
        f"- **The dataset is small** ({result['dataset']['files']:,} files) and built for these edits: it says how each "
        "tool copes with",
        "  each kind of edit, not how it does on a real photo library, where most pairs are neither.",
    ]
    return lines


def render_evaluation(e: dict) -> list[str]:
    p = e["pairwise"]
    lines = [
        "## lookalike end to end on the calibration dataset (`bench/evaluate.py`)",
        "",
        f"From `bench/results/evaluation.json` (not rerun by `bench/peers.py`): {e['date']}, lookalike at "
        f"`{e['lookalike']}`, {e['machine']}, load average {e['load_average_at_end']:g} at the end.",
        "The same dataset, a context built in process with 2 extraction workers, the CLI's duplicate detection "
        f"at threshold {e['threshold']:g}, scored the same way.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| files | {e['files']:,} |",
        f"| pairwise precision | {p['precision']:.4f} ({p['predicted_pairs']:,} predicted pairs) |",
        f"| pairwise recall | {p['recall']:.4f} ({p['true_positives']:,} of {p['true_pairs']:,}) |",
        f"| labelled near-duplicate pairs found | {e['near_duplicates_found']} of {e['near_duplicates_pairs']} |",
        f"| same-scene pairs grouped | {len(e['same_scene_pairs_grouped'])} |",
        f"| ISO pairs grouped (not scored) | {len(e['iso_pairs_grouped'])} |",
        f"| time | ingest {e['seconds']['ingest']:g} s (2 worker processes), duplicates {e['seconds']['duplicates']:g} s |",
        f"| context size | {e['context_bytes'] / 1e6:.0f} MB |",
        "",
        "| kind | found | of | recall |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, r in e["recall_original_to_copy_by_kind"].items():
        lines.append(f"| {kind} | {r['found']} | {r['of']} | {r['recall']:.3f} |")
    return lines


def render_ingest(i: dict) -> list[str]:
    t, f = i["trickle_one_every_0.5s"], i["flood_all_at_once"]
    return [
        "## The daemon's ingest (`bench/daemon_ingest.py`)",
        "",
        f"From `bench/results/daemon_ingest.json` (not rerun by `bench/peers.py`): {i['date']}, {i['machine']}.",
        f"A real `lookalike run` on an empty watched folder ({i['workers']} workers, settle {i['settle_seconds']:g} s),",
        f"fed {i['photos']}: first one file every 0.5 s (trickle), then all at once (flood).",
        "Latency: from a file's last byte written to its record committed.",
        "",
        "| phase | files | seconds | files/s | latency p50 s | p95 s | max s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| trickle, one every 0.5 s | {t['files']} | {t['seconds']:g} | {t['files_per_second']:g} | "
        f"{t['latency_p50_s']:g} | {t['latency_p95_s']:g} | {t['latency_max_s']:g} |",
        f"| flood, all at once | {f['files']} | {f['seconds']:g} | {f['files_per_second']:g} | "
        f"{f['latency_p50_s']:g} | {f['latency_p95_s']:g} | {f['latency_max_s']:g} |",
        "",
        f"Peak resident memory of the daemon and its workers: {_mib(i['peak_rss_bytes_daemon_and_workers'])} MiB "
        "(sampled every 0.2 s). In the trickle the settle time is most of the latency, by design.",
        f"Command: `{i['command']}`.",
    ]


def replace_written_part(markdown: Path, written: str) -> str:
    """`markdown` with the part this script writes, between WRITTEN_BEGIN and HAND_KEPT, replaced
    by `written`; what stands before and after those lines is kept by hand and stays as it is."""
    current = markdown.read_text() if markdown.exists() else ""
    before, begin, rest = current.partition(WRITTEN_BEGIN)
    if not begin:
        before, rest = "", current
    _, marker, kept = rest.partition(HAND_KEPT)
    return f"{before}{WRITTEN_BEGIN}\n{written}\n{HAND_KEPT}{kept if marker else chr(10)}"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=BENCH / ".data" / "calibration")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--work", type=Path, default=BENCH / ".data" / "peers")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "peers.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--render-only", action="store_true", help="BENCHMARKS.md again from --out; runs nothing")
    args = parser.parse_args()
    data = args.data.resolve()
    if args.render_only:
        result = json.loads(args.out.read_text())
    else:
        result = run_all(data, args.photos.resolve(), args.work.resolve())
        atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    written = render(result, _load(BENCH / "results" / "evaluation.json"),
                     _load(BENCH / "results" / "daemon_ingest.json"), data)
    atomic_write(args.markdown, replace_written_part(args.markdown, written))
    print(f"wrote {args.markdown}" if args.render_only else f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
    main()
