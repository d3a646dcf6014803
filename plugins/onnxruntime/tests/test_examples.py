"""The example ONNX models in docs/examples/model_repository load and answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nereid.testing import make_request

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "model_repository"


async def test_example_models(start_server):
    server = await start_server(
        str(EXAMPLES),
        model_control_mode="explicit",
        load_model=["simple_onnx", "identity_string_onnx"],
    )
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), np.int32)
    response = await server.api.infer(
        make_request("simple_onnx", {"INPUT0": a, "INPUT1": b})
    ).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)

    config = server.api.model_config("identity_string_onnx")
    assert config.max_batch_size == 4 and config.platform == "onnxruntime_onnx"
    words = np.array([[b"hello", b"onnx"]], dtype=object)
    response = await server.api.infer(
        make_request("identity_string_onnx", {"INPUT0": words})
    ).single()
    assert list(response.as_numpy("OUTPUT0").reshape(-1)) == [b"hello", b"onnx"]
