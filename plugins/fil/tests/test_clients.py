"""FIL models through tritonclient over HTTP and gRPC (serve_in_process), with dynamic
batching and two instances."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import fil_models as fm
import numpy as np
import pytest

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from nereid.inprocess import InProcessServer  # noqa: E402
from nereid.testing import ModelRepositoryBuilder, frontend_url, serve_in_process  # noqa: E402

HAVE_DYNAMIC = importlib.util.find_spec("nereid_dynamic_batcher") is not None
BATCHING = "dynamic_batching { max_queue_delay_microseconds: 2000 }" if HAVE_DYNAMIC else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[InProcessServer]:
    files = tmp_path_factory.mktemp("files")
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    repo.add(
        "xgb",
        fm.fil_config(
            "xgboost_ubj", classifier=True, predict_proba=True, width=2, instances=2, extra=BATCHING
        ),
        versions={1: {"xgboost.ubj": fm.save_xgboost(fm.xgb_classifier(), files / "x.ubj")}},
    )
    repo.add(
        "lgb",
        fm.fil_config("lightgbm", classifier=False, instances=2, extra=BATCHING),
        versions={1: {"model.txt": fm.save_lightgbm(fm.lgb_regressor(), files / "model.txt")}},
    )
    repo.add(
        "rf",
        fm.fil_config("treelite_checkpoint", classifier=True, extra=BATCHING),
        versions={1: {"checkpoint.tl": fm.save_sklearn(fm.rf_classifier(), files / "c.tl")}},
    )
    with serve_in_process(repo.root, ["http", "grpc"]) as running:
        yield running


def _infer(client_module, client, model: str, x: np.ndarray) -> np.ndarray:
    tensor = client_module.InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor])
    return result.as_numpy("output__0")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_clients_match_training_libraries(server, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(frontend_url(server, protocol))
    try:
        x = fm.samples(16, seed=3)
        np.testing.assert_allclose(
            _infer(module, client, "xgb", x), fm.xgb_classifier().predict_proba(x), atol=1e-6
        )
        np.testing.assert_allclose(
            _infer(module, client, "lgb", x)[:, 0],
            fm.lgb_regressor().predict(x),
            rtol=1e-5,
            atol=1e-5,
        )
        np.testing.assert_array_equal(
            _infer(module, client, "rf", x)[:, 0], fm.rf_classifier().predict(x)
        )
        metadata = client.get_model_metadata("xgb")
        inputs = metadata.inputs if protocol == "grpc" else metadata["inputs"]
        first = inputs[0]
        shape = list(first.shape) if protocol == "grpc" else first["shape"]
        assert [int(d) for d in shape] == [-1, fm.FEATURES]
    finally:
        client.close()


def test_http_concurrent_requests(server):
    client = httpclient.InferenceServerClient(frontend_url(server, "http"), concurrency=8)
    try:
        inputs = [fm.samples(n, seed=n) for n in (1, 2, 3, 4, 5, 6, 7, 8) * 2]
        pending = []
        for x in inputs:
            tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            pending.append(client.async_infer("xgb", [tensor]))
        for x, handle in zip(inputs, pending, strict=True):
            np.testing.assert_allclose(
                handle.get_result().as_numpy("output__0"),
                fm.xgb_classifier().predict_proba(x),
                atol=1e-6,
            )
    finally:
        client.close()
