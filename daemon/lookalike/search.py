"""Reverse image search: the stored images that look like a query image.

Only the candidates the index proposes are verified (match.compare); nothing here walks the
whole collection.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import NotFoundError
from .extract import ImageFeatures
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


def similar(context: SearchContext, features: ImageFeatures, threshold: float, max_count: int | None) -> list[Hit]:
    """Stored images at or above `threshold`, best first; the query's own record excluded."""
    return matching(context, query_candidate(features), features.fingerprint, threshold, max_count, features.path)


def matching(context: SearchContext, query: Candidate, fingerprint: int, threshold: float, max_count: int | None,
             exclude: str | None = None) -> list[Hit]:
    """Stored images at or above `threshold` against `query` (whose fingerprint is
    `fingerprint`), best first; the image stored at `exclude` left out."""
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
        jobs = [(pool.submit(verified, num), num)
                for num in context.candidates_for(query.content_hash, fingerprint, query.local)]
        found = [verified(num) for job, num in reversed(jobs) if job.cancel()]
        found += [job.result() for job, _ in jobs if not job.cancelled()]
        hits = [hit for hit in found if hit is not None and hit.match.similarity >= threshold]
    hits.sort(key=lambda hit: (-hit.match.similarity, hit.image.path))
    return hits[:max_count] if max_count else hits
