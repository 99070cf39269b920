"""Duplicate detection: candidates -> verified pairs -> groups.

For each stored image the index proposes candidates; each unordered pair is verified once.
Groups are the connected components of the pairs scoring at or above the threshold.
A `PairCache` carried from pass to pass makes the daemon's passes incremental: an image number
names content that never changes (a changed file is stored under a new number), so a verified
pair stays true until one of its images goes, and only pairs with a new image are verified. In each
group one image is suggested as the keeper (highest resolution, then largest file, then oldest)
and every member is scored against it, so a report says how alike each copy is to the one a
person would keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .match import Match, compare
from .store import SearchContext, StoredImage


@dataclass
class Member:
    image: StoredImage
    similarity: float             # to the keeper; the keeper itself scores 100
    match: Match | None = None


@dataclass
class Group:
    keeper: StoredImage
    members: list[Member] = field(default_factory=list)   # keeper first

    @property
    def reclaimable_bytes(self) -> int:
        return sum(m.image.identity.size for m in self.members[1:])


def keeper_order(image: StoredImage) -> tuple:
    return (-(image.width * image.height), -image.identity.size, image.identity.mtime_ns, image.path)


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


class PairCache:
    """Verified pairs, (lower number, higher number) -> the result of comparing them in that order."""

    def __init__(self):
        self.results: dict[tuple[int, int], Match] = {}
        self.verified = 0                 # comparisons made, over the cache's life

    def keep_only(self, alive: set[int]) -> None:
        self.results = {pair: m for pair, m in self.results.items() if pair[0] in alive and pair[1] in alive}


def find_groups(context: SearchContext, threshold: float,
                progress: Callable[[int, int], None] | None = None,
                cache: PairCache | None = None) -> list[Group]:
    detector = context.settings.detector
    cache = cache or PairCache()
    links = _UnionFind()
    stored = {image.num: image for image in context.images()}
    cache.keep_only(set(stored))
    for done, image in enumerate(stored.values(), 1):
        _, candidate = context.candidate(image.num)
        for other in context.candidates_for(image.content_hash, image.fingerprint, candidate.local):
            if other == image.num or other not in stored:
                continue
            pair = (min(image.num, other), max(image.num, other))
            result = cache.results.get(pair)
            if result is None:
                _, other_candidate = context.candidate(other)
                first, second = (candidate, other_candidate) if pair[0] == image.num else (other_candidate, candidate)
                result = cache.results[pair] = compare(first, second, detector)
                cache.verified += 1
            if result.similarity >= threshold:
                links.union(image.num, other)
        if progress:
            progress(done, len(stored))

    components: dict[int, list[StoredImage]] = {}
    for num in links.parent:
        components.setdefault(links.find(num), []).append(stored[num])
    groups = []
    for members in components.values():
        if len(members) < 2:
            continue
        members.sort(key=keeper_order)
        keeper = members[0]
        _, keeper_candidate = context.candidate(keeper.num)
        group = Group(keeper, [Member(keeper, 100.0)])
        for member in members[1:]:
            # Reuse the grouping pass's result when it compared keeper -> member (the
            # direction matters: the transform is reported from the keeper's side).
            result = cache.results.get((keeper.num, member.num)) if keeper.num < member.num else None
            if result is None:
                result = compare(keeper_candidate, context.candidate(member.num)[1], detector)
            group.members.append(Member(member, result.similarity, result))
        groups.append(group)
    groups.sort(key=lambda g: (-g.reclaimable_bytes, g.keeper.path))
    return groups
