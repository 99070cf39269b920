"""What the store stage is asked to do: plain values, applied in batches by SearchContext.commit.

Producers (the CLI, the daemon's pipeline) describe changes; only the context turns them into
LMDB writes, so every change of a batch lands in one transaction or none does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TagError
from ..extract import ImageFeatures
from ..types import FileIdentity
from .tags import MAX_REFERENCES, Reference, check_name


@dataclass(frozen=True)
class Put:
    """Store an image's features, replacing any record of the same path."""

    features: ImageFeatures


@dataclass(frozen=True)
class Touch:
    """The file was rewritten with the same bytes (same content hash): record its new identity."""

    path: str
    identity: FileIdentity


@dataclass(frozen=True)
class Fail:
    """The file could not be read: remember why, so it is not retried until it changes."""

    path: str
    identity: FileIdentity | None
    reason: str
    detail: str


@dataclass(frozen=True)
class Remove:
    """Forget the file at `path`, or everything under the folder at `path`."""

    path: str


@dataclass(frozen=True)
class Move:
    """The file or folder at `source` is now at `destination`: re-key, never re-extract."""

    source: str
    destination: str


@dataclass(frozen=True)
class Relink:
    """Forget every verified pair and queue every image for matching again: the duplicate
    threshold or the scoring (match.SCORING) changed, and which pairs link images depends on
    both."""

    threshold: float
    scoring: str


@dataclass(frozen=True)
class Linked:
    """A duplicates pass verified these pairs and finished these queued images.

    `pairs` holds (first, second, result): `result` is the comparison first -> second, as
    `match_record` encodes it. `checked` holds (image, stamp) as `pending` listed them: an image
    queued again since (a neighbour went) keeps its place in the queue. Changes for images gone
    meanwhile, or made at another threshold than the context's, are dropped."""

    threshold: float
    checked: tuple[tuple[int, int], ...]
    pairs: tuple[tuple[int, int, bytes], ...]


@dataclass(frozen=True)
class PutTag:
    """Store a tag with these references, replacing the ones it had (store/tags.py)."""

    name: str
    references: tuple[Reference, ...]

    def __post_init__(self):
        # Refused here, before it reaches the writer: a change that fails in the store's
        # transaction would fail there again at every retry, holding up the changes around it.
        check_name(self.name)
        if not self.references:
            raise TagError(self.name, "needs at least one reference image")
        if len(self.references) > MAX_REFERENCES:
            raise TagError(self.name, f"{len(self.references)} reference images; a tag holds at most {MAX_REFERENCES}")


@dataclass(frozen=True)
class DeleteTag:
    """Forget a tag and its references."""

    name: str

    def __post_init__(self):
        check_name(self.name)


@dataclass(frozen=True)
class Watched:
    """The watchlist checked a stored image: these alerts (JSON documents without their cursor)
    are recorded, each under the next cursor, and the image leaves the watchlist's queue."""

    image: int
    alerts: tuple[dict, ...]


Change = Put | Touch | Fail | Remove | Move | Relink | Linked | PutTag | DeleteTag | Watched
