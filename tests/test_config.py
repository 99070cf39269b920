"""The YAML configuration (config.py): schema first, every problem at once, key paths in messages.

Each bad kind is checked alone (the problem names its key path) and all together (one
ConfigError lists every one). The example config in config/ is loaded from a copy of the
checkout layout and must give the defaults, so the comments in it cannot drift from the code.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from lookalike import config, reload
from lookalike.errors import ConfigError, ExitCode
from lookalike.settings import DEFAULT_DUPLICATE_THRESHOLD, ExtractionSettings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    return {"photos": photos, "more": photos / "more", "state": tmp_path / "state"}


def write(tmp_path: Path, text: str, name: str = "lookalike.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str) -> config.Config:
    return config.load(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert caught.value.exit_code == ExitCode.CONFIG == 78
    for problem in caught.value.problems:       # every problem is in the message the CLI prints
        assert problem in caught.value.message
    return caught.value.problems


def keyed(found: list[str]) -> dict[str, str]:
    """problems by key path ('watch[0].path: folder ... does not exist' -> {'watch[0].path': ...})."""
    return dict(p.split(": ", 1) for p in found)


def minimal(folders) -> str:
    return f"watch:\n  - path: {folders['photos']}\nstate_dir: {folders['state']}\n"


# --- valid configs ------------------------------------------------------------------------

def test_minimal_config_gets_the_defaults(tmp_path, folders):
    loaded = load_text(tmp_path, minimal(folders))
    assert loaded.source == str(tmp_path / "lookalike.yaml")
    [folder] = loaded.watch
    assert folder == config.WatchedFolder(path=folders["photos"])
    assert folder.recursive and folder.mode == "native" and not folder.follow_symlinks
    assert folder.include == config.DEFAULT_INCLUDE and folder.exclude == config.DEFAULT_EXCLUDE
    assert loaded.state_dir == folders["state"]
    assert loaded.context_dir == folders["state"] / "context"
    assert loaded.reports == folders["state"] / "reports" and loaded.reports_dir is None
    assert loaded.extraction == ExtractionSettings()
    assert loaded.duplicates_threshold == DEFAULT_DUPLICATE_THRESHOLD
    assert (loaded.settle_seconds, loaded.reconcile_interval, loaded.duplicates_interval) == (2.0, 3600.0, 900.0)
    assert loaded.report_formats == ("json", "csv") and loaded.reports_keep == 10
    assert loaded.metrics_listen == "127.0.0.1:9847"
    assert (loaded.log_level, loaded.log_format) == ("info", "text")
    assert loaded.workers >= 1
    assert loaded.store_max_map_size is None                # the context's own cap
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.state_dir = Path("/elsewhere")


def test_every_key_set(tmp_path, folders):
    loaded = load_text(tmp_path, f"""
        watch:
          - path: {folders['photos']}
            recursive: false
            include: ["*.jpg"]
            exclude: ["skip-*"]
            follow_symlinks: true
            mode: poll
            poll_interval: 10s
          - {folders['more']}
        state_dir: {folders['state']}
        extraction:
          detector: orb
          max_features: 800
          working_size: 1024
          max_pixels: 1000000
          max_file_bytes: 2000000
        workers: 3
        settle_seconds: 500ms
        settle_queue_limit: 500
        reconcile_interval: 2h
        duplicates:
          interval: 1d
          threshold: 62.5
        reports:
          dir: {tmp_path / 'reports'}
          formats: [json, csv, html]
          keep: 3
        metrics:
          listen: "[::1]:9100"
        log:
          level: debug
          format: json
          summary_interval: 10s
        store:
          max_map_size: 8589934592
    """)
    first, second = loaded.watch
    assert first == config.WatchedFolder(folders["photos"], False, ("*.jpg",), ("skip-*",), True, "poll", 10.0)
    assert second == config.WatchedFolder(folders["more"])          # a plain string is a path
    assert loaded.extraction == ExtractionSettings("orb", 800, 1024, 1_000_000, 2_000_000)
    assert (loaded.workers, loaded.settle_seconds, loaded.reconcile_interval) == (3, 0.5, 7200.0)
    assert loaded.settle_queue_limit == 500
    assert (loaded.duplicates_interval, loaded.duplicates_threshold) == (86400.0, 62.5)
    assert loaded.reports == tmp_path / "reports" and loaded.report_formats == ("json", "csv", "html")
    assert loaded.reports_keep == 3 and loaded.metrics_listen == "[::1]:9100"
    assert (loaded.log_level, loaded.log_format, loaded.log_summary_interval) == ("debug", "json", 10.0)
    assert loaded.store_max_map_size == 8 << 30



def test_a_reload_keeps_the_restart_only_settings_and_takes_the_rest(tmp_path, folders):
    path = write(tmp_path, f"watch: [{folders['photos']}, {folders['more']}]\nstate_dir: {folders['state']}\n")
    running = config.load(path)
    path.write_text(f"watch: [{folders['photos']}]\nstate_dir: {folders['state']}\nworkers: 7\n"
                    f"settle_seconds: 9\nmetrics:\n  listen: 127.0.0.1:9999\napi:\n  listen: 127.0.0.1:9998\n")
    reloaded = reload.reread(running)
    assert (reloaded.config.workers, reloaded.config.metrics_listen) == (running.workers, running.metrics_listen)
    assert reloaded.config.api == running.api
    assert reloaded.config.settle_seconds == 9.0 and reloaded.config.watch == (config.WatchedFolder(folders["photos"]),)
    assert reloaded.watch_changed and reloaded.folders_gone == {str(folders["more"])}
    path.write_text("watch: [unclosed\n")
    with pytest.raises(ConfigError):
        reload.reread(running)


@pytest.mark.parametrize("value, seconds", [
    ("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172800.0), ("250ms", 0.25), ("1.5h", 5400.0),
    (" 45 s ", 45.0), ("90", 90.0), (45, 45.0), (0.5, 0.5),
])
def test_durations(tmp_path, folders, value, seconds):
    literal = f'"{value}"' if isinstance(value, str) else value
    loaded = load_text(tmp_path, minimal(folders) + f"reconcile_interval: {literal}\nduplicates:\n  interval: {literal}\n")
    assert loaded.reconcile_interval == seconds and loaded.duplicates_interval == seconds


@pytest.mark.parametrize("value", ['"soon"', '"10 minutes"', '"-5s"', "0", "-3", '"0s"', "true", "[1]", '"1w"'])
def test_bad_durations(tmp_path, folders, value):
    found = keyed(problems(tmp_path, minimal(folders) + f"settle_seconds: {value}\n"))
    assert list(found) == ["settle_seconds"]


def test_config_dir_and_home_expansion(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    (tmp_path / "home" / "pictures").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = tmp_path / "etc" / "lookalike"
    conf.mkdir(parents=True)
    path = write(conf, """
        watch:
          - ${CONFIG_DIR}/../../photos
          - path: ~/pictures
        state_dir: ${CONFIG_DIR}/state
        reports:
          dir: ${CONFIG_DIR}/../../reports
    """)
    loaded = config.load(path)
    assert [f.path for f in loaded.watch] == [tmp_path / "photos", tmp_path / "home" / "pictures"]
    assert loaded.state_dir == conf / "state"
    assert loaded.reports == tmp_path / "reports"
    # Relative to the config file, not to the working directory.
    monkeypatch.chdir(tmp_path / "home")
    assert config.load(Path("../etc/lookalike/lookalike.yaml")).state_dir == conf.resolve() / "state"


# --- one bad kind at a time ---------------------------------------------------------------

def test_unknown_keys_top_level_and_nested(tmp_path, folders):
    found = keyed(problems(tmp_path, minimal(folders) + """\
