"""Acting on a duplicates report, safely: a plan first, changes only on request, undo from a manifest.

A plan says, for every file of a report, what would be done to it and why, or why it is left
alone: keepers, files in a `keep.reference` folder, files outside the watched folders, and files
that are no longer what the report saw. The input is the report and the file system, never the
search context. A report can be days old, so every file is checked again just before it is
touched: `lstat` (a symlink is refused), size and mtime against the report, then its bytes hashed
again and compared with the report's content hash. The keeper is checked the same way: a copy is
never removed while the picture it duplicates is gone or different.

Quarantine survives a crash at any moment (power cut, full disk, SIGKILL): each file's manifest
entry is appended and fsynced before the file moves (write-ahead); within a filesystem the move
is one rename; across filesystems the file is copied, fsynced and verified before the original
is unlinked. So every file is at its path, or in the quarantine with its entry, or both for an
instant; `undo` takes an entry whose move never happened (or never finished) as in place.

The daemon never calls this module (it never writes to the folders it watches): `resolve` runs
as the person, in the CLI process.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import WatchedFolder
from .errors import ManifestError, NotFoundError, Refused, ReportError, display_path
from .imaging.decode import content_hasher
from .keeper import under
from .watch.folders import Folders

PLAN_VERSION = 1
MANIFEST_VERSION = 1
ACTIONS = ("quarantine", "hardlink", "delete")
MANIFEST_PREFIX = "lookalike-manifest-"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Recorded:
    """A file as the report saw it."""

    path: str
    size: int
    mtime: float                  # seconds, as the report writes it (mtime_ns / 1e9)
    content_hash: str | None      # hex; reports written before it was added have none
    similarity: float

    @classmethod
    def from_report(cls, image: dict) -> "Recorded":
        return cls(image["path"], int(image["size"]), float(image["mtime"]), image.get("content_hash"),
                   float(image["similarity"]))


@dataclass(frozen=True)
class Action:
    file: Recorded
    action: str
    keeper: Recorded
    reason: str


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass
class Plan:
    action: str
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"version": PLAN_VERSION,
                "actions": [{"path": a.file.path, "action": a.action, "keeper": a.keeper.path, "reason": a.reason}
                            for a in self.actions],
                "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped]}


@dataclass
class Applied:
    """What `apply` did: the actions carried out, those refused at the last check, the manifest."""

    done: list[Action] = field(default_factory=list)
    refused: list[Skip] = field(default_factory=list)
    manifest: Path | None = None

    def to_json(self, plan: Plan) -> dict:
        done = Plan(plan.action, self.done, plan.skipped + self.refused).to_json()
        return {**done, "applied": True, "manifest": str(self.manifest) if self.manifest else None}


# --- the plan ------------------------------------------------------------------------------

def make_plan(document: dict, action: str, source: Path, watched: tuple[WatchedFolder, ...] | None = None,
              reference: tuple[Path, ...] = ()) -> Plan:
    """The plan for a report `document` (read from `source`): `watched` None means no config was
    given, so no file is refused for being outside the watched folders. Reads only metadata."""
    assert action in ACTIONS, action
    plan = Plan(action)
    try:
        groups = [[Recorded.from_report(image) for image in group["images"]] for group in document["groups"]]
        keepers = [[image["keeper"] is True for image in group["images"]] for group in document["groups"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(source, f"an image entry lacks or mangles {exc}; not a report this lookalike "
                                  "can act on") from None
    every_keeper = {image.path for group, flags in zip(groups, keepers) for image, kept in zip(group, flags) if kept}
    folders = Folders(watched) if watched is not None else None
    seen: set[str] = set()
    for group, flags in zip(groups, keepers):
        keeper = next((image for image, kept in zip(group, flags) if kept), None)
        keeper_problem = None
        if keeper is None:
            keeper_problem = "its group has no keeper"
        else:
            try:
                _unchanged_metadata(keeper)
            except Refused as refused:
                keeper_problem = f"its keeper {display_path(keeper.path)}: {refused.reason}"
        for image in group:
            if image.path in seen:
                continue
            seen.add(image.path)
            try:
                reason = _why_acted_on(image, keeper, keeper_problem, action, every_keeper, folders, reference)
            except Refused as refused:
                plan.skipped.append(Skip(image.path, refused.reason))
            else:
                plan.actions.append(Action(image, action, keeper, reason))
    return plan


def _why_acted_on(image: Recorded, keeper: Recorded | None, keeper_problem: str | None, action: str,
                  every_keeper: set[str], folders: Folders | None, reference) -> str:
    """Why `image` is acted on, or Refused with why not."""
    if image.path in every_keeper:
        raise Refused(image.path, "the keeper")
    for folder in reference:
        if under(image.path, folder):
            raise Refused(image.path, f"in the reference folder {display_path(str(folder))}")
    if folders is not None and folders.folder_of(image.path) is None:
        raise Refused(image.path, "outside the watched folders")
    if keeper_problem:
        raise Refused(image.path, keeper_problem)
    if not image.content_hash or not keeper.content_hash:
        raise Refused(image.path, "the report has no content hash (made by an older lookalike); "
                                  "write a new report first")
    found = _unchanged_metadata(image)
    identical = image.content_hash == keeper.content_hash
    if action == "hardlink":
        if not identical:
            raise Refused(image.path, "not byte-identical to the keeper")
        kept = _unchanged_metadata(keeper)
        if found.st_dev != kept.st_dev:
            raise Refused(image.path, "on another filesystem than the keeper")
        if found.st_ino == kept.st_ino:
            raise Refused(image.path, "already a hard link to the keeper")
    return "byte-identical to the keeper" if identical else f"similarity {image.similarity:g} to the keeper"


def _unchanged_metadata(recorded: Recorded) -> os.stat_result:
    """The file's lstat, if it is still a regular file of the size and mtime the report saw."""
    try:
        found = os.lstat(recorded.path)
    except FileNotFoundError:
        raise Refused(recorded.path, "missing") from None
    except OSError as exc:
        raise Refused(recorded.path, f"cannot stat: {exc.strerror or exc}") from None
    if stat.S_ISLNK(found.st_mode):
        raise Refused(recorded.path, "a symlink now")
    if not stat.S_ISREG(found.st_mode):
        raise Refused(recorded.path, "not a regular file")
    # The report writes mtime_ns / 1e9; the same division gives the same float.
    if found.st_size != recorded.size or found.st_mtime_ns / 1e9 != recorded.mtime:
        raise Refused(recorded.path, "changed since the report (size or mtime)")
    return found


