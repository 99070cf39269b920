"""The candidate index: which stored images are worth verifying against a query, without
comparing the query with every stored image.

Three tiers, all kept in LMDB sub-databases of the context and written in the same
transaction as the image's record (see context.py):

1. exact copies: content hash -> images;
2. near copies: the 64-bit fingerprint split into four 16-bit chunks (multi-index hashing);
   probing each chunk and its 16 one-bit neighbours finds every stored fingerprint within
   Hamming distance 7 of any of the query's eight orientations;
3. crops, overlays, small rotations: locality-sensitive hashing of local descriptors.
   Each of TABLES tables keys a descriptor by KEY_BITS of its bits (binary descriptors) or by
   the signs of KEY_BITS random projections (SIFT). An image gets a vote for each bucket it
   shares with the query, weighted by 1/(images in that bucket): AKAZE's bits are correlated,
   so crowded buckets are common and say little, while a shared rare bucket is strong evidence.
   The most-voted images are candidates.

Cost per query: a few hundred to a few thousand key look-ups and a vote count over the
postings they return, independent of how many images do not collide.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..imaging.features import LocalFeatures, fingerprint_variants

TABLES = 6
KEY_BITS = 20
INDEXED_DESCRIPTORS = 300     # the first ones in spread order (features.spread_strongest)
MAX_POSTINGS = 4000           # a bucket this full says nothing (sky, flat walls): skipped
MIN_VOTES = 2.0              # weighted (see candidates); measured on the calibration set
MAX_VOTED = 16
FINGERPRINT_RADIUS = 10
_SEED = 20261121

NUM = struct.Struct(">I")


@dataclass(frozen=True)
class Databases:
    hashes: object            # content hash -> image numbers (dupsort)
    fingerprints: object      # image number -> 8-byte fingerprint
    chunks: object            # chunk position + 16-bit chunk -> image numbers (dupsort)
    lsh: object               # table + bucket key -> image numbers (dupsort)


class Hasher:
    """Bucket keys for descriptors of one detector; deterministic from the seed."""

    def __init__(self, descriptor_width: int, binary: bool):
        rng = np.random.default_rng(_SEED)
        self.binary = binary
        if binary:
            bits = descriptor_width * 8
            self.positions = np.stack([rng.choice(bits, KEY_BITS, replace=False) for _ in range(TABLES)])
        else:
            self.projections = rng.standard_normal((TABLES, descriptor_width, KEY_BITS)).astype(np.float32)
        self.weights = (1 << np.arange(KEY_BITS, dtype=np.uint32)).astype(np.uint32)

    def keys(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, TABLES) uint32 bucket keys."""
        if len(descriptors) == 0:
            return np.zeros((0, TABLES), np.uint32)
        if self.binary:
            bits = np.unpackbits(descriptors, axis=1)
            chosen = bits[:, self.positions]                       # (N, TABLES, KEY_BITS)
        else:
            chosen = (np.einsum("nd,tdk->ntk", descriptors, self.projections) > 0)
        return (chosen.astype(np.uint32) * self.weights).sum(axis=2, dtype=np.uint32)


def _lsh_keys(hasher: Hasher, descriptors: np.ndarray) -> list[bytes]:
    keys = hasher.keys(descriptors[:INDEXED_DESCRIPTORS])
    tables = np.broadcast_to(np.arange(TABLES, dtype=np.uint32), keys.shape)
    packed = (tables.astype(np.uint64) << 32) | keys.astype(np.uint64)
    return [int(v).to_bytes(5, "big") for v in np.unique(packed)]


def _chunk_keys(fingerprint: int) -> list[bytes]:
    return [bytes([i]) + ((fingerprint >> (48 - 16 * i)) & 0xFFFF).to_bytes(2, "big") for i in range(4)]


def add(txn, dbs: Databases, num: int, content_hash: bytes, fingerprint: int,
        local: LocalFeatures, hasher: Hasher) -> None:
    value = NUM.pack(num)
    txn.put(content_hash, value, db=dbs.hashes, dupdata=True)
    txn.put(value, fingerprint.to_bytes(8, "big"), db=dbs.fingerprints)
    for key in _chunk_keys(fingerprint):
        txn.put(key, value, db=dbs.chunks, dupdata=True)
    with txn.cursor(db=dbs.lsh) as cursor:
        cursor.putmulti([(key, value) for key in _lsh_keys(hasher, local.descriptors)], dupdata=True)


def remove(txn, dbs: Databases, num: int, content_hash: bytes, fingerprint: int,
           local: LocalFeatures, hasher: Hasher) -> None:
    value = NUM.pack(num)
    txn.delete(content_hash, value, db=dbs.hashes)
    txn.delete(value, db=dbs.fingerprints)
    for key in _chunk_keys(fingerprint):
        txn.delete(key, value, db=dbs.chunks)
    for key in _lsh_keys(hasher, local.descriptors):
        txn.delete(key, value, db=dbs.lsh)


def _postings(cursor, key: bytes) -> list[int]:
    """The image numbers in a bucket; none for a bucket too crowded to mean anything."""
    if not cursor.set_key(key) or cursor.count() > MAX_POSTINGS:
        return []
    return [NUM.unpack(v)[0] for v in cursor.iternext_dup()]


def candidates(txn, dbs: Databases, content_hash: bytes, fingerprint: int,
               local: LocalFeatures, mirror: LocalFeatures | None, hasher: Hasher) -> list[int]:
    """Image numbers worth verifying, most promising first (exact copies, then by votes)."""
    found: dict[int, float] = {}
    with txn.cursor(db=dbs.hashes) as cursor:
        for num in _postings(cursor, content_hash):
            found[num] = float("inf")

    variants = set(fingerprint_variants(fingerprint).values())
    near: set[int] = set()
    with txn.cursor(db=dbs.chunks) as cursor:
        for variant in variants:
            for i in range(4):
                chunk = (variant >> (48 - 16 * i)) & 0xFFFF
                for probe in [chunk] + [chunk ^ (1 << b) for b in range(16)]:
                    near.update(_postings(cursor, bytes([i]) + probe.to_bytes(2, "big")))
    for num in near:
        stored = txn.get(NUM.pack(num), db=dbs.fingerprints)
        if stored is None:
            continue
        value = int.from_bytes(stored, "big")
        distance = min(bin(value ^ v).count("1") for v in variants)
        if distance <= FINGERPRINT_RADIUS:
            found[num] = max(found.get(num, 0.0), 1e6 - distance)

    votes: dict[int, float] = {}
    with txn.cursor(db=dbs.lsh) as cursor:
        for features in (local, mirror):
            if features is None:
                continue
            orientation: dict[int, float] = {}
            for key in _lsh_keys(hasher, features.descriptors):
                bucket = _postings(cursor, key)
                for num in bucket:
                    orientation[num] = orientation.get(num, 0.0) + 1.0 / len(bucket)
            for num, weight in orientation.items():
                votes[num] = max(votes.get(num, 0.0), weight)
    voted = sorted(((w, n) for n, w in votes.items() if w >= MIN_VOTES), reverse=True)[:MAX_VOTED]
    for weight, num in voted:
        found[num] = max(found.get(num, 0.0), weight)
    return [num for num, _ in sorted(found.items(), key=lambda item: -item[1])]
