"""What the store stage is asked to do: plain values, applied in batches by SearchContext.commit.

Producers (the CLI, the daemon's pipeline) describe changes; only the context turns them into
LMDB writes, so every change of a batch lands in one transaction or none does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..extract import ImageFeatures
from ..types import FileIdentity


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


Change = Put | Touch | Fail | Remove | Move | Relink | Linked
