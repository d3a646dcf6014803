"""The example OpenVINO model in docs/examples/model_repository loads and answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nereid.testing import make_request

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "model_repository"


async def test_example_model(start_server):
    server = await start_server(
        str(EXAMPLES), model_control_mode="explicit", load_model=["simple_openvino"]
    )
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), np.int32)
    response = await server.api.infer(
        make_request("simple_openvino", {"INPUT0": a, "INPUT1": b})
    ).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