colour: blue
reports:
  colour: red
  keep: 2
extraction:
  detectr: orb
watch_dirs: []
"""))
    assert set(found) == {"colour", "reports.colour", "extraction.detectr", "watch_dirs"}
    assert "unknown key" in found["reports.colour"] and "formats" in found["reports.colour"]   # lists known keys


def test_unknown_key_in_a_watch_entry(tmp_path, folders):
    found = keyed(problems(tmp_path, f"watch:\n  - path: {folders['photos']}\n    recursiv: false\n"
                                     f"state_dir: {folders['state']}\n"))
    assert list(found) == ["watch[0].recursiv"]


@pytest.mark.parametrize("extra, key", [
    ("workers: many\n", "workers"),
    ("workers: 2.5\n", "workers"),
    ("workers: true\n", "workers"),
    ("settle_queue_limit: lots\n", "settle_queue_limit"),
    ("duplicates:\n  threshold: high\n", "duplicates.threshold"),
    ("duplicates:\n  threshold: true\n", "duplicates.threshold"),
    ("reports:\n  formats: json\n", "reports.formats"),
    ("reports:\n  keep: '10'\n", "reports.keep"),
    ("metrics:\n  listen: 9847\n", "metrics.listen"),
    ("log: verbose\n", "log"),
    ("extraction:\n  max_features: lots\n", "extraction.max_features"),
    ("extraction:\n  detector: 5\n", "extraction.detector"),
    ("store:\n  max_map_size: 1GiB\n", "store.max_map_size"),
])
def test_wrong_types(tmp_path, folders, extra, key):
    found = keyed(problems(tmp_path, minimal(folders) + extra))
    assert list(found) == [key] and "must be" in found[key]


@pytest.mark.parametrize("entry, key", [
    ("    recursive: 'yes'\n", "watch[0].recursive"),
    ("    follow_symlinks: 1\n", "watch[0].follow_symlinks"),
    ("    include: '*.jpg'\n", "watch[0].include"),
    ("    exclude: ['', '*.tmp']\n", "watch[0].exclude"),
    ("    mode: inotify\n", "watch[0].mode"),
    ("    poll_interval: often\n", "watch[0].poll_interval"),
])
def test_wrong_watch_entry_values(tmp_path, folders, entry, key):
    found = keyed(problems(tmp_path, f"watch:\n  - path: {folders['photos']}\n{entry}state_dir: {folders['state']}\n"))
    assert list(found) == [key]


def test_missing_and_non_folder_watch_paths(tmp_path, folders):
    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, f"""\
