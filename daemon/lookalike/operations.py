"""The application layer: what a person or a program can ask of lookalike, as plain functions.

The CLI is argument parsing and printing over these functions, and the daemon's HTTP API
(api/) is the same; the daemon (service.py), which the CLI's `run` starts, shares their rules: one walker of the folders with their
include and exclude patterns (reconcile.walk), one "is this file unchanged?" rule
(imaging.decode.unchanged), one duplicates pass (duplicates_pass.report_document), one way to
publish reports (reports.publish).

Functions return JSON-ready documents where a caller shows the result as it is, and raise the
typed errors of errors.py; none prints.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from . import resolve as resolve_module
from .config import Config, WatchedFolder
from .duplicates_pass import report_document
from .errors import ImageError, NotFoundError, ReportError, UsageError, display_path
from .extract import ImageFeatures, Query, extract_file, few_features, query_file
from .imaging.decode import unchanged
from .imaging.features import LocalFeatures, detector_info
from .keeper import KeepRules
from .match import FEW_FEATURES, compare
from .reconcile import walk
from .files import atomic_write
from .reports import load as load_report, render
from .reports.publish import latest_path, publish
from .reports.text import counted, summary as report_summary
from .search import matching, query_candidate, similar
from .settings import ExtractionSettings
from .statedir import STATE_LOCK_NAME, open_context, state_lock
from .store import SearchContext, StoredImage, ignored
from .store.changes import Change, DeleteTag, PutTag
from .store.ignored import IgnoredPair
from .store.tags import Reference, check_name
from .types import FileIdentity
from .watch.folders import Folders

OUTPUT_VERSION = 1
STORE_BATCH = 32              # extracted images stored per write transaction

Progress = Callable[[int, int], None]     # (done, total)


# --- ingest --------------------------------------------------------------------------------

def files_to_ingest(paths: Iterable[str], watched: tuple[WatchedFolder, ...] = ()) -> list[str]:
    """Files named, and the wanted files under folders named: walked with the patterns of the
    watched folder that holds them, or the default patterns when none does; in the order named,
    each folder's files sorted, a file named twice listed twice."""
    folders = Folders(watched)
    found: list[str] = []
    for given in paths:
        path = os.path.abspath(given)
        if not os.path.isdir(path):
            found.append(path)
            continue
        owner = folders.folder_of(path)
        folder = dataclasses.replace(owner, path=Path(path)) if owner else WatchedFolder(Path(path))
        found.extend(sorted(file for file, _ in walk(folder, Folders((folder,)), threading.Event())))
    return found


def configured_files(config: Config) -> list[str]:
    """The wanted files of the configured folders, as the daemon's reconcile sees them."""
    folders = Folders(config.watch)
    return sorted(path for folder in folders.all for path, _ in walk(folder, folders, threading.Event()))


def ingest(context: SearchContext, files: list[str], progress: Progress | None = None) -> dict:
    """Extract and store the files that changed since the context last saw them: the core of
    `features add`, `scan` and `context rebuild`."""
    summary = {"added": 0, "updated": 0, "unchanged": 0, "failed": 0, "failures": []}
    batch: list[ImageFeatures] = []
    with context.busy("extracting"):
        for done, path in enumerate(files, 1):
            stored = context.find(path)
            identity = None
            try:
                identity = FileIdentity.of(os.stat(path))
                # A file that failed before is unchanged, not failed again, until it changes:
                # `features failed` lists it with its reason.
                known = stored.identity if stored else getattr(context.failure(path), "identity", None)
                if unchanged(identity, known):
                    summary["unchanged"] += 1
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
                if len(batch) >= STORE_BATCH:
                    context.upsert_many(batch)
                    batch.clear()
            finally:
                if progress:
                    progress(done, len(files))
        context.upsert_many(batch)
    return summary


def add_features(directory: Path, paths: Iterable[str], progress: Progress | None = None,
                 watched: tuple[WatchedFolder, ...] = ()) -> dict:
    """`features add`: the named files, and the wanted files under the named folders."""
    files = files_to_ingest(paths, watched)
    with SearchContext.open(directory) as context:
        return ingest(context, files, progress)


# --- features ------------------------------------------------------------------------------

