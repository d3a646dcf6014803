"""The ``nereid`` pytest plugin: fixtures for a server on a temporary repository."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from . import ManualClock, ModelRepositoryBuilder


@pytest.fixture
def model_repository(tmp_path) -> ModelRepositoryBuilder:
    """An empty model repository in a temporary folder; ``.add(...)`` writes models."""
    return ModelRepositoryBuilder(tmp_path / "models")


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def start_server(model_repository) -> AsyncIterator[Callable[..., Any]]:
    """``server = await start_server(**options)``: a started server on ``model_repository``
    (or the repository given), stopped when the test ends."""
    from ..server import Server

    servers = []

    async def start(repository: Any = None, **options: Any) -> Server:
        if repository is None:
            repository = model_repository.root
        if isinstance(repository, (list, tuple)):
            repository = [str(path) for path in repository]
        else:
            repository = str(repository)
        server = Server(repository, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=5)
