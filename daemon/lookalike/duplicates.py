"""Duplicate detection: queued images -> candidates -> verified pairs -> groups.

The duplicate graph is kept in the context (store/context.py: `pending`, `pairs`), so a pass
does only the work new images bring, across restarts too. A pass asks the index for the
candidates of each queued image and verifies those not already linked to it: the linked pairs
only say which images may belong together (a connected component), so a pair inside one would
add nothing. Pairs scoring at or above the threshold are recorded, and the image leaves the
queue, a page at a time. A pass takes as many images as were queued when it began; those stored
meanwhile wait for the next pass, so a pass ends, and reports, even while files keep arriving.

Groups are stars: in each component one image is chosen as the keeper, the original (keeper.py:
the image the facts rank first, handed over to a member whose comparison shows it is the
original, a bounded number of times), and every other image is compared with it; those at or
above the threshold are its group, so a report says how alike each copy is to the one a person
would keep, and a false pair cannot chain two families together. The rest form groups the same
way. Those comparisons are recorded too: a group that did not change costs no comparison in the
next pass.

A pair a person marked not a duplicate (store/ignored.py, read at the start of each grouping)
is never in one group: of the two, the one that comes later in the keeper order (the keeper,
then the facts' order, keeper.standing) is held out of the group with the rest held out, and
neither takes the other's group over. Groups are made anew in every pass, so a mark (or its removal)
shows in the next report though no image changed.

Memory is bounded by a page of queued images and the linked images, never by the collection.
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .errors import NotFoundError
from .keeper import Contender, KeepRules, group_reason, provisional, standing, verdict
from .match import SCORING, Candidate, Match, compare
from .store import SearchContext, StoredImage, ignored as ignored_pairs
from .store.changes import Change, Linked, Relink

PAGE = 256     # queued images per recorded step
WAVE = 16      # queued images looked up together
# A group's keeper is handed over at most this many times a pass: the rules weigh two images
# at a time, so three could beat each other in a ring.
KEEPER_HANDOVERS = 4


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
    keeper_reason: str = "first path"                      # keeper.KEEPER_REASONS

    @property
    def reclaimable_bytes(self) -> int:
        return sum(m.image.identity.size for m in self.members[1:])


@dataclass
class PassStats:
    matched: int = 0              # queued images matched
    verified: int = 0             # comparisons made


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
    if context.links_basis() != (threshold, SCORING):
        apply(Relink(threshold, SCORING))
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
                stats: PassStats | None = None, rules: KeepRules = KeepRules()) -> list[Group]:
    """Star groups: every member verified against its group's keeper at or above `threshold`.

    The linked pairs only say which images may belong together (a component of the graph). In
    each, the keeper is chosen (`_keepers`) and every other image compared with it; those below
    the threshold were held in by a chain of pairs (one false pair can join two families), and
    form groups of their own the same way, with their own keeper, or none. The comparisons are
    recorded, so a group that did not change costs none in the next pass."""
    apply = apply or _direct(context)
    stats = stats if stats is not None else PassStats()
    links = match_pending(context, threshold, apply, progress, stats)
    ignored = ignored_pairs.read(context.directory)

    components: dict[int, list[int]] = {}
    for num in links.parent:
        components.setdefault(links.find(num), []).append(num)
    waiting = [[Contender.of(image, rules) for image in images]
               for nums in components.values() if len(images := list(_still_stored(context, nums))) >= 2]
    judge = _judge(context)
    groups = []
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        while waiting:
            stars = _keepers(context, threshold, waiting, judge, ignored, pool, apply, stats)
            waiting = []
            for keeper, contenders, scores in stars:
                group = Group(keeper.image, [Member(keeper.image, 100.0)])
                held_by_chain, decided_by = [], []
                for contender in sorted(contenders, key=standing):
                    doc = scores.get((keeper.image.num, contender.image.num))
                    if contender is keeper or doc is None:
                        continue            # the keeper, or an image removed since the look-up
                    image = contender.image
                    if doc["similarity"] >= threshold and not any(
                            ignored.apart(image.content_hash, m.image.content_hash) for m in group.members):
                        group.members.append(Member(image, doc["similarity"], doc["transform"], tuple(doc["kinds"])))
                        decided_by.append(judge(keeper, contender, doc["transform"])[0])
                    else:
                        held_by_chain.append(contender)
                group.keeper_reason = group_reason(decided_by)
                if len(group.members) >= 2:
                    groups.append(group)
                if len(held_by_chain) >= 2:
                    waiting.append(held_by_chain)
    groups.sort(key=lambda g: (-g.reclaimable_bytes, g.keeper.path))
    return groups


Judge = Callable[[Contender, Contender, dict | None], tuple[str, bool]]


# Thumbnails kept while a pass judges pairs: a component's pairs are judged one after another,
# so its keeper's stays at hand; a pass over every group of a large library must not keep them all.
THUMBNAILS_KEPT = 256


def _judge(context: SearchContext) -> Judge:
    """keeper.verdict over the stored thumbnails, each pair judged once a pass: choosing a keeper
    asks it, and the group's reason asks it again."""
    judged: dict[tuple[int, int], tuple[str, bool]] = {}

    @functools.lru_cache(maxsize=THUMBNAILS_KEPT)
    def thumbnail(num: int) -> np.ndarray | None:
        try:
            return context.candidate(num)[1].thumbnail
        except NotFoundError:
            return None

    def judge(keeper: Contender, member: Contender, transform: dict | None) -> tuple[str, bool]:
        pair = (keeper.image.num, member.image.num)
        if pair not in judged:
            judged[pair] = verdict(keeper, member, transform, thumbnail)
        return judged[pair]
    return judge


def _keepers(context: SearchContext, threshold: float, components: list[list[Contender]],
             judge: Judge, ignored: ignored_pairs.Ignored, pool: ThreadPoolExecutor,
             apply: Callable[[Change], None], stats: PassStats) -> list[tuple[Contender, list[Contender], dict]]:
    """Each component's keeper, its images and the comparisons keeper -> image. The keeper is
    first the image the facts rank first; it is compared with the rest, and a member at or
    above the threshold that the rules prefer (keeper.verdict: it contains the keeper's picture
    without the canvas around it, say), and that is not marked apart from it, takes the group
    over and is compared in turn. A member is handed the group once at most, and a group at
    most KEEPER_HANDOVERS times."""
    keepers = [provisional(contenders) for contenders in components]
    tried = [{keeper.image.num} for keeper in keepers]
    settled: dict[int, dict] = {}
    for handover in range(KEEPER_HANDOVERS + 1):
        unsettled = [i for i in range(len(components)) if i not in settled]
        if not unsettled:
            break
        scores = _keeper_scores(context, threshold, [(keepers[i].image.num, c.image.num) for i in unsettled
                                                     for c in components[i] if c is not keepers[i]],
                                pool, apply, stats)
        for i in unsettled:
            keeper = keepers[i]
            # The last round hands over no more, so it asks no verdict.
            better = handover < KEEPER_HANDOVERS and [
                c for c in components[i] if c is not keeper and c.image.num not in tried[i]
                and (doc := scores.get((keeper.image.num, c.image.num))) is not None
                and doc["similarity"] >= threshold
                and not ignored.apart(keeper.image.content_hash, c.image.content_hash)
                and judge(keeper, c, doc["transform"])[1]]
            if better:
                keepers[i] = provisional(better)
                tried[i].add(keepers[i].image.num)
            else:
                settled[i] = scores
    return [(keepers[i], components[i], settled[i]) for i in range(len(components))]


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