def extraction_settings(directory: Path | None) -> ExtractionSettings:
    """The context's settings, or the defaults when no context is named."""
    if directory is None:
        return ExtractionSettings()
    with SearchContext.open(directory) as context:
        return context.settings


def features_document(path: str, local: LocalFeatures, detector: str) -> dict:
    info = detector_info(detector)
    return {"ImageId": path, "FeaturesCount": local.count, "FeatureLengthInBits": info.bits_per_descriptor,
            "Features": base64.b64encode(local.descriptors.tobytes()).decode("ascii")}


def extract_features(image: str, settings: ExtractionSettings) -> dict:
    features = extract_file(os.path.abspath(image), settings)
    return features_document(features.path, features.local, settings.detector)


def stored_features_document(context: SearchContext, image_id: str) -> dict:
    path = os.path.abspath(image_id)
    return features_document(path, context.local_features(path), context.settings.detector)


def get_features(directory: Path, image_id: str) -> dict:
    with SearchContext.open(directory) as context:
        return stored_features_document(context, image_id)


def update_features(directory: Path, image_id: str, image: str) -> dict:
    """Replace a stored image's features with those of `image`."""
    path = os.path.abspath(image_id)
    with SearchContext.open(directory) as context:
        context.image(path)                          # must exist: update is not add
        features = dataclasses.replace(extract_file(os.path.abspath(image), context.settings), path=path)
        context.upsert(features)
        return features_document(path, features.local, context.settings.detector)


def delete_features(directory: Path, image_id: str, folder: bool) -> dict:
    path = os.path.abspath(image_id)
    with SearchContext.open(directory) as context:
        if not folder and context.find(path) is None:
            under = context.count_under(path)
            if under:
                raise UsageError(f"{display_path(path)}: a folder with {counted(under, 'stored image')}; "
                                 "add --folder to delete them all")
        removed = context.remove_all(path)
    if not removed:
        raise NotFoundError(f"{display_path(path)}: not in the search context")
    return {"deleted": path, "images": removed}


def list_features(directory: Path) -> dict:
    with SearchContext.open(directory) as context:
        return {"images": [{"path": i.path, "size": i.identity.size, "mtime": i.identity.mtime_ns / 1e9,
                            "features": i.features, "reason": FEW_FEATURES if few_features(i.features) else None}
                           for i in context.images()]}


def failed_features(directory: Path) -> dict:
    with SearchContext.open(directory) as context:
        return {"failed": [{"path": f.path, "reason": f.reason, "detail": f.detail} for f in context.failures()]}


# --- search --------------------------------------------------------------------------------

def compare_files(first_path: str, second_path: str, settings: ExtractionSettings) -> dict:
    return compare_features(extract_file(os.path.abspath(first_path), settings),
                            extract_file(os.path.abspath(second_path), settings), settings.detector)


def compare_features(first: ImageFeatures, second: ImageFeatures, detector: str) -> dict:
    document = compare(query_candidate(first), query_candidate(second), detector).to_json()
    poor = [f.path for f in (first, second) if few_features(f.local.count)]
    if poor:      # only a near-exact copy could match: say why a score is low
        document.update(reason=FEW_FEATURES, few_features=poor)
    return document


def find_similar(directory: Path, image: str, threshold: float, max_count: int | None) -> dict:
    with SearchContext.open(directory) as context:
        query = query_file(os.path.abspath(image), context.settings)
        with context.busy("searching"):
            return similar_document(context, query, threshold, max_count)


def similar_document(context: SearchContext, query: Query, threshold: float, max_count: int | None) -> dict:
    """`similar`'s answer. Reads only, so the daemon's API runs it on the context it holds open
    beside its writer (`find_similar` adds the status `context info` shows, which is a write)."""
    hits = similar(context, query, threshold, max_count)
    return {"version": OUTPUT_VERSION, "query": query.features.path, "threshold": threshold,
            "results": [hit.to_json() for hit in hits]}


def stored_features(context: SearchContext, path: str) -> ImageFeatures:
    """A stored image's features, as the query of a search: its file is not read again."""
    image = context.image(path)
    _, stored = context.candidate(image.num)
    return ImageFeatures(image.path, image.identity, image.content_hash, image.format, image.width, image.height,
                         stored.local, image.fingerprint, stored.thumbnail, decode_seconds=0.0, extract_seconds=0.0)


