"""The command line: one function per subcommand, thin over the library the daemon uses.

Output is JSON on stdout (documented in README.md, "Command reference"); messages go to stderr.
This is the only place errors become exit codes (errors.ExitCode).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from . import __version__, config as config_module
from .duplicates import find_groups
from .errors import ExitCode, ImageError, LookalikeError, NotFoundError, UsageError, display_path
from .extract import FEW_FEATURES, ImageFeatures, extract_file, few_features
from .imaging.decode import FileIdentity, unchanged
from .imaging.features import detector_info
from .imaging.formats import EXTENSIONS
from .match import compare
from .reports import atomic_write, load as load_report, render, to_document
from .reports.text import counted, summary as report_summary
from .search import query_candidate, similar
from .reconcile import walk
from . import resolve as resolve_module
from .logs import configure_logging
from .service import Service
from .statedir import STATE_LOCK_NAME, open_context, state_lock
from .settings import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_KEEP_FORMATS, DEFAULT_SIMILAR_THRESHOLD, ExtractionSettings
from .store import SearchContext
from .watch.folders import Folders

OUTPUT_VERSION = 1


def _print_json(document) -> None:
    sys.stdout.write(json.dumps(document, indent=1) + "\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"lookalike: {message}\n")


# --- where the context is ------------------------------------------------------------------

def _context_dir(args) -> Path:
    if args.context:
        return Path(args.context).absolute()
    if args.config:
        return config_module.load(args.config).context_dir
    raise UsageError("name the search context with --context DIR or --config FILE")


def _open(args) -> SearchContext:
    return SearchContext.open(_context_dir(args))


def _settings(args) -> ExtractionSettings:
    """The named context's settings, or the defaults when no context is named."""
    if args.context or args.config:
        with _open(args) as context:
            return context.settings
    return ExtractionSettings()


# --- context -------------------------------------------------------------------------------

def _state_dir(args) -> Path | None:
    """The state directory whose lock a running daemon holds, if the context is in one: the
    config's, or the parent of a --context DIR that holds the daemon's lock file."""
    if args.config:
        return config_module.load(args.config).state_dir
    parent = _context_dir(args).parent
    return parent if (parent / STATE_LOCK_NAME).exists() else None


def cmd_context_create(args) -> int:
    try:
        settings = ExtractionSettings(detector=args.detector, max_features=args.max_features,
                                      working_size=args.working_size)
    except ValueError as exc:
        raise UsageError(f"context create: {exc}") from None
    directory = _context_dir(args)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a folder; name a folder for the context")
    with SearchContext.create(directory, settings) as context:
        _print_json(context.info())
    return ExitCode.OK


def cmd_context_info(args) -> int:
    with _open(args) as context:
        _print_json(context.info())
    return ExitCode.OK


def cmd_context_delete(args) -> int:
    directory = _context_dir(args)
    state_dir = _state_dir(args)
    # A daemon keeps writing into the unlinked files and loses everything at its next start.
    with state_lock(state_dir) if state_dir else contextlib.nullcontext():
        SearchContext.delete(directory)
    _print_json({"deleted": str(directory)})
    return ExitCode.OK


# --- features ------------------------------------------------------------------------------

def image_files(paths: Iterable[str]) -> Iterator[str]:
    """Files named, and image files under folders named (recursively, symlinks not followed)."""
    for given in paths:
        path = os.path.abspath(given)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in EXTENSIONS and not name.startswith("."):
                        full = os.path.join(root, name)
                        if not os.path.islink(full):
                            yield full
        else:
            yield path