watch:
  - path: {tmp_path / 'absent'}
  - {a_file}
  - path: {folders['photos']}
  - recursive: true
state_dir: {folders['state']}
""")
    found = keyed(caught.value.problems)
    assert set(found) == {"watch[1].path", "watch[3]"}
    assert "not a folder" in found["watch[1].path"] and "needs a path" in found["watch[3]"]
    # A folder not there (yet) is only a warning, but it is said along with the problems.
    assert list(keyed(caught.value.warnings)) == ["watch[0].path"]
    assert f"warning: watch[0].path: folder {tmp_path / 'absent'} does not exist" in caught.value.message


def test_a_missing_watched_folder_is_a_warning_and_the_config_loads(tmp_path, folders):
    absent = tmp_path / "share" / "photos"
    loaded = load_text(tmp_path, f"watch:\n  - {folders['photos']}\n  - {absent}\nstate_dir: {folders['state']}\n")
    assert [f.path for f in loaded.watch] == [folders["photos"], absent]
    found = keyed(loaded.warnings)
    assert list(found) == ["watch[1].path"] and str(absent) in found["watch[1].path"]
    assert "does not exist" in found["watch[1].path"]
    assert load_text(tmp_path, minimal(folders)).warnings == ()


def test_keep_reference_folders_are_checked_like_other_paths(tmp_path, folders):
    loaded = load_text(tmp_path, minimal(folders) + f"keep:\n  reference: [{folders['more']}, '${{CONFIG_DIR}}/gone']\n")
    assert loaded.keep_reference == (folders["more"], tmp_path / "gone")
    assert list(keyed(loaded.warnings)) == ["keep.reference[1]"]
    assert "does not exist" in keyed(loaded.warnings)["keep.reference[1]"]
    assert load_text(tmp_path, minimal(folders)).keep_reference == ()
    (tmp_path / "a-file").write_text("")
    found = keyed(problems(tmp_path, minimal(folders) + f"keep:\n  reference: [relative, {tmp_path / 'a-file'}, 3]\n"
                                                    "  unknown: 1\n"))
    assert set(found) == {"keep.reference[0]", "keep.reference[1]", "keep.reference[2]", "keep.unknown"}
    assert "absolute" in found["keep.reference[0]"] and "is not a folder" in found["keep.reference[1]"]
    assert "a list" in keyed(problems(tmp_path, minimal(folders) + "keep:\n  reference: /x\n"))["keep.reference"]


@pytest.mark.parametrize("second", ["{photos}", "{photos}/", "{photos}/more/..", "${{CONFIG_DIR}}/photos"])
def test_a_folder_watched_twice_is_a_problem(tmp_path, folders, second):
    second = second.format(photos=folders["photos"])
    found = keyed(problems(tmp_path, f"watch:\n  - {folders['photos']}\n  - {folders['more']}\n"
                                     f"  - path: {second}\n    mode: poll\nstate_dir: {folders['state']}\n"))
    assert list(found) == ["watch[2].path"]
    assert found["watch[2].path"] == f"{folders['photos']} is already watched (watch[0])"


def test_a_key_given_twice_is_a_problem(tmp_path, folders):
    found = problems(tmp_path, f"""\
