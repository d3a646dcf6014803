"""The IR and the ONNX form of the MLP through tritonclient over HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from nereid.testing import ModelRepositoryBuilder, frontend_url, serve_in_process  # noqa: E402
from ov_models import (  # noqa: E402
    MLP_CONFIG,
    MLP_ONNX_CONFIG,
    MLP_SIZES,
    mlp_files,
    mlp_reference,
)

MODELS = ("mlp_ir", "mlp_onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    repo.add("mlp_ir", MLP_CONFIG, versions={1: mlp_files()})
    repo.add("mlp_onnx", MLP_ONNX_CONFIG, versions={1: mlp_files(ir=False)})
    with serve_in_process(repo.root, ["http", "grpc"]) as running:
        yield running


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", MODELS)
def test_infer(server, protocol, model):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(frontend_url(server, protocol))
    try:
        assert client.is_model_ready(model)
        x = np.random.default_rng(5).standard_normal((4, MLP_SIZES[0])).astype(np.float32)
        tensor = module.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor], outputs=[module.InferRequestedOutput("Y")])
        np.testing.assert_allclose(result.as_numpy("Y"), mlp_reference(x), rtol=1e-4, atol=1e-5)
    finally:
        client.close()


def test_metadata_over_grpc(server):
    client = grpcclient.InferenceServerClient(frontend_url(server, "grpc"))
    try:
        metadata = client.get_model_metadata("mlp_ir", as_json=True)
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
            ("X", "FP32", [str(-1), str(MLP_SIZES[0])])
        ]
        config = client.get_model_config("mlp_ir", as_json=True)["config"]
        assert config["backend"] == "openvino"
    finally:
        client.close()
