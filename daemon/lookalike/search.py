"""Reverse image search: the stored images that look like a query image.

Only the candidates the index proposes are verified (match.compare); nothing here walks the
whole collection.
"""

from __future__ import annotations

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
    hits = []
    for num in context.candidates_for(features.content_hash, features.fingerprint, features.local):
        image, stored = context.candidate(num)
        if image.path == features.path:
            continue
        result = compare(query, stored, context.settings.detector)
        if result.similarity >= threshold:
            hits.append(Hit(image, result))
    hits.sort(key=lambda hit: (-hit.match.similarity, hit.image.path))
    return hits[:max_count] if max_count else hits