watch:
  - path: {folders['photos']}
    recursive: false
    recursive: true
state_dir: {folders['state']}
watch: [{folders['more']}]
""")
    assert found == ["line 4: 'recursive' is given twice (first at line 3); only the last would count",
                     "line 6: 'watch' is given twice (first at line 1); only the last would count"]


@pytest.mark.parametrize("text, key", [
    ("watch: []\nstate_dir: /tmp/state\n", "watch"),
    ("watch: /photos\nstate_dir: /tmp/state\n", "watch"),
    ("state_dir: /tmp/state\n", "watch"),
])
def test_watch_must_be_a_non_empty_list(tmp_path, text, key):
    assert list(keyed(problems(tmp_path, text))) == [key]


def test_required_keys(tmp_path):
    assert set(keyed(problems(tmp_path, "workers: 2\n"))) == {"watch", "state_dir"}


def test_empty_file(tmp_path):
    found = problems(tmp_path, "")
    assert found[0].startswith("(top level)")
    assert {"watch", "state_dir"} <= set(keyed(found[1:]))


def test_top_level_that_is_not_a_mapping(tmp_path):
    found = problems(tmp_path, "- /photos\n- /state\n")
    assert "(top level): must be a mapping, not list" in found
    assert {"watch", "state_dir"} <= set(keyed(found))


@pytest.mark.parametrize("key_yaml, key", [
    ("state_dir: state\n", "state_dir"),
    ("state_dir: ./state\n", "state_dir"),
    ("state_dir: 42\n", "state_dir"),
    ("reports:\n  dir: reports\n", "reports.dir"),
])
def test_relative_or_non_string_paths(tmp_path, folders, key_yaml, key):
    text = f"watch:\n  - path: {folders['photos']}\n" + (key_yaml if key == "state_dir" else
                                                          f"state_dir: {folders['state']}\n" + key_yaml)
    found = keyed(problems(tmp_path, text))
    assert list(found) == [key]


def test_relative_watch_path(tmp_path, folders, monkeypatch):
    monkeypatch.chdir(tmp_path)          # "photos" exists relative to here, and is still refused
    found = keyed(problems(tmp_path, f"watch:\n  - path: photos\nstate_dir: {folders['state']}\n"))
    assert list(found) == ["watch[0].path"] and "absolute" in found["watch[0].path"]


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http",
                                    "example.com:9847", "300.1.1.1:9847", ":9847x", ":9847"])
def test_bad_metrics_listen(tmp_path, folders, listen):
    found = keyed(problems(tmp_path, minimal(folders) + f'metrics:\n  listen: "{listen}"\n'))
    assert list(found) == ["metrics.listen"]


@pytest.mark.parametrize("listen", ["127.0.0.1:9847", "0.0.0.0:0", "localhost:8080", "[::]:9847"])
def test_good_metrics_listen(tmp_path, folders, listen):
    assert load_text(tmp_path, minimal(folders) + f'metrics:\n  listen: "{listen}"\n').metrics_listen == listen


@pytest.mark.parametrize("level", ["verbose", "INFO", "trace", "warn"])
def test_bad_log_level(tmp_path, folders, level):
    found = keyed(problems(tmp_path, minimal(folders) + f"log:\n  level: {level}\n"))
    assert list(found) == ["log.level"] and "debug" in found["log.level"]


def test_bad_log_format_and_report_format(tmp_path, folders):
    found = keyed(problems(tmp_path, minimal(folders) + "log:\n  format: xml\nreports:\n  formats: [json, pdf]\n"))
    assert set(found) == {"log.format", "reports.formats"}


@pytest.mark.parametrize("threshold, ok", [(-0.1, False), (100.5, False), (1000, False), (0, True), (100, True),
                                           (37.5, True)])
def test_threshold_range(tmp_path, folders, threshold, ok):
    text = minimal(folders) + f"duplicates:\n  threshold: {threshold}\n"
    if ok:
        assert load_text(tmp_path, text).duplicates_threshold == threshold
    else:
        assert list(keyed(problems(tmp_path, text))) == ["duplicates.threshold"]


@pytest.mark.parametrize("extra, key", [
    ("workers: 0\n", "workers"),
    ("reports:\n  keep: -1\n", "reports.keep"),
    ("extraction:\n  max_features: 0\n", "extraction.max_features"),
    ("extraction:\n  working_size: 32\n", "extraction.working_size"),     # positive, but below the minimum
    ("extraction:\n  detector: surf\n", "extraction.detector"),
    ("store:\n  max_map_size: 65536\n", "store.max_map_size"),
])
def test_out_of_range_numbers_and_names(tmp_path, folders, extra, key):
    [problem] = problems(tmp_path, minimal(folders) + extra)
    # The settings' own checks report under "extraction" and name the field in the message.
    section, _, field = key.partition(".")
    assert problem.startswith(f"{key}:") or (problem.startswith(f"{section}:") and field in problem), problem


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "watch: [unclosed\nstate_dir: /x\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    found = caught.value.problems
    assert len(found) == 1 and re.fullmatch(r"line 2, column \d+: not valid YAML: .+", found[0]), found
    assert caught.value.message.startswith(f"{path}: ") and "<unicode string>" not in caught.value.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nowhere.yaml")
    assert caught.value.problems == ["file not found"]
    assert str(tmp_path / "nowhere.yaml") in caught.value.message


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)          # a directory
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith("cannot read")


def test_every_problem_is_listed_at_once(tmp_path, folders):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, f"""\
watch:
  - path: {folders['photos']}
  - path: {tmp_path / 'absent'}
    mode: sometimes
  - path: relative/photos
  - path: {folders['photos']}
