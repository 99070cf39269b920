"""The command line: one function per subcommand, argument parsing and printing over the
application layer (operations.py), the functions the daemon's rules are shared with.

Output is JSON on stdout (documented in README.md, "Command reference"); messages go to stderr.
This is the only place errors become exit codes (errors.ExitCode).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__, config as config_module, operations
from .errors import ExitCode, LookalikeError, UsageError, display_path
from .settings import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_SIMILAR_THRESHOLD, ExtractionSettings


def _print_json(document) -> None:
    sys.stdout.write(json.dumps(document, indent=1) + "\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"lookalike: {message}\n")


def _warn_failures(failures: list[dict]) -> None:
    for failure in failures:
        _warn(f"{display_path(failure['path'])}: {failure['reason']}: {failure['detail']}")


def _progress(done: int, total: int) -> None:
    """A one-line progress bar on a terminal; silent when stderr is not one."""
    if total > 1 and sys.stderr.isatty():
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --- where the context is ------------------------------------------------------------------

def _context_dir(args, config: config_module.Config | None = None) -> Path:
    """--context, or the context of the config: `config` when the caller has loaded it already."""
    if args.context:
        return Path(args.context).absolute()
    if args.config:
        return (config or config_module.load(args.config)).context_dir
    raise UsageError("name the search context with --context DIR or --config FILE")


def _context_and_state_dir(args) -> tuple[Path, Path | None]:
    """The context, and the state directory whose lock a running daemon holds if the context is in one."""
    config = config_module.load(args.config) if args.config else None
    directory = _context_dir(args, config)
    return directory, config.state_dir if config else operations.daemon_state_dir(directory)


def _settings(args) -> ExtractionSettings:
    """The named context's settings, or the defaults when no context is named."""
    return operations.extraction_settings(_context_dir(args) if args.context or args.config else None)


def _loaded_config(args, command: str, needs: str) -> config_module.Config:
    if not args.config:
        raise UsageError(f"{command} needs --config FILE ({needs})")
    config = config_module.load(args.config)
    _config_warnings(config)
    return config


# --- context -------------------------------------------------------------------------------

def cmd_context_create(args) -> int:
    try:
        settings = ExtractionSettings(detector=args.detector, max_features=args.max_features,
                                      working_size=args.working_size)
    except ValueError as exc:
        raise UsageError(f"context create: {exc}") from None
    _print_json(operations.create_context(_context_dir(args), settings))
    return ExitCode.OK


def cmd_context_info(args) -> int:
    _print_json(operations.context_info(_context_dir(args)))
    return ExitCode.OK


def cmd_context_delete(args) -> int:
    _print_json(operations.delete_context(*_context_and_state_dir(args)))
    return ExitCode.OK


def cmd_context_check(args) -> int:
    _print_json(operations.check_context(_context_dir(args)))
    return ExitCode.OK


def cmd_context_rebuild(args) -> int:
    """Set a damaged context aside and index the configured folders into a new one."""
    config = _loaded_config(args, "context rebuild", "the folders to index again")
    summary = operations.rebuild_context(config, _progress)
    _print_json(summary)
    if summary["tags_set_aside"]:
        _warn(f"the tags {', '.join(map(repr, summary['tags_set_aside']))} stay in {summary['previous']}: "
              f"put them again with 'lookalike tag put NAME IMAGE'")
    elif summary["tags_set_aside"] is None:
        _warn(f"{summary['previous']} could not be read: any tags it held stay there")
    return ExitCode.OK


# --- features ------------------------------------------------------------------------------

def cmd_features_add(args) -> int:
    # Folders under a configured one are walked with its patterns, as the daemon walks them.
    config = config_module.load(args.config) if args.config else None
    summary = operations.add_features(_context_dir(args, config), args.paths, _progress, config.watch if config else ())
    _print_json(summary)
    _warn_failures(summary["failures"])
    return ExitCode.FAILED if summary["failed"] else ExitCode.OK


def cmd_features_extract(args) -> int:
    _print_json(operations.extract_features(args.image, _settings(args)))
    return ExitCode.OK


def cmd_features_get(args) -> int:
    _print_json(operations.get_features(_context_dir(args), args.id))
    return ExitCode.OK


def cmd_features_update(args) -> int:
    _print_json(operations.update_features(_context_dir(args), args.id, args.image))
    return ExitCode.OK


def cmd_features_delete(args) -> int:
    _print_json(operations.delete_features(_context_dir(args), args.id, args.folder))
    return ExitCode.OK


def cmd_features_list(args) -> int:
    _print_json(operations.list_features(_context_dir(args)))
    return ExitCode.OK


