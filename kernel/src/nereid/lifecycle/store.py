"""Repository stores: where model folders come from.

A store does I/O only: list the model folders, give a local path for one (fetching it first if
it lives elsewhere), and a change signature for polling. Versions, polling, reloads and
dependencies are the repository manager's.

A store is registered by URL scheme with the ``register_repository_stores`` hook and made with
the repository location as given on the command line (``s3://bucket/models``); plain paths and
``file://`` go to the built-in :class:`LocalStore`. The manager calls the store's methods on a
worker thread, so they may block.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import NotFoundError


@runtime_checkable
class RepositoryStore(Protocol):
    location: str
    """The repository as the user named it; with ``--model-namespacing`` also the namespace."""

    def list_models(self) -> list[str]:
        """Names of the model folders in the repository."""

    def local_path(self, model: str) -> Path:
        """The model folder on local disk, fetched there first if the repository is remote.

        The folder must stay as it is while the versions loaded from it serve: a remote store
        fetches each change into a new folder rather than over the old one.
        """

    def signature(self, model: str) -> str:
        """A value that changes whenever anything in the model folder changes (polling compares
        it with the last one; it need not be a content hash, modification times will do)."""


def walk_entries(base: Path) -> Iterator[tuple[str, str]]:
    """Every folder and file under ``base`` as ``(relative path, stamp)``, in a stable order:
    folders end in ``/`` and have no stamp, files are stamped with size and modification time."""
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        relative_dir = os.path.relpath(dirpath, base)
        prefix = "" if relative_dir == "." else relative_dir.replace(os.sep, "/") + "/"
        for dirname in dirnames:
            yield prefix + dirname + "/", ""
        for filename in sorted(filenames):
            try:
                stat = os.stat(os.path.join(dirpath, filename))
            except OSError:
                continue
            yield prefix + filename, f"{stat.st_size}:{stat.st_mtime_ns}"


def digest(entries: list[tuple[str, str]] | Iterator[tuple[str, str]]) -> str:
    hasher = hashlib.sha256()
    for path, stamp in entries:
        hasher.update(f"{path}\0{stamp}\n".encode())
    return hasher.hexdigest()


class LocalStore:
    """A repository on the local filesystem (the ``file`` scheme and plain paths)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.root = Path(location.removeprefix("file://")).expanduser().resolve()
        if not self.root.is_dir():
            raise NotFoundError(f"failed to stat file {location}: no such directory")

    def list_models(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def local_path(self, model: str) -> Path:
        path = self.root / model
        if not path.is_dir():
            raise NotFoundError(f"model folder '{model}' not found in repository {self.location}")
        return path

    def signature(self, model: str) -> str:
        return digest(walk_entries(self.root / model))
