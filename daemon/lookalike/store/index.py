"""The candidate index: which stored images are worth verifying against a query, without
comparing the query with every stored image.

Three tiers, all kept in LMDB sub-databases of the context and written in the same
transaction as the image's record (see context.py):

1. exact copies: content hash -> images;
2. near copies: the 64-bit fingerprint split into four 16-bit chunks (multi-index hashing);
   probing each chunk and its 16 one-bit neighbours finds every stored fingerprint within
   Hamming distance 7 of any of the query's eight orientations. A posting carries the
   fingerprint with the image number, so the distances need no other read;
3. crops, overlays, small rotations: locality-sensitive hashing of local descriptors.
   Each of TABLES tables keys a descriptor by KEY_BITS of its bits (binary descriptors) or by
   the signs of KEY_BITS random projections (SIFT). For AKAZE the bits are chosen from real
   photos (akaze_lsh_bits.json, bench/derive_lsh_bits.py): fair and uncorrelated ones, since
   random AKAZE bits crowd most descriptors into few buckets. A bucket holding more than
   CROWDED_BUCKET images is left out: flat patches (sky, walls) crowd such buckets with every
   photo that has them. Buckets found crowded are remembered (CrowdedBuckets), so later
   look-ups skip them without a search. An image is a candidate when
   at least MIN_SHARED_DESCRIPTORS of the query's descriptors share a bucket with it;
   candidates are ranked by votes, one per shared bucket weighted by 1/(images in it), so a
   shared rare bucket counts for more than a crowded one.

Cost per query: a few thousand key look-ups and a count over at most CROWDED_BUCKET postings
per key, whatever the collection's size (scale benchmark: BENCHMARKS.md).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Container, Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..imaging.features import LocalFeatures, fingerprint_variants, mirror_table

TABLES = 6
KEY_BITS = 24
INDEXED_DESCRIPTORS = 300     # the first ones in spread order (features.spread_strongest)
CROWDED_BUCKET = 100          # CALIBRATION.md, "Candidate index"
MIN_SHARED_DESCRIPTORS = 6    # CALIBRATION.md, "Candidate index"
MAX_VOTED = 8                 # each costs a verification; CALIBRATION.md, "Candidate index"
FINGERPRINT_RADIUS = 10
_SEED = 20261121
VERSION = 3                   # of the bucket keys; a context with another is re-indexed on open
CHUNKS_VERSION = 2            # of the chunk postings (2: image number + fingerprint); likewise

NUM = struct.Struct(">I")
FINGERPRINT = struct.Struct(">Q")


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
        # A mirrored descriptor's bit k is bit permutation[k] of the original, inverted where
        # invert[k] (features.mirror_table), so its keys need no mirrored descriptors.
        table = mirror_table(detector)
        self.mirrors = table is not None and binary
        if self.mirrors:
            permutation, invert = table
            self.mirror_positions, self.mirror_invert = permutation[self.positions], invert[self.positions]

    def keys(self, descriptors: np.ndarray, mirrored: bool = False) -> np.ndarray:
        """(N, TABLES) uint32 bucket keys, of the descriptors or of their mirror images'."""
        if len(descriptors) == 0:
            return np.zeros((0, TABLES), np.uint32)
        if mirrored:
            chosen = np.unpackbits(descriptors, axis=1)[:, self.mirror_positions] ^ self.mirror_invert
        elif self.binary:
            chosen = np.unpackbits(descriptors, axis=1)[:, self.positions]      # (N, TABLES, KEY_BITS)
        else:
            chosen = (np.einsum("nd,tdk->ntk", descriptors, self.projections) > 0)
        return (chosen.astype(np.uint32) * self.weights).sum(axis=2, dtype=np.uint32)


def _akaze_bits() -> list[list[int]]:
    tables = json.loads(resources.files(__package__).joinpath("akaze_lsh_bits.json").read_text())["tables"]
    assert len(tables) == TABLES and all(len(t) == KEY_BITS for t in tables)
    return tables


