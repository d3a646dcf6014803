"""Shared fixtures: a model repository, a server per test module, clients and a test backend.

Each module gets its own server (module-scoped fixtures), started with ``InProcessServer`` on a
free port; a module that needs other flags overrides the ``server_options`` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient
from nereid.backend import ModelInstance
from nereid.testing import (
    DATATYPES,
    REPEAT_CONFIG,
    SQUARE_CONFIG,
    BackendPlugin,
    ModelRepositoryBuilder,
    frontend_url,
    serve_in_process,
)
from nereid.types import InferenceResponse, Tensor

LABELS = ["cat", "dog", "fish", "bird"]


def _all_types_config() -> str:
    def kind(dt: str) -> str:
        return "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}"

    tensors = [
        (
            f'{{ name: "IN_{dt}" data_type: {kind(dt)} dims: [ -1 ] }}',
            f'{{ name: "OUT_{dt}" data_type: {kind(dt)} dims: [ -1 ] }}',
        )
        for dt in DATATYPES
    ]
    return (
        'backend: "identity"\nmax_batch_size: 0\n'
        f"input [ {', '.join(t[0] for t in tensors)} ]\n"
        f"output [ {', '.join(t[1] for t in tensors)} ]\n"
    )


TEXT_CONFIG = """
backend: "identity"
max_batch_size: 0
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

CLASSIFIER_CONFIG = """
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
"""

SLOW_CONFIG = """
backend: "identity"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "execute_delay_ms" value: { string_value: "500" } }
"""

ECHO_CONFIG = """
backend: "paramecho"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 1 ] } ]
"""


def build_repository(root: Path) -> Path:
    builder = ModelRepositoryBuilder(root)
    builder.add("all_types", _all_types_config())
    builder.identity("identity", "TYPE_FP32", "[ -1 ]", max_batch_size=8)
    builder.identity("raw_fp32", "TYPE_FP32", "[ -1 ]", max_batch_size=0)
    builder.identity("raw_bytes", "TYPE_STRING", "[ 1 ]", max_batch_size=0)
    builder.identity("bytes_id", "TYPE_STRING", "[ -1 ]", max_batch_size=0)
    builder.add("classifier", CLASSIFIER_CONFIG, files={"labels.txt": "\n".join(LABELS) + "\n"})
    builder.add("slow", SLOW_CONFIG)
    builder.add("repeat", REPEAT_CONFIG)
    builder.add("square", SQUARE_CONFIG)
    builder.add("text", TEXT_CONFIG)
    builder.add("paramecho", ECHO_CONFIG)
    return root


# -- a backend that shows what reached the request ------------------------------------------------


class _EchoInstance(ModelInstance):
    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            seen = {
                "id": request.id,
                "parameters": request.parameters,
                "priority": request.priority,
                "timeout_us": request.timeout_us,
                "sequence_id": request.sequence_id,
                "sequence_start": request.sequence_start,
                "sequence_end": request.sequence_end,
            }
            out = Tensor("OUTPUT0", _object_array(json.dumps(seen).encode()))
            response = InferenceResponse([out], parameters={"echoed": True, "count": 1})
            request.respond(response)


def _object_array(item: bytes):
    import numpy as np

    array = np.empty(1, dtype=object)
    array[0] = item
    return array


def param_echo_plugin() -> BackendPlugin:
    """Registers the ``paramecho`` backend: OUTPUT0 is a JSON record of the request's id,
    parameters, priority, timeout and sequence fields."""
    return BackendPlugin("paramecho", lambda config, spec: _EchoInstance())


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo") / "models")


@pytest.fixture(scope="module")
def server_options() -> dict[str, Any]:
    """Options of the module's server (override in a module for other flags)."""
    return {"allow_client_shm": True, "http_header_forward_pattern": "^[Xx]-[Ff]orward-"}


@pytest.fixture(scope="module")
def server(repository, server_options):
    with serve_in_process(
        repository, ["http"], plugins=[param_echo_plugin()], **server_options
    ) as running:
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    """``host:port`` of the module's server, as tritonclient wants it."""
    return frontend_url(server, "http")


@pytest.fixture(scope="module")
def base_url(url) -> str:
    return f"http://{url}"


@pytest.fixture
def client(url):
    triton = httpclient.InferenceServerClient(url)
    yield triton
    triton.close()
