"""Pairs a person marked "not a duplicate" (`lookalike ignore`): a small file beside the LMDB
environment in the context's folder.

    ignored.json   {"version": 1, "pairs": [{"id", "content_hashes", "paths", "added"}]}
    ignored.lock   taken (flock) by whoever changes ignored.json

A decision names the two images by their content hashes, so it holds whatever the files are
called and wherever they move; it stops applying to a file whose bytes change. Decisions are
not kept in LMDB because the daemon is the environment's one writer and `ignore` must work
while it runs: a writer takes the lock, reads the file, and replaces it atomically (temporary
file, fsync, rename), so a reader (a duplicates pass, at its start) needs no lock and sees the
old list or the new one, never half of either. A pass's read is cached by the file's identity
(inode, size, mtime, ctime), so an unchanged list costs one stat.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import StoreError
from ..files import atomic_write

FILE_NAME = "ignored.json"
LOCK_NAME = "ignored.lock"
VERSION = 1


@dataclass(frozen=True)
class IgnoredPair:
    """Two contents that are never put in one duplicate group; `first` < `second`."""

    first: bytes
    second: bytes
    paths: tuple[str, str]     # the files' paths when the pair was marked, in the same order
    added: str                 # UTC, ISO 8601

    @classmethod
    def of(cls, one: tuple[bytes, str], other: tuple[bytes, str]) -> "IgnoredPair":
        """The pair of two (content hash, path), put in order."""
        (first, first_path), (second, second_path) = sorted((one, other))
        return cls(first, second, (first_path, second_path), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def key(self) -> tuple[bytes, bytes]:
        return self.first, self.second

    @property
    def id(self) -> str:
        """Short and stable: the same two contents always get the same id."""
        return hashlib.blake2b(self.first + self.second, digest_size=5).hexdigest()

    def to_json(self) -> dict:
        return {"id": self.id, "content_hashes": [self.first.hex(), self.second.hex()],
                "paths": list(self.paths), "added": self.added}

    @classmethod
    def from_json(cls, doc: dict) -> "IgnoredPair":
        first, second = (bytes.fromhex(h) for h in doc["content_hashes"])
        if not first < second:
            raise ValueError(f"pair {doc.get('id')!r}: content hashes not two distinct ones in order")
        first_path, second_path = doc["paths"]
        return cls(first, second, (str(first_path), str(second_path)), str(doc["added"]))


@dataclass(frozen=True)
class Ignored:
    """The decisions of one context, as a duplicates pass reads them."""

    pairs: tuple[IgnoredPair, ...] = ()

    @functools.cached_property
    def _keys(self) -> frozenset[tuple[bytes, bytes]]:
        return frozenset(pair.key for pair in self.pairs)

    def apart(self, one: bytes, other: bytes) -> bool:
        """Whether the images with these content hashes were marked not a duplicate."""
        return (min(one, other), max(one, other)) in self._keys


NONE = Ignored()


def read(directory: Path) -> Ignored:
    """The decisions stored in the context folder `directory` (none when there is no file),
    parsed again only when the file was replaced since the last read."""
    path = Path(directory) / FILE_NAME
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return NONE
    except OSError as exc:
        raise StoreError(str(path), f"cannot read the pairs marked not a duplicate: {exc.strerror or exc}") from None
    return _cached(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=8)
def _cached(path: str, *identity: int) -> Ignored:
    return _load(Path(path))


def _load(path: Path) -> Ignored:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return NONE
    except OSError as exc:
        raise StoreError(str(path), f"cannot read the pairs marked not a duplicate: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise StoreError(str(path), f"not a list of pairs marked not a duplicate (not JSON: {exc}); "
                                    "fix or delete it (deleting it forgets every such mark)") from None
    version = document.get("version") if isinstance(document, dict) else None
    if isinstance(version, int) and version > VERSION:
        raise StoreError(str(path), f"written by a newer lookalike (version {version}; this one reads {VERSION}); "
                                    "upgrade lookalike")
    try:
        if version != VERSION:
            raise ValueError(f"version {version!r}")
        return Ignored(tuple(IgnoredPair.from_json(doc) for doc in document["pairs"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(str(path), f"not a list of pairs marked not a duplicate ({exc}); "
                                    "fix or delete it (deleting it forgets every such mark)") from None


@contextmanager
def _changing(directory: Path) -> Iterator[list[IgnoredPair]]:
    """The decisions as a list to change in place, written back when the block ends without
    an error; other writers wait on the lock meanwhile."""
    directory = Path(directory)
    try:
        with open(directory / LOCK_NAME, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Not the cached list: two replacements within one timestamp tick could reuse an
            # inode and size, and a writer that started from a stale list would lose marks.
            stored = list(_load(directory / FILE_NAME).pairs)
            pairs = list(stored)
            yield pairs
            if pairs != stored:
                atomic_write(directory / FILE_NAME, json.dumps(
                    {"version": VERSION, "pairs": [pair.to_json() for pair in pairs]}, indent=1) + "\n")
    except OSError as exc:
        raise StoreError(str(directory / FILE_NAME),
                         f"cannot write the pairs marked not a duplicate: {exc.strerror or exc}") from None


def add(directory: Path, wanted: Iterable[IgnoredPair]) -> tuple[list[IgnoredPair], list[IgnoredPair]]:
    """Store the pairs not stored yet: (those added, those that already were)."""
    added, already = [], []
    with _changing(directory) as pairs:
        known = {pair.key: pair for pair in pairs}
        for pair in wanted:
            if pair.key in known:
                already.append(known[pair.key])
            else:
                known[pair.key] = pair
                pairs.append(pair)
                added.append(pair)
    return added, already


def remove(directory: Path, key: tuple[bytes, bytes] | None = None, pair_id: str | None = None) -> IgnoredPair | None:
    """Forget the pair with these content hashes (in order) or this id; the pair, or None when
    no such pair was stored."""
    with _changing(directory) as pairs:
        found = next((pair for pair in pairs if pair.key == key or pair.id == pair_id), None)
        if found is not None:
            pairs.remove(found)
    return found