def _packed_keys(hasher: Hasher, descriptors: np.ndarray, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (table << 32 | bucket) keys of the indexed descriptors (or of their mirror
    images'), sorted, and for each the first descriptor that has it."""
    keys = hasher.keys(descriptors[:INDEXED_DESCRIPTORS], mirrored)
    tables = np.broadcast_to(np.arange(TABLES, dtype=np.uint32), keys.shape)
    packed, first = np.unique((tables.astype(np.uint64) << 32) | keys.astype(np.uint64), return_index=True)
    return packed, first // TABLES


def _key_bytes(packed: np.ndarray) -> list[bytes]:
    # Each key is the low 5 bytes of its big-endian uint64 (table, then bucket).
    return packed.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 3:].copy().view("V5").ravel().tolist()


def lsh_keys(hasher: Hasher, descriptors: np.ndarray) -> list[bytes]:
    """The bucket keys under which the index posts an image with these descriptors."""
    return _key_bytes(_packed_keys(hasher, descriptors)[0])


def _chunk_keys(fingerprint: int) -> list[bytes]:
    return [bytes([i]) + ((fingerprint >> (48 - 16 * i)) & 0xFFFF).to_bytes(2, "big") for i in range(4)]


_CHUNK_SHIFTS = np.array([48, 32, 16, 0], np.uint64)
_ONE_BIT_FLIPS = np.array([0] + [1 << b for b in range(16)], np.uint32)


def _chunk_probes(fingerprints: np.ndarray) -> list[bytes]:
    """The chunk keys (_chunk_keys) of every fingerprint within one bit of these in some chunk:
    sorted and distinct."""
    chunks = ((fingerprints[:, None] >> _CHUNK_SHIFTS) & np.uint64(0xFFFF)).astype(np.uint32)
    probes = (np.arange(4, dtype=np.uint32)[:, None] << 16) | (chunks[:, :, None] ^ _ONE_BIT_FLIPS)
    return np.unique(probes).astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:].copy().view("V3").ravel().tolist()


def postings(cursor, key: bytes) -> list[int]:
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


