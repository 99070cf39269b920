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
   the signs of KEY_BITS random projections (SIFT). For AKAZE the bits are chosen from real
   photos (akaze_lsh_bits.json, bench/derive_lsh_bits.py): fair and uncorrelated ones, since
   random AKAZE bits crowd most descriptors into few buckets. A bucket holding more than
   CROWDED_BUCKET images is not read at all: its size is looked up first, and flat patches
   (sky, walls) crowd such buckets with every photo that has them. An image is a candidate when
   at least MIN_SHARED_DESCRIPTORS of the query's descriptors share a bucket with it;
   candidates are ranked by votes, one per shared bucket weighted by 1/(images in it), so a
   shared rare bucket counts for more than a crowded one.

Cost per query: a few thousand key look-ups and a count over at most CROWDED_BUCKET postings
per key, whatever the collection's size (scale benchmark: BENCHMARKS.md).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..imaging.features import LocalFeatures, fingerprint_variants

TABLES = 6
KEY_BITS = 24
INDEXED_DESCRIPTORS = 300     # the first ones in spread order (features.spread_strongest)
CROWDED_BUCKET = 100          # CALIBRATION.md, "Candidate index"
MIN_SHARED_DESCRIPTORS = 6    # CALIBRATION.md, "Candidate index"
MAX_VOTED = 8                 # each costs a verification (3-5 ms); CALIBRATION.md, "Candidate index"
FINGERPRINT_RADIUS = 10
_SEED = 20261121
VERSION = 3                   # of the bucket keys; a context with another is re-indexed on open

NUM = struct.Struct(">I")


@dataclass(frozen=True)
class Databases:
    hashes: object            # content hash -> image numbers (dupsort)
    fingerprints: object      # image number -> 8-byte fingerprint
    chunks: object            # chunk position + 16-bit chunk -> image numbers (dupsort)
    lsh: object               # table + bucket key -> image numbers (dupsort)


class Hasher:
    """Bucket keys for descriptors of one detector; deterministic from the seed."""

    def __init__(self, detector: str, descriptor_width: int, binary: bool):
        rng = np.random.default_rng(_SEED)
        self.binary = binary
        if detector == "akaze":
            self.positions = np.array(_akaze_bits(), np.intp)
        elif binary:
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


def _akaze_bits() -> list[list[int]]:
    tables = json.loads(resources.files(__package__).joinpath("akaze_lsh_bits.json").read_text())["tables"]
    assert len(tables) == TABLES and all(len(t) == KEY_BITS for t in tables)
    return tables