def cmd_features_failed(args) -> int:
    _print_json(operations.failed_features(_context_dir(args)))
    return ExitCode.OK


# --- search --------------------------------------------------------------------------------

def cmd_compare(args) -> int:
    _print_json(operations.compare_files(args.first, args.second, _settings(args)))
    return ExitCode.OK


def cmd_similar(args) -> int:
    _print_json(operations.find_similar(_context_dir(args), args.image, args.threshold, args.max_count))
    return ExitCode.OK


def cmd_tag_put(args) -> int:
    _print_json(operations.put_tag_files(*_context_and_state_dir(args), args.name, args.images))
    return ExitCode.OK


def cmd_tag_list(args) -> int:
    _print_json(operations.listed_tags(_context_dir(args)))
    return ExitCode.OK


def cmd_tag_delete(args) -> int:
    _print_json(operations.delete_tag_named(*_context_and_state_dir(args), args.name))
    return ExitCode.OK


def cmd_tag_search(args) -> int:
    _print_json(operations.tags_search(_context_dir(args), args.names, args.threshold, args.max_count))
    return ExitCode.OK


def cmd_alerts(args) -> int:
    document = operations.recorded_alerts(_context_dir(args), args.since, args.limit)
    if args.json:
        _print_json(document)
        return ExitCode.OK
    for alert in document["alerts"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(alert["at"]))
        sys.stdout.write(f"{alert['cursor']}  {when}  {alert['tag']}  {alert['similarity']:5.1f}  "
                         f"{display_path(alert['path'])}  (reference {alert['reference']})\n")
    sys.stdout.write(f"next cursor: {document['next']}\n")
    return ExitCode.OK


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
    text = operations.duplicates_report(_context_dir(args), args.threshold, fmt, _progress)
    if output is None:
        sys.stdout.write(text)
    else:
        operations.save(output, text)
    return ExitCode.OK


def cmd_scan(args) -> int:
    """One pass over the configured folders, then the duplicates reports in the reports folder."""
    config = _loaded_config(args, "scan", "the folders to scan and where to keep the context")
    summary = operations.scan(config, _progress)
    _warn_failures(summary.pop("failures"))
    _print_json(summary)
    return ExitCode.OK


def _latest_report(args, option: str) -> Path:
    """The latest JSON report of the context named by --config or --context."""
    if args.config:
        return operations.latest_report(config_module.load(args.config).reports)
    if args.context:
        # The layout a config gives by default: state_dir/context beside state_dir/reports.
        return operations.latest_report(Path(args.context).absolute().parent / "reports")
    raise UsageError(f"name the report with {option}, or its config with --config FILE")


def cmd_report_show(args) -> int:
    """A short summary of a JSON report for people: the latest one by default."""
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    path = Path(args.file).absolute() if args.file else _latest_report(args, "--file PATH")
    arrow = "→" if "utf" in (getattr(sys.stdout, "encoding", None) or "").lower() else "->"
    sys.stdout.write(operations.show_report(path, args.top, arrow))
    return ExitCode.OK


def cmd_resolve(args) -> int:
    """A plan from a report: printed, and carried out only with --apply."""
    config = config_module.load(args.config) if args.config else None
    if args.report:
        report = Path(args.report).absolute()
    elif config:
        report = operations.latest_report(config.reports)
    else:
        raise UsageError("name the report with --report FILE, or its config with --config FILE")
    if args.to and args.action != "quarantine":
        raise UsageError(f"--to is the quarantine folder; --action {args.action} moves nothing there")
    quarantine = Path(args.to).absolute() if args.to else None
    if args.apply and args.action == "quarantine" and quarantine is None:
        raise UsageError("--apply with the quarantine action needs --to DIR, the folder to move the copies into")
    if config:
        _config_warnings(config)
    document, refused = operations.resolve(report, args.action, quarantine, args.apply, config)
    if args.json:
        _print_json(document)
    else:
        sys.stdout.write(operations.resolution_text(document, args.action))
    return ExitCode.FAILED if refused else ExitCode.OK


def cmd_undo(args) -> int:
    """Put the files of a quarantine manifest back where they were."""
    undone = operations.undo(Path(args.manifest))
    _print_json(undone.to_json())
    for refused in undone.refused:
        _warn(f"{display_path(refused.path)}: not restored: {refused.reason}")
    return ExitCode.FAILED if undone.refused else ExitCode.OK