def _fingerprint_neighbours(cursor, probes: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(image numbers, ascending, and their fingerprints) of the postings under `probes`."""
    raw = cursor.getmulti(probes, dupdata=True, dupfixed_bytes=NUM.size + FINGERPRINT.size, keyfixed=True)
    entries = np.frombuffer(raw, dtype=[("key", "V3"), ("num", ">u4"), ("fingerprint", ">u8")])
    nums, first = np.unique(entries["num"], return_index=True)
    return nums.astype(np.intp), entries["fingerprint"][first].astype(np.uint64)


def bucket_sizes(cursor, keys: list[bytes]) -> np.ndarray:
    """How many images each bucket of `keys` holds (0: none). Counting a bucket's postings is
    one B-tree look-up, however many it holds; reading them is not."""
    return np.array([cursor.count() if cursor.set_key(key) else 0 for key in keys], np.intp)


# Counting a bucket first (bucket_sizes) costs ~1.6 us a key; reading a bucket costs ~28 ns a
# posting, and a missing key next to nothing (BENCHMARKS.md, "Crowded buckets remembered"). So
# reading the unknown buckets outright is cheaper while they hold fewer than 1.6 us / 28 ns = 57
# crowded postings per key; 50 leaves a margin. Only speed depends on it, not the candidates.
READ_DIRECTLY_BELOW = 50       # crowded postings per unknown key


class CrowdedBuckets:
    """The buckets look-ups have found crowded (more than CROWDED_BUCKET images): one bit per
    possible bucket (TABLES << KEY_BITS bits, 12.6 MB, whatever the collection's size). In the
    scale benchmark most of a look-up's existing keys are crowded; once they are known here, it
    skips them without a B-tree search and reads the rest (rare buckets, and the mirrored
    query's keys, which mostly do not exist) outright instead of counting each first; until
    then it counts (`read_directly`).

    Storing images only grows buckets, so a crowded one stays crowded. A removal can shrink one
    below the limit, so the context forgets every bucket once a transaction that removed images
    has committed (`after_commit`). A look-up whose read transaction began before that commit
    saw the bucket as it was: it teaches nothing, because its view (`view`, taken before the
    transaction began) is of an older generation."""

    def __init__(self):
        self._bits = np.zeros((TABLES << KEY_BITS) // 8, np.uint8)
        self._generation = 0
        self._shrunk = False
        self._lock = threading.Lock()
        self._unknown = _MovingTotals()

    def view(self) -> "CrowdedView":
        return CrowdedView(self, self._generation)

    def shrinking(self) -> None:
        """A write transaction is removing postings."""
        self._shrunk = True

    def after_commit(self) -> None:
        with self._lock:
            if self._shrunk:
                self._bits = np.zeros(len(self._bits), np.uint8)     # untouched pages take no memory
                self._generation += 1
                self._shrunk = False
                self._unknown = _MovingTotals()

    @property
    def read_directly(self) -> bool:
        return self._unknown.crowded_postings < READ_DIRECTLY_BELOW * self._unknown.keys

    def known(self, packed: np.ndarray) -> np.ndarray:
        slot = _slot(packed)
        return (self._bits[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1 == 1

    def learn(self, packed: np.ndarray, sizes: np.ndarray, generation: int) -> None:
        """The sizes of the buckets of `packed`, the keys a look-up begun in `generation` did not know."""
        crowded = sizes > CROWDED_BUCKET
        slot = _slot(packed[crowded])
        with self._lock:
            if generation != self._generation:
                return
            np.bitwise_or.at(self._bits, slot >> 3, (1 << (slot & 7)).astype(np.uint8))
            self._unknown.add(len(sizes), int(sizes[crowded].sum()))


class _MovingTotals:
    """Unknown keys looked up and the postings of the crowded buckets among them, each a moving
    sum over recent look-ups (their ratio: a look-up of a stored image may have no unknown key).
    Until the first look-up, every unknown key counts as crowded."""

    def __init__(self):
        self.keys, self.crowded_postings = 0.0, float("inf")

    def add(self, keys: int, crowded_postings: int) -> None:
        if self.crowded_postings == float("inf"):
            self.keys, self.crowded_postings = keys, crowded_postings
        else:
            self.keys = 0.8 * self.keys + 0.2 * keys
            self.crowded_postings = 0.8 * self.crowded_postings + 0.2 * crowded_postings


@dataclass(frozen=True)
class CrowdedView:
    """The crowded buckets as one look-up sees them: what it learns counts only if no removal
    committed since it began."""
    buckets: CrowdedBuckets
    generation: int

    def learn(self, packed: np.ndarray, sizes: np.ndarray) -> None:
        self.buckets.learn(packed, sizes, self.generation)


def _slot(packed: np.ndarray) -> np.ndarray:
    return ((packed >> np.uint64(32)) << np.uint64(KEY_BITS)) | (packed & np.uint64(0xFFFFFFFF))


def uncrowded_postings(cursor, keys: list[bytes], crowded: int,
                       read_directly: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bucket size of each key, then _read_buckets' three arrays for the buckets holding at most
    `crowded` images), counting each bucket before reading it or reading every one outright."""
    if not read_directly:
        sizes = bucket_sizes(cursor, keys)
        kept = np.flatnonzero((sizes > 0) & (sizes <= crowded))
        nums, position, size = _read_buckets(cursor, [keys[i] for i in kept])
        return sizes, nums, kept[position], size
    nums, position, size = _read_buckets(cursor, keys)
    sizes = np.zeros(len(keys), np.intp)
    sizes[position] = size
    kept = size <= crowded
    return sizes, nums[kept], position[kept], size[kept]


def shared_buckets(cursor, hasher: Hasher, descriptors: np.ndarray, crowded: int = CROWDED_BUCKET,
                   known: CrowdedView | None = None,
                   mirrored: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image numbers, query descriptors each shares a bucket with, votes) for every image in
    a bucket of these descriptors (or of their mirror images') that holds at most `crowded`
    images. A vote is 1/(bucket size) per shared bucket, so a shared rare bucket counts for
    more than a crowded one. `known`: the buckets already found crowded (at CROWDED_BUCKET),
    skipped and added to."""
    packed, descriptor_of_key = _packed_keys(hasher, descriptors, mirrored)
    if known is not None:
        unknown = ~known.buckets.known(packed)
        packed, descriptor_of_key = packed[unknown], descriptor_of_key[unknown]
    sizes, nums, position, size = uncrowded_postings(cursor, _key_bytes(packed), crowded,
                                                      known is not None and known.buckets.read_directly)
    if known is not None:
        known.learn(packed, sizes)
    if len(nums) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    votes = np.bincount(nums, weights=1.0 / size)
    pairs = np.unique((nums.astype(np.int64) << 16) | descriptor_of_key[position])
    shared = np.bincount(pairs >> 16, minlength=len(votes))
    found = np.flatnonzero(shared)
    return found, shared[found], votes[found]


def _descriptor_votes(cursor, hasher: Hasher, descriptors: np.ndarray, known: CrowdedView,
                      mirrored: bool) -> dict[int, float]:
    """The votes of the images sharing buckets with at least MIN_SHARED_DESCRIPTORS of these
    descriptors (or of their mirror images')."""
    nums, shared, votes = shared_buckets(cursor, hasher, descriptors, known=known, mirrored=mirrored)
    strong = shared >= MIN_SHARED_DESCRIPTORS
    return dict(zip(nums[strong].tolist(), votes[strong].tolist()))


class CandidateIndex:
    """The candidate index of one context: its three databases, the hasher of its detector and
    the buckets look-ups have found crowded. The context owns the transactions; every write
    goes into the transaction that writes the image's record."""

    def __init__(self, hashes, chunks, lsh, hasher: Hasher):
        self.hashes = hashes      # content hash -> image numbers (dupsort)
        self.chunks = chunks      # chunk position + 16-bit chunk -> image number + fingerprint (dupsort)
        self.lsh = lsh            # table + bucket key -> image numbers (dupsort)
        self.hasher = hasher
        self.crowded = CrowdedBuckets()

    def add(self, txn, num: int, content_hash: bytes, fingerprint: int, local: LocalFeatures) -> None:
        txn.put(content_hash, NUM.pack(num), db=self.hashes, dupdata=True)
        self.add_fingerprint(txn, num, fingerprint)
        self.add_descriptors(txn, num, local)

    def add_fingerprint(self, txn, num: int, fingerprint: int) -> None:
        value = NUM.pack(num) + FINGERPRINT.pack(fingerprint)
        for key in _chunk_keys(fingerprint):
            txn.put(key, value, db=self.chunks, dupdata=True)

    def add_descriptors(self, txn, num: int, local: LocalFeatures) -> None:
        value = NUM.pack(num)
        with txn.cursor(db=self.lsh) as cursor:
            cursor.putmulti([(key, value) for key in lsh_keys(self.hasher, local.descriptors)], dupdata=True)

    def remove(self, txn, num: int, content_hash: bytes, fingerprint: int, local: LocalFeatures) -> None:
        self.crowded.shrinking()
        value = NUM.pack(num)
        txn.delete(content_hash, value, db=self.hashes)
        for key in _chunk_keys(fingerprint):
            txn.delete(key, value + FINGERPRINT.pack(fingerprint), db=self.chunks)
        for key in lsh_keys(self.hasher, local.descriptors):
            txn.delete(key, value, db=self.lsh)

    def clear(self, txn, db) -> None:
        """Empty one of the index's databases (a migration rebuilds it)."""
        self.crowded.shrinking()
        txn.drop(db, delete=False)

    def with_content(self, txn, content_hash: bytes) -> list[int]:
        """The images whose bytes have this content hash."""
        with txn.cursor(db=self.hashes) as cursor:
            return postings(cursor, content_hash)

    def candidates(self, txn, content_hash: bytes, fingerprint: int, local: LocalFeatures,
                   known: CrowdedView) -> Iterator[int]:
        """Image numbers worth verifying, most promising first, the image's mirror image's too
        where the detector has a mirror table: exact copies, then near copies by fingerprint
        distance, then the images the local descriptors vote for. The copies come as soon as
        they are known, so a caller can verify them while the descriptors, most of a look-up's
        time, are looked up. `known` (crowded.view()) must be taken before `txn` began."""
        found = dict.fromkeys(self.with_content(txn, content_hash), float("inf"))

        variants = np.unique(np.array(list(fingerprint_variants(fingerprint).values()), np.uint64))
        with txn.cursor(db=self.chunks) as cursor:
            nums, fingerprints = _fingerprint_neighbours(cursor, _chunk_probes(variants))
        distances = np.bitwise_count(fingerprints[:, None] ^ variants).min(axis=1)
        near_enough = distances <= FINGERPRINT_RADIUS
        for num, distance in zip(nums[near_enough].tolist(), distances[near_enough].tolist()):
            found[num] = max(found.get(num, 0.0), 1e6 - distance)
        yield from sorted(found, key=lambda num: -found[num])
        # The vote slots go to images the hash and fingerprint have not found already.
        yield from self.voted(txn, local, known, found)

    def voted(self, txn, local: LocalFeatures, known: CrowdedView, found: Container[int]) -> list[int]:
        """The images the local descriptors (and their mirror images', where the detector has a
        mirror table) vote for, most votes first: at most MAX_VOTED of those not in `found`."""
        votes: dict[int, float] = {}
        with txn.cursor(db=self.lsh) as cursor:
            for mirrored in (False, True) if self.hasher.mirrors else (False,):
                for num, weight in _descriptor_votes(cursor, self.hasher, local.descriptors, known, mirrored).items():
                    if weight > votes.get(num, 0.0):
                        votes[num] = weight
        voted = sorted(((w, n) for n, w in votes.items() if n not in found), reverse=True)[:MAX_VOTED]
        return [num for _, num in voted]
