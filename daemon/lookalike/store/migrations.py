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

from typing import TYPE_CHECKING, Callable

import lmdb

from . import index

if TYPE_CHECKING:
    from .context import SearchContext

RETIRED_DATABASES = (b"fingerprints",)      # image number -> fingerprint, until index.CHUNKS_VERSION 2


def upgrade(context: SearchContext, index_version: int, chunks_version: int) -> None:
    """Bring the candidate index of a context just opened to this lookalike's versions."""
    images, references = context._index, context._tags.index
    if index_version != index.VERSION:
        reindex(context, ((images, "lsh", "features", context._index_descriptors),
                          (references, "tag_lsh", "tag_features", context._index_reference_descriptors)),
                b"index", index.VERSION)
    if chunks_version != index.CHUNKS_VERSION:
        reindex(context, ((images, "chunks", "images", context._index_fingerprint),
                          (references, "tag_chunks", "tag_features", context._index_reference_fingerprint)),
                b"chunks", index.CHUNKS_VERSION)
        drop_retired(context)


Part = tuple[index.CandidateIndex, str, str, Callable[[lmdb.Transaction, int, bytes], None]]


def reindex(context: SearchContext, parts: tuple[Part, ...], version_key: bytes, version: int) -> None:
    """Rebuild parts of candidate indexes, each (its index, db, source, add) from the records of
    `source`, calling `add(txn, number, record)` for each: an older lookalike wrote them
    otherwise (other bucket keys, postings without the fingerprint).

    A page of records per transaction, so a large context never needs one huge write; the
    new version is recorded last, so a rebuild cut short starts again at the next open."""
    for candidate_index, db, source, add in parts:
        def clear(txn, candidate_index=candidate_index, db=db):
            candidate_index.clear(txn, context._dbs[db])
        context._apply(clear)
        for page in context._pages(source, 512):
            def add_page(txn, page=page, add=add):
                for key, record in page:
                    add(txn, index.NUM.unpack(key)[0], record)
            context._apply(add_page)

    def done(txn):
        txn.put(version_key, str(version).encode(), db=context._dbs["meta"])
    context._apply(done)


def drop_retired(context: SearchContext) -> None:
    """Delete the databases no version of the layout reads any more."""
    def drop(txn):
        for name in RETIRED_DATABASES:
            try:
                txn.drop(context._env.open_db(name, txn=txn, create=False), delete=True)
            except lmdb.NotFoundError:
                pass
    context._apply(drop)
