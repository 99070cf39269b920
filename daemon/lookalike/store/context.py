"""The search context: one LMDB environment in a directory, and the only code that opens it.

Sub-databases:
  meta          schema version, settings, extraction version, status, next image number
  paths         path key -> image number (the key is the path's bytes, or a digest when the
                path is longer than LMDB's 511-byte key limit)
  images        image number -> record: path, file identity, content hash, sizes, fingerprint
  features      image number -> record: keypoints, descriptors, thumbnail
  failed        path key -> record: path, file identity, reason, detail (not retried until
                the file changes)
  hashes, chunks, lsh     the candidate index (index.py)
  pending       image number -> stamp: images the next duplicates pass must match
  pairs         first + second image number -> the comparison first -> second (JSON), and
                second + first -> b"" so that either image finds the pair by a prefix scan
  tags, tag_features, tag_hashes, tag_chunks, tag_lsh, watch_pending, alerts
                tags, their references and their index, and the watchlist (tags.py)

`pending` and `pairs` hold the duplicate graph (graph.py). Beside the environment, ignored.json
holds the pairs a person marked not a duplicate (ignored.py): `delete` removes it too.

Every change to an image (record, features, path, index entries) is one write transaction, so
a crash leaves either the old image or the new one, never half of either. The map starts small
and doubles on MapFullError up to a cap; a resize waits until no thread has a read transaction
open. An environment opened in one process must not be used in a fork of it (LMDB's rule);
every transaction checks the PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterator

import lmdb
import numpy as np

from .. import __version__
from ..errors import NotFoundError, StoreError, StoreFullError, display_path
from ..extract import ImageFeatures
from ..imaging.features import EXTRACTION_VERSION, LocalFeatures, detector_info
from ..match import Candidate
from ..settings import ExtractionSettings
from ..types import FileIdentity
from . import codec, graph, ignored, index, migrations, tags
from .changes import Change, DeleteTag, Fail, Linked, Move, Put, PutTag, Relink, Remove, Touch, Watched

SCHEMA_VERSION = 1
STATUSES = ("idle", "extracting", "matching", "searching")
INITIAL_MAP_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_MAP_SIZE = 1 << 40
_DATABASES = ("meta", "paths", "images", "features", "failed", "hashes", "chunks", "lsh", "pending", "pairs",
              *tags.DATABASES)
_DUPSORT = ("hashes", "chunks", "lsh", *tags.DUPSORT)


_LONG_KEY = b"\x00sha256:"


def path_key(path: str) -> bytes:
    raw = os.fsencode(path)
    if len(raw) <= 500:
        return raw
    return _LONG_KEY + hashlib.sha256(raw).digest()


def _is_under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class StoredImage:
    """What `features list` and reports show about one image."""

    num: int
    path: str
    identity: FileIdentity
    content_hash: bytes
    format: str
    width: int
    height: int
    features: int
    fingerprint: int
    added: float

    @classmethod
    def from_record(cls, num: int, doc: dict) -> "StoredImage":
        return cls(num, doc["path"], FileIdentity(**doc["identity"]), bytes.fromhex(doc["content_hash"]),
                   doc["format"], doc["width"], doc["height"], doc["features"], int(doc["fingerprint"], 16),
                   doc["added"])


@dataclass(frozen=True)
class Failure:
    path: str
    identity: FileIdentity | None
    reason: str
    detail: str
    when: float

    @classmethod
    def from_record(cls, record: bytes) -> "Failure":
        doc = codec.unpack(record)[0]
        identity = FileIdentity(**doc["identity"]) if doc["identity"] else None
        return cls(doc["path"], identity, doc["reason"], doc["detail"], doc["when"])


class _ResizeGate:
    """Read transactions (any thread) against a map resize (the writer thread).

    LMDB resizes a map only while no transaction is active in the process, and py-lmdb's
    set_mapsize invalidates every transaction still open and fails, with EINVAL, any operation
    another thread starts meanwhile. So a resize waits until no read transaction is open and
    holds new ones back until it is done; readers never wait for each other."""

    def __init__(self):
        self._changed = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            while self._resizing:
                self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextmanager
    def resizing(self) -> Iterator[None]:
        with self._changed:
            while self._resizing:
                self._changed.wait()
            self._resizing = True                   # from now on new readers wait
            while self._readers:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._resizing = False
                self._changed.notify_all()


class SearchContext:
    def __init__(self, directory: Path, env: lmdb.Environment, settings: ExtractionSettings, max_map_size: int):
        self.directory = directory
        self.settings = settings
        self._env = env
        self._pid = os.getpid()
        self._gate = _ResizeGate()
        self._max_map_size = max_map_size
        self._dbs = {name: env.open_db(name.encode(), dupsort=name in _DUPSORT, dupfixed=name in _DUPSORT)
                     for name in _DATABASES}
        info = detector_info(settings.detector)
        hasher = index.Hasher(settings.detector, info.bits_per_descriptor // (8 if info.binary else 32), info.binary)
        self._index = index.CandidateIndex(self._dbs["hashes"], self._dbs["chunks"], self._dbs["lsh"], hasher)
        self._graph = graph.DuplicateGraph(self._dbs["meta"], self._dbs["images"], self._dbs["pending"],
                                           self._dbs["pairs"])
        self._tags = tags.TagStore(self._dbs["meta"], self._dbs["tags"], self._dbs["tag_features"],
                                   index.CandidateIndex(self._dbs["tag_hashes"], self._dbs["tag_chunks"],
                                                        self._dbs["tag_lsh"], hasher),
                                   self._dbs["watch_pending"], self._dbs["alerts"])

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | Path, settings: ExtractionSettings | None = None,
               max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> "SearchContext":
        directory = Path(directory)
        if (directory / "data.mdb").exists():
            env = _open_env(directory, create=False)
            try:
                _refuse_truncated(directory, env)
                cut_short = _creation_cut_short(env)
            finally:
                env.close()
            if not cut_short:
                raise StoreError(str(directory), "a search context already exists here")
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(str(directory), f"cannot create the folder: {exc.strerror or exc}") from None
        context = cls(directory, _open_env(directory, create=True, max_map_size=max_map_size),
                      settings or ExtractionSettings(), max_map_size)
        with context._write() as txn:
            meta = context._dbs["meta"]
            txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
            txn.put(b"settings", json.dumps(context.settings.to_dict()).encode(), db=meta)
            txn.put(b"extraction", str(EXTRACTION_VERSION).encode(), db=meta)
            txn.put(b"created", json.dumps({"at": time.time(), "by": __version__}).encode(), db=meta)
            txn.put(b"next", b"1", db=meta)
            txn.put(b"index", str(index.VERSION).encode(), db=meta)
            txn.put(b"chunks", str(index.CHUNKS_VERSION).encode(), db=meta)
        return context

    @classmethod
    def open(cls, directory: str | Path, expect: ExtractionSettings | None = None,
             max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> "SearchContext":
        """Open an existing context; `expect` refuses one created with other extraction settings."""
        directory = Path(directory)
        if not (directory / "data.mdb").exists():
            raise NotFoundError(f"{directory}: no search context here (create one with 'lookalike context create')")
        env = _open_env(directory, create=False, max_map_size=max_map_size)
        _refuse_truncated(directory, env)
        try:
            with env.begin() as txn:
                meta = env.open_db(b"meta", txn=txn, create=False)
                schema = int(txn.get(b"schema", db=meta) or b"0")
                stored = json.loads(txn.get(b"settings", db=meta))
                extraction = int(txn.get(b"extraction", db=meta) or b"1")
                index_version = int(txn.get(b"index", db=meta) or b"1")
                chunks_version = int(txn.get(b"chunks", db=meta) or b"1")
        except (lmdb.Error, ValueError, TypeError) as exc:
            cut_short = _creation_cut_short(env)
            env.close()
            if cut_short:
                raise NotFoundError(f"{directory}: no search context here (the one begun here was cut short "
                                    f"before it held anything; create one with 'lookalike context create')") from None
            raise StoreError(str(directory), f"not a readable search context: {exc}; {REBUILD_ADVICE}") from None
        if schema > SCHEMA_VERSION:
            env.close()
            raise StoreError(str(directory), f"created by a newer lookalike (schema {schema}; this one reads up to "
                                             f"{SCHEMA_VERSION}); upgrade lookalike to use it")
        if extraction != EXTRACTION_VERSION:
            env.close()
            raise StoreError(str(directory), f"holds features of extraction version {extraction}, which do not match "
                                             f"this lookalike's (version {EXTRACTION_VERSION}); {REBUILD_ADVICE}")
        settings = ExtractionSettings.from_dict(stored)
        if expect is not None:
            differences = [f"{k}: context has {v!r}, asked for {expect.to_dict()[k]!r}"
                           for k, v in settings.to_dict().items()
                           if k in ("detector", "max_features", "working_size") and expect.to_dict()[k] != v]
            if differences:
                env.close()
                raise StoreError(str(directory), "was created with other extraction settings ("
                                 + "; ".join(differences) + "); use another state directory or delete this context")
        env.reader_check()
        context = cls(directory, env, settings, max_map_size)
        context._upgrade(index_version, chunks_version)
        return context

    @staticmethod
    def tag_names(directory: str | Path) -> list[str] | None:
        """The names of the tags a context holds, whatever lookalike filled it (a rebuild says
        which it leaves behind); None when its data cannot be read."""
        directory = Path(directory)
        if not (directory / "data.mdb").exists():
            return []
        try:
            env = _open_env(directory, create=False)
        except StoreError:
            return None
        try:
            _refuse_truncated(directory, env)
            with env.begin() as txn:
                try:
                    names = env.open_db(b"tags", txn=txn, create=False)
                except lmdb.NotFoundError:
                    return []       # filled before tags were kept
                return [key.decode() for key, _ in txn.cursor(db=names)]
        except (StoreError, lmdb.Error, UnicodeDecodeError):
            return None
        finally:
            env.close()

    @staticmethod
    def delete(directory: str | Path) -> None:
        directory = Path(directory)
        if not (directory / "data.mdb").exists():
            raise NotFoundError(f"{directory}: no search context here")
        for name in ("data.mdb", "lock.mdb", ignored.FILE_NAME, ignored.LOCK_NAME):
            (directory / name).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except OSError:
            pass      # other files live there (reports, config): leave them

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> "SearchContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transactions --------------------------------------------------------------------

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise StoreError(str(self.directory), "used after fork: LMDB environments must not cross fork()")

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        self._check_process()
        while True:
            with self._gate.reading():
                try:
                    txn = self._env.begin(buffers=False)
                except lmdb.MapResizedError:
                    pass
                else:
                    with txn:
                        yield txn
                    return
            self._resize(0)                 # another process grew the map: adopt its size

    def _resize(self, map_size: int) -> None:
        with self._gate.resizing():
            self._env.set_mapsize(map_size)

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        self._check_process()
        with self._env.begin(write=True) as txn:
            yield txn

    def _apply(self, change) -> object:
        """Run `change(txn)` in one write transaction, growing the map while it is full."""
        while True:
            try:
                with self._write() as txn:
                    result = change(txn)
                self._index.crowded.after_commit()
                self._tags.index.crowded.after_commit()
                return result
            except lmdb.MapFullError:
                current = self._env.info()["map_size"]
                if current >= self._max_map_size:
                    raise StoreFullError(str(self.directory), f"the context reached its size cap of "
                                         f"{self._max_map_size} bytes; nothing of the last change was written") from None
                self._resize(min(current * 2, self._max_map_size))
            except lmdb.MapResizedError:
                self._resize(0)

    # --- writes --------------------------------------------------------------------------

    def commit(self, changes: list[Change]) -> list:
        """Apply changes in order, in one transaction; one result per change.

        Put -> the new image number; Remove and Move -> how many records they touched;
        Touch -> whether the path was stored; Fail -> None; Relink -> images queued;
        Linked -> pairs recorded; PutTag -> the tag's document; DeleteTag -> whether it
        existed; Watched -> the alerts recorded, with their cursors.
        """
        def change(txn):
            return [self._apply_one(txn, item) for item in changes]
        return self._apply(change)

    def _apply_one(self, txn, item: Change):
        if isinstance(item, Put):
            return self._put_image(txn, item.features)
        if isinstance(item, Touch):
            return self._touch(txn, item.path, item.identity)
        if isinstance(item, Fail):
            return self._put_failure(txn, item)
        if isinstance(item, Remove):
            return self._remove(txn, item.path)
        if isinstance(item, Move):
            return self._move(txn, item.source, item.destination)
        if isinstance(item, Relink):
            return self._graph.relink(txn, item.threshold, item.scoring)
        if isinstance(item, Linked):
            return self._graph.linked(txn, item)
        if isinstance(item, PutTag):
            return self._tags.put(txn, item.name, item.references)
        if isinstance(item, DeleteTag):
            return self._tags.delete(txn, item.name)
        if isinstance(item, Watched):
            return self._tags.checked(txn, item.image, item.alerts)
        raise TypeError(f"not a store change: {item!r}")

    def upsert(self, features: ImageFeatures) -> int:
        return self.upsert_many([features])[0]

    def upsert_many(self, batch: list[ImageFeatures]) -> list[int]:
        """Store images (replacing any older record of the same path) in one transaction."""
        return self.commit([Put(features) for features in batch])

    def remove(self, path: str) -> bool:
        """Forget an image (and any failure recorded for the path). True if it was stored."""
        return self.remove_all(path) > 0

    def remove_all(self, path: str) -> int:
        """Forget the image at `path` and every image under it, if it is a folder: how many."""
        return self.commit([Remove(path)])[0]

    def count_under(self, folder: str) -> int:
        """How many images are stored under `folder`."""
        with self._read() as txn:
            return len(self._entries(txn, "paths", folder))

    def record_failure(self, path: str, identity: FileIdentity | None, reason: str, detail: str) -> None:
        """Remember that a file could not be read, so it is not retried until it changes."""
        self.commit([Fail(path, identity, reason, detail)])

    def _put_image(self, txn, features: ImageFeatures) -> int:
        key = path_key(features.path)
        old = txn.get(key, db=self._dbs["paths"])
        if old is not None:
            self._drop_image(txn, index.NUM.unpack(old)[0])
        meta = self._dbs["meta"]
        num = int(txn.get(b"next", db=meta))
        txn.put(b"next", str(num + 1).encode(), db=meta)
        value = index.NUM.pack(num)
        doc = {"path": features.path, "identity": features.identity.__dict__,
               "content_hash": features.content_hash.hex(), "format": features.format,
               "width": features.width, "height": features.height, "features": features.local.count,
               "fingerprint": f"{features.fingerprint:016x}", "added": time.time()}
        txn.put(value, codec.pack(doc), db=self._dbs["images"])
        txn.put(value, codec.pack(
            {"width": features.local.width, "height": features.local.height},
            {"keypoints": features.local.keypoints, "descriptors": features.local.descriptors,
             "thumbnail": features.thumbnail}), db=self._dbs["features"])
        txn.put(key, value, db=self._dbs["paths"])
        txn.delete(key, db=self._dbs["failed"])
        self._index.add(txn, num, features.content_hash, features.fingerprint, features.local)
        self._graph.queue(txn, [num])
        self._tags.queue(txn, num)
        return num

    def _drop_image(self, txn, num: int) -> None:
        value = index.NUM.pack(num)
        image = StoredImage.from_record(num, codec.unpack(txn.get(value, db=self._dbs["images"]))[0])
        local = self._local(txn, num)
        self._index.remove(txn, num, image.content_hash, image.fingerprint, local)
        txn.delete(value, db=self._dbs["images"])
        txn.delete(value, db=self._dbs["features"])
        txn.delete(path_key(image.path), db=self._dbs["paths"])
        self._graph.forget(txn, num)
        self._tags.forget(txn, num)

    # --- the duplicate graph ---------------------------------------------------------------

    def links_basis(self) -> tuple[float | None, str | None]:
        """The threshold and the scoring the recorded pairs were linked with (None before the
        first pass)."""
        with self._read() as txn:
            return self._graph.links_threshold(txn), self._graph.links_scoring(txn)

    def pending(self, page: int = 256) -> Iterator[list[tuple[int, int]]]:
        """The queued images as pages of (image number, stamp); images queued while this runs
        may or may not be listed."""
        for entries in self._pages("pending", page):
            yield graph.pending_entries(entries)

    def pending_count(self) -> int:
        with self._read() as txn:
            return self._graph.pending_count(txn)

    def pairs(self) -> Iterator[tuple[int, int, bytes]]:
        """Every recorded comparison as (first, second, result)."""
        for entries in self._pages("pairs", 4096):
            yield from graph.pair_entries(entries)

    def pair(self, first: int, second: int) -> bytes | None:
        """The recorded comparison first -> second, if any (b"" is never returned)."""
        with self._read() as txn:
            return self._graph.pair(txn, first, second)

    # --- tags and the watchlist (tags.py) ---------------------------------------------------

    def tags(self) -> list[dict]:
        """Every tag's document, by name."""
        with self._read() as txn:
            return self._tags.all(txn)

    def references(self, names: list[str]) -> list[tags.StoredReference]:
        """The references of these tags, in the order named; NotFoundError names a missing tag."""
        with self._read() as txn:
            found = []
            for name in names:
                doc = self._tags.tag(txn, name)
                if doc is None:
                    raise NotFoundError(f"tag {name!r}: no such tag")
                found += [self._tags.reference(txn, listed["number"]) for listed in doc["references"]]
            return found

    def reference(self, number: int) -> tags.StoredReference | None:
        """A reference by number; None once its tag was replaced or deleted."""
        with self._read() as txn:
            return self._tags.reference(txn, number)

    def reference_candidates(self, content_hash: bytes, fingerprint: int, local: LocalFeatures) -> list[int]:
        """Reference numbers worth verifying against these features, as the references' own
        candidate index finds them."""
        known = self._tags.index.crowded.view()
        with self._read() as txn:
            return list(self._tags.index.candidates(txn, content_hash, fingerprint, local, known))

    def watch_pending(self, page: int = 64) -> list[int]:
        """Up to `page` stored images the watchlist has still to check, oldest first."""
        with self._read() as txn, txn.cursor(db=self._dbs["watch_pending"]) as cursor:
            return [index.NUM.unpack(key)[0] for key, _ in zip(cursor.iternext(values=False), range(page))]

    def alerts_since(self, cursor: int, limit: int) -> list[dict]:
        """Up to `limit` alerts recorded after `cursor`, oldest first."""
        with self._read() as txn, txn.cursor(db=self._dbs["alerts"]) as reader:
            found = []
            if reader.set_range(tags.CURSOR.pack(cursor + 1)):
                for _, value in reader:
                    found.append(json.loads(value))
                    if len(found) == limit:
                        break
            return found

    def _touch(self, txn, path: str, identity: FileIdentity) -> bool:
        num = self._num(txn, path)
        if num is None:
            return False
        self._update_image_doc(txn, num, identity=identity.__dict__)
        return True

    def _update_image_doc(self, txn, num: int, **fields) -> None:
        value = index.NUM.pack(num)
        doc = codec.unpack(txn.get(value, db=self._dbs["images"]))[0]
        doc.update(fields)
        txn.put(value, codec.pack(doc), db=self._dbs["images"])

    def _put_failure(self, txn, failure: Fail) -> None:
        key = path_key(failure.path)
        num = txn.get(key, db=self._dbs["paths"])
        if num is not None:
            self._drop_image(txn, index.NUM.unpack(num)[0])
        doc = {"path": failure.path, "identity": failure.identity.__dict__ if failure.identity else None,
               "reason": failure.reason, "detail": failure.detail, "when": time.time()}
        txn.put(key, codec.pack(doc), db=self._dbs["failed"])

    def _entries(self, txn, db: str, path: str) -> list[tuple[bytes, str]]:
        """(key, path) of the entries of `paths` or `failed` for `path` and everything under it."""
        found = []
        key = path_key(path)
        if txn.get(key, db=self._dbs[db]) is not None:
            found.append((key, path))
        prefix = os.fsencode(path.rstrip("/") + "/")
        with txn.cursor(db=self._dbs[db]) as cursor:
            if cursor.set_range(prefix):
                for key in cursor.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    found.append((key, os.fsdecode(key)))
        return found + self._long_entries(txn, db, path)

    def _long_entries(self, txn, db: str, folder: str) -> list[tuple[bytes, str]]:
        """(key, path) of the entries under `folder` whose paths are too long for a key: they are
        stored under a digest, and their own record names them."""
        found = []
        with txn.cursor(db=self._dbs[db]) as cursor:
            if cursor.set_range(_LONG_KEY):
                for key, value in cursor:
                    if not key.startswith(_LONG_KEY):
                        break
                    long_path = self._path_of(txn, db, value)
                    if _is_under(long_path, folder):
                        found.append((key, long_path))
        return found

    def _path_of(self, txn, db: str, value: bytes) -> str:
        if db == "failed":
            return codec.unpack(value)[0]["path"]
        return self._image(txn, index.NUM.unpack(value)[0]).path

    def _remove(self, txn, path: str) -> int:
        for key, _ in self._entries(txn, "failed", path):
            txn.delete(key, db=self._dbs["failed"])
        images = self._entries(txn, "paths", path)
        for key, _ in images:
            self._drop_image(txn, index.NUM.unpack(txn.get(key, db=self._dbs["paths"]))[0])
        return len(images)

    def _move(self, txn, source: str, destination: str) -> int:
        def moved(old_path: str) -> str:
            return destination + old_path[len(source):]

        for key, old_path in self._entries(txn, "failed", source):
            doc = codec.unpack(txn.pop(key, db=self._dbs["failed"]))[0]
            doc["path"] = moved(old_path)
            txn.put(path_key(doc["path"]), codec.pack(doc), db=self._dbs["failed"])
        images = self._entries(txn, "paths", source)
        for key, old_path in images:
            new_path = moved(old_path)
            new_key = path_key(new_path)
            value = txn.pop(key, db=self._dbs["paths"])
            replaced = txn.get(new_key, db=self._dbs["paths"])
            if replaced is not None:            # moved over another stored image
                self._drop_image(txn, index.NUM.unpack(replaced)[0])
            txn.put(new_key, value, db=self._dbs["paths"])
            txn.delete(new_key, db=self._dbs["failed"])
            self._update_image_doc(txn, index.NUM.unpack(value)[0], path=new_path)
        return len(images)

    def _upgrade(self, index_version: int, chunks_version: int) -> None:
        """Rebuild the parts of the candidate indexes (the images' and the tag references') that an
        older lookalike laid out otherwise (migrations.py)."""
        def part(candidate_index: index.CandidateIndex, db: str, source: str, add) -> migrations.Part:
            return migrations.Part(candidate_index, self._dbs[db], lambda: self._pages(source, 512), add)
        images, references = self._index, self._tags.index
        migrations.upgrade(self._apply, self._env, self._dbs["meta"], migrations.Layout(
            b"index", index_version, index.VERSION,
            (part(images, "lsh", "features", self._index_descriptors),
             part(references, "tag_lsh", "tag_features", self._index_reference_descriptors))),
            migrations.Layout(b"chunks", chunks_version, index.CHUNKS_VERSION,
                              (part(images, "chunks", "images", self._index_fingerprint),
                               part(references, "tag_chunks", "tag_features", self._index_reference_fingerprint))))

    def _index_descriptors(self, txn, num: int, record: bytes) -> None:
        self._index.add_descriptors(txn, num, _features_record(record)[0])

    def _index_fingerprint(self, txn, num: int, record: bytes) -> None:
        self._index.add_fingerprint(txn, num, StoredImage.from_record(num, codec.unpack(record)[0]).fingerprint)

    def _index_reference_descriptors(self, txn, number: int, record: bytes) -> None:
        self._tags.index.add_descriptors(txn, number, tags.StoredReference.from_record(number, record).local)

    def _index_reference_fingerprint(self, txn, number: int, record: bytes) -> None:
        self._tags.index.add_fingerprint(txn, number, tags.StoredReference.from_record(number, record).fingerprint)

    @contextmanager
    def busy(self, status: str) -> Iterator[None]:
        """Show `status` in `context info` while a long operation runs."""
        assert status in STATUSES
        def put(value):
            def change(txn):
                txn.put(b"status", json.dumps(value).encode(), db=self._dbs["meta"])
            self._apply(change)
        put({"state": status, "pid": os.getpid(), "since": time.time()})
        try:
            yield
        finally:
            put({"state": "idle", "pid": None, "since": time.time()})

    # --- reads ---------------------------------------------------------------------------

    def _local(self, txn, num: int) -> LocalFeatures:
        return _features_record(txn.get(index.NUM.pack(num), db=self._dbs["features"]))[0]

    def _num(self, txn, path: str) -> int | None:
        value = txn.get(path_key(path), db=self._dbs["paths"])
        return None if value is None else index.NUM.unpack(value)[0]

    def _require_num(self, txn, path: str) -> int:
        num = self._num(txn, path)
        if num is None:
            raise NotFoundError(f"{display_path(path)}: not in the search context")
        return num

    def image(self, path: str) -> StoredImage:
        with self._read() as txn:
            return self._image(txn, self._require_num(txn, path))

    def _image(self, txn, num: int) -> StoredImage:
        record = txn.get(index.NUM.pack(num), db=self._dbs["images"])
        if record is None:
            raise NotFoundError(f"image {num}: not in the search context")
        return StoredImage.from_record(num, codec.unpack(record)[0])

    def image_by_number(self, num: int) -> StoredImage:
        with self._read() as txn:
            return self._image(txn, num)

    def find(self, path: str) -> StoredImage | None:
        with self._read() as txn:
            num = self._num(txn, path)
            return None if num is None else self._image(txn, num)

    def local_features(self, path: str) -> LocalFeatures:
        with self._read() as txn:
            return self._local(txn, self._require_num(txn, path))

    def candidate(self, num: int) -> tuple[StoredImage, Candidate]:
        with self._read() as txn:
            return self._candidate(txn, num)

    def _candidate(self, txn, num: int) -> tuple[StoredImage, Candidate]:
        image = self._image(txn, num)
        local, thumbnail = _features_record(txn.get(index.NUM.pack(num), db=self._dbs["features"]))
        return image, Candidate(local, thumbnail, image.content_hash, image.width, image.height)

    def images(self, batch: int = 512) -> Iterator[StoredImage]:
        """Every stored image, in insertion order."""
        for entries in self._pages("images", batch):
            yield from (StoredImage.from_record(index.NUM.unpack(key)[0], codec.unpack(value)[0])
                        for key, value in entries)

    def _pages(self, db: str, size: int, prefix: bytes = b"") -> Iterator[list[tuple[bytes, bytes]]]:
        """The entries of `db` whose keys start with `prefix`, in key order, `size` at a time, each
        page read in its own short transaction: a long-lived read transaction stops LMDB from
        reusing freed pages, so a long listing while the daemon writes would grow the file."""
        start = prefix
        while True:
            with self._read() as txn, txn.cursor(db=self._dbs[db]) as cursor:
                page = []
                if cursor.set_range(start):
                    for entry in cursor:
                        if not entry[0].startswith(prefix):
                            break
                        page.append(entry)
                        if len(page) == size:
                            break
            if page:
                yield page
            if len(page) < size:
                return
            start = page[-1][0] + b"\x00"          # the least key after the last one read

    def failures(self) -> list[Failure]:
        with self._read() as txn, txn.cursor(db=self._dbs["failed"]) as cursor:
            return [Failure.from_record(value) for _, value in cursor]

    def failure(self, path: str) -> Failure | None:
        with self._read() as txn:
            value = txn.get(path_key(path), db=self._dbs["failed"])
        return None if value is None else Failure.from_record(value)

    def known(self, path: str) -> tuple[FileIdentity | None, bytes | None]:
        """The identity last seen for `path` (stored or failed) and its content hash if stored."""
        with self._read() as txn:
            return self._known(txn, path) or (None, None)

    def _known(self, txn, path: str) -> tuple[FileIdentity | None, bytes | None] | None:
        num = self._num(txn, path)
        if num is not None:
            image = self._image(txn, num)
            return image.identity, image.content_hash
        value = txn.get(path_key(path), db=self._dbs["failed"])
        return None if value is None else (Failure.from_record(value).identity, None)

    def identities(self, paths: list[str]) -> dict[str, FileIdentity | None]:
        """The identity last seen for each of `paths` that the context knows (stored or failed),
        in one read transaction; a path it does not know is left out."""
        with self._read() as txn:
            return {path: known[0] for path in paths if (known := self._known(txn, path)) is not None}

    def paths_under(self, folder: str, page: int = 1024) -> Iterator[list[str]]:
        """The paths under `folder` that the context knows (stored or failed: a path can be both),
        a page at a time, each page read in its own short transaction; what the caller holds
        does not grow with the collection."""
        prefix = os.fsencode(folder.rstrip("/") + "/")
        for db in ("failed", "paths"):
            for entries in self._pages(db, page, prefix):
                yield [os.fsdecode(key) for key, _ in entries]
            with self._read() as txn:
                long_paths = [path for _, path in self._long_entries(txn, db, folder)]
            if long_paths:
                yield long_paths

    def candidates_for(self, content_hash: bytes, fingerprint: int, local: LocalFeatures) -> Iterator[int]:
        """Image numbers worth verifying against these features, as the candidate index finds them.
        Its read transaction is open until the iteration ends, and holds back a map resize
        (_ResizeGate): iterate it through without waiting on other readers."""
        known = self._index.crowded.view()
        with self._read() as txn:
            yield from self._index.candidates(txn, content_hash, fingerprint, local, known)

    def voted_for(self, local: LocalFeatures, found: Container[int]) -> list[int]:
        """The images these descriptors alone vote for in the candidate index (the last tier of
        `candidates_for`), leaving out `found`."""
        known = self._index.crowded.view()
        with self._read() as txn:
            return self._index.voted(txn, local, known, found)

    def paths_with_content(self, content_hash: bytes) -> list[str]:
        """The paths of the stored images whose bytes have this content hash."""
        with self._read() as txn:
            return sorted(self._image(txn, num).path for num in self._index.with_content(txn, content_hash))

    def count(self) -> int:
        with self._read() as txn:
            return txn.stat(self._dbs["images"])["entries"]

    def check(self) -> dict:
        """Read every record of every database and decode it; StoreError names the first damage."""
        counts = {}
        try:
            with self._read() as txn:
                for name, db in self._dbs.items():
                    entries = 0
                    for key, value in txn.cursor(db=db):
                        if name in ("images", "features", "failed", "tag_features"):
                            codec.unpack(value)
                        entries += 1
                    counts[name] = entries
                for num_value in txn.cursor(db=self._dbs["paths"]).iternext(keys=False):
                    if txn.get(num_value, db=self._dbs["images"]) is None:
                        raise codec.RecordError(f"path entry for missing image {index.NUM.unpack(num_value)[0]}")
        except (lmdb.Error, codec.RecordError, ValueError) as exc:
            raise StoreError(str(self.directory), f"the context is damaged: {exc}; {REBUILD_ADVICE}") from None
        return counts

    def size_on_disk(self) -> int:
        files = [self.directory / "data.mdb", self.directory / "lock.mdb"]
        return sum(f.stat().st_blocks * 512 for f in files if f.exists())

    def info(self) -> dict:
        with self._read() as txn:
            meta = self._dbs["meta"]
            status = json.loads(txn.get(b"status", db=meta) or b'{"state": "idle", "pid": null}')
            created = json.loads(txn.get(b"created", db=meta))
            images = txn.stat(self._dbs["images"])["entries"]
            failed = txn.stat(self._dbs["failed"])["entries"]
        if status.get("pid") and not _alive(status["pid"]):
            status = {"state": "idle", "pid": None, "note": f"was {status['state']} in a process that ended"}
        return {"context": str(self.directory), "schema": SCHEMA_VERSION, "settings": self.settings.to_dict(),
                "images": images, "failed": failed, "status": status["state"],
                **({"status_note": status["note"]} if "note" in status else {}),
                "size_bytes": self.size_on_disk(),
                "map_size_bytes": self._env.info()["map_size"], "created": created}


