"""Repository stores: where model folders come from.

A store does I/O only: list the model folders, give a local path for one (fetching it first if
it lives elsewhere), and a change signature for polling. Versions, polling and dependencies are
the repository manager's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import NotFoundError


@runtime_checkable
class RepositoryStore(Protocol):
    location: str

    def list_models(self) -> list[str]:
        """Names of the model folders in the repository."""

    def local_path(self, model: str) -> Path:
        """The model folder on local disk (fetched there first if remote)."""

    def signature(self, model: str) -> str:
        """A value that changes whenever anything in the model folder changes."""


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
        return self.root / model

    def signature(self, model: str) -> str:
        digest = hashlib.sha256()
        base = self.root / model
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for filename in sorted(filenames):
                path = os.path.join(dirpath, filename)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                digest.update(
                    f"{os.path.relpath(path, base)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
                )
        return digest.hexdigest()