def duplicates_document(context: SearchContext, threshold: float, progress: Progress | None = None,
                        rules: KeepRules = KeepRules()) -> dict:
    """A duplicates pass over a context this process writes to, shown as "matching" meanwhile."""
    with context.busy("matching"):
        return report_document(context, threshold, rules, progress=progress)


def duplicates_report(directory: Path, threshold: float, fmt: str, progress: Progress | None = None) -> str:
    """The duplicate groups of a context, rendered in `fmt` (json, csv or html)."""
    with SearchContext.open(directory) as context:
        return render(duplicates_document(context, threshold, progress), fmt)


def save(path: Path, text: str) -> None:
    atomic_write(path, text)


def latest_report(reports: Path) -> Path:
    return latest_path(reports, "json")


def latest_duplicates(reports: Path) -> dict:
    """The latest JSON report, as written."""
    path = latest_report(reports)
    if not path.exists():
        raise NotFoundError(f"{display_path(str(path))}: no duplicates report yet; the daemon writes one after "
                            "its first pass")
    return load_report(path)


def scan(config: Config, progress: Progress | None = None) -> dict:
    """One pass over the configured folders, then the reports published as the daemon publishes
    them (reports.publish: JSON and the configured formats, old ones pruned to reports.keep)."""
    with open_context(config) as context:
        files = configured_files(config)
        summary = ingest(context, files, progress)
        document = duplicates_document(context, config.duplicates_threshold, rules=config.keep_rules)
    publish(document, config)
    groups = document["groups"]
    return {"scanned": len(files), **{k: summary[k] for k in ("added", "updated", "unchanged", "failed")},
            "groups": len(groups), "images_in_groups": sum(len(g["images"]) for g in groups),
            "report": str(latest_report(config.reports)), "failures": summary["failures"]}


def show_report(path: Path, top: int, arrow: str) -> str:
    """A short summary of a JSON report for people: its `top` largest groups."""
    return report_summary(load_report(path), display_path(str(path)), top, arrow)


# --- tags and watchlist alerts ----------------------------------------------------------------
#
# The functions that change an open context take `commit`, how a change reaches it: by default
# the context itself (`direct_commit`, a CLI process); in the daemon its writer, the context's
# one writer while it runs (`functools.partial(service.writer.apply, timeout=...)`).

Commit = Callable[[Change], object]          # applies one change, returns its result
ALERTS_PAGE = 1000                           # alerts `alerts_since` returns at most


def direct_commit(context: SearchContext) -> Commit:
    return lambda change: context.commit([change])[0]


def reference_from_file(path: str, settings: ExtractionSettings) -> Reference:
    """A tag's reference from an image file, named by its file name."""
    return Reference.of_file(extract_file(os.path.abspath(path), settings))


def put_tag(context: SearchContext, name: str, references: list[Reference], commit: Commit | None = None) -> dict:
    """Store the tag `name` with `references`, replacing the references it had: the tag's
    document (`tag_document`). TagError for a bad name or no reference."""
    return tag_document((commit or direct_commit(context))(PutTag(name, tuple(references))))


def delete_tag(context: SearchContext, name: str, commit: Commit | None = None) -> dict:
    if not (commit or direct_commit(context))(DeleteTag(name)):
        raise NotFoundError(f"tag {name!r}: no such tag")
    return {"deleted": name}


def list_tags(context: SearchContext) -> dict:
    return {"tags": [tag_document(doc) for doc in context.tags()]}


def tag_document(doc: dict) -> dict:
    return {"name": doc["name"], "updated": doc["updated"],
            "references": [{key: listed[key] for key in ("name", "content_hash", "width", "height", "features")}
                           for listed in doc["references"]]}


def search_tags(context: SearchContext, names: list[str], threshold: float, max_count: int | None) -> dict:
    """Stored images that match any reference of the tags `names`, best first, each with the
    tag and reference it matches best: `similar`'s document with `tags` for `query`."""
    names = [check_name(name) for name in dict.fromkeys(names)]
    if not names:
        raise UsageError("name at least one tag to search by")
    best: dict[str, tuple] = {}
    for reference in context.references(names):
        for hit in matching(context, reference.candidate, reference.fingerprint, threshold, None):
            held = best.get(hit.image.path)
            if held is None or hit.match.similarity > held[0].match.similarity:
                best[hit.image.path] = (hit, reference)
    ranked = sorted(best.values(), key=lambda found: (-found[0].match.similarity, found[0].image.path))
    return {"version": OUTPUT_VERSION, "tags": names, "threshold": threshold,
            "results": [{**hit.to_json(), "tag": reference.tag, "reference": reference.name}
                        for hit, reference in ranked[:max_count or None]]}