def cmd_ignore(args) -> int:
    """Mark two images, or a report's group, not a duplicate; list or remove such marks."""
    modes = [name for name, given in (("--list", args.list), ("--remove", args.remove),
                                      ("--group", args.group is not None)) if given]
    if len(modes) > 1:
        raise UsageError(f"ignore: {' and '.join(modes)} do not go together")
    if args.report and modes != ["--group"]:
        raise UsageError("ignore: --report names the report whose --group to mark")
    if modes in (["--list"], ["--group"]) and args.paths:
        raise UsageError(f"ignore {modes[0]} takes no files")
    if not modes and len(args.paths) != 2:
        raise UsageError("ignore takes two files (or --group ID, --list, --remove)")
    directory = _context_dir(args)
    if args.list:
        document = operations.ignored_list(directory)
    elif args.remove:
        document = operations.unignore(directory, args.paths)
    elif args.group is not None:
        report = Path(args.report).absolute() if args.report else _latest_report(args, "--report FILE")
        document = operations.ignore_group(directory, report, args.group)
    else:
        document = operations.ignore_pair(directory, *args.paths)
    if args.json:
        _print_json(document)
    else:
        sys.stdout.write(operations.ignored_text(document))
    return ExitCode.OK


def cmd_run(args) -> int:
    """The daemon: watch the configured folders until SIGTERM (see service.py)."""
    if not args.config:
        raise UsageError("run needs --config FILE")
    # Here, not at the top: the daemon (its HTTP API, watchdog, the metrics server) is no start-up
    # cost of every short command.
    from .service import run_daemon
    return run_daemon(config_module.load(args.config))


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

    tag = commands.add_parser("tag", help="tags: named reference images, searched by and watched for")
    tag_commands = tag.add_subparsers(dest="action", required=True)
    tag_put = tag_commands.add_parser("put", help="store tag NAME with these reference images, replacing "
                                      "its references (refused while the daemon runs)")
    tag_put.add_argument("name", metavar="NAME")
    tag_put.add_argument("images", nargs="+", metavar="IMAGE")
    tag_put.set_defaults(handler=cmd_tag_put)
    tag_commands.add_parser("list", help="every tag and its references").set_defaults(handler=cmd_tag_list)
    tag_delete = tag_commands.add_parser("delete", help="forget tag NAME (refused while the daemon runs)")
    tag_delete.add_argument("name", metavar="NAME")
    tag_delete.set_defaults(handler=cmd_tag_delete)
    tag_search = tag_commands.add_parser("search", help="stored images that match a reference of these tags")
    tag_search.add_argument("names", nargs="+", metavar="NAME")
    tag_search.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD)
    tag_search.add_argument("--max-count", type=int, default=None)
    tag_search.set_defaults(handler=cmd_tag_search)

    alerts = commands.add_parser("alerts", help="watchlist alerts: newly indexed images that matched a tag")
    alerts.add_argument("--since", type=int, default=0, metavar="CURSOR",
                        help="only alerts after this cursor (default 0: from the first)")
    alerts.add_argument("--limit", type=int, default=operations.ALERTS_PAGE, metavar="N",
                        help=f"at most N alerts (default and most {operations.ALERTS_PAGE})")
    alerts.add_argument("--json", action="store_true", help="print the alerts as JSON")
    alerts.set_defaults(handler=cmd_alerts)

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
    resolve.add_argument("--action", choices=operations.RESOLVE_ACTIONS, default="quarantine",
                         help="quarantine (default): move the copies into --to DIR; hardlink: replace "
                              "byte-identical copies with hard links to the keeper; delete")
    resolve.add_argument("--to", metavar="DIR", help="the quarantine folder (outside the watched folders)")
    resolve.add_argument("--json", action="store_true", help="print the plan as JSON")
    resolve.add_argument("--apply", action="store_true", help="carry the plan out")
    resolve.set_defaults(handler=cmd_resolve)

    ignore = commands.add_parser("ignore", help="mark two images (or each copy of a report's group and its "
                                 "keeper) not a duplicate; --list, --remove")
    ignore.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="the YAML config: its context and reports folder (also accepted before the command)")
    ignore.add_argument("paths", nargs="*", metavar="FILE",
                        help="two images of the context; with --remove, two images or a mark's id")
    ignore.add_argument("--group", type=int, metavar="ID", help="each copy of this group of the latest report "
                        "is marked not a duplicate of its keeper")
    ignore.add_argument("--report", metavar="FILE", help="with --group: a JSON report (default: "
                                                         "duplicates-latest.json in the reports folder)")
    ignore.add_argument("--list", action="store_true", help="the pairs marked, with their ids")
    ignore.add_argument("--remove", action="store_true", help="forget a mark, named by two files or its id")
    ignore.add_argument("--json", action="store_true", help="print JSON")
    ignore.set_defaults(handler=cmd_ignore)

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
