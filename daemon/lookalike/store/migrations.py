"""Rewriting, on open, what an older lookalike wrote otherwise.

The meta database records the version of each part of the candidate index that changed its
layout (`index` for the descriptor buckets, `chunks` for the chunk postings); a context whose
version is older has that part rebuilt from the records it is derived from.
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
    if index_version != index.VERSION:
        reindex(context, "lsh", "features", b"index", index.VERSION, context._index_descriptors)
    if chunks_version != index.CHUNKS_VERSION:
        reindex(context, "chunks", "images", b"chunks", index.CHUNKS_VERSION, context._index_fingerprint)
        drop_retired(context)


def reindex(context: SearchContext, db: str, source: str, version_key: bytes, version: int,
            add: Callable[[lmdb.Transaction, int, bytes], None]) -> None:
    """Rebuild one part of the candidate index from the records of `source`, calling
    `add(txn, image number, record)` for each: an older lookalike wrote it otherwise (other
    bucket keys, postings without the fingerprint).

    A page of images per transaction, so a large context never needs one huge write; the
    new version is recorded last, so a rebuild cut short starts again at the next open."""
    def clear(txn):
        context._index.clear(txn, context._dbs[db])
    context._apply(clear)
    for page in context._pages(source, 512):
        def add_page(txn, page=page):
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
