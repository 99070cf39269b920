"""The duplicate graph: the images a duplicates pass must still match, and the pairs it verified.

It lives in the search context, so a pass is incremental across restarts: a new image is
queued in `pending` in the transaction that stores it; a pass matches the queued images and
records the pairs it verified. An image number names content that never changes, so a pair
stays true until one of its images goes; then the images of its group are queued again,
since the pair may have been what held the group together.

Every method works inside a transaction the search context opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from . import index
from .changes import Linked


@dataclass(frozen=True)
class DuplicateGraph:
    meta: object              # pending_stamp, links_threshold, links_scoring
    images: object            # image number -> record: whether an image is still stored
    pending: object           # image number -> stamp
    pairs: object             # first + second -> result (JSON); second + first -> b""

    def queue(self, txn, nums: list[int]) -> None:
        """Queue images for the next duplicates pass, under a stamp no earlier queueing had."""
        stamp = int(txn.get(b"pending_stamp", db=self.meta) or b"0") + 1
        txn.put(b"pending_stamp", str(stamp).encode(), db=self.meta)
        for num in nums:
            txn.put(index.NUM.pack(num), index.NUM.pack(stamp % (1 << 32)), db=self.pending)

    def forget(self, txn, num: int) -> None:
        """Take a removed image out of the graph and queue the rest of its group again."""
        value = index.NUM.pack(num)
        txn.delete(value, db=self.pending)
        group = self._paired_with(txn, num)
        for other in group - {num}:
            pair, reverse = value + index.NUM.pack(other), index.NUM.pack(other) + value
            txn.delete(pair, db=self.pairs)
            txn.delete(reverse, db=self.pairs)
        self.queue(txn, sorted(group - {num}))

    def _paired_with(self, txn, num: int) -> set[int]:
        """`num` and every image reachable from it through recorded pairs."""
        seen, frontier = {num}, [num]
        with txn.cursor(db=self.pairs) as cursor:
            while frontier:
                prefix = index.NUM.pack(frontier.pop())
                if not cursor.set_range(prefix):
                    continue
                for key in cursor.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    other = index.NUM.unpack(key[4:])[0]
                    if other not in seen:
                        seen.add(other)
                        frontier.append(other)
        return seen

    def relink(self, txn, threshold: float, scoring: str) -> int:
        """Forget every pair and queue every image, to be linked again at `threshold`, scored
        by `scoring`."""
        txn.drop(self.pairs, delete=False)
        with txn.cursor(db=self.images) as cursor:
            nums = [index.NUM.unpack(key)[0] for key in cursor.iternext(values=False)]
        self.queue(txn, nums)
        txn.put(b"links_threshold", repr(float(threshold)).encode(), db=self.meta)
        txn.put(b"links_scoring", scoring.encode(), db=self.meta)
        return len(nums)

    def linked(self, txn, linked: Linked) -> int:
        """Record what a pass verified; a pass made at another threshold than the graph's is
        ignored, and an image queued again since the pass read it stays queued."""
        if self.links_threshold(txn) != linked.threshold:
            return 0
        stored = 0
        for first, second, result in linked.pairs:
            a, b = index.NUM.pack(first), index.NUM.pack(second)
            if txn.get(a, db=self.images) is None or txn.get(b, db=self.images) is None:
                continue
            txn.put(a + b, result, db=self.pairs)
            if txn.get(b + a, db=self.pairs) is None:
                txn.put(b + a, b"", db=self.pairs)
            stored += 1
        for num, stamp in linked.checked:
            key = index.NUM.pack(num)
            if txn.get(key, db=self.pending) == index.NUM.pack(stamp):
                txn.delete(key, db=self.pending)
        return stored

    def links_threshold(self, txn) -> float | None:
        value = txn.get(b"links_threshold", db=self.meta)
        return None if value is None else float(value)

    def links_scoring(self, txn) -> str | None:
        value = txn.get(b"links_scoring", db=self.meta)
        return None if value is None else value.decode()

    def pending_count(self, txn) -> int:
        return txn.stat(self.pending)["entries"]

    def pair(self, txn, first: int, second: int) -> bytes | None:
        return txn.get(index.NUM.pack(first) + index.NUM.pack(second), db=self.pairs) or None


def pending_entries(entries: Iterable[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Entries of `pending` as (image number, stamp)."""
    return [(index.NUM.unpack(key)[0], index.NUM.unpack(value)[0]) for key, value in entries]


def pair_entries(entries: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[int, int, bytes]]:
    """Entries of `pairs` as (first, second, result), without the reverse entries."""
    return ((index.NUM.unpack(key[:4])[0], index.NUM.unpack(key[4:])[0], value) for key, value in entries if value)