# --- reading and hashing without following symlinks --------------------------------------------

def _open_checked(path: str, expected: os.stat_result) -> int:
    """A descriptor on the very file `expected` describes: no symlink is followed, and a file
    swapped in between the stat and the open is noticed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(path, "a symlink now") from None
        raise Refused(path, f"cannot open: {exc.strerror or exc}") from None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns) != (
            expected.st_dev, expected.st_ino, expected.st_size, expected.st_mtime_ns):
        os.close(fd)
        raise Refused(path, "replaced or changed while it was being checked")
    return fd


def _chunks(fd: int):
    while chunk := os.read(fd, _CHUNK):
        yield chunk


def _verified(recorded: Recorded) -> os.stat_result:
    """`recorded`'s lstat if its metadata and bytes are still what the report saw."""
    found = _unchanged_metadata(recorded)
    fd = _open_checked(recorded.path, found)
    try:
        hasher = content_hasher()
        for chunk in _chunks(fd):
            hasher.update(chunk)
    finally:
        os.close(fd)
    if hasher.hexdigest() != recorded.content_hash:
        raise Refused(recorded.path, "its bytes changed since the report")
    return found


def _same_bytes(first: str, first_stat: os.stat_result, second: str, second_stat: os.stat_result) -> bool:
    a, b = _open_checked(first, first_stat), None
    try:
        b = _open_checked(second, second_stat)
        while True:
            left, right = os.read(a, _CHUNK), os.read(b, _CHUNK)
            if left != right:
                return False
            if not left:
                return True
    finally:
        os.close(a)
        if b is not None:
            os.close(b)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _make_folders(directory: str) -> None:
    """`directory` and any missing parents, each new one's entry fsynced: a file renamed into a
    folder whose own entry was lost in a power cut would be lost with it."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for folder in reversed(missing):
        os.mkdir(folder)
        _fsync_dir(os.path.dirname(folder))


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- moving a file so that it is never lost --------------------------------------------------

def _move(source: str, target: str, found: os.stat_result, content_hash: str) -> None:
    """Move the file `found` describes from `source` to `target` (which must be free), keeping
    its mtime, so that at every moment it is whole at one of the two paths."""
    _make_folders(os.path.dirname(target))
    if os.path.lexists(target):
        raise Refused(source, f"{display_path(target)} is taken")
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_verified(source, target, found, content_hash)
        os.unlink(source)
    else:
        _fsync_dir(os.path.dirname(target))
    _fsync_dir(os.path.dirname(source))


def _copy_verified(source: str, target: str, found: os.stat_result, content_hash: str) -> None:
    """Copy across filesystems: a temporary file beside `target`, fsynced, read back and
    compared with `content_hash`, then renamed to `target`. `source` is not touched."""
    fd = _open_checked(source, found)
    out, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".lookalike-", suffix=".tmp")
    try:
        try:
            written = content_hasher()
            for chunk in _chunks(fd):
                _write_all(out, chunk)
                written.update(chunk)
            os.fchmod(out, stat.S_IMODE(found.st_mode))
            os.fsync(out)
        finally:
            os.close(fd)
            os.close(out)
        os.utime(temporary, ns=(found.st_atime_ns, found.st_mtime_ns))
        back = os.open(temporary, os.O_RDONLY)
        try:
            read_back = content_hasher()
            for chunk in _chunks(back):
                read_back.update(chunk)
        finally:
            os.close(back)
        if written.hexdigest() != content_hash or read_back.hexdigest() != content_hash:
            raise Refused(source, "the copy did not read back as the file's bytes")
        if os.path.lexists(target):
            raise Refused(source, f"{display_path(target)} is taken")
        os.rename(temporary, target)
        _fsync_dir(os.path.dirname(target))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- the manifest ----------------------------------------------------------------------------

class Manifest:
    """The write-ahead log of one quarantine run: a header line, then one JSON line per file,
    each fsynced before its file moves. It lives in the quarantine folder; paths in it are
    relative to that folder, so the folder can be moved as a whole."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, folder: Path) -> "Manifest":
        _make_folders(str(folder))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for attempt in range(1000):
            path = folder / f"{MANIFEST_PREFIX}{stamp}{f'-{attempt}' if attempt else ''}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                continue
        else:
            raise ManifestError(folder, "too many manifests made this second")
        manifest = cls(path, fd)
        manifest._append({"version": MANIFEST_VERSION, "created": stamp})
        _fsync_dir(str(folder))
        return manifest

    def _append(self, record: dict) -> None:
        try:
            _write_all(self._fd, (json.dumps(record) + "\n").encode())
            os.fsync(self._fd)
        except OSError as exc:
            raise ManifestError(self.path, f"cannot write: {exc.strerror or exc}") from None

    def record(self, path: str, held: str, found: os.stat_result, content_hash: str, keeper: str) -> None:
        self._append({"path": path, "quarantined": held, "size": found.st_size, "mtime_ns": found.st_mtime_ns,
                      "content_hash": content_hash, "keeper": keeper})

    def close(self) -> None:
        os.close(self._fd)


