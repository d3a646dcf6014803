"""Fixtures: module-scoped in-process servers over the test repository."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from grpc_testsupport import build_repository, grpc_server
from nereid.testing import frontend_url


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Any:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(repository) -> Iterator[Any]:
    """The main server: explicit model control (every model loaded), client shm allowed."""
    with grpc_server(
        repository.root, model_control_mode="explicit", load_model=["*"], allow_client_shm=True
    ) as running:
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    return frontend_url(server, "grpc")


@pytest.fixture
def client(url) -> Iterator[Any]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as triton:
        yield triton
