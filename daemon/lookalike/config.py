"""The YAML configuration: one validated, frozen object handed to every stage.

Schema first: every key is declared below with its type and default; unknown keys, keys given
twice, wrong types, relative paths, a folder watched twice and bad addresses are all reported at
once, each with its key path, as one ConfigError (exit code 78). Paths must be absolute;
`${CONFIG_DIR}` stands for the folder holding the config file, so the example config runs from
any checkout.

A watched folder that does not exist is a warning, not an error: a share not mounted yet must not
stop the daemon or the reading commands (the daemon watches it once it appears). The warning
names the key, so a mistyped path is still seen (`config check` prints it).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .imaging.formats import EXTENSIONS
from .keeper import KeepRules
from .settings import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_KEEP_FORMATS, ExtractionSettings

DEFAULT_INCLUDE = tuple(f"*{extension}" for extension in EXTENSIONS)
IMAGE_FORMATS = tuple(dict.fromkeys(EXTENSIONS.values()))
DEFAULT_EXCLUDE = (".*", "*.tmp", "*.part", "*.crdownload", "*.partial", "*.download", "~*", ".~*", "*~")
WATCH_MODES = ("native", "poll")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
REPORT_FORMATS = ("json", "csv", "html")
DEFAULT_METRICS_PORT = 9847
DEFAULT_API_PORT = 9848

# Every key a config file may hold, by the section it is in ("" is the top level, "watch[]" one
# entry of the watch list). parse accepts exactly these; docs/configuration.md is tested against them.
KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"watch", "state_dir", "extraction", "workers", "settle_seconds", "settle_queue_limit",
                   "reconcile_interval", "duplicates", "keep", "reports", "metrics", "log", "stop_timeout", "store",
                   "api", "alerts"}),
    "watch[]": frozenset({"path", "recursive", "include", "exclude", "follow_symlinks", "mode", "poll_interval"}),
    "extraction": frozenset({"detector", "max_features", "working_size", "max_pixels", "max_file_bytes"}),
    "duplicates": frozenset({"interval", "threshold"}),
    "keep": frozenset({"formats", "reference", "prefer"}),
    "reports": frozenset({"dir", "formats", "keep"}),
    "metrics": frozenset({"listen"}),
    "log": frozenset({"level", "format", "summary_interval"}),
    "store": frozenset({"max_map_size"}),
    "api": frozenset({"enabled", "listen", "socket", "socket_mode", "token_file", "max_upload_bytes",
                      "max_concurrent", "read_timeout", "request_timeout"}),
    "alerts": frozenset({"file", "threshold"}),
}


@dataclass(frozen=True)
class WatchedFolder:
    path: Path
    recursive: bool = True
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    follow_symlinks: bool = False
    mode: str = "native"
    poll_interval: float = 30.0


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API (api/): where it listens and what it allows; docs/configuration.md says why
    each default is what it is."""

    enabled: bool = True
    listen: str | None = f"127.0.0.1:{DEFAULT_API_PORT}"     # None: the Unix socket only
    socket: Path | None = None
    socket_mode: int = 0o600
    token_file: Path | None = None
    max_upload_bytes: int = 64 << 20
    max_concurrent: int = 4
    read_timeout: int = 30                   # whole seconds: the HTTP server counts in them
    request_timeout: float = 60.0

    @property
    def beyond_loopback(self) -> bool:
        if self.listen is None:
            return False
        host = self.listen.rpartition(":")[0].strip("[]")
        return host != "localhost" and not ipaddress.ip_address(host).is_loopback


