"""CUDA placement: KIND_GPU instances on ``cuda:<id>``, KIND_MODEL left to the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_models as tm
from nereid.testing import make_request

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires a CUDA GPU")


def _eager(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("file", ["model.pt", "model.pt2"])
async def test_gpu_instance(start_server, model_repository, file):
    data, module = tm.traced_mlp() if file == "model.pt" else tm.exported_mlp()
    name = "INPUT__0" if file == "model.pt" else "x"
    config = tm.mlp_config().replace("KIND_CPU", "KIND_GPU gpus: [ 0 ]").replace("INPUT__0", name)
    config += 'parameters { key: "ENABLE_CACHE_CLEANING" value: { string_value: "true" } }'
    model_repository.add("mlp", config, versions={1: {file: data}})
    server = await start_server()
    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    response = await server.api.infer(make_request("mlp", {name: x})).single()
    np.testing.assert_allclose(
        response.as_numpy("OUTPUT__0"), _eager(module, x), rtol=1e-3, atol=1e-4
    )
    usage = server.api.model_statistics("mlp")[0]
    assert usage["inference_count"] == 4


async def test_kind_model_keeps_model_placement(start_server, model_repository):
    data, module = tm.traced_mlp()
    config = tm.mlp_config().replace("KIND_CPU", "KIND_MODEL")
    model_repository.add("mlp", config, versions={1: {"model.pt": data}})
    server = await start_server()
    x = np.ones((2, 16), np.float32)
    response = await server.api.infer(make_request("mlp", {"INPUT__0": x})).single()
    np.testing.assert_allclose(response.as_numpy("OUTPUT__0"), _eager(module, x), rtol=1e-4)
