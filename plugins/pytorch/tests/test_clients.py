"""PyTorch models through tritonclient over HTTP and gRPC (in-process server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch_models as tm

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from nereid.testing import ModelRepositoryBuilder, frontend_url, serve_in_process  # noqa: E402

MODULES = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Any]:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    data, MODULES["mlp"] = tm.traced_mlp()
    repo.add("mlp", tm.mlp_config(), versions={1: {"model.pt": data}})
    repo.add("add_sub", tm.ADD_SUB_CONFIG, versions={1: {"model.pt": tm.scripted(tm.AddSub())}})
    exported, MODULES["exported"] = tm.exported_mlp()
    repo.add("exported", None, versions={1: {"model.pt2": exported}})
    with serve_in_process(repo.root, ["http", "grpc"]) as running:
        yield running


def _client(server, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(frontend_url(server, "http"))
    return grpcclient, grpcclient.InferenceServerClient(frontend_url(server, "grpc"))


def _input(module, name, array, datatype):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    "model, input_name, output_name",
    [
        ("mlp", "INPUT__0", "OUTPUT__0"),
        ("exported", "x", "OUTPUT__0"),
    ],
)
def test_mlp(server, protocol, model, input_name, output_name):
    module, client = _client(server, protocol)
    x = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    result = client.infer(model, [_input(module, input_name, x, "FP32")])
    with torch.no_grad():
        want = MODULES[model](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(result.as_numpy(output_name), want, rtol=1e-4, atol=1e-6)
    metadata = client.get_model_metadata(model)
    platform = metadata["platform"] if protocol == "http" else metadata.platform
    assert platform == "pytorch_libtorch"
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_add_sub(server, protocol):
    module, client = _client(server, protocol)
    a = np.arange(8, dtype=np.int32).reshape(2, 4)
    b = np.full((2, 4), 5, np.int32)
    inputs = [_input(module, "a", a, "INT32"), _input(module, "b", b, "INT32")]
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("SUM__0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("DIFF__1"), a - b)
    client.close()