state_dir: state
colour: blue
workers: many
settle_seconds: soon
duplicates:
  threshold: 150
reports:
  colour: red
metrics:
  listen: "localhost"
log:
  level: loud
""")
    found = keyed(caught.value.problems)
    assert set(found) == {"watch[1].mode", "watch[2].path", "watch[3].path", "state_dir", "colour", "workers",
                          "settle_seconds", "duplicates.threshold", "reports.colour", "metrics.listen", "log.level"}
    assert list(keyed(caught.value.warnings)) == ["watch[1].path"]
    assert "warning: watch[1].path: folder" in caught.value.message


# --- the example config -------------------------------------------------------------------

@pytest.fixture
def example(tmp_path) -> Path:
    """config/example.yaml in a copy of the checkout layout, with its photo folder."""
    if not EXAMPLE.exists():
        pytest.skip("config/example.yaml is not in this checkout")
    copy = tmp_path / "checkout" / "config" / "example.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy(EXAMPLE, copy)
    (tmp_path / "checkout" / "example" / "photos").mkdir(parents=True)
    return copy


def test_example_config_loads_to_the_defaults(example):
    checkout = example.parent.parent
    loaded = config.load(example)
    assert [f.path for f in loaded.watch] == [checkout / "example" / "photos"]
    assert loaded.state_dir == checkout / "state" and loaded.reports == checkout / "state" / "reports"
    # Everything else it sets is what the code defaults to: the comments cannot lie.
    defaults = config.parse({"watch": [str(checkout / "example" / "photos")], "state_dir": str(checkout / "state")},
                            example)
    # The example also asks for the HTML report, for the README's first command to show.
    assert loaded.report_formats == ("json", "csv", "html")
    assert dataclasses.replace(loaded, reports_dir=None, report_formats=defaults.report_formats) == defaults


def test_example_config_commented_values_are_the_defaults(example):
    """Uncommenting the example's commented-out settings changes nothing."""
    setting = re.compile(r"^(\s*)#\s?(\s*(?:extraction|detector|max_features|working_size|mode|threshold):.*)$")
    lines = example.read_text().splitlines()
    uncommented = [setting.sub(r"\1\2", line) for line in lines]
    if uncommented == lines:
        pytest.skip("the example has no commented-out settings")
    plain = config.load(example)
    example.write_text("\n".join(uncommented) + "\n")
    assert config.load(example) == plain