def alerts_since(context: SearchContext, cursor: int, limit: int = ALERTS_PAGE) -> dict:
    """The watchlist alerts recorded after `cursor` (0: from the first), oldest first, at most
    `limit`, and `next`: the cursor to ask with next time."""
    if not isinstance(cursor, int) or cursor < 0:
        raise UsageError(f"cursor {cursor!r}: must be a whole number, 0 or more")
    if not 1 <= limit <= ALERTS_PAGE:
        raise UsageError(f"limit {limit!r}: must be from 1 to {ALERTS_PAGE}")
    alerts = context.alerts_since(cursor, limit)
    return {"version": OUTPUT_VERSION, "alerts": alerts, "next": alerts[-1]["cursor"] if alerts else cursor}


def _tags_writable(state_dir: Path | None, route: str):
    """While the daemon holds the state directory its writer is the context's only writer:
    tags are changed through it (`route` of its HTTP API), not by another process."""
    if state_dir is None:
        return contextlib.nullcontext()
    return state_lock(state_dir, f"change its tags through its HTTP API instead ({route}, docs/api.md), "
                                 "or stop it first")


def put_tag_files(directory: Path, state_dir: Path | None, name: str, images: list[str]) -> dict:
    """`tag put`: the tag `name` with these image files as its references."""
    check_name(name)
    with SearchContext.open(directory) as context:
        references = [reference_from_file(image, context.settings) for image in images]
        with _tags_writable(state_dir, f"PUT /v1/tags/{name}"):
            return put_tag(context, name, references)


def delete_tag_named(directory: Path, state_dir: Path | None, name: str) -> dict:
    check_name(name)
    with SearchContext.open(directory) as context, _tags_writable(state_dir, f"DELETE /v1/tags/{name}"):
        return delete_tag(context, name)


def listed_tags(directory: Path) -> dict:
    with SearchContext.open(directory) as context:
        return list_tags(context)


def tags_search(directory: Path, names: list[str], threshold: float, max_count: int | None) -> dict:
    with SearchContext.open(directory) as context:
        return search_tags(context, names, threshold, max_count)


def recorded_alerts(directory: Path, cursor: int, limit: int) -> dict:
    with SearchContext.open(directory) as context:
        return alerts_since(context, cursor, limit)


# --- context lifecycle ---------------------------------------------------------------------

def create_context(directory: Path, settings: ExtractionSettings) -> dict:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a folder; name a folder for the context")
    with SearchContext.create(directory, settings) as context:
        return context.info()


def context_info(directory: Path) -> dict:
    with SearchContext.open(directory) as context:
        return context.info()


def daemon_status(context: SearchContext, queues: dict[str, int]) -> dict:
    """What `context info` says of the daemon's open context, and the lengths of its queues."""
    return {**context.info(), "queues": queues}


def daemon_state_dir(directory: Path) -> Path | None:
    """The state directory of a context whose parent holds a daemon's lock file, if it does."""
    return directory.parent if (directory.parent / STATE_LOCK_NAME).exists() else None


def delete_context(directory: Path, state_dir: Path | None) -> dict:
    # A daemon keeps writing into the unlinked files and loses everything at its next start.
    with state_lock(state_dir) if state_dir else contextlib.nullcontext():
        SearchContext.delete(directory)
    return {"deleted": str(directory)}


def check_context(directory: Path) -> dict:
    with SearchContext.open(directory) as context:
        return {"context": str(context.directory), "ok": True, "entries": context.check()}


