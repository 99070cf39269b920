"""The shipped service files: systemd/lookalike.service and config/lookalike.yaml.

systemd's own checker runs on the unit without a running systemd: `verify` must print nothing
(it exits 0 even on unknown keys, so silence is the only real pass) and `security` must rate the
sandbox at 2.5 or lower. The installed config must load, agree with the unit about where state
lives and what may listen, and set nothing that differs from the code's defaults but the paths.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import LOOKALIKE
from lookalike import config

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "lookalike.service"
SERVICE_CONFIG = REPO / "config" / "lookalike.yaml"
INSTALLED_CONFIG = Path("/etc/lookalike/config.yaml")
INSTALLED_BINARY = "/opt/lookalike/venv/bin/lookalike"
MAX_EXPOSURE = 2.5
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze is not installed on this host")


def unit_settings(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value assigned, in order; enough of the unit syntax for these checks."""
    settings: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def one(settings, section: str, key: str) -> str:
    [value] = settings[(section, key)]
    return value


@pytest.fixture
def host_unit(tmp_path) -> Path:
    """The unit with ExecStart= naming this environment's console script.

    verify checks that the ExecStart binary exists and is executable; /opt/lookalike/venv is the
    install layout and is not on a test host. Only the binary is swapped: arguments and every
    other line are checked as shipped. The copy keeps its name because verify reads the unit
    type and name from it.
    """
    assert LOOKALIKE.exists(), f"{LOOKALIKE} is missing: install the package (pip install -e .)"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_BINARY} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={LOOKALIKE} "))
    return copy


def analyze(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEMD_ANALYZE, *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=60)


# --- systemd-analyze ------------------------------------------------------------------------

@needs_systemd_analyze
def test_verify_prints_nothing(host_unit):
    result = analyze("verify", host_unit)
    assert (result.stdout + result.stderr) == ""
    assert result.returncode == 0


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_5(host_unit):
    # --threshold takes the exposure times ten, as an integer: 25 means 2.5.
    result = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", host_unit)
    found = re.search(r"Overall exposure level for lookalike\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


# --- the unit and the installed config agree ------------------------------------------------

def test_unit_runs_the_daemon_with_the_installed_config(tmp_path):
    settings = unit_settings(UNIT.read_text())
    assert one(settings, "Service", "ExecStart") == f"{INSTALLED_BINARY} run --config {INSTALLED_CONFIG}"
    # ConfigurationDirectory=lookalike is /etc/lookalike; StateDirectory=lookalike is /var/lib/lookalike.
    assert Path("/etc") / one(settings, "Service", "ConfigurationDirectory") == INSTALLED_CONFIG.parent
    assert Path("/var/lib") / one(settings, "Service", "StateDirectory") == load_service_config(tmp_path).state_dir


def test_unit_lets_the_default_metrics_address_through():
    settings = unit_settings(UNIT.read_text())
    assert one(settings, "Service", "IPAddressDeny") == "any"
    assert one(settings, "Service", "IPAddressAllow") == "localhost"
    assert config.Config.metrics_listen.startswith("127.0.0.1:")


# --- config/lookalike.yaml ------------------------------------------------------------------

def load_service_config(photos: Path, text: str | None = None) -> config.Config:
    """The shipped service config, with its /srv/photos swapped for a folder that exists here."""
    document = yaml.safe_load(SERVICE_CONFIG.read_text() if text is None else text)
    assert document["watch"][0]["path"] == "/srv/photos"
    document["watch"][0]["path"] = str(photos)
    return config.parse(document, INSTALLED_CONFIG)


def test_service_config_loads(tmp_path):
    loaded = load_service_config(tmp_path)
    assert [f.path for f in loaded.watch] == [tmp_path]
    assert loaded.state_dir == Path("/var/lib/lookalike")
    assert loaded.context_dir == Path("/var/lib/lookalike/context")
    assert loaded.reports == Path("/var/lib/lookalike/reports")
    assert loaded.metrics_listen == "127.0.0.1:9847"
    # Beyond its paths it sets only defaults, so its comments cannot drift from the code.
    defaults = config.parse({"watch": [str(tmp_path)], "state_dir": "/var/lib/lookalike"}, INSTALLED_CONFIG)
    assert loaded == defaults


def test_service_config_commented_values_are_the_defaults(tmp_path):
    """Uncommenting the service config's commented-out settings changes nothing."""
    keys = "|".join(f.name for f in dataclasses.fields(config.WatchedFolder)) + \
        "|extraction|detector|max_features|working_size|max_pixels|settle_seconds|reconcile_interval" \
        "|interval|threshold|formats|keep|listen|level|format"
    setting = re.compile(rf"^(\s*)#\s?(\s*(?:{keys}):(?: .*)?)$")
    lines = SERVICE_CONFIG.read_text().splitlines()
    uncommented = [setting.sub(r"\1\2", line) for line in lines]
    assert sum(a != b for a, b in zip(lines, uncommented)) >= 10
    assert load_service_config(tmp_path, "\n".join(uncommented) + "\n") == load_service_config(tmp_path)
