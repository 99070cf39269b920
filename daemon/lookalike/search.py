"""Reverse image search: the stored images that look like a query image.

Only the candidates the index proposes are verified (match.compare); nothing here walks the
whole collection.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
    query = query_candidate(features)

    def verified(num: int) -> Hit | None:
        image, stored = context.candidate(num)
        if image.path == features.path:
            return None
        return Hit(image, compare(query, stored, context.settings.detector))

    # A thread per core: OpenCV releases the GIL while it matches.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        found = pool.map(verified, context.candidates_for(features.content_hash, features.fingerprint, features.local))
        hits = [hit for hit in found if hit is not None and hit.match.similarity >= threshold]
    hits.sort(key=lambda hit: (-hit.match.similarity, hit.image.path))
    return hits[:max_count] if max_count else hits