def rebuild_context(config: Config, progress: Progress | None = None) -> dict:
    """Set a damaged context aside and index the configured folders into a new one."""
    with state_lock(config.state_dir):
        directory = config.context_dir
        # They name contents, which the new context finds again in the same folders.
        marks = ignored.read(directory)
        # Tags are not in the folders, and the references' features may be another extraction's:
        # they stay in the context set aside, and are named so that they can be put again.
        tags_set_aside = SearchContext.tag_names(directory)
        previous = None
        if directory.exists():
            previous = directory.with_name(f"{directory.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            directory.rename(previous)
        with SearchContext.create(directory, config.extraction) as context:
            if marks.pairs:
                ignored.add(directory, marks.pairs)
            summary = ingest(context, configured_files(config), progress)
    return {"context": str(directory), "previous": str(previous) if previous else None,
            **{k: summary[k] for k in ("added", "failed")}, "tags_set_aside": tags_set_aside}


# --- acting on a report --------------------------------------------------------------------

RESOLVE_ACTIONS = resolve_module.ACTIONS


def resolve(report: Path, action: str, quarantine: Path | None, apply: bool, config: Config | None) -> tuple[dict, bool]:
    """A plan from a report, carried out when `apply`: the document to show, and whether any
    file was refused."""
    if quarantine and config:
        for folder in config.watch:
            if quarantine == folder.path or folder.path in quarantine.parents:
                raise UsageError(f"--to {display_path(str(quarantine))}: inside the watched folder "
                                 f"{display_path(str(folder.path))}; the quarantine must be outside them")
    if quarantine and quarantine.exists() and not quarantine.is_dir():
        raise UsageError(f"--to {display_path(str(quarantine))}: exists and is not a folder")
    plan = resolve_module.make_plan(load_report(report), action, report,
                                    watched=config.watch if config else None,
                                    reference=config.keep_reference if config else ())
    if not apply:
        return plan.to_json(), False
    applied = resolve_module.apply(plan, quarantine)
    return applied.to_json(plan), bool(applied.refused)


def resolution_text(document: dict, action: str) -> str:
    return resolve_module.to_text(document, action)


def undo(manifest: Path) -> resolve_module.Undone:
    """Put the files of a quarantine manifest back where they were."""
    return resolve_module.undo(manifest)


# --- not a duplicate ----------------------------------------------------------------------

def _stored(context: SearchContext, given: str) -> StoredImage:
    path = os.path.abspath(given)
    if not os.path.lexists(path):
        raise NotFoundError(f"{display_path(path)}: no such file")
    stored = context.find(path)
    if stored is None:
        raise NotFoundError(f"{display_path(path)}: not in the search context (outside the watched folders, "
                            "or not indexed yet)")
    return stored


def _distinct(first: StoredImage, second: StoredImage) -> None:
    """Two images that can be marked not a duplicate of each other."""
    if first.num == second.num or (first.identity.device, first.identity.inode) == (second.identity.device,
                                                                                    second.identity.inode):
        raise UsageError(f"{display_path(first.path)} and {display_path(second.path)}: the same file twice; "
                         "name two files")
    if first.content_hash == second.content_hash:
        raise UsageError(f"{display_path(first.path)} and {display_path(second.path)}: the same bytes; "
                         "identical files are always duplicates")


def _as_indexed(stored: StoredImage) -> StoredImage:
    """`stored`, if the file still is what was indexed: a mark names the content the context holds."""
    try:
        identity = FileIdentity.of(os.stat(stored.path))
    except OSError as exc:
        raise NotFoundError(f"{display_path(stored.path)}: cannot stat: {exc.strerror or exc}") from None
    if not unchanged(identity, stored.identity):
        raise UsageError(f"{display_path(stored.path)}: changed since it was indexed; mark it once it is "
                         "indexed again (by the daemon, or `scan`)")
    return stored


def ignore_pair(directory: Path, first: str, second: str) -> dict:
    """`ignore A B`: the images of two files are never again in one duplicate group."""
    with SearchContext.open(directory) as context:
        one, other = (_as_indexed(_stored(context, path)) for path in (first, second))
    _distinct(one, other)
    added, already = ignored.add(directory, [IgnoredPair.of((one.content_hash, one.path),
                                                            (other.content_hash, other.path))])
    return {"version": OUTPUT_VERSION, "added": [p.to_json() for p in added],
            "already": [p.to_json() for p in already], "skipped": []}


def ignore_group(directory: Path, report: Path, group_id: int) -> dict:
    """`ignore --group ID`: each copy of a report's group is marked not a duplicate of the group's
    keeper, which is what the report claimed of it. What the copies are of each other the report
    did not say, so they are not marked: two of them may form a group of their own."""
    document = load_report(report)
    with SearchContext.open(directory):         # there is a context to mark in
        pass
    if os.path.realpath(document.get("context", "")) != os.path.realpath(directory):
        raise UsageError(f"{display_path(str(report))}: a report of the context {document.get('context')}, "
                         f"not of {directory}")
    groups = document["groups"]
    group = next((g for g in groups if g.get("id") == group_id), None)
    if group is None:
        has = f"groups 1 to {len(groups)}" if groups else "no groups"
        raise NotFoundError(f"group {group_id}: not in {display_path(str(report))} (it has {has})")
    if any("content_hash" not in image for image in group["images"]):
        raise ReportError(report, "written before reports carried content hashes; use a newer report")
    keeper = next((image for image in group["images"] if image.get("keeper")), None)
    wanted, skipped = [], []
    try:
        for image in group["images"]:
            if image is keeper:
                continue
            if image["content_hash"] == keeper["content_hash"]:
                skipped.append({"path": image["path"], "reason": "the same bytes as the keeper"})
                continue
            wanted.append(IgnoredPair.of((bytes.fromhex(keeper["content_hash"]), keeper["path"]),
                                         (bytes.fromhex(image["content_hash"]), image["path"])))
    except (KeyError, TypeError, ValueError):
        raise ReportError(report, f"group {group_id}: not a keeper and copies with their paths and content "
                                  "hashes") from None
    added, already = ignored.add(directory, wanted)
    return {"version": OUTPUT_VERSION, "added": [p.to_json() for p in added],
            "already": [p.to_json() for p in already], "skipped": skipped}


def ignored_list(directory: Path) -> dict:
    """The pairs marked not a duplicate, each with the paths its contents have now."""
    with SearchContext.open(directory) as context:
        return {"version": OUTPUT_VERSION,
                "pairs": [{**pair.to_json(), "current_paths": [context.paths_with_content(pair.first),
                                                               context.paths_with_content(pair.second)]}
                          for pair in ignored.read(context.directory).pairs]}


def unignore(directory: Path, names: list[str]) -> dict:
    """`ignore --remove`: forget a mark, named by its id or by two files."""
    with SearchContext.open(directory) as context:
        if len(names) == 1:
            removed = ignored.remove(context.directory, pair_id=names[0])
            named = f"{names[0]}: no pair marked not a duplicate has this id (`ignore --list` shows them)"
        elif len(names) == 2:
            one, other = (_stored(context, path) for path in names)
            _distinct(one, other)
            removed = ignored.remove(context.directory,
                                     key=tuple(sorted((one.content_hash, other.content_hash))))
            named = (f"{display_path(one.path)} and {display_path(other.path)}: not marked not a duplicate "
                     "of each other")
        else:
            raise UsageError("ignore --remove takes the id `ignore --list` shows, or two files")
    if removed is None:
        raise NotFoundError(named)
    return {"version": OUTPUT_VERSION, "removed": [removed.to_json()]}


def ignored_text(document: dict) -> str:
    """What `ignore` did or holds, for people."""
    def pair_lines(title: str, pairs: list[dict]) -> list[str]:
        lines = []
        for pair in pairs:
            paths = ([", ".join(map(display_path, now)) or f"(not in the context; was {display_path(was)})"
                      for now, was in zip(pair["current_paths"], pair["paths"])]
                     if "current_paths" in pair else [display_path(path) for path in pair["paths"]])
            lines += [f"{title}{pair['id']}  {paths[0]}", f"{' ' * (len(title) + len(pair['id']))}  {paths[1]}"]
        return lines

    lines = (pair_lines("not a duplicate: ", document.get("added", []))
             + pair_lines("already marked: ", document.get("already", []))
             + [f"left alone: {display_path(s['path'])}: {s['reason']}" for s in document.get("skipped", [])]
             + pair_lines("no longer marked: ", document.get("removed", [])))
    if "pairs" in document:
        lines = [f"{counted(len(document['pairs']), 'pair')} marked not a duplicate"] + pair_lines("", document["pairs"])
    elif document.get("added") or document.get("removed"):
        lines.append("the next duplicates pass (the daemon's, `scan` or `duplicates`) makes the groups anew")
    return "\n".join(lines) + "\n"
