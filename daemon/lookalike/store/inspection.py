"""What tests and benchmarks look at inside a search context beyond what the application
reads: the candidate index's hasher and LSH postings of an open context, and every entry of
every database of a closed one. Read-only; the application itself never needs these."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import lmdb

from . import index
from .context import _DATABASES, _DUPSORT, SearchContext, _open_env


def hasher(context: SearchContext) -> index.Hasher:
    """The hasher that turns the context's descriptors into its LSH bucket keys."""
    return context._index.hasher


@contextmanager
def lsh_postings(context: SearchContext) -> Iterator[lmdb.Cursor]:
    """A cursor on the LSH postings (for index.shared_buckets and the like), in a read
    transaction of its own."""
    with context._read() as txn, txn.cursor(db=context._index.lsh) as cursor:
        yield cursor


def database_entries(directory: str | Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every (key, value) of every database of the context in `directory`, as it lies on disk,
    without the checks opening a context makes. The context must be closed in this process (one
    process may not open an environment twice)."""
    env = _open_env(Path(directory), create=False)
    try:
        with env.begin() as txn:
            return {name: list(txn.cursor(db=env.open_db(name.encode(), txn=txn, create=False,
                                                        dupsort=name in _DUPSORT)))
                    for name in _DATABASES}
    finally:
        env.close()