class _Progress:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, total: int):
        self.total = total
        self.enabled = sys.stderr.isatty() and total > 1

    def __call__(self, done: int, total: int | None = None) -> None:
        if self.enabled:
            total = total or self.total
            width = 30
            filled = int(width * done / max(total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def add_files(context: SearchContext, files: list[str], progress=None) -> dict:
    """Extract and store files whose content is not stored yet; the core of `features add` and `scan`."""
    summary = {"added": 0, "updated": 0, "unchanged": 0, "failed": 0, "failures": []}
    # A file that failed before is counted as unchanged, not failed again, until it changes:
    # `features failed` lists it with its reason.
    batch: list[ImageFeatures] = []

    def flush():
        context.upsert_many(batch)
        batch.clear()

    with context.busy("extracting"):
        for done, path in enumerate(files, 1):
            stored = context.find(path)
            identity = None
            try:
                identity = FileIdentity.of(os.stat(path))
                known = stored.identity if stored else getattr(context.failure(path), "identity", None)
                if unchanged(identity, known):
                    summary["unchanged"] += 1        # stored, or failed before and not changed since
                    continue
                features = extract_file(path, context.settings)
            except ImageError as exc:
                summary["failed"] += 1
                summary["failures"].append({"path": exc.path, "reason": exc.reason, "detail": exc.detail})
                context.record_failure(path, identity, exc.reason, exc.detail)
            except OSError as exc:
                summary["failed"] += 1
                reason = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
                summary["failures"].append({"path": path, "reason": reason, "detail": exc.strerror or str(exc)})
            else:
                summary["updated" if stored else "added"] += 1
                batch.append(features)
                if len(batch) >= 32:
                    flush()
            finally:
                if progress:
                    progress(done)
        flush()
    return summary


def cmd_features_add(args) -> int:
    files = list(image_files(args.paths))
    with _open(args) as context:
        summary = add_files(context, files, _Progress(len(files)))
    _print_json(summary)
    for failure in summary["failures"]:
        _warn(f"{display_path(failure['path'])}: {failure['reason']}: {failure['detail']}")
    return ExitCode.FAILED if summary["failed"] else ExitCode.OK


def features_document(path: str, local, detector: str) -> dict:
    info = detector_info(detector)
    return {"ImageId": path, "FeaturesCount": local.count, "FeatureLengthInBits": info.bits_per_descriptor,
            "Features": base64.b64encode(local.descriptors.tobytes()).decode("ascii")}


def cmd_features_extract(args) -> int:
    settings = _settings(args)
    features = extract_file(os.path.abspath(args.image), settings)
    _print_json(features_document(features.path, features.local, settings.detector))
    return ExitCode.OK


def cmd_features_get(args) -> int:
    path = os.path.abspath(args.id)
    with _open(args) as context:
        local = context.local_features(path)
        _print_json(features_document(path, local, context.settings.detector))
    return ExitCode.OK


def cmd_features_update(args) -> int:
    path = os.path.abspath(args.id)
    with _open(args) as context:
        context.image(path)                          # must exist: update is not add
        features = extract_file(os.path.abspath(args.image), context.settings)
        features = dataclasses.replace(features, path=path)
        context.upsert(features)
        _print_json(features_document(path, features.local, context.settings.detector))
    return ExitCode.OK


def cmd_features_delete(args) -> int:
    path = os.path.abspath(args.id)
    with _open(args) as context:
        if not args.folder and context.find(path) is None:
            under = context.count_under(path)
            if under:
                raise UsageError(f"{display_path(path)}: a folder with {counted(under, 'stored image')}; "
                                 "add --folder to delete them all")
        removed = context.remove_all(path)
        if not removed:
            raise NotFoundError(f"{display_path(path)}: not in the search context")
    _print_json({"deleted": path, "images": removed})
    return ExitCode.OK


def cmd_features_list(args) -> int:
    with _open(args) as context:
        _print_json({"images": [{"path": i.path, "size": i.identity.size, "mtime": i.identity.mtime_ns / 1e9,
                                 "features": i.features, "reason": FEW_FEATURES if few_features(i.features) else None}
                                for i in context.images()]})
    return ExitCode.OK


def cmd_features_failed(args) -> int:
    with _open(args) as context:
        _print_json({"failed": [{"path": f.path, "reason": f.reason, "detail": f.detail}
                                for f in context.failures()]})
    return ExitCode.OK


# --- search --------------------------------------------------------------------------------

def cmd_compare(args) -> int:
    settings = _settings(args)
    first = extract_file(os.path.abspath(args.first), settings)
    second = extract_file(os.path.abspath(args.second), settings)
    result = compare(query_candidate(first), query_candidate(second), settings.detector)
    document = result.to_json()
    poor = [f.path for f in (first, second) if few_features(f.local.count)]
    if poor:      # only a near-exact copy could match: say why a score is low
        document.update(reason=FEW_FEATURES, few_features=poor)
    _print_json(document)
    return ExitCode.OK


def cmd_similar(args) -> int:
    with _open(args) as context:
        features = extract_file(os.path.abspath(args.image), context.settings)
        with context.busy("searching"):
            hits = similar(context, features, args.threshold, args.max_count)
    _print_json({"version": OUTPUT_VERSION, "query": features.path, "threshold": args.threshold,
                 "results": [hit.to_json() for hit in hits]})
    return ExitCode.OK


def write_duplicates_report(context: SearchContext, threshold: float, output: Path | None, fmt: str,
                            progress=None, keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS) -> dict:
    with context.busy("matching"):
        groups = find_groups(context, threshold, progress=progress, keep_formats=keep_formats)
    document = to_document(groups, threshold, str(context.directory))
    text = render(document, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write(output, text)
    return document


def _report_output(args) -> tuple[Path | None, str]:
    """Where `duplicates` writes and in which format: checked before any work is done."""
    if not args.output:
        return None, args.format or "json"
    output = Path(args.output).absolute()
    if output.is_dir():
        raise UsageError(f"--output {display_path(str(output))}: is a folder; name a file to write")
    if not output.parent.is_dir():
        raise UsageError(f"--output {display_path(str(output))}: the folder {display_path(str(output.parent))} "
                         "does not exist")
    named = {".json": "json", ".csv": "csv", ".html": "html", ".htm": "html"}.get(output.suffix.lower())
    if args.format and named and args.format != named:
        raise UsageError(f"--output {display_path(str(output))}: the name says {named}, --format says {args.format}")
    fmt = args.format or named
    if fmt is None:
        raise UsageError(f"--output {display_path(str(output))}: cannot tell the format from the name; "
                         "end it in .json, .csv or .html, or add --format")
    return output, fmt


def cmd_duplicates(args) -> int:
    output, fmt = _report_output(args)
    with _open(args) as context:
        progress = _Progress(context.count())
        write_duplicates_report(context, args.threshold, output, fmt, progress)
    return ExitCode.OK


def configured_files(config: config_module.Config) -> list[str]:
    """The image files of the configured folders, as the daemon's reconcile sees them."""
    folders = Folders(config.watch)
    return sorted(path for folder in folders.all for path, _ in walk(folder, folders, threading.Event()))


def cmd_context_check(args) -> int:
    with _open(args) as context:
        _print_json({"context": str(context.directory), "ok": True, "entries": context.check()})
    return ExitCode.OK


def cmd_context_rebuild(args) -> int:
    """Set a damaged context aside and index the configured folders into a new one."""
    if not args.config:
        raise UsageError("context rebuild needs --config FILE (the folders to index again)")
    config = config_module.load(args.config)
    _config_warnings(config)
    with state_lock(config.state_dir):
        directory = config.context_dir
        previous = None
        if directory.exists():
            previous = directory.with_name(f"{directory.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            directory.rename(previous)
        with SearchContext.create(directory, config.extraction) as context:
            files = configured_files(config)
            summary = add_files(context, files, _Progress(len(files)))
    _print_json({"context": str(directory), "previous": str(previous) if previous else None,
                 **{k: summary[k] for k in ("added", "failed")}})
    return ExitCode.OK


def cmd_scan(args) -> int:
    """One pass over the configured folders, then a duplicates report in the reports folder."""
    if not args.config:
        raise UsageError("scan needs --config FILE (the folders to scan and where to keep the context)")
    config = config_module.load(args.config)
    _config_warnings(config)
    with open_context(config) as context:
        files = configured_files(config)
        summary = add_files(context, files, _Progress(len(files)))
        for failure in summary["failures"]:
            _warn(f"{display_path(failure['path'])}: {failure['reason']}: {failure['detail']}")
        config.reports.mkdir(parents=True, exist_ok=True)
        report = config.reports / "duplicates-latest.json"
        document = write_duplicates_report(context, config.duplicates_threshold, report, "json",
                                           keep_formats=config.keep_formats)
        for fmt in ("csv", "html"):
            if fmt in config.report_formats:
                atomic_write(config.reports / f"duplicates-latest.{fmt}", render(document, fmt))
    groups = document["groups"]
    _print_json({"scanned": len(files), **{k: summary[k] for k in ("added", "updated", "unchanged", "failed")},
                 "groups": len(groups), "images_in_groups": sum(len(g["images"]) for g in groups),
                 "report": str(report)})
    return ExitCode.OK


def cmd_report_show(args) -> int:
    """A short summary of a JSON report for people: the latest one by default."""
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if args.file:
        path = Path(args.file).absolute()
    elif args.config:
        path = config_module.load(args.config).reports / "duplicates-latest.json"
    elif args.context:
        # The layout a config gives by default: state_dir/context beside state_dir/reports.
        path = Path(args.context).absolute().parent / "reports" / "duplicates-latest.json"
    else:
        raise UsageError("name the report with --file PATH, or its config with --config FILE")
    document = load_report(path)
    arrow = "→" if "utf" in (getattr(sys.stdout, "encoding", None) or "").lower() else "->"
    sys.stdout.write(report_summary(document, display_path(str(path)), args.top, arrow))
    return ExitCode.OK


def cmd_resolve(args) -> int:
    """A plan from a report: printed, and carried out only with --apply."""
    config = config_module.load(args.config) if args.config else None
    if args.report:
        report = Path(args.report).absolute()
    elif config:
        report = config.reports / "duplicates-latest.json"
    else:
        raise UsageError("name the report with --report FILE, or its config with --config FILE")
    if args.to and args.action != "quarantine":
        raise UsageError(f"--to is the quarantine folder; --action {args.action} moves nothing there")
    quarantine = Path(args.to).absolute() if args.to else None
    if args.apply and args.action == "quarantine" and quarantine is None:
        raise UsageError("--apply with the quarantine action needs --to DIR, the folder to move the copies into")
    if quarantine and config:
        for folder in config.watch:
            if quarantine == folder.path or folder.path in quarantine.parents:
                raise UsageError(f"--to {display_path(str(quarantine))}: inside the watched folder "
                                 f"{display_path(str(folder.path))}; the quarantine must be outside them")
    if quarantine and quarantine.exists() and not quarantine.is_dir():
        raise UsageError(f"--to {display_path(str(quarantine))}: exists and is not a folder")
    if config:
        _config_warnings(config)
    plan = resolve_module.make_plan(load_report(report), args.action, report,
                                    watched=config.watch if config else None,
                                    reference=config.keep_reference if config else ())
    if args.apply:
        applied = resolve_module.apply(plan, quarantine)
        document = applied.to_json(plan)
    else:
        applied = None
        document = plan.to_json()
    if args.json:
        _print_json(document)
    else:
        sys.stdout.write(resolve_module.to_text(document, args.action))
    return ExitCode.FAILED if applied and applied.refused else ExitCode.OK


def cmd_undo(args) -> int:
    """Put the files of a quarantine manifest back where they were."""
    undone = resolve_module.undo(Path(args.manifest))
    _print_json(undone.to_json())
    for refused in undone.refused:
        _warn(f"{display_path(refused.path)}: not restored: {refused.reason}")
    return ExitCode.FAILED if undone.refused else ExitCode.OK


def cmd_run(args) -> int:
    """The daemon: watch the configured folders until SIGTERM (see service.py)."""
    if not args.config:
        raise UsageError("run needs --config FILE")
    config = config_module.load(args.config)
    # The context names every indexed file and the reports show them: for the daemon's user only.
    os.umask(0o077)
    configure_logging(config.log_level, config.log_format)
    return Service(config).run()


def _config_warnings(config: config_module.Config) -> None:
    for warning in config.warnings:
        _warn(f"warning: {warning}")


def cmd_config_check(args) -> int:
    config = config_module.load(args.file)
    _config_warnings(config)
    _print_json({"config": str(Path(args.file).absolute()), "valid": True,
                 "watch": [str(f.path) for f in config.watch], "state_dir": str(config.state_dir),
                 "warnings": list(config.warnings)})
    return ExitCode.OK


# --- parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description="Find duplicate and lookalike images.")
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--context", metavar="DIR", help="the search context directory")
    where.add_argument("--config", metavar="FILE", help="a YAML config; its state_dir holds the context")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    context = commands.add_parser("context", help="create, inspect or delete a search context")
    context_commands = context.add_subparsers(dest="action", required=True)
    create = context_commands.add_parser("create", help="create an empty context")
    defaults = ExtractionSettings()
    create.add_argument("--detector", choices=("akaze", "orb", "sift", "brisk"), default=defaults.detector)
    create.add_argument("--max-features", type=int, default=defaults.max_features)
    create.add_argument("--working-size", type=int, default=defaults.working_size)
    create.set_defaults(handler=cmd_context_create)
    context_commands.add_parser("info", help="settings, image count, size, status").set_defaults(handler=cmd_context_info)
    context_commands.add_parser("delete", help="delete the context (refused while the daemon runs)").set_defaults(
        handler=cmd_context_delete)
    context_commands.add_parser("check", help="read and decode every record; exit 5 on damage").set_defaults(
        handler=cmd_context_check)
    context_commands.add_parser("rebuild", help="set the context aside and index the configured folders anew "
                                "(needs --config; refused while the daemon runs)").set_defaults(
        handler=cmd_context_rebuild)

    features = commands.add_parser("features", help="add, extract, get, update, delete or list image features")
    feature_commands = features.add_subparsers(dest="action", required=True)
    add = feature_commands.add_parser("add", help="extract and store files, or every image under folders")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.set_defaults(handler=cmd_features_add)
    extract = feature_commands.add_parser("extract", help="extract an image's features without storing them")
    extract.add_argument("image")
    extract.set_defaults(handler=cmd_features_extract)
    get = feature_commands.add_parser("get", help="a stored image's features")
    get.add_argument("id", help="the stored image's absolute path")
    get.set_defaults(handler=cmd_features_get)
    update = feature_commands.add_parser("update", help="replace a stored image's features with IMAGE's")
    update.add_argument("id")
    update.add_argument("image")
    update.set_defaults(handler=cmd_features_update)
    delete = feature_commands.add_parser("delete", help="remove a stored image (or, with --folder, every one "
                                         "under a folder)")
    delete.add_argument("id")
    delete.add_argument("--folder", action="store_true", help="ID is a folder: remove every stored image under it")
    delete.set_defaults(handler=cmd_features_delete)
    feature_commands.add_parser("list", help="every stored image").set_defaults(handler=cmd_features_list)
    feature_commands.add_parser("failed", help="files that could not be read, with reasons").set_defaults(
        handler=cmd_features_failed)

    compare_parser = commands.add_parser("compare", help="similarity of two image files, 0 to 100")
    compare_parser.add_argument("first")
    compare_parser.add_argument("second")
    compare_parser.set_defaults(handler=cmd_compare)

    similar_parser = commands.add_parser("similar", help="stored images that look like IMAGE")
    similar_parser.add_argument("image")
    similar_parser.add_argument("--threshold", type=float, default=DEFAULT_SIMILAR_THRESHOLD)
    similar_parser.add_argument("--max-count", type=int, default=None)
    similar_parser.set_defaults(handler=cmd_similar)

    duplicates = commands.add_parser("duplicates", help="groups of duplicate images in the context")
    duplicates.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD)
    duplicates.add_argument("--output", metavar="FILE", help="write the report to FILE (its folder must exist)")
    duplicates.add_argument("--format", choices=("json", "csv", "html"),
                            help="default: from the --output name (.json, .csv, .html), else json")
    duplicates.set_defaults(handler=cmd_duplicates)

    run = commands.add_parser("run", help="the daemon: keep the context in step with the folders, report duplicates")
    run.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="the YAML config (also accepted "
                     "before the command)")
    run.set_defaults(handler=cmd_run)

    scan = commands.add_parser("scan", help="one pass over the configured folders, then a duplicates report")
    scan.set_defaults(handler=cmd_scan)

    report = commands.add_parser("report", help="show a duplicates report")
    report_commands = report.add_subparsers(dest="action", required=True)
    show = report_commands.add_parser("show", help="summary of the latest JSON report (or --file PATH)")
    show_where = show.add_mutually_exclusive_group()
    show_where.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                            help="the YAML config whose reports folder holds the report (also accepted before the command)")
    show_where.add_argument("--context", metavar="DIR", default=argparse.SUPPRESS,
                            help="a context DIR: the report is DIR/../reports/duplicates-latest.json")
    show.add_argument("--file", metavar="PATH", help="a JSON report (default: duplicates-latest.json "
                                                     "in the configured reports folder)")
    show.add_argument("--top", type=int, default=10, metavar="N", help="groups to list (default 10)")
    show.set_defaults(handler=cmd_report_show)

    resolve = commands.add_parser("resolve", help="a plan to act on the latest duplicates report; "
                                  "changes nothing without --apply")
    resolve.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                         help="the YAML config: its reports folder, watched folders and keep.reference "
                              "(also accepted before the command)")
    resolve.add_argument("--report", metavar="FILE", help="a JSON report (default: duplicates-latest.json in "
                                                          "the configured reports folder)")
    resolve.add_argument("--action", choices=resolve_module.ACTIONS, default="quarantine",
                         help="quarantine (default): move the copies into --to DIR; hardlink: replace "
                              "byte-identical copies with hard links to the keeper; delete")
    resolve.add_argument("--to", metavar="DIR", help="the quarantine folder (outside the watched folders)")
    resolve.add_argument("--json", action="store_true", help="print the plan as JSON")
    resolve.add_argument("--apply", action="store_true", help="carry the plan out")
    resolve.set_defaults(handler=cmd_resolve)

    undo = commands.add_parser("undo", help="put the files of a quarantine manifest back")
    undo.add_argument("manifest", metavar="MANIFEST")
    undo.set_defaults(handler=cmd_undo)

    config_parser = commands.add_parser("config", help="check a configuration file")
    config_commands = config_parser.add_subparsers(dest="action", required=True)
    check = config_commands.add_parser("check", help="validate FILE and exit (78 when invalid; a watched folder "
                                       "that does not exist is a warning)")
    check.add_argument("file")
    check.set_defaults(handler=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("threshold",):
        value = getattr(args, name, None)
        if value is not None and not 0 <= value <= 100:
            parser.error(f"--{name} must be from 0 to 100")
    if getattr(args, "max_count", None) is not None and args.max_count < 1:
        parser.error("--max-count must be at least 1")
    try:
        return args.handler(args)
    except LookalikeError as exc:
        _warn(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        _warn("interrupted")
        return 130
    except BrokenPipeError:
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
