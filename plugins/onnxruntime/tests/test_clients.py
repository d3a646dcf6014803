"""ONNX models through tritonclient over HTTP and gRPC, with and without dynamic batching."""

from __future__ import annotations

import importlib.util
import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
ml_dtypes = pytest.importorskip("ml_dtypes")
from nereid.inprocess import InProcessServer  # noqa: E402
from nereid.testing import ModelRepositoryBuilder  # noqa: E402
from onnx_models import (  # noqa: E402
    T,
    add_sub,
    add_sub_config,
    bf16_model,
    identity,
    mlp_model,
    mlp_reference,
)

HAVE_DYNAMIC = importlib.util.find_spec("nereid_dynamic_batcher") is not None
needs_dynamic = pytest.mark.skipif(
    not HAVE_DYNAMIC,
    reason="the nereid-dynamic-batcher scheduler (schedulers/dynamic) is not installed",
)

MLP_SIZES = (16, 64, 8)
MLP_CONFIG = """
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 8 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[InProcessServer]:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    repo.add("simple", add_sub_config(), versions={1: {"model.onnx": add_sub()}})
    repo.add("strings", None, versions={1: {"model.onnx": identity(T.STRING)}})
    repo.add("bf16", None, versions={1: {"model.onnx": bf16_model()}})
    mlp = mlp_model(MLP_SIZES, seed=7).SerializeToString()
    repo.add("mlp", MLP_CONFIG, versions={1: {"model.onnx": mlp}})
    if HAVE_DYNAMIC:
        from nereid_dynamic_batcher import TRITON_RULE

        repo.add(
            "mlp_dynamic",
            MLP_CONFIG + "dynamic_batching { max_queue_delay_microseconds: 200000 "
            "preferred_batch_size: [ 8 ] }\n"
            # Triton's rule: the 8 concurrent requests wait for each other (with the fair
            # share the first would go alone at once)
             + TRITON_RULE,
            versions={1: {"model.onnx": mlp}},
        )
        repo.add(
            "simple_dynamic",
            add_sub_config("simple_dynamic", extra="dynamic_batching { }"),
            versions={1: {"model.onnx": add_sub()}},
        )
    with InProcessServer(
        str(repo.root), frontends=["http", "grpc"], http_port=0, grpc_port=0
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server) -> Iterator[Any]:
    port = server.server.frontends["http"].port
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", concurrency=16)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server) -> Iterator[Any]:
    port = server.server.frontends["grpc"].port
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield client
    client.close()


_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int32): "INT32",
    np.dtype(ml_dtypes.bfloat16): "BF16",
}


def _inputs(module, arrays: dict[str, np.ndarray]) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _DTYPES[array.dtype]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _client(request, protocol):
    return request.getfixturevalue(protocol), (httpclient if protocol == "http" else grpcclient)


def _simple_models():
    return ["simple", pytest.param("simple_dynamic", marks=needs_dynamic)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", _simple_models())
def test_add_sub(request, protocol, model):
    client, module = _client(request, protocol)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 7, np.int32)
    assert client.is_model_ready(model)
    result = client.infer(model, _inputs(module, {"INPUT0": a, "INPUT1": b}))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requested_output(request, protocol):
    client, module = _client(request, protocol)
    a = np.ones((1, 16), np.int32)
    outputs = [module.InferRequestedOutput("OUTPUT1")]
    result = client.infer("simple", _inputs(module, {"INPUT0": a, "INPUT1": a}), outputs=outputs)
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a * 0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_strings(request, protocol):
    client, module = _client(request, protocol)
    data = np.array([[b"alpha", b"", "gr\u00fc\u00df".encode()]], dtype=object)
    result = client.infer("strings", _inputs(module, {"INPUT0": data}))
    assert list(result.as_numpy("OUTPUT0").reshape(-1)) == list(data.reshape(-1))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16(request, protocol):
    client, module = _client(request, protocol)
    values = np.array([[1.5, -2.25, 3.0]], np.float32)
    x = values.astype(ml_dtypes.bfloat16)
    result = client.infer("bf16", _inputs(module, {"X": x, "F32IN": values}))
    y = result.as_numpy("Y")
    np.testing.assert_array_equal(np.asarray(y, np.float32), values)
    np.testing.assert_array_equal(result.as_numpy("F"), values)
    np.testing.assert_array_equal(np.asarray(result.as_numpy("B"), np.float32), values)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_auto_completed_metadata(request, protocol):
    client, _ = _client(request, protocol)
    metadata = client.get_model_metadata("strings")
    if protocol == "http":
        first = metadata["inputs"][0]
        assert metadata["platform"] == "onnxruntime_onnx"
        assert (first["name"], first["datatype"], first["shape"]) == ("INPUT0", "BYTES", [-1, -1])
    else:
        first = metadata.inputs[0]
        assert metadata.platform == "onnxruntime_onnx"
        assert (first.name, first.datatype, list(first.shape)) == ("INPUT0", "BYTES", [-1, -1])


def _send_concurrently(protocol, client, module, model, xs) -> list[np.ndarray]:
    if protocol == "http":
        handles = [client.async_infer(model, _inputs(module, {"X": x})) for x in xs]
        return [handle.get_result().as_numpy("Y") for handle in handles]
    done: queue.Queue = queue.Queue()
    for index, x in enumerate(xs):
        client.async_infer(
            model,
            _inputs(module, {"X": x}),
            callback=lambda result, error, i=index: done.put((i, result, error)),
        )
    results: list[Any] = [None] * len(xs)
    for _ in xs:
        index, result, error = done.get(timeout=30)
        assert error is None, error
        results[index] = result.as_numpy("Y")
    return results


def _counts(protocol, client, model) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)
    if protocol == "http":
        entry = stats["model_stats"][0]
        return int(entry["inference_count"]), int(entry["execution_count"])
    entry = stats.model_stats[0]
    return entry.inference_count, entry.execution_count


def _models_for_batching():
    return ["mlp", pytest.param("mlp_dynamic", marks=needs_dynamic)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", _models_for_batching())
def test_concurrent_requests(request, protocol, model):
    client, module = _client(request, protocol)
    before = _counts(protocol, client, model)
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(8)]
    results = _send_concurrently(protocol, client, module, model, xs)
    for x, y in zip(xs, results, strict=True):
        np.testing.assert_allclose(y, mlp_reference(x, MLP_SIZES, 7), rtol=1e-4, atol=1e-5)
    inferences, executions = (
        a - b for a, b in zip(_counts(protocol, client, model), before, strict=True)
    )
    assert inferences == 8
    if model == "mlp_dynamic":
        assert executions < 8  # gathered into batches
    else:
        assert executions == 8