def read_token(path: Path) -> str:
    """The API's bearer token: the file's text without surrounding whitespace. ValueError says
    why there is none."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not token:
        raise ValueError(f"{path} is empty; write the token into it")
    return token


@dataclass(frozen=True)
class Config:
    source: str
    watch: tuple[WatchedFolder, ...]
    state_dir: Path
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    workers: int = os.cpu_count() or 1
    settle_seconds: float = 2.0
    settle_queue_limit: int = 10_000         # paths; README, "Configuration"
    reconcile_interval: float = 3600.0
    duplicates_interval: float = 900.0
    duplicates_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS
    reports_dir: Path | None = None          # default: state_dir / "reports"
    report_formats: tuple[str, ...] = ("json", "csv")
    reports_keep: int = 10
    metrics_listen: str = f"127.0.0.1:{DEFAULT_METRICS_PORT}"
    log_level: str = "info"
    log_format: str = "text"
    log_summary_interval: float = 60.0       # seconds between the lines that count what was done to files
    stop_timeout: float = 10.0
    store_max_map_size: int | None = None    # bytes; None: the context's own cap (store/context.py)
    keep_reference: tuple[Path, ...] = ()    # folders whose files are always kept, and never acted on
    keep_prefer: tuple[Path, ...] = ()       # folders whose files are kept first, in this order
    api: ApiSettings = field(default_factory=ApiSettings)
    alerts_file: Path | None = None          # watchlist alerts appended as JSON lines (watchlist.py)
    alerts_threshold: float = DEFAULT_DUPLICATE_THRESHOLD    # a copy of a reference is a duplicate of it
    warnings: tuple[str, ...] = field(default=(), compare=False)     # 'key: what is odd', not fatal

    @property
    def keep_rules(self) -> KeepRules:
        return KeepRules(self.keep_formats, self.keep_reference, self.keep_prefer)

    @property
    def context_dir(self) -> Path:
        return self.state_dir / "context"

    @property
    def reports(self) -> Path:
        return self.reports_dir or self.state_dir / "reports"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class _Reader:
    """Walks the YAML document, collecting every problem instead of stopping at the first."""

    def __init__(self, source: Path):
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def warning(self, key: str, message: str) -> None:
        self.warnings.append(f"{key}: {message}")

    def mapping(self, value, key: str, allowed: frozenset[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key or "(top level)", f"must be a mapping, not {type(value).__name__}")
            return {}
        for unknown in sorted(set(map(str, value)) - allowed):
            self.problem(f"{key}.{unknown}" if key else unknown,
                         f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def typed(self, section: dict, name: str, key: str, kinds, default, check=None, describe=""):
        if name not in section:
            return default
        value = section[name]
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            self.problem(key, f"must be {describe or kinds.__name__}, not a boolean")
            return default
        if not isinstance(value, kinds):
            self.problem(key, f"must be {describe or getattr(kinds, '__name__', kinds)}, not {type(value).__name__}")
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problem(key, message)
                return default
        return value

    def duration(self, section: dict, name: str, key: str, default: float) -> float:
        if name not in section:
            return default
        value = section[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            self.problem(key, f"must be a duration such as 30, '30s', '15m' or '1h', not {value!r}")
            return default
        if seconds <= 0:
            self.problem(key, "must be longer than zero")
            return default
        return seconds

    def path(self, value, key: str, watched: bool = False) -> Path | None:
        if not isinstance(value, str) or not value:
            self.problem(key, f"must be a path, not {value!r}")
            return None
        expanded = os.path.expanduser(value.replace("${CONFIG_DIR}", str(self.source.parent.resolve())))
        if not os.path.isabs(expanded):
            self.problem(key, f"must be an absolute path (or start with ${{CONFIG_DIR}}), not {value!r}")
            return None
        path = Path(os.path.normpath(expanded))
        if watched and not path.exists():
            self.warning(key, f"folder {path} does not exist (yet); it is watched once it appears")
        elif watched and not path.is_dir():
            self.problem(key, f"{path} is not a folder")
            return None
        return path

    def patterns(self, section: dict, name: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.typed(section, name, key, list, None, describe="a list of glob patterns")
        if value is None:
            return default
        if not all(isinstance(p, str) and p for p in value):
            self.problem(key, "every pattern must be a non-empty string")
            return default
        return tuple(value)


def _positive(value) -> str | None:
    return None if value > 0 else "must be greater than zero"


def _percentage(value) -> str | None:
    return None if 0 <= value <= 100 else "must be from 0 to 100"


def _at_least_a_mebibyte(value: int) -> str | None:
    return None if value >= 1 << 20 else "must be at least 1048576 (1 MiB)"


def _listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must be HOST:PORT with a port from 0 to 65535, not {value!r}"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host != "localhost":
            return f"host must be an IP address or localhost, not {host!r}"
    return None


def _watch_folder(reader: _Reader, entry, key: str) -> WatchedFolder | None:
    section = reader.mapping(entry, key, KEYS["watch[]"])
    if "path" not in section:
        reader.problem(key, "needs a path")
        return None
    path = reader.path(section["path"], f"{key}.path", watched=True)
    mode = reader.typed(section, "mode", f"{key}.mode", str, WatchedFolder.mode,
                        lambda v: None if v in WATCH_MODES else f"must be one of {', '.join(WATCH_MODES)}")
    folder = WatchedFolder(
        path=path or Path("/"),
        recursive=reader.typed(section, "recursive", f"{key}.recursive", bool, WatchedFolder.recursive),
        include=reader.patterns(section, "include", f"{key}.include", DEFAULT_INCLUDE),
        exclude=reader.patterns(section, "exclude", f"{key}.exclude", DEFAULT_EXCLUDE),
        follow_symlinks=reader.typed(section, "follow_symlinks", f"{key}.follow_symlinks", bool,
                                     WatchedFolder.follow_symlinks),
        mode=mode,
        poll_interval=reader.duration(section, "poll_interval", f"{key}.poll_interval", WatchedFolder.poll_interval),
    )
    return folder if path else None


def _keep_folders(reader: _Reader, keep: dict, name: str) -> tuple[Path, ...]:
    """The folders of `keep.NAME` (reference, prefer)."""
    listed = reader.typed(keep, name, f"keep.{name}", list, [], describe="a list of folders")
    folders = []
    for i, value in enumerate(listed):
        key = f"keep.{name}[{i}]"
        path = reader.path(value, key)
        if path is None:
            continue
        if not path.exists():
            # Like a watched folder: a share not mounted yet must not stop the daemon.
            reader.warning(key, f"folder {path} does not exist")
        elif not path.is_dir():
            reader.problem(key, f"{path} is not a folder")
            continue
        folders.append(path)
    return tuple(folders)


def _socket_mode(value) -> str | None:
    text = value if isinstance(value, str) else f"{value:o}"
    if not re.fullmatch(r"0?[0-7]{3}", text):
        return f"must be a file mode such as '0660' (octal digits), not {value!r}"
    return None


def _api_settings(reader: _Reader, api: dict) -> ApiSettings:
    defaults = ApiSettings()
    if "listen" in api and api["listen"] is None:
        listen = None
    else:
        listen = reader.typed(api, "listen", "api.listen", str, defaults.listen, _listen)
    socket = reader.path(api["socket"], "api.socket") if "socket" in api else None
    mode = reader.typed(api, "socket_mode", "api.socket_mode", (int, str), defaults.socket_mode, _socket_mode,
                        describe="a file mode")
    token_file = reader.path(api["token_file"], "api.token_file") if "token_file" in api else None
    settings = ApiSettings(
        enabled=reader.typed(api, "enabled", "api.enabled", bool, defaults.enabled),
        listen=listen,
        socket=socket,
        socket_mode=int(mode, 8) if isinstance(mode, str) else mode,
        token_file=token_file,
        max_upload_bytes=reader.typed(api, "max_upload_bytes", "api.max_upload_bytes", int,
                                      defaults.max_upload_bytes, _positive, describe="a size in bytes"),
        max_concurrent=reader.typed(api, "max_concurrent", "api.max_concurrent", int, defaults.max_concurrent,
                                    _positive),
        read_timeout=max(1, round(reader.duration(api, "read_timeout", "api.read_timeout", defaults.read_timeout))),
        request_timeout=reader.duration(api, "request_timeout", "api.request_timeout", defaults.request_timeout),
    )
    if settings.enabled and settings.listen is None and settings.socket is None:
        reader.problem("api", "listen is null and there is no socket: name one, or set api.enabled: false")
    if settings.enabled and settings.beyond_loopback and "token_file" not in api:
        reader.problem("api.token_file", f"is required when api.listen ({settings.listen}) is beyond loopback: "
                                         "a file holding the bearer token every request must carry")
    if settings.enabled and token_file is not None:
        try:
            read_token(token_file)
        except ValueError as exc:
            reader.problem("api.token_file", str(exc))
    return settings


class _Loader(yaml.SafeLoader):
    """The safe loader, noting every key given twice in one mapping: YAML keeps the last one
    silently, which would hide whatever the first said (a whole `watch` list, say)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.repeated: list[tuple[int, str]] = []           # (line, what is wrong)

    def construct_mapping(self, node, deep=False):
        first_seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in first_seen:
                    self.repeated.append((line, f"{key_node.value!r} is given twice (first at line "
                                                f"{first_seen[key_node.value]}); only the last would count"))
                else:
                    first_seen[key_node.value] = line
        return super().construct_mapping(node, deep)


