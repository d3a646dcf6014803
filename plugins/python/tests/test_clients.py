"""Python models through tritonclient over HTTP and gRPC (streaming for decoupled models)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from nereid.inprocess import InProcessServer  # noqa: E402
from nereid.testing import ModelRepositoryBuilder  # noqa: E402
from python_backend_models import (  # noqa: E402
    ADD_SUB_SOURCE,
    AUTO_COMPLETE_SOURCE,
    ERRORS_CONFIG,
    ERRORS_SOURCE,
    IDENTITY_BYTES_CONFIG,
    IDENTITY_BYTES_SOURCE,
    REPEAT_CONFIG,
    REPEAT_SOURCE,
    add_sub_config,
)
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module", params=["process", "thread"], autouse=True)
def execution_mode(request) -> str:
    """Every test runs against a server with models in processes, then in-process."""
    return request.param


@pytest.fixture(scope="module")
def server(execution_mode, tmp_path_factory) -> Iterator[InProcessServer]:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    repo.add("add_sub", add_sub_config(), versions={1: {"model.py": ADD_SUB_SOURCE}})
    repo.add(
        "add_sub_int32", add_sub_config("TYPE_INT32"), versions={1: {"model.py": ADD_SUB_SOURCE}}
    )
    repo.add("strings", IDENTITY_BYTES_CONFIG, versions={1: {"model.py": IDENTITY_BYTES_SOURCE}})
    repo.add("repeat", REPEAT_CONFIG, versions={1: {"model.py": REPEAT_SOURCE}})
    repo.add("errors", ERRORS_CONFIG, versions={1: {"model.py": ERRORS_SOURCE}})
    repo.add("auto", None, versions={1: {"model.py": AUTO_COMPLETE_SOURCE}})
    with InProcessServer(
        str(repo.root),
        frontends=["http", "grpc"],
        http_port=0,
        grpc_port=0,
        backend_config=[f"python,execution-mode={execution_mode}"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server) -> Iterator[Any]:
    port = server.server.frontends["http"].port
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server) -> Iterator[Any]:
    port = server.server.frontends["grpc"].port
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield client
    client.close()


def _inputs(module, arrays: dict[str, np.ndarray]) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _DTYPES[array.dtype]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint32): "UINT32",
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model, dtype", [("add_sub", np.float32), ("add_sub_int32", np.int32)])
def test_add_sub(request, protocol, model, dtype):
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    a = np.array([1, 2, 3, 4], dtype)
    b = np.array([4, 3, 2, 1], dtype)
    assert client.is_model_ready(model)
    result = client.infer(model, _inputs(module, {"INPUT0": a, "INPUT1": b}))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_strings(request, protocol):
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    data = np.array([b"alpha", b"", "gr\u00fc\u00df".encode()], dtype=object)
    result = client.infer("strings", _inputs(module, {"IN": data}))
    assert list(result.as_numpy("OUT")) == list(data)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_auto_completed_model_metadata(request, protocol):
    client = request.getfixturevalue(protocol)
    metadata = client.get_model_metadata("auto")
    inputs = metadata["inputs"] if protocol == "http" else metadata.inputs
    first = inputs[0]
    name = first["name"] if protocol == "http" else first.name
    shape = first["shape"] if protocol == "http" else list(first.shape)
    assert name == "X" and list(shape) == [-1, 2]


@pytest.mark.parametrize(
    "protocol, mode, status, message",
    [
        ("http", "not_found", "404", "not_found error"),
        ("http", "raise", "500", "TritonModelException: raised on purpose"),
        ("grpc", "not_found", "StatusCode.NOT_FOUND", "not_found error"),
        ("grpc", "invalid_arg", "StatusCode.INVALID_ARGUMENT", "invalid_arg error"),
        ("grpc", "raise", "StatusCode.INTERNAL", "TritonModelException: raised on purpose"),
    ],
)
def test_errors_reach_the_client(request, protocol, mode, status, message):
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    with pytest.raises(InferenceServerException) as info:
        client.infer("errors", _inputs(module, {"MODE": np.array([mode.encode()], dtype=object)}))
    assert message in info.value.message()
    assert str(info.value.status()) == status


def test_decoupled_repeat_over_grpc_stream(grpc):
    results: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        values = np.array([7, 8, 9], np.int32)
        inputs = _inputs(
            grpcclient,
            {
                "IN": values,
                "DELAY": np.array([5, 5, 5], np.uint32),
                "WAIT": np.array([1], np.uint32),
            },
        )
        grpc.async_stream_infer("repeat", inputs, enable_empty_final_response=True)
        outs, idxs = [], []
        while True:
            result, error = results.get(timeout=10)
            assert error is None
            response = result.get_response()
            if response.outputs:
                outs.append(int(result.as_numpy("OUT")[0]))
                idxs.append(int(result.as_numpy("IDX")[0]))
            if response.parameters["triton_final_response"].bool_param:
                break
        assert outs == [7, 8, 9] and idxs == [0, 1, 2]
    finally:
        grpc.stop_stream()
