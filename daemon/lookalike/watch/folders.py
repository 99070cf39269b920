"""Which paths belong to the watched folders, and which of those are images to index.

Include patterns match the file name, exclude patterns any part of the path below the folder,
so a hidden or temporary folder hides everything inside it. Matching ignores case: `*.jpg`
takes `IMG_0001.JPG`.
"""

from __future__ import annotations

import fnmatch
import os

from ..config import WatchedFolder


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    name = name.lower()
    return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in patterns)


class Folders:
    def __init__(self, folders: tuple[WatchedFolder, ...]):
        # Longest first, so a folder nested in another watched folder takes its own files.
        self.all = tuple(sorted(folders, key=lambda f: len(str(f.path)), reverse=True))

    def folder_of(self, path: str) -> WatchedFolder | None:
        for folder in self.all:
            root = str(folder.path)
            if path == root:
                return folder
            if path.startswith(root.rstrip("/") + "/"):
                relative = path[len(root.rstrip("/")) + 1:]
                if folder.recursive or "/" not in relative:
                    return folder
        return None

    def _parts(self, path: str) -> tuple[WatchedFolder, list[str]] | None:
        folder = self.folder_of(path)
        if folder is None:
            return None
        relative = os.path.relpath(path, folder.path)
        return folder, ([] if relative == "." else relative.split(os.sep))

    def wants_file(self, path: str) -> bool:
        """A file at `path` is an image of a watched folder, not excluded."""
        found = self._parts(path)
        if found is None or not found[1]:
            return False
        folder, parts = found
        return not any(_matches(part, folder.exclude) for part in parts) and _matches(parts[-1], folder.include)

    def wants_folder(self, path: str) -> bool:
        """A folder at `path` may hold images to index (it is a watched folder or inside one)."""
        found = self._parts(path)
        if found is None:
            return False
        folder, parts = found
        return not any(_matches(part, folder.exclude) for part in parts)