def _packed_keys(hasher: Hasher, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (table << 32 | bucket) keys of the indexed descriptors, sorted, and for each
    the first descriptor that has it."""
    keys = hasher.keys(descriptors[:INDEXED_DESCRIPTORS])
    tables = np.broadcast_to(np.arange(TABLES, dtype=np.uint32), keys.shape)
    packed, first = np.unique((tables.astype(np.uint64) << 32) | keys.astype(np.uint64), return_index=True)
    return packed, first // TABLES


def _key_bytes(packed: np.ndarray) -> list[bytes]:
    # Each key is the low 5 bytes of its big-endian uint64 (table, then bucket).
    return packed.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 3:].copy().view("V5").ravel().tolist()


def _lsh_keys(hasher: Hasher, descriptors: np.ndarray) -> list[bytes]:
    return _key_bytes(_packed_keys(hasher, descriptors)[0])


def _chunk_keys(fingerprint: int) -> list[bytes]:
    return [bytes([i]) + ((fingerprint >> (48 - 16 * i)) & 0xFFFF).to_bytes(2, "big") for i in range(4)]


def add(txn, dbs: Databases, num: int, content_hash: bytes, fingerprint: int,
        local: LocalFeatures, hasher: Hasher) -> None:
    value = NUM.pack(num)
    txn.put(content_hash, value, db=dbs.hashes, dupdata=True)
    txn.put(value, fingerprint.to_bytes(8, "big"), db=dbs.fingerprints)
    for key in _chunk_keys(fingerprint):
        txn.put(key, value, db=dbs.chunks, dupdata=True)
    add_descriptors(txn, dbs, num, local, hasher)


def add_descriptors(txn, dbs: Databases, num: int, local: LocalFeatures, hasher: Hasher) -> None:
    value = NUM.pack(num)
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
    """The image numbers under one key (content hashes: no crowding limit applies)."""
    if not cursor.set_key(key):
        return []
    return [NUM.unpack(v)[0] for v in cursor.iternext_dup()]


def _read_buckets(cursor, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image number, bucket position in `keys`, bucket size) for every posting under `keys`.

    One getmulti call reads all the buckets at C speed (MDB_GET_MULTIPLE on the fixed-size
    postings), and numpy does the rest, so a query costs milliseconds even when its buckets
    hold a hundred thousand postings. `keys` must be sorted and distinct.
    """
    if not keys:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    width = len(keys[0])
    raw = cursor.getmulti(keys, dupdata=True, dupfixed_bytes=NUM.size, keyfixed=True)
    entries = np.frombuffer(raw, dtype=[("key", f"S{width}"), ("num", ">u4")])
    if len(entries) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    # getmulti returns each key's postings together, so buckets are runs of one key.
    starts = np.flatnonzero(np.r_[True, entries["key"][1:] != entries["key"][:-1]])
    sizes = np.diff(np.r_[starts, len(entries)])
    position = np.searchsorted(np.array(keys, f"S{width}"), entries["key"][starts])
    return entries["num"].astype(np.intp), np.repeat(position, sizes), np.repeat(sizes, sizes)


def _fingerprint_neighbours(cursor, probes: list[bytes]) -> np.ndarray:
    nums, _, _ = _read_buckets(cursor, probes)
    return np.unique(nums)


def _uncrowded(cursor, keys: list[bytes], crowded: int) -> np.ndarray:
    """Positions in `keys` of the buckets holding 1 to `crowded` images. Counting a bucket's
    postings is one B-tree look-up, however many it holds; reading them is not."""
    return np.array([i for i, key in enumerate(keys) if cursor.set_key(key) and cursor.count() <= crowded], np.intp)


def shared_buckets(cursor, hasher: Hasher, descriptors: np.ndarray,
                   crowded: int = CROWDED_BUCKET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image numbers, query descriptors each shares a bucket with, votes) for every image in
    a bucket of these descriptors that holds at most `crowded` images. A vote is 1/(bucket
    size) per shared bucket, so a shared rare bucket counts for more than a crowded one."""
    packed, descriptor_of_key = _packed_keys(hasher, descriptors)
    keys = _key_bytes(packed)
    kept = _uncrowded(cursor, keys, crowded)
    nums, position, size = _read_buckets(cursor, [keys[i] for i in kept])
    if len(nums) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    votes = np.bincount(nums, weights=1.0 / size)
    pairs = np.unique((nums.astype(np.int64) << 16) | descriptor_of_key[kept][position])
    shared = np.bincount(pairs >> 16, minlength=len(votes))
    found = np.flatnonzero(shared)
    return found, shared[found], votes[found]


def _descriptor_votes(cursor, hasher: Hasher, descriptors: np.ndarray) -> dict[int, float]:
    """The votes of the images sharing buckets with at least MIN_SHARED_DESCRIPTORS of these
    descriptors."""
    nums, shared, votes = shared_buckets(cursor, hasher, descriptors)
    strong = shared >= MIN_SHARED_DESCRIPTORS
    return dict(zip(nums[strong].tolist(), votes[strong].tolist()))


def candidates(txn, dbs: Databases, content_hash: bytes, fingerprint: int,
               local: LocalFeatures, mirror: LocalFeatures | None, hasher: Hasher) -> list[int]:
    """Image numbers worth verifying, most promising first (exact copies, then by votes)."""
    found: dict[int, float] = {}
    with txn.cursor(db=dbs.hashes) as cursor:
        for num in _postings(cursor, content_hash):
            found[num] = float("inf")

    variants = set(fingerprint_variants(fingerprint).values())
    probes = sorted({bytes([i]) + probe.to_bytes(2, "big")
                     for variant in variants for i in range(4)
                     for chunk in [(variant >> (48 - 16 * i)) & 0xFFFF]
                     for probe in [chunk] + [chunk ^ (1 << b) for b in range(16)]})
    with txn.cursor(db=dbs.chunks) as cursor:
        near = _fingerprint_neighbours(cursor, probes)
    with txn.cursor(db=dbs.fingerprints) as cursor:
        stored = cursor.getmulti([NUM.pack(num) for num in near.tolist()])
    if stored:
        nums = np.frombuffer(b"".join(key for key, _ in stored), ">u4")
        values = np.frombuffer(b"".join(value for _, value in stored), ">u8").astype(np.uint64)
        distances = np.bitwise_count(values[:, None] ^ np.array(sorted(variants), np.uint64)).min(axis=1)
        near_enough = distances <= FINGERPRINT_RADIUS
        for num, distance in zip(nums[near_enough].tolist(), distances[near_enough].tolist()):
            found[num] = max(found.get(num, 0.0), 1e6 - distance)

    votes: dict[int, float] = {}
    with txn.cursor(db=dbs.lsh) as cursor:
        for features in (local, mirror):
            if features is None:
                continue
            for num, weight in _descriptor_votes(cursor, hasher, features.descriptors).items():
                if weight > votes.get(num, 0.0):
                    votes[num] = weight
    # The vote slots go to images the hash and fingerprint have not found already.
    voted = sorted(((w, n) for n, w in votes.items() if n not in found), reverse=True)[:MAX_VOTED]
    for weight, num in voted:
        found[num] = max(found.get(num, 0.0), weight)
    return [num for num, _ in sorted(found.items(), key=lambda item: -item[1])]
