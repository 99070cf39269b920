"""Duplicate detection: candidates -> verified pairs -> groups.

For each stored image the index proposes candidates; each unordered pair is verified once.
Groups are the connected components of the pairs scoring at or above the threshold. In each
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


def find_groups(context: SearchContext, threshold: float,
                progress: Callable[[int, int], None] | None = None) -> list[Group]:
    detector = context.settings.detector
    links = _UnionFind()
    # Unordered pair -> its result when it was compared lower number first, else None.
    verified: dict[tuple[int, int], Match | None] = {}
    stored = {image.num: image for image in context.images()}
    for done, image in enumerate(stored.values(), 1):
        _, candidate = context.candidate(image.num)
        for other in context.candidates_for(image.content_hash, image.fingerprint, candidate.local):
            pair = (min(image.num, other), max(image.num, other))
            if other == image.num or pair in verified or other not in stored:
                continue
            _, other_candidate = context.candidate(other)
            result = compare(candidate, other_candidate, detector)
            verified[pair] = result if pair == (image.num, other) else None
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
            result = verified.get((keeper.num, member.num)) if keeper.num < member.num else None
            if result is None:
                result = compare(keeper_candidate, context.candidate(member.num)[1], detector)
            group.members.append(Member(member, result.similarity, result))
        groups.append(group)
    groups.sort(key=lambda g: (-g.reclaimable_bytes, g.keeper.path))
    return groups