def load(path: str | Path) -> Config:
    source = Path(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ConfigError(str(source), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(source), [f"cannot read: {exc.strerror}"]) from None
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
        raise ConfigError(str(source), [f"{where}not valid YAML: {what}"]) from None
    finally:
        loader.dispose()
    return parse(document, source, loader.repeated)


def parse(document, source: Path, repeated: list[tuple[int, str]] = ()) -> Config:
    reader = _Reader(source)
    for line, what in sorted(repeated):
        reader.problem(f"line {line}", what)
    top = reader.mapping(document, "", KEYS[""])
    if document is None or not isinstance(document, dict):
        reader.problems[:0] = ["(top level): must be a mapping with at least 'watch' and 'state_dir'"] if document is None else []

    folders = []
    watch = top.get("watch")
    if "watch" not in top:
        reader.problem("watch", "is required: a list of folders to watch")
    elif not isinstance(watch, list) or not watch:
        reader.problem("watch", "must be a non-empty list of folders")
    else:
        first_listed: dict[Path, int] = {}
        for i, entry in enumerate(watch):
            if isinstance(entry, str):
                entry = {"path": entry}
            folder = _watch_folder(reader, entry, f"watch[{i}]")
            if folder and folder.path in first_listed:
                reader.problem(f"watch[{i}].path",
                               f"{folder.path} is already watched (watch[{first_listed[folder.path]}])")
            elif folder:
                first_listed[folder.path] = i
                folders.append(folder)

    state_dir = None
    if "state_dir" not in top:
        reader.problem("state_dir", "is required: the folder that holds the search context")
    else:
        state_dir = reader.path(top["state_dir"], "state_dir")

    extraction = ExtractionSettings()
    section = reader.mapping(top.get("extraction"), "extraction", KEYS["extraction"])
    if section:
        values = {}
        for name in ("max_features", "working_size", "max_pixels", "max_file_bytes"):
            values[name] = reader.typed(section, name, f"extraction.{name}", int, getattr(extraction, name), _positive)
        values["detector"] = reader.typed(section, "detector", "extraction.detector", str, extraction.detector)
        try:
            extraction = ExtractionSettings(**values)
        except ValueError as exc:
            reader.problem("extraction", str(exc))

    duplicates = reader.mapping(top.get("duplicates"), "duplicates", KEYS["duplicates"])
    keep = reader.mapping(top.get("keep"), "keep", KEYS["keep"])
    reports = reader.mapping(top.get("reports"), "reports", KEYS["reports"])
    metrics = reader.mapping(top.get("metrics"), "metrics", KEYS["metrics"])
    log = reader.mapping(top.get("log"), "log", KEYS["log"])
    store = reader.mapping(top.get("store"), "store", KEYS["store"])
    api = reader.mapping(top.get("api"), "api", KEYS["api"])
    alerts = reader.mapping(top.get("alerts"), "alerts", KEYS["alerts"])
    alerts_file = reader.path(alerts["file"], "alerts.file") if "file" in alerts else None
    if alerts_file is not None and alerts_file.is_dir():
        reader.problem("alerts.file", f"{alerts_file} is a folder; name the file to append alerts to")

    formats = reader.typed(reports, "formats", "reports.formats", list, list(Config.report_formats), describe="a list")
    if any(f not in REPORT_FORMATS for f in formats):
        reader.problem("reports.formats", f"each format must be one of {', '.join(REPORT_FORMATS)}, not {formats!r}")
        formats = list(Config.report_formats)
    reports_dir = reader.path(reports["dir"], "reports.dir") if "dir" in reports else None
    keep_formats = reader.typed(keep, "formats", "keep.formats", list, list(Config.keep_formats), describe="a list")
    if any(f not in IMAGE_FORMATS for f in keep_formats) or len(set(keep_formats)) != len(keep_formats):
        reader.problem("keep.formats", f"must list distinct formats from {', '.join(IMAGE_FORMATS)}, not {keep_formats!r}")
        keep_formats = list(Config.keep_formats)

    config = Config(
        source=str(source),
        watch=tuple(folders),
        state_dir=state_dir or Path("/"),
        extraction=extraction,
        workers=reader.typed(top, "workers", "workers", int, Config.workers, _positive),
        settle_seconds=reader.duration(top, "settle_seconds", "settle_seconds", Config.settle_seconds),
        settle_queue_limit=reader.typed(top, "settle_queue_limit", "settle_queue_limit", int,
                                        Config.settle_queue_limit, _positive),
        reconcile_interval=reader.duration(top, "reconcile_interval", "reconcile_interval", Config.reconcile_interval),
        stop_timeout=reader.duration(top, "stop_timeout", "stop_timeout", Config.stop_timeout),
        duplicates_interval=reader.duration(duplicates, "interval", "duplicates.interval", Config.duplicates_interval),
        duplicates_threshold=reader.typed(duplicates, "threshold", "duplicates.threshold", (int, float),
                                          Config.duplicates_threshold,
                                          _percentage, describe="a number"),
        keep_formats=tuple(keep_formats),
        reports_dir=reports_dir,
        report_formats=tuple(formats),
        reports_keep=reader.typed(reports, "keep", "reports.keep", int, Config.reports_keep, _positive),
        metrics_listen=reader.typed(metrics, "listen", "metrics.listen", str, Config.metrics_listen, _listen),
        log_level=reader.typed(log, "level", "log.level", str, Config.log_level,
                               lambda v: None if v in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"),
        log_format=reader.typed(log, "format", "log.format", str, Config.log_format,
                                lambda v: None if v in LOG_FORMATS else f"must be one of {', '.join(LOG_FORMATS)}"),
        log_summary_interval=reader.duration(log, "summary_interval", "log.summary_interval",
                                             Config.log_summary_interval),
        store_max_map_size=reader.typed(store, "max_map_size", "store.max_map_size", int, Config.store_max_map_size,
                                        _at_least_a_mebibyte, describe="a size in bytes"),
        keep_reference=_keep_folders(reader, keep, "reference"),
        keep_prefer=_keep_folders(reader, keep, "prefer"),
        api=_api_settings(reader, api),
        alerts_file=alerts_file,
        alerts_threshold=reader.typed(alerts, "threshold", "alerts.threshold", (int, float), Config.alerts_threshold,
                                      _percentage, describe="a number"),
        warnings=tuple(reader.warnings),
    )
    for key, written in (("state_dir", state_dir), ("reports.dir", reports_dir), ("api.socket", config.api.socket),
                         ("alerts.file", alerts_file)):
        for folder in folders:
            if written and (written == folder.path or folder.path in written.parents):
                reader.problem(key, f"{written} is inside the watched folder {folder.path}; lookalike never "
                                    "writes inside the folders it watches")
    if reader.problems:
        raise ConfigError(str(source), reader.problems, reader.warnings)
    return config
