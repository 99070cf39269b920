"""Duplicate detection: queued images -> candidates -> verified pairs -> groups.

The duplicate graph is kept in the context (store/context.py: `pending`, `pairs`), so a pass
does only the work new images bring, across restarts too. A pass asks the index for the
candidates of each queued image and verifies those not already linked to it: the linked pairs
only say which images may belong together (a connected component), so a pair inside one would
add nothing. Pairs scoring at or above the threshold are recorded, and the image leaves the
queue, a page at a time. A pass takes as many images as were queued when it began; those stored
meanwhile wait for the next pass, so a pass ends, and reports, even while files keep arriving.

Groups are stars: in each component one image is chosen as the keeper (`choose_keeper`: a file
of the first format `keep.formats` prefers, then highest resolution, then largest file, then
oldest) and every other image is compared with it; those at or above the threshold are its
group, so a report says how alike each copy is to the one a person would keep, and a false pair
cannot chain two families together. The rest form groups the same way. Those comparisons are
recorded too: a group that did not change costs no comparison in the next pass.

A pair a person marked not a duplicate (store/ignored.py, read at the start of each grouping)
is never in one group: of the two, the one that comes later in the keeper order is held out of
the group with the rest held out. Groups are made anew in every pass, so a mark (or its removal)
shows in the next report though no image changed.

Memory is bounded by a page of queued images and the linked images, never by the collection.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import NotFoundError
from .match import Candidate, Match, compare
from .settings import DEFAULT_KEEP_FORMATS
from .store import SearchContext, StoredImage, ignored as ignored_pairs
from .store.changes import Change, Linked, Relink

PAGE = 256     # queued images per recorded step
WAVE = 16      # queued images looked up together


@dataclass
class Member:
    image: StoredImage
    similarity: float             # to the keeper; the keeper itself scores 100
    transform: dict | None = None
    kinds: tuple[str, ...] = ()   # what it is of the keeper (match.COPY_KINDS); none for the keeper


@dataclass
class Group:
    keeper: StoredImage
    members: list[Member] = field(default_factory=list)   # keeper first

    @property
    def reclaimable_bytes(self) -> int:
        return sum(m.image.identity.size for m in self.members[1:])


@dataclass
class PassStats:
    matched: int = 0              # queued images matched
    verified: int = 0             # comparisons made


def keeper_order(image: StoredImage, keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS) -> tuple:
    preference = keep_formats.index(image.format) if image.format in keep_formats else len(keep_formats)
    return (preference, -(image.width * image.height), -image.identity.size, image.identity.mtime_ns, image.path)


def choose_keeper(images: list[StoredImage], keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS) -> StoredImage:
    """The image of a group a person would keep; every other member is verified against it."""
    return min(images, key=lambda image: keeper_order(image, keep_formats))


def match_record(result: Match) -> bytes:
    return json.dumps({"similarity": result.similarity, "kinds": list(result.kinds),
                       "transform": result.transform.to_json() if result.transform else None}).encode()


def _current(record: bytes | None) -> dict | None:
    """A recorded comparison, or None when there is none or it predates `kinds` (scored again)."""
    if record is None:
        return None
    doc = json.loads(record)
    return doc if "kinds" in doc else None


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

    def connected(self, a: int, b: int) -> bool:
        return a in self.parent and b in self.parent and self.find(a) == self.find(b)


def _direct(context: SearchContext) -> Callable[[Change], None]:
    return lambda change: context.commit([change])


def _links(context: SearchContext, threshold: float) -> _UnionFind:
    links = _UnionFind()
    for first, second, result in context.pairs():
        if json.loads(result)["similarity"] >= threshold:
            links.union(first, second)
    return links


def _still_stored(context: SearchContext, nums: list[int]) -> Iterator[StoredImage]:
    """The images of `nums` still stored: one removed while a pass ran is left out of its
    report (its pairs were not recorded, and its group is queued again)."""
    for num in nums:
        try:
            yield context.image_by_number(num)
        except NotFoundError:
            pass


def match_pending(context: SearchContext, threshold: float, apply: Callable[[Change], None] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  stats: PassStats | None = None) -> _UnionFind:
    """Match as many images as were queued when the pass began (whole pages, so up to a page
    more) against their candidates, recording pairs and leaving the queue as it goes (`apply`
    commits a change; the daemon routes it through its writer). Returns the links of the whole
    graph at `threshold`; counts into `stats`.

    Comparisons run on a thread per core (OpenCV releases the GIL), a wave of images at a time.
    Index look-ups run on this thread: a look-up is thousands of small LMDB cursor calls, each
    giving the GIL up and taking it back, and two threads handing it over that often took longer
    than one (BENCHMARKS.md, "Crowded buckets remembered"). The group links are kept by this
    thread alone."""
    apply = apply or _direct(context)
    if context.links_threshold() != threshold:
        apply(Relink(threshold))
    detector = context.settings.detector
    links = _links(context, threshold)
    stats = stats if stats is not None else PassStats()
    total = context.pending_count()

    def proposed(num: int) -> tuple[int, Candidate | None, list[int]]:
        try:
            image, candidate = context.candidate(num)
        except NotFoundError:
            return num, None, []            # removed since the page was read
        return num, candidate, list(context.candidates_for(image.content_hash, image.fingerprint, candidate.local))

    def verified(job: tuple[int, Candidate, int]) -> Match | None:
        num, candidate, other = job
        try:
            _, other_candidate = context.candidate(other)
        except NotFoundError:
            return None
        first, second = (candidate, other_candidate) if num < other else (other_candidate, candidate)
        return compare(first, second, detector)

    threads = os.cpu_count() or 1
    matched = 0
    with ThreadPoolExecutor(threads) as pool:
        for page in context.pending(PAGE):
            found = []
            for start in range(0, len(page), WAVE):
                waiting = [(num, candidate, iter(others))
                           for num, candidate, others in map(proposed, [num for num, _ in page[start:start + WAVE]])]
                asked: set[tuple[int, int]] = set()
                # Rounds of a few comparisons per image, best candidates first: once an image
                # joins a group, its candidates in that group need no comparison.
                while jobs := _next_round(waiting, links, asked, 2 * threads):
                    for (num, _, other), result in zip(jobs, pool.map(verified, jobs)):
                        if result is None:
                            continue
                        stats.verified += 1
                        if result.similarity >= threshold:
                            links.union(num, other)
                            found.append((min(num, other), max(num, other), match_record(result)))
            apply(Linked(threshold, tuple(page), tuple(found)))
            stats.matched += len(page)
            matched += len(page)
            if progress:
                progress(min(matched, total), max(total, matched))
            if matched >= total:
                break
    return links


def _next_round(waiting: list, links: _UnionFind, asked: set[tuple[int, int]], enough: int) -> list:
    """The next comparisons: each waiting image's next candidate outside its group, in sweeps
    over the images until there are `enough` to keep the threads busy or none is left."""
    jobs: list = []
    while len(jobs) < enough:
        took = False
        for num, candidate, others in waiting:
            for other in others:
                pair = (min(num, other), max(num, other))
                if other != num and pair not in asked and not links.connected(num, other):
                    asked.add(pair)
                    jobs.append((num, candidate, other))
                    took = True
                    break
        if not took:
            break
    return jobs


def find_groups(context: SearchContext, threshold: float, apply: Callable[[Change], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                stats: PassStats | None = None, keep_formats: tuple[str, ...] = DEFAULT_KEEP_FORMATS) -> list[Group]:
    """Star groups: every member verified against its group's keeper at or above `threshold`.

    The linked pairs only say which images may belong together (a component of the graph). In
    each, the keeper is chosen and every other image compared with it; those below the threshold
    were held in by a chain of pairs (one false pair can join two families), and form groups of
    their own the same way, with their own keeper, or none. The comparisons are recorded, so a
    group that did not change costs none in the next pass."""
    apply = apply or _direct(context)
    stats = stats if stats is not None else PassStats()
    links = match_pending(context, threshold, apply, progress, stats)
    ignored = ignored_pairs.read(context.directory)

    components: dict[int, list[int]] = {}
    for num in links.parent:
        components.setdefault(links.find(num), []).append(num)
    waiting = [images for nums in components.values() if len(images := list(_still_stored(context, nums))) >= 2]
    groups = []
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        while waiting:
            stars = [(choose_keeper(images, keep_formats), images) for images in waiting]
            scores = _keeper_scores(context, threshold, [(keeper.num, image.num) for keeper, images in stars
                                                         for image in images if image is not keeper],
                                    pool, apply, stats)
            waiting = []
            for keeper, images in stars:
                group = Group(keeper, [Member(keeper, 100.0)])
                held_by_chain = []
                for image in sorted(images, key=lambda image: keeper_order(image, keep_formats)):
                    doc = scores.get((keeper.num, image.num))
                    if image is keeper or doc is None:
                        continue            # the keeper, or an image removed since the look-up
                    if doc["similarity"] >= threshold and not any(
                            ignored.apart(image.content_hash, m.image.content_hash) for m in group.members):
                        group.members.append(Member(image, doc["similarity"], doc["transform"], tuple(doc["kinds"])))
                    else:
                        held_by_chain.append(image)
                if len(group.members) >= 2:
                    groups.append(group)
                if len(held_by_chain) >= 2:
                    waiting.append(held_by_chain)
    groups.sort(key=lambda g: (-g.reclaimable_bytes, g.keeper.path))
    return groups


def _keeper_scores(context: SearchContext, threshold: float, pairs: list[tuple[int, int]], pool: ThreadPoolExecutor,
                   apply: Callable[[Change], None], stats: PassStats) -> dict[tuple[int, int], dict]:
    """The comparison keeper -> member of each pair, recorded or made (and then recorded); pairs
    with an image removed meanwhile are left out. The direction matters: the transform is
    reported from the keeper's side."""
    found = {pair: _current(context.pair(*pair)) for pair in pairs}
    unscored = [pair for pair, doc in found.items() if doc is None]

    def scored(pair: tuple[int, int]) -> bytes | None:
        try:
            keeper, member = (context.candidate(num)[1] for num in pair)
        except NotFoundError:
            return None            # removed since the groups were read: left out of the report
        return match_record(compare(keeper, member, context.settings.detector))

    new_scores = tuple((*pair, record) for pair, record in zip(unscored, pool.map(scored, unscored))
                       if record is not None)
    stats.verified += len(new_scores)
    if new_scores:
        apply(Linked(threshold, (), new_scores))
    found.update({(keeper, member): json.loads(record) for keeper, member, record in new_scores})
    return {pair: doc for pair, doc in found.items() if doc is not None}