REBUILD_ADVICE = "rebuild it from the watched folders with 'lookalike --config FILE context rebuild'"


def _features_record(record: bytes) -> tuple[LocalFeatures, np.ndarray]:
    """A `features` record: the image's local features and its thumbnail."""
    doc, arrays = codec.unpack(record)
    return LocalFeatures(arrays["keypoints"], arrays["descriptors"], doc["width"], doc["height"]), arrays["thumbnail"]


def _creation_cut_short(env: lmdb.Environment) -> bool:
    """Whether a crash inside `create` left this environment (checked for truncation already).

    LMDB makes data.mdb (and `__init__` the sub-databases) before `create`'s first transaction
    stores the schema and settings, and no image can be stored before that transaction. Such an
    environment holds nothing, so it is created again rather than refused as damaged, which
    would stop every later start of the daemon until someone rebuilt it by hand."""
    try:
        with env.begin() as txn:
            try:
                meta = env.open_db(b"meta", txn=txn, create=False)
            except lmdb.NotFoundError:
                meta = None
            if meta is not None and txn.get(b"schema", db=meta) is not None:
                return False
            for name in ("images", "failed"):
                try:
                    if txn.stat(env.open_db(name.encode(), txn=txn, create=False))["entries"]:
                        return False
                except lmdb.NotFoundError:
                    pass
            return True
    except lmdb.Error:
        return False                # damaged: for `open` to refuse with the recovery


def _refuse_truncated(directory: Path, env: lmdb.Environment) -> None:
    """A data file shorter than the pages its header counts would fault (SIGBUS) on first read."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (directory / "data.mdb").stat().st_size
    if size < needed:
        env.close()
        raise StoreError(str(directory), f"data.mdb is truncated ({size} bytes; its header counts {needed}): "
                                         f"the context is damaged; {REBUILD_ADVICE}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_env(directory: Path, create: bool, max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> lmdb.Environment:
    # Never above the cap: a map opened larger than it would let the data outgrow the cap
    # before the first MapFullError. (LMDB raises a map smaller than the data to fit the data.)
    try:
        return lmdb.open(str(directory), map_size=min(INITIAL_MAP_SIZE, max_map_size), max_dbs=len(_DATABASES) + 4,
                         subdir=True, create=create, max_readers=256, mode=0o600)
    except lmdb.Error as exc:
        raise StoreError(str(directory), f"cannot open the LMDB environment: {exc}") from None
