"""Reverse image search: the stored images that look like a query image.

Only the candidates the index proposes are verified (match.compare); nothing here walks the
whole collection.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import NotFoundError
from .extract import ImageFeatures, Query
from .match import Candidate, Match, compare
from .store import SearchContext, StoredImage


@dataclass(frozen=True)
class Hit:
    image: StoredImage
    match: Match

    def to_json(self) -> dict:
        return {"path": self.image.path, **self.match.to_json()}


def query_candidate(features: ImageFeatures) -> Candidate:
    return Candidate(features.local, features.thumbnail, features.content_hash, features.width, features.height)


# A heavy crop is worked at the working size like any image, so its content comes out larger
# than in its original (1.67x for a centre crop keeping 36 % of the area), and AKAZE describes it
# at other octaves: its descriptors share about as few index buckets with the original's as a
# stranger's do. Described again at this scale, its content is near the original's scale and its
# keys find the original (CALIBRATION.md, "Heavy crops").
CROP_LOOKUP_SCALE = 0.6


def similar(context: SearchContext, query: Query, threshold: float, max_count: int | None) -> list[Hit]:
    """Stored images at or above `threshold`, best first; the query's own record excluded.

    When the query's features propose nothing at or above `threshold`, and its pixels are at
    hand, it is described again at CROP_LOOKUP_SCALE and those descriptors are looked up too:
    a query that finds its match costs nothing more. Either way the candidates are verified with
    the query's own features, so the scores are those `compare` gives."""
    features = query.features
    candidate = query_candidate(features)
    found = _verified(context, candidate, context.candidates_for(features.content_hash, features.fingerprint,
                                                                    features.local), features.path)
    if not any(hit.match.similarity >= threshold for hit in found):
        rescaled = query.local_at(CROP_LOOKUP_SCALE, context.settings)
        if rescaled is not None:
            compared = {hit.image.num for hit in found}
            found += _verified(context, candidate, context.voted_for(rescaled, compared), features.path)
    return _best(found, threshold, max_count)


def matching(context: SearchContext, query: Candidate, fingerprint: int, threshold: float, max_count: int | None,
             exclude: str | None = None) -> list[Hit]:
    """Stored images at or above `threshold` against `query` (whose fingerprint is
    `fingerprint`), best first; the image stored at `exclude` left out."""
    return _best(_verified(context, query, context.candidates_for(query.content_hash, fingerprint, query.local),
                           exclude), threshold, max_count)


def _best(hits: list[Hit], threshold: float, max_count: int | None) -> list[Hit]:
    ranked = sorted((hit for hit in hits if hit.match.similarity >= threshold),
                    key=lambda hit: (-hit.match.similarity, hit.image.path))
    return ranked[:max_count] if max_count else ranked


def _verified(context: SearchContext, query: Candidate, candidates: Iterable[int], exclude: str | None) -> list[Hit]:
    """`query` compared with each of `candidates` still stored, the image stored at `exclude`
    left out."""
    def verified(num: int) -> Hit | None:
        try:
            image, stored = context.candidate(num)
        except NotFoundError:
            return None                 # removed since the look-up
        if image.path == exclude:
            return None
        return Hit(image, compare(query, stored, context.settings.detector))

    # The index yields the copies it finds first while it goes on looking up the descriptors on
    # this thread, so the pool verifies them meanwhile, a thread per other core (OpenCV releases
    # the GIL while it matches). Once the look-up is done this thread verifies too, taking the
    # candidates no pool thread has started, from the back. Two pool threads beside the look-up
    # were slower on 2 cores (BENCHMARKS.md, "Verifying while looking up"): the look-up waited
    # for the GIL between its thousands of LMDB calls.
    with ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1)) as pool:
        jobs = [(pool.submit(verified, num), num) for num in candidates]
        found = [verified(num) for job, num in reversed(jobs) if job.cancel()]
        found += [job.result() for job, _ in jobs if not job.cancelled()]
    return [hit for hit in found if hit is not None]