def read_manifest(path: Path) -> list[dict]:
    """The entries of a manifest. A last line cut short is a crash during its append: the move
    it announced never started, so it is left out."""
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except FileNotFoundError:
        raise NotFoundError(f"{display_path(os.fspath(path))}: no such manifest") from None
    except OSError as exc:
        raise ManifestError(path, f"cannot read: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                continue                     # the torn or empty last line
            raise ManifestError(path, f"line {number} is not JSON") from None
    if not records or not isinstance(records[0], dict) or records[0].get("version") != MANIFEST_VERSION:
        raise ManifestError(path, f"not a lookalike quarantine manifest of version {MANIFEST_VERSION}")
    entries = records[1:]
    wanted = ("path", "quarantined", "size", "mtime_ns", "content_hash")
    for number, entry in enumerate(entries, 2):
        if not isinstance(entry, dict) or any(key not in entry for key in wanted):
            raise ManifestError(path, f"line {number} lacks one of {', '.join(wanted)}")
    return entries


# --- apply and undo ---------------------------------------------------------------------------

def quarantined_path(folder: Path, path: str) -> str:
    """Where `path` goes in the quarantine `folder`: its absolute path re-rooted under it."""
    return os.path.join(str(folder), path.lstrip("/"))


def apply(plan: Plan, quarantine: Path | None = None) -> Applied:
    """Carry out `plan`, checking each file and its keeper again just before acting."""
    if plan.action == "quarantine" and quarantine is None:
        raise ValueError("a quarantine plan needs the quarantine folder")
    applied = Applied()
    manifest = Manifest.create(quarantine) if plan.action == "quarantine" and plan.actions else None
    keepers: dict[str, os.stat_result | Refused] = {}
    try:
        for number, action in enumerate(plan.actions):
            try:
                found = _verified(action.file)
                kept = keepers.get(action.keeper.path)
                if kept is None:
                    try:
                        kept = keepers[action.keeper.path] = _verified(action.keeper)
                    except Refused as refused:
                        kept = keepers[action.keeper.path] = refused
                if isinstance(kept, Refused):
                    raise Refused(action.file.path, f"its keeper {display_path(kept.path)}: {kept.reason}")
                _act(action, found, kept, manifest, quarantine)
            except Refused as refused:
                applied.refused.append(Skip(action.file.path, refused.reason))
            except ManifestError as exc:
                # Without its entry a move could not be undone, and a torn line must stay the last.
                applied.refused.append(Skip(action.file.path, exc.message))
                applied.refused.extend(Skip(rest.file.path, "not tried: the manifest could not be written")
                                       for rest in plan.actions[number + 1:])
                break
            except OSError as exc:
                applied.refused.append(Skip(action.file.path, exc.strerror or str(exc)))
            else:
                applied.done.append(action)
    finally:
        if manifest is not None:
            manifest.close()
            applied.manifest = manifest.path
    return applied


def _act(action: Action, found: os.stat_result, kept: os.stat_result, manifest: Manifest | None,
         quarantine: Path | None) -> None:
    path = action.file.path
    if action.action == "quarantine":
        held = quarantined_path(quarantine, path)
        if os.path.lexists(held):
            raise Refused(path, f"the quarantine already holds {display_path(held)}")
        manifest.record(path, os.path.relpath(held, quarantine), found, action.file.content_hash, action.keeper.path)
        _move(path, held, found, action.file.content_hash)
    elif action.action == "hardlink":
        if found.st_dev != kept.st_dev:
            raise Refused(path, "on another filesystem than the keeper")
        if found.st_ino == kept.st_ino:
            raise Refused(path, "already a hard link to the keeper")
        if not _same_bytes(path, found, action.keeper.path, kept):
            raise Refused(path, "its bytes differ from the keeper's")
        # A link under a temporary name, renamed over the copy: the path always holds one of the two.
        temporary = os.path.join(os.path.dirname(path), f".lookalike-link-{secrets.token_hex(8)}.tmp")
        os.link(action.keeper.path, temporary)
        try:
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        _fsync_dir(os.path.dirname(path))
    else:
        os.unlink(path)
        _fsync_dir(os.path.dirname(path))


@dataclass
class Undone:
    restored: list[str] = field(default_factory=list)
    in_place: list[str] = field(default_factory=list)     # the move never happened or never finished
    refused: list[Skip] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"version": MANIFEST_VERSION, "restored": self.restored, "in_place": self.in_place,
                "refused": [{"path": s.path, "reason": s.reason} for s in self.refused]}