def test_example_config_without_its_photo_folder_says_so(example):
    shutil.rmtree(example.parent.parent / "example")
    found = keyed(config.load(example).warnings)
    assert list(found) == ["watch[0].path"] and "does not exist" in found["watch[0].path"]


# --- the configuration reference --------------------------------------------------------

CONFIGURATION_DOC = REPO / "docs" / "configuration.md"
_DOCUMENTED_VALUE = re.compile(r"^(?:`([^`]+)`|(\d+(?:\.\d+)?))$")     # `native`, `[raw]`, 500; not '150M'


def documented_keys() -> dict[str, str]:
    """Every key in docs/configuration.md's table -> the default it states for that key.

    A row may name several keys of one section (`log.level` / `.format`, or `extraction.detector`,
    `.max_features`, ...): a key written `.name` is in the section of the full key before it, and
    the defaults are given in the same order with the same separator."""
    documented = {}
    header = None
    for line in CONFIGURATION_DOC.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if header[:2] != ["key", "default"] or set(cells[0]) <= {"-", " "}:
            continue
        separator = " / " if " / " in cells[0] else ", "
        names = re.findall(r"`([^`]+)`", cells[0])
        defaults = cells[1].split(separator) if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), f"{line!r}: a default for each key"
        section = ""
        for name, default in zip(names, defaults):
            if not name.startswith("."):
                section = name.rpartition(".")[0]
            documented[f"{section}{name}" if name.startswith(".") else name] = default
    return documented


def accepted_keys() -> set[str]:
    """Every key parse accepts, by its full path (`watch[].path`, `log.level`, `workers`)."""
    sections = {name for name in config.KEYS if name}
    top = config.KEYS[""] - {section.removesuffix("[]") for section in sections}
    return set(top) | {f"{section}.{key}" for section in sections for key in config.KEYS[section]}


def test_the_configuration_reference_lists_exactly_the_accepted_keys():
    documented = set(documented_keys())
    assert sorted(accepted_keys() - documented) == [], "accepted by the parser, no row in docs/configuration.md"
    assert sorted(documented - accepted_keys()) == [], "in docs/configuration.md, refused by the parser"


def test_the_defaults_the_configuration_reference_states_are_the_defaults(tmp_path, folders):
    """Setting a key to the default its row states changes nothing: for each plain value
    (`native`, 500, `[raw]`); prose such as 'the core count' or '150M' is not compared."""
    base = {"watch": [{"path": str(folders["photos"])}], "state_dir": str(folders["state"])}
    defaults = config.parse(base, tmp_path / "c.yaml")
    compared = []
    for key, stated in documented_keys().items():
        plain = _DOCUMENTED_VALUE.match(stated)
        if not plain:
            continue
        value = yaml.safe_load(plain.group(1) or plain.group(2))
        document = copy.deepcopy(base)
        section, _, name = key.rpartition(".")
        if section == "watch[]":
            document["watch"][0][name] = value
        elif section:
            document[section] = {name: value}
        else:
            document[name] = value
        try:
            stated_config = config.parse(document, tmp_path / "c.yaml")
        except ConfigError as exc:
            pytest.fail(f"{key}: the stated default {stated} is refused: {exc.problems}")
        assert stated_config == defaults, f"{key}: {stated} is not its default"
        compared.append(key)
    assert len(compared) >= 15, compared       # the table keeps stating most defaults as plain values


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    return caught.value.problems


@pytest.mark.parametrize("key, value", [("state_dir", "{photos}/state"), ("state_dir", "{photos}"),
                                        ("reports", {"dir": "{photos}/reports"})])
def test_the_daemon_never_writes_inside_a_watched_folder(tmp_path, key, value):
    photos = tmp_path / "photos"
    photos.mkdir()
    document = {"watch": [str(photos)], "state_dir": str(tmp_path / "state")}
    document[key] = ({k: v.format(photos=photos) for k, v in value.items()} if isinstance(value, dict)
                     else value.format(photos=photos))
    with pytest.raises(ConfigError) as caught:
        config.parse(document, tmp_path / "c.yaml")
    expected = "reports.dir" if key == "reports" else key
    assert any(p.startswith(f"{expected}:") and "inside the watched folder" in p for p in caught.value.problems)
