"""The Prometheus exposition: names, help, cardinality, bind address, and a real server reading it.

Unit tests render a fresh `Metrics()` registry after simulated work and lint it with promtool.
System tests start the real daemon (`lookalike run`) on a folder of real photos with one resized
copy, lint what its /metrics endpoint serves, check from /proc that it listens on 127.0.0.1 only,
and let a real Prometheus scrape it and answer queries, including every expression of the
Grafana dashboard in docs/grafana/lookalike.json. promtool and prometheus come from Debian's
`prometheus` package (.ci/run installs it); only their absence skips a test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from watchdog import events as watchdog_events

import images
from harness import Daemon, folder, free_port, stop_group
from lookalike import __version__, config
from lookalike.errors import ImageError
from lookalike.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs" / "grafana" / "lookalike.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
MAX_SERIES = 200
# Every kind watchdog can report; the watcher labels events with these and nothing else.
WATCH_EVENT_KINDS = tuple(sorted(getattr(watchdog_events, name) for name in dir(watchdog_events)
                                 if name.startswith("EVENT_TYPE_")))

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None,
                                      reason="prometheus is not installed (Debian package prometheus)")


# --- helpers -------------------------------------------------------------------------------

def promtool_check(exposition: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30)


def series(exposition: str) -> list:
    """Every sample line of an exposition, parsed."""
    return [sample for family in text_string_to_metric_families(exposition) for sample in family.samples]


def value(exposition: str, name: str, labels: dict | None = None) -> float | None:
    for sample in series(exposition):
        if sample.name == name and sample.labels == (labels or {}):
            return sample.value
    return None


def exposed_names(exposition: str) -> set[str]:
    """The names a PromQL expression may use: a counter's `_total`, a histogram's `_bucket`,
    `_sum` and `_count`, an info's `_info`, a gauge's own name."""
    suffixes = {"counter": ("_total",), "histogram": ("", "_bucket", "_sum", "_count"), "info": ("_info",),
                "summary": ("", "_sum", "_count")}
    return {family.name + suffix for family in text_string_to_metric_families(exposition)
            for suffix in suffixes.get(family.type, ("",))}


def help_and_type(exposition: str) -> tuple[dict[str, str], dict[str, str]]:
    helps, types = {}, {}
    for line in exposition.splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[len("# HELP "):].partition(" ")
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split()
            types[name] = kind
    return helps, types


def assert_bounded(exposition: str) -> None:
    samples = series(exposition)
    assert len(samples) < MAX_SERIES, f"{len(samples)} series"
    with_slash = [(s.name, s.labels) for s in samples if any("/" in v for v in s.labels.values())]
    assert not with_slash, f"label values holding a path: {with_slash}"


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def listening_tcp(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc: the socket
    inodes among its descriptors, looked up in its network namespace's tcp and tcp6 tables."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue                                      # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue                                      # no IPv6 in this kernel
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:      # 0A: TCP_LISTEN
                continue
            address, port = local.split(":")
            # The kernel prints each 32-bit word of the address in host byte order.
            raw = b"".join(struct.pack("=I", int(address[i:i + 8], 16)) for i in range(0, len(address), 8))
            found.append((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


def dashboard_expressions(dashboard: dict) -> list[str]:
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))
    return [target["expr"] for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])]


# --- unit: a fresh registry ------------------------------------------------------------------

def simulated_run() -> Metrics:
    """A registry after the work of a day: 1 000 files, every failure reason, every event kind."""
    metrics = Metrics()
    for i in range(1000):
        metrics.files_seen.inc()
        metrics.files_indexed.inc()
        metrics.extract_duration.observe(0.01 * (i % 50))
        metrics.decode_duration.observe(0.005 * (i % 50))
    for reason in ImageError.REASONS:
        metrics.files_failed.labels(reason).inc(3)
    for kind in WATCH_EVENT_KINDS:
        metrics.watch_events.labels(kind).inc(100)
    for kind in ("new", "changed", "missing"):
        metrics.reconcile_discrepancies.labels(kind).inc()
    for stage in ("watch", "service", "duplicates"):
        metrics.internal_errors.labels(stage).inc()
    metrics.files_removed.inc(5)
    metrics.files_unchanged.inc(20)
    metrics.watch_overflows.inc()
    metrics.watcher_restarts.inc()
    metrics.reconcile_runs.inc()
    metrics.reconcile_duration.observe(12.0)
    metrics.duplicates_runs.inc()
    metrics.duplicates_duration.observe(3.0)
    metrics.duplicates_last_success.set(time.time())
    metrics.duplicate_groups.set(4)
    metrics.duplicate_images.set(9)
    metrics.images.set(995)
    metrics.context_size.set(64 << 20)
    metrics.report_write_failures.inc()
    return metrics


@needs_promtool
def test_fresh_registry_passes_promtool():
    result = promtool_check(generate_latest(Metrics().registry))
    assert (result.returncode, result.stdout.decode(), result.stderr.decode()) == (0, "", "")


@needs_promtool
def test_registry_after_work_passes_promtool():
    result = promtool_check(generate_latest(simulated_run().registry))
    assert (result.returncode, result.stdout.decode(), result.stderr.decode()) == (0, "", "")


@needs_promtool
def test_promtool_does_reject_a_bad_name():
    """The passes above mean something: this promtool reads stdin and lints names."""
    bad = b"# HELP lookalike_scan_ms Scan time.\n# TYPE lookalike_scan_ms gauge\nlookalike_scan_ms 1.0\n"
    result = promtool_check(bad)
    assert result.returncode != 0
    assert b"abbreviated units" in result.stdout + result.stderr


def test_every_lookalike_metric_has_help():
    helps, types = help_and_type(generate_latest(simulated_run().registry).decode())
    ours = sorted(name for name in types if name.startswith("lookalike_"))
    assert len(ours) >= 30, ours
    assert [name for name in ours if not helps.get(name, "").strip()] == []


def test_series_are_bounded_and_hold_no_paths():
    metrics = simulated_run()
    exposition = generate_latest(metrics.registry).decode()
    assert_bounded(exposition)
    registry = metrics.registry
    assert registry.get_sample_value("lookalike_files_indexed_total") == 1000
    assert registry.get_sample_value("lookalike_extract_duration_seconds_count") == 1000
    for reason in ImageError.REASONS:
        assert registry.get_sample_value("lookalike_files_failed_total", {"reason": reason}) == 3
    # The failure reasons are the closed set, no more.
    reasons = {s.labels["reason"] for s in series(exposition) if s.name == "lookalike_files_failed_total"}
    assert reasons == set(ImageError.REASONS)


def test_no_created_series():
    exposition = generate_latest(simulated_run().registry).decode()
    assert [s.name for s in series(exposition) if s.name.endswith("_created")] == []


def test_default_metrics_listen_is_loopback(tmp_path):
    assert config.Config.metrics_listen.startswith("127.0.0.1:")
    (tmp_path / "photos").mkdir()
    loaded = config.parse({"watch": [str(tmp_path / "photos")], "state_dir": str(tmp_path / "state")},
                          tmp_path / "c.yaml")
    assert loaded.metrics_listen == f"127.0.0.1:{config.DEFAULT_METRICS_PORT}"


# --- the Grafana dashboard -------------------------------------------------------------------

def test_dashboard_is_importable_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["id"] is None and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def test_dashboard_uses_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names(generate_latest(Metrics().registry).decode())
    queries = dashboard_expressions(dashboard) + [v["definition"] for v in dashboard["templating"]["list"]]
    used = {name for query in queries for name in re.findall(r"\b(?:lookalike|process)_[a-z_]+", query)}
    assert "lookalike_context_images" in used and "process_resident_memory_bytes" in used
    assert sorted(used - exposed) == []


def test_dashboard_shows_every_lookalike_metric():
    """A metric added to metrics.py gets a panel, or this fails."""
    dashboard = json.loads(DASHBOARD.read_text())
    text = " ".join(dashboard_expressions(dashboard))
    families = [f for f in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
                if f.name.startswith("lookalike_")]
    assert sorted(f.name for f in families if f.name not in text) == []


# --- system: the real daemon -----------------------------------------------------------------

DAEMON_IMAGES = 4


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """`lookalike run` on three photos and a resized copy of one, after it has indexed them all
    and written a duplicate report."""
    root = tmp_path_factory.mktemp("daemon")
    photos = folder(root)
    for name in ("astronaut", "chelsea", "coffee"):
        images.write_jpeg(photos, f"{name}.jpg", images.photo(name))
    images.write_jpeg(photos, "coffee-small.jpg", images.resized(images.photo("coffee"), 300, 200))
    daemon = Daemon(root, [photos], workers=2, duplicates={"interval": "2s"}, log={"level": "info"})
    left = []
    try:
        daemon.start()

        def indexed_and_reported() -> bool:
            try:
                samples = daemon.scrape()
            except OSError:
                return False
            return (samples.get(("lookalike_context_images", frozenset())) == DAEMON_IMAGES
                    and samples.get(("lookalike_files_indexed_total", frozenset())) == DAEMON_IMAGES
                    and samples.get(("lookalike_duplicate_groups", frozenset()), 0) >= 1)

        daemon.wait(indexed_and_reported, "the photos indexed and a duplicate report", timeout=40)
        yield daemon
    finally:
        left = stop_group(daemon.process, timeout=15)
        daemon.close()
    assert not left, f"the daemon left processes behind: {left}\n{daemon.log_tail()}"


@pytest.mark.slow
@needs_promtool
def test_daemon_scrape_passes_promtool(daemon):
    text = daemon.exposition()
    result = promtool_check(text.encode())
    assert (result.returncode, result.stdout.decode(), result.stderr.decode()) == (0, "", "")
    assert_bounded(text)
    assert value(text, "lookalike_context_images") == DAEMON_IMAGES
    assert value(text, "lookalike_duplicate_images") >= 2
    assert value(text, "lookalike_duplicates_runs_total") >= 1
    assert value(text, "lookalike_files_failed_total", {"reason": "corrupt"}) == 0
    assert value(text, "process_resident_memory_bytes") > 0
    # The daemon serves the families metrics.py defines, no more and no fewer.
    fresh = {f.name for f in text_string_to_metric_families(generate_latest(Metrics().registry).decode())}
    assert {f.name for f in text_string_to_metric_families(text)} == fresh


def test_listening_tcp_reads_the_kernel_tables():
    """The /proc reader the next test relies on, on sockets of known addresses."""
    sockets = []
    try:
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1"),
                                (socket.AF_INET6, "::1")):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            try:
                s.bind((address, 0))
            except OSError:
                continue                                  # no IPv6 here
            s.listen()
            assert (address, s.getsockname()[1]) in listening_tcp(os.getpid())
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_daemon_listens_on_loopback_only(daemon):
    """The metrics endpoint and the API, each where the config says, nothing else."""
    assert sorted(listening_tcp(daemon.process.pid)) == sorted([("127.0.0.1", daemon.port),
                                                                ("127.0.0.1", daemon.api_port)])


# --- system: a real Prometheus scraping the daemon ---------------------------------------------

@pytest.fixture(scope="module")
def prometheus(daemon, tmp_path_factory):
    """A Prometheus scraping the daemon every second, once it has the daemon's images.
    (Prometheus applies new scrape targets only every 5 s, hence one server for the module.)"""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "lookalike",
                            "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}]}],
    }))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen([PROMETHEUS, f"--config.file={config_file}",
                                    f"--storage.tsdb.path={tmp_path / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    left = []
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"prometheus exited ({process.returncode}):\n{log_tail(log)}"
            try:
                if get(f"{base}/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready in time:\n{log_tail(log)}"
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while one_value(base, "lookalike_context_images") != DAEMON_IMAGES:
            assert time.monotonic() < deadline, query(base, "lookalike_context_images")
            time.sleep(0.25)
        yield base
    finally:
        left = stop_group(process, timeout=10)
    assert not left, f"prometheus left processes behind: {left}"


def query(base: str, promql: str) -> dict:
    status, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    document = json.loads(body)
    assert status == 200 and document["status"] == "success", (promql, status, document)
    return document["data"]


def one_value(base: str, promql: str) -> float | None:
    result = query(base, promql)["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_the_daemon(daemon, prometheus):
    assert one_value(prometheus, "lookalike_context_images") == DAEMON_IMAGES
    assert one_value(prometheus, 'up{job="lookalike"}') == 1
    assert one_value(prometheus, "lookalike_duplicate_groups") >= 1
    [build] = query(prometheus, "lookalike_build_info")["result"]
    assert build["metric"]["version"] == __version__
    assert build["metric"]["instance"] == f"127.0.0.1:{daemon.port}"


@pytest.mark.slow
@needs_prometheus
def test_prometheus_evaluates_every_dashboard_expression(daemon, prometheus):
    """What Grafana would send, with its variables filled in: each must parse and evaluate."""
    variables = {"$__rate_interval": "1m", "$job": "lookalike", "$instance": f"127.0.0.1:{daemon.port}"}
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    empty = []
    for expression in expressions:
        for name, replacement in variables.items():
            expression = expression.replace(name, replacement)
        assert "$" not in expression, expression
        if not query(prometheus, expression)["result"]:
            empty.append(expression)
    # What reads gauges has data at once; rates and increases need a second scrape first.
    assert [e for e in empty if "rate(" not in e and "increase(" not in e] == []
    assert len(expressions) - len(empty) >= 10, empty