def _holds(path: str, entry: dict) -> os.stat_result | None:
    """`path`'s lstat if it is the file the manifest entry recorded (metadata and bytes)."""
    recorded = Recorded(path, entry["size"], entry["mtime_ns"] / 1e9, entry["content_hash"], 100.0)
    try:
        found = _verified(recorded)
    except Refused:
        return None
    return found if found.st_mtime_ns == entry["mtime_ns"] else None


def _remove_empty_folders(directory: str, top: str) -> None:
    """The folders a quarantine made for a file, once empty again, up to (not including) `top`."""
    while under(directory, top) and directory != top:
        try:
            os.rmdir(directory)
        except OSError:
            return                        # not empty: another file is still held there
        directory = os.path.dirname(directory)


def undo(manifest_path: Path) -> Undone:
    """Put every file of a quarantine manifest back at its path, byte-identical, with its mtime.
    A path taken again or a quarantined file that changed is refused, per file, with the reason."""
    manifest_path = Path(manifest_path).absolute()
    folder = manifest_path.parent
    undone = Undone()
    for entry in read_manifest(manifest_path):
        original, held = entry["path"], os.path.join(str(folder), entry["quarantined"])
        try:
            if os.path.lexists(original):
                if _holds(original, entry) is None:
                    raise Refused(original, "the original path is taken again")
                if os.path.lexists(held) and _holds(held, entry) is not None:
                    os.unlink(held)           # a copy across filesystems that stopped before its unlink
                undone.in_place.append(original)
                continue
            if not os.path.lexists(held):
                raise Refused(original, f"{display_path(held)} is missing from the quarantine")
            found = _holds(held, entry)
            if found is None:
                raise Refused(original, f"the quarantined file {display_path(held)} changed")
            _move(held, original, found, entry["content_hash"])
            _remove_empty_folders(os.path.dirname(held), str(folder))
        except Refused as refused:
            undone.refused.append(Skip(original, refused.reason))
        except OSError as exc:
            undone.refused.append(Skip(original, exc.strerror or str(exc)))
        else:
            undone.restored.append(original)
    return undone


def to_text(document: dict, action: str) -> str:
    """A plan document (or an applied one) for people: each file with its action and reason,
    then what is left alone and why."""
    applied = document.get("applied", False)
    lines = []
    for entry in document["actions"]:
        lines.append(f"{entry['action']:<10}  {display_path(entry['path'])}  "
                     f"(keeper {display_path(entry['keeper'])}: {entry['reason']})")
    if document["skipped"]:
        lines.append(f"left alone: {len(document['skipped'])}")
        lines.extend(f"  {display_path(s['path'])}: {s['reason']}" for s in document["skipped"])
    done = len(document["actions"])
    if applied:
        lines.append(f"{action}: {done} file{'' if done == 1 else 's'} done")
        if document.get("manifest"):
            lines.append(f"undo with: lookalike undo {display_path(document['manifest'])}")
    else:
        lines.append(f"{action}: {done} file{'' if done == 1 else 's'} planned; nothing was changed "
                     "(add --apply to carry it out)")
    return "\n".join(lines) + "\n"
