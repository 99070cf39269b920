"""Rewriting, on open, what an older lookalike wrote otherwise.

The meta database records the version of each part of the candidate index that changed its
layout (`index` for the descriptor buckets, `chunks` for the chunk postings); a context whose
version is older has that part rebuilt from the records it is derived from. The references of
tags (tags.py) have an index of the same layout, rebuilt with the images' one.

The tags and the watchlist live in databases of their own that a context made before them lacks
and that opening it creates empty: it has no tags, and an older lookalike reading a newer
context leaves them alone. Neither needs a version of its own until its layout changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import lmdb

from . import index

RETIRED_DATABASES = (b"fingerprints",)      # image number -> fingerprint, until index.CHUNKS_VERSION 2

Apply = Callable[[Callable[[lmdb.Transaction], None]], None]     # one write transaction of the context


@dataclass(frozen=True)
class Part:
    """One part of a candidate index, and the records it is derived from."""
    index: index.CandidateIndex
    db: object                                                  # the index database rebuilt
    pages: Callable[[], Iterator[list[tuple[bytes, bytes]]]]    # the records: (number key, record) pages
    add: Callable[[lmdb.Transaction, int, bytes], None]         # indexes one record


@dataclass(frozen=True)
class Layout:
    """The recorded version of one layout of the candidate index, and the parts laid out so."""
    version_key: bytes
    recorded: int
    current: int
    parts: tuple[Part, ...]


def upgrade(apply: Apply, env: lmdb.Environment, meta, descriptors: Layout, chunks: Layout) -> None:
    """Bring the candidate index of a context just opened to this lookalike's layouts."""
    for layout in (descriptors, chunks):
        if layout.recorded != layout.current:
            reindex(apply, meta, layout)
    if chunks.recorded != chunks.current:
        drop_retired(apply, env)


def reindex(apply: Apply, meta, layout: Layout) -> None:
    """Rebuild the parts of a layout from their records: an older lookalike wrote them otherwise
    (other bucket keys, postings without the fingerprint).

    A page of records per transaction, so a large context never needs one huge write; the
    new version is recorded last, so a rebuild cut short starts again at the next open."""
    for part in layout.parts:
        apply(lambda txn, part=part: part.index.clear(txn, part.db))
        for page in part.pages():
            def add_page(txn, page=page, add=part.add):
                for key, record in page:
                    add(txn, index.NUM.unpack(key)[0], record)
            apply(add_page)
    apply(lambda txn: txn.put(layout.version_key, str(layout.current).encode(), db=meta))


def drop_retired(apply: Apply, env: lmdb.Environment) -> None:
    """Delete the databases no version of the layout reads any more."""
    def drop(txn):
        for name in RETIRED_DATABASES:
            try:
                txn.drop(env.open_db(name, txn=txn, create=False), delete=True)
            except lmdb.NotFoundError:
                pass
    apply(drop)
