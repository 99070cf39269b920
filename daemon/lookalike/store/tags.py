"""Tags and the watchlist: named sets of reference images kept in the search context apart from
the folder mirror, and the alerts recorded when a newly stored image matches one of them.

Sub-databases (beside the context's own, context.py):
  tags            tag name -> JSON: the tag's references (number, the name given, sizes)
  tag_features    reference number -> record: tag, name given, content hash, fingerprint, sizes;
                  keypoints, descriptors, thumbnail
  tag_hashes, tag_chunks, tag_lsh   a candidate index of the references (index.CandidateIndex,
                  a second instance beside the images'), so checking an image against every
                  reference is one look-up, not a comparison each
  watch_pending   image number -> b"": images stored while a tag existed that the watchlist has
                  not checked yet. Queued in the transaction that stores the image, so a restart
                  loses none; an image stored while no tag exists can match nothing and is not.
  alerts          cursor (8 bytes, big-endian) -> JSON alert

A reference's number comes from meta `tag_next`, an alert's cursor from meta `alert_next`;
neither is ever reused, so a cursor handed out names one alert for good and `alerts since C`
never misses one recorded later. None of this is a stored image: the reconcile, `features list`
and the duplicates pass never see it.

Every method works inside a transaction the search context opened.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from dataclasses import dataclass

from ..errors import TagError, UsageError
from ..extract import ImageFeatures
from ..imaging.features import LocalFeatures
from ..match import Candidate
from . import codec, index

DATABASES = ("tags", "tag_features", "tag_hashes", "tag_chunks", "tag_lsh", "watch_pending", "alerts")
DUPSORT = ("tag_hashes", "tag_chunks", "tag_lsh")

# Tag names are URL path segments and metric label values: a closed charset, bounded length, and
# a letter or digit first, so no name can be "_other" (the overflow label) or look like a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', beginning with a letter or digit"
MAX_GIVEN_NAME = 255            # a reference's name is a file name: what a file system allows
# A tag is stored in one write transaction, whose dirtied pages the writer keeps for good
# (store/writer.py); the watchlist check was measured with this many references in all.
MAX_REFERENCES = 1000
CURSOR = struct.Struct(">Q")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TagError(str(name), f"not a valid tag name ({NAME_RULE})")
    return name


@dataclass(frozen=True)
class Reference:
    """A reference image of a tag: what it was called when it was given, and its features."""

    name: str
    features: ImageFeatures

    def __post_init__(self):
        if not self.name or len(self.name) > MAX_GIVEN_NAME or "/" in self.name or "\x00" in self.name:
            raise UsageError(f"reference {self.name!r}: its name must be a file name of 1 to {MAX_GIVEN_NAME} "
                             "characters")

    @classmethod
    def of_file(cls, features: ImageFeatures) -> "Reference":
        return cls(os.path.basename(features.path), features)


@dataclass(frozen=True)
class StoredReference:
    """A reference as the context keeps it: enough to verify a match (match.Candidate)."""

    number: int
    tag: str
    name: str
    content_hash: bytes
    fingerprint: int
    width: int
    height: int
    local: LocalFeatures
    thumbnail: object           # np.ndarray, uint8

    @classmethod
    def from_record(cls, number: int, record: bytes) -> "StoredReference":
        doc, arrays = codec.unpack(record)
        local = LocalFeatures(arrays["keypoints"], arrays["descriptors"], doc["working_width"],
                              doc["working_height"])
        return cls(number, doc["tag"], doc["name"], bytes.fromhex(doc["content_hash"]), int(doc["fingerprint"], 16),
                   doc["width"], doc["height"], local, arrays["thumbnail"])

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.local, self.thumbnail, self.content_hash, self.width, self.height)


@dataclass(frozen=True)
class TagStore:
    meta: object
    tags: object
    features: object
    index: index.CandidateIndex
    pending: object
    alerts: object

    # --- tags ----------------------------------------------------------------------------

    def put(self, txn, name: str, references: tuple[Reference, ...]) -> dict:
        """Store the tag `name` with these references, replacing any it had: its document."""
        old = self.tag(txn, name)
        if old is not None:
            self._drop_references(txn, old)
        next_number = int(txn.get(b"tag_next", db=self.meta) or b"1")
        listed = []
        for number, reference in enumerate(references, next_number):
            features = reference.features
            key = index.NUM.pack(number)
            txn.put(key, codec.pack(
                {"tag": name, "name": reference.name, "content_hash": features.content_hash.hex(),
                 "fingerprint": f"{features.fingerprint:016x}", "width": features.width, "height": features.height,
                 "working_width": features.local.width, "working_height": features.local.height},
                {"keypoints": features.local.keypoints, "descriptors": features.local.descriptors,
                 "thumbnail": features.thumbnail}), db=self.features)
            self.index.add(txn, number, features.content_hash, features.fingerprint, features.local)
            listed.append({"number": number, "name": reference.name, "content_hash": features.content_hash.hex(),
                           "width": features.width, "height": features.height, "features": features.local.count})
        txn.put(b"tag_next", str(next_number + len(references)).encode(), db=self.meta)
        doc = {"name": name, "updated": time.time(), "references": listed}
        txn.put(name.encode(), json.dumps(doc).encode(), db=self.tags)
        return doc

    def delete(self, txn, name: str) -> bool:
        """Forget the tag `name` and its references; whether it existed."""
        doc = self.tag(txn, name)
        if doc is None:
            return False
        self._drop_references(txn, doc)
        txn.delete(name.encode(), db=self.tags)
        if not txn.stat(self.tags)["entries"]:
            txn.drop(self.pending, delete=False)        # with no tag left nothing can match
        return True

    def _drop_references(self, txn, doc: dict) -> None:
        for listed in doc["references"]:
            key = index.NUM.pack(listed["number"])
            stored = StoredReference.from_record(listed["number"], txn.get(key, db=self.features))
            self.index.remove(txn, stored.number, stored.content_hash, stored.fingerprint, stored.local)
            txn.delete(key, db=self.features)

    def tag(self, txn, name: str) -> dict | None:
        value = txn.get(name.encode(), db=self.tags)
        return None if value is None else json.loads(value)

    def all(self, txn) -> list[dict]:
        return [json.loads(value) for _, value in txn.cursor(db=self.tags)]

    def reference(self, txn, number: int) -> StoredReference | None:
        record = txn.get(index.NUM.pack(number), db=self.features)
        return None if record is None else StoredReference.from_record(number, record)

    # --- the watchlist -------------------------------------------------------------------

    def queue(self, txn, num: int) -> None:
        """A newly stored image, for the watchlist to check, if any tag could match it."""
        if txn.stat(self.tags)["entries"]:
            txn.put(index.NUM.pack(num), b"", db=self.pending)

    def forget(self, txn, num: int) -> None:
        txn.delete(index.NUM.pack(num), db=self.pending)

    def checked(self, txn, num: int, alerts: tuple[dict, ...]) -> list[dict]:
        """The watchlist checked image `num`: record its alerts, each under the next cursor."""
        txn.delete(index.NUM.pack(num), db=self.pending)
        cursor = int(txn.get(b"alert_next", db=self.meta) or b"1")
        recorded = []
        for alert in alerts:
            alert = {"cursor": cursor, **alert}
            txn.put(CURSOR.pack(cursor), json.dumps(alert).encode(), db=self.alerts)
            recorded.append(alert)
            cursor += 1
        txn.put(b"alert_next", str(cursor).encode(), db=self.meta)
        return recorded
