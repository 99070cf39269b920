"""The search context (LMDB) and its candidate index."""

from .context import SearchContext, StoredImage, Failure, path_key

__all__ = ["SearchContext", "StoredImage", "Failure", "path_key"]
