"""The README, run as a newcomer runs it: the example's daemon and the quick tour's commands,
each taken from the README's text, on a copy of the checkout's config/ with the example photos.

Each command must exit 0 and print, or do, what the README says. Set-up (the virtualenv, pip)
is not run here: CI runs the README's first two commands as written. The one change to the
example config is its ports (metrics, API), since several test runs may share a machine; the
README's addresses are checked against the example config and the defaults instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import DEADLINE, LOOKALIKE, exposition, free_port, scrape, stop_group, total
from lookalike.config import ApiSettings
from lookalike.store import SearchContext

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
CONFIG = "config/example.yaml"
PHOTOS = "example/photos"


def section(title: str) -> str:
    """The README's text under `## title`, up to the next heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#)", README, re.S | re.M)
    assert found, f"README.md has no section '{title}'"
    return found.group(1)


def tour_commands() -> list[str]:
    """The quick tour's commands, as its list writes them (`lookalike VERB ...`)."""
    return [command for line in section("A quick tour").splitlines() if line.startswith("- ")
            for command in re.findall(r"`(lookalike [^`]+)`", line)]


def clean_folder_commands() -> list[str]:
    """The lines of the fenced block of "From a report to a clean folder", comments dropped."""
    block = re.search(r"```sh\n(.*?)```", section("From a report to a clean folder"), re.S)
    assert block, "README.md: no sh block under 'From a report to a clean folder'"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the checkout's config/ with the example photos made, the example config's
    metrics port changed to a free one."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "config", root / "config")
    config = root / CONFIG
    listen = re.search(r'^  listen: "([^"]+)"', config.read_text(), re.M).group(1)
    assert f"<http://{listen}/metrics>" in README, "the README's metrics address is not the example config's"
    assert "\napi:" not in config.read_text(), "the example config sets the API's address: check it like the metrics'"
    config.write_text(config.read_text().replace(listen, f"127.0.0.1:{free_port()}")
                      + f"api:\n  listen: 127.0.0.1:{free_port()}\n")
    made = subprocess.run([sys.executable, "config/make_example_photos.py"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "5 photos and 4 edited copies" in made.stdout      # "five photos ... and four edited copies"
    return root


def shell(checkout: Path, line: str) -> subprocess.CompletedProcess:
    """One command line as a newcomer types it: in the checkout, `lookalike` on the PATH, and a
    home of its own (for `~/quarantine`)."""
    env = {**os.environ, "PATH": f"{LOOKALIKE.parent}{os.pathsep}{os.environ['PATH']}",
           "HOME": str(home(checkout))}
    result = subprocess.run(["bash", "-c", line], cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{line}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def home(checkout: Path) -> Path:
    return checkout.parent / "home"


def photos(checkout: Path) -> list[str]:
    return sorted(path.name for path in (checkout / PHOTOS).iterdir())


def copies(text: str) -> int:
    """How many files a resolve's text plan quarantines ("quarantine: 4 files planned", "... done")."""
    return int(re.search(r"^quarantine: (\d+) files? (?:planned|done)", text, re.M).group(1))


@pytest.mark.slow
def test_the_example_daemon_does_what_the_readme_says(checkout):
    first = README.split("```sh\n", 1)[1].split("```", 1)[0]
    run = re.search(r"\.venv/bin/lookalike (run --config \S+)", first)
    assert run, "the README's first command does not run the daemon"
    groups = re.search(r"logs `(duplicates: \d+ groups)`", README).group(1)
    config = (checkout / CONFIG).read_text()
    port = int(re.search(r'listen: "127.0.0.1:(\d+)"', config).group(1))
    log = checkout / "daemon.log"
    with open(log, "wb") as output:
        daemon = subprocess.Popen([str(LOOKALIKE), *run.group(1).split()], cwd=checkout, stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # "Within seconds it has indexed the nine files into state/context and logs duplicates: 4 groups"
        wait(lambda: groups + "," in log.read_text(), f"'{groups}' in the log", daemon, log)
        reports = checkout / "state" / "reports"
        assert {f"duplicates-latest.{fmt}" for fmt in ("html", "json", "csv")} <= {p.name for p in reports.iterdir()}
        # "`.venv/bin/lookalike --config config/example.yaml report show` prints a summary from
        # another terminal"
        show = re.search(r"`\.venv/bin/(lookalike --config \S+ report show)`", README).group(1)
        summary = shell(checkout, show).stdout
        assert re.search(rf"^Groups: +{groups.split()[1]}$", summary, re.M), summary
        # The tour's curl line: `similar`, asked of the running daemon over HTTP (the copy's port).
        ask = re.search(r"`(curl [^`]*http://([^/`]+)/v1/similar)`", section("A quick tour"))
        assert ask and ask.group(2) == ApiSettings().listen, "the README's API address is not the default"
        api = re.search(r"^api:\n  listen: (\S+)$", config, re.M).group(1)
        asked = shell(checkout, ask.group(1).replace("IMAGE", f"{PHOTOS}/chelsea.jpg").replace(ask.group(2), api))
        found = [Path(r["path"]).name for r in json.loads(asked.stdout)["results"]]
        assert sorted(found[:2]) == ["chelsea-small.jpg", "chelsea.jpg"], found      # an upload finds its own file too
        # "Metrics are on <http://127.0.0.1:9847/metrics>" (here on the copy's port)
        assert f"lookalike_duplicate_groups {groups.split()[1]}.0" in exposition(port)
        # "`kill -USR1` on its PID writes a fresh report at once"
        runs = total(scrape(port), "lookalike_duplicates_runs_total")
        daemon.send_signal(signal.SIGUSR1)
        wait(lambda: total(scrape(port), "lookalike_duplicates_runs_total") > runs, "a fresh report after SIGUSR1",
             daemon, log)
    finally:
        assert not stop_group(daemon, 15)
    assert daemon.returncode == 0, log.read_text()
    with SearchContext.open(checkout / "state" / "context") as context:
        assert sorted(Path(image.path).name for image in context.images()) == photos(checkout)
    assert len(photos(checkout)) == 9


def wait(condition, what: str, daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert daemon.poll() is None, f"the daemon exited while waiting for {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE:g} s:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_quick_tour_and_the_clean_folder_commands_run_as_written(checkout):
    # "`.venv/bin/lookalike --config config/example.yaml scan` does a single pass and a report"
    scan = re.search(r"`\.venv/bin/(lookalike --config \S+ scan)`", README).group(1)
    scanned = json.loads(shell(checkout, scan).stdout)
    assert (scanned["scanned"], scanned["added"], scanned["groups"]) == (9, 9, 4)
    assert Path(scanned["report"]).exists()
    every_photo = photos(checkout)

    # The quick tour, with `--config FILE` as it says, its placeholders filled in.
    quarantine = checkout.parent / "tour-quarantine"
    placeholders = {"IMAGE": f"{PHOTOS}/chelsea.jpg", "A B": f"{PHOTOS}/chelsea.jpg {PHOTOS}/chelsea-small.jpg",
                    "DIR": str(quarantine), "MANIFEST": f"{quarantine}/lookalike-manifest-*.jsonl", "FILE": CONFIG,
                    "NAME": "cat"}
    commands = [command for command in tour_commands() if command.split()[1] != "run"]    # the daemon: above
    assert commands, "README.md: the quick tour lists no command"
    for command in commands:
        for placeholder, value in placeholders.items():
            command = re.sub(rf"\b{placeholder}\b", value, command)
        if "--config" not in command:
            command = command.replace("lookalike ", f"lookalike --config {CONFIG} ", 1)
        check(checkout, command, shell(checkout, command).stdout, every_photo)

    # "From a report to a clean folder", line by line, `~/quarantine` in the test's home.
    lines = clean_folder_commands()
    assert len(lines) == 4 and lines[2].endswith("--to ~/quarantine"), lines
    for line in lines:
        line = line.replace("FILE", CONFIG).replace("<time>", "*")
        check(checkout, line, shell(checkout, line).stdout, every_photo)


def check(checkout: Path, line: str, printed: str, every_photo: list[str]) -> None:
    """That a command printed, or did, what the README says of it. The report groups the four
    edited copies each with its photo."""
    words = line.split()
    verb = words[3] if words[1] == "--config" else words[1]
    if verb == "similar":                 # the stored images that look like IMAGE, best first, 0 to 100
        results = json.loads(printed)["results"]
        assert [Path(r["path"]).name for r in results][:1] == ["chelsea-small.jpg"]
        assert all(0 <= r["similarity"] <= 100 for r in results)
        assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)
    elif verb == "compare":               # the similarity of two files, and why they match
        compared = json.loads(printed)
        assert compared["similarity"] >= 50 and compared["kinds"] == ["resized"] and compared["evidence"]
    elif verb == "duplicates":            # the duplicate groups, as HTML here
        html = (checkout / words[words.index("--output") + 1]).read_text()
        assert html.lstrip().lower().startswith("<!doctype html") and "chelsea-small.jpg" in html
    elif verb == "report":                # a text summary of the latest report
        assert re.search(r"^Groups: +4$", printed, re.M), printed
    elif verb == "resolve" and "--apply" not in words:      # the plan; changes nothing
        assert copies(printed) == 4 and photos(checkout) == every_photo
    elif verb == "resolve":               # the copies moved into DIR, with a manifest
        target = Path(words[words.index("--to") + 1].replace("~", str(home(checkout)), 1))
        assert copies(printed) == 4 and len(photos(checkout)) == 5
        assert list(target.glob("lookalike-manifest-*.jsonl"))
    elif verb == "undo":                  # the quarantined files put back
        assert photos(checkout) == every_photo
    elif verb == "ignore":                # never group these two again
        marked = {Path(word).name for word in words if word.startswith(PHOTOS)}
        assert "not a duplicate" in printed and marked == {"chelsea.jpg", "chelsea-small.jpg"}
        groups = json.loads(shell(checkout, f"lookalike --config {CONFIG} duplicates").stdout)["groups"]
        assert len(groups) == 3
        assert not any(marked <= {Path(image["path"]).name for image in group["images"]} for group in groups)
    elif verb == "tag" and words[words.index("tag") + 1] == "put":     # reference images kept under a name
        assert [reference["name"] for reference in json.loads(printed)["references"]] == ["chelsea.jpg"]
    elif verb == "tag":                   # the stored images that match the tag's references
        found = [Path(r["path"]).name for r in json.loads(printed)["results"]]
        assert sorted(found) == ["chelsea-small.jpg", "chelsea.jpg"], found
    elif verb == "alerts":                # what the daemon indexed that matched: no daemon ran since the tag
        assert printed == "next cursor: 0\n", printed
    else:
        pytest.fail(f"'{line}': the README's command has no check here; add what the README says it does")
