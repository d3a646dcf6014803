"""Test support for the gRPC frontend: a model repository with a model per datatype, the
decoupled test models, a slow model and an echo model, and in-process servers over it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nereid
import numpy as np
from nereid import InferenceResponse, Tensor
from nereid.backend import ModelInstance
from nereid.inprocess import InProcessServer
from nereid.testing import (
    DATATYPES,
    REPEAT_CONFIG,
    SQUARE_CONFIG,
    BackendPlugin,
    ModelRepositoryBuilder,
    serve_in_process,
)

SLOW_CONFIG = """
backend: "identity"
max_batch_size: 0
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "execute_delay_ms" value: { string_value: "400" } }
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

ECHO_CONFIG = """
backend: "echo_params"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

CLASSIFY_CONFIG = """
backend: "identity"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
"""


class _EchoInstance(ModelInstance):
    """Answers with what the request carried: its parameters and scheduling fields."""

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            if "fail" in request.parameters:
                raise nereid.InvalidArgumentError(str(request.parameters["fail"]))
            if "crash" in request.parameters:
                raise RuntimeError(str(request.parameters["crash"]))
            seen = {
                "id": request.id,
                "parameters": request.parameters,
                "sequence_id": request.sequence_id,
                "sequence_start": request.sequence_start,
                "sequence_end": request.sequence_end,
                "priority": request.priority,
                "timeout_us": request.timeout_us,
                "input_parameters": request.inputs["IN"].parameters,
                "outputs": [(o.name, o.parameters) for o in request.requested_outputs],
            }
            out = np.array([json.dumps(seen, default=str).encode()], dtype=object)
            request.respond(
                InferenceResponse(
                    [Tensor("OUT", out, nereid.DataType.BYTES)],
                    parameters={"echoed": True, "count": 3, "label": "x", "ratio": 0.5},
                )
            )


def echo_plugin() -> BackendPlugin:
    """An in-process plugin adding the ``echo_params`` test backend."""
    return BackendPlugin("echo_params", lambda config, spec: _EchoInstance())


def build_repository(root: Path) -> ModelRepositoryBuilder:
    repo = ModelRepositoryBuilder(root)
    for datatype in DATATYPES:
        config_type = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
        repo.identity(f"id_{datatype.lower()}", config_type, "[ -1 ]", max_batch_size=0)
    repo.identity("identity", "TYPE_FP32", "[ 16 ]", max_batch_size=8)
    repo.identity("spare", "TYPE_FP32", "[ -1 ]", max_batch_size=0)
    repo.add("repeat", REPEAT_CONFIG)
    repo.add("square", SQUARE_CONFIG)
    repo.add("slow", SLOW_CONFIG)
    repo.add("echo", ECHO_CONFIG)
    repo.add("classify", CLASSIFY_CONFIG, files={"labels.txt": "cat\ndog\nbird\nfish\n"})
    return repo


@contextlib.contextmanager
def grpc_server(root: Path, **options: Any) -> Iterator[InProcessServer]:
    options.setdefault("exit_timeout_secs", 2.0)
    options.setdefault("log_info", False)
    with serve_in_process(root, ["grpc"], plugins=[echo_plugin()], **options) as server:
        yield server
