"""The example TorchScript model in docs/examples/model_repository loads and answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nereid.testing import make_request

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "model_repository"


async def test_simple_pytorch(start_server):
    server = await start_server(
        str(EXAMPLES), model_control_mode="explicit", load_model=["simple_pytorch"]
    )
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), np.int32)
    request = make_request("simple_pytorch", {"INPUT__0": a, "INPUT__1": b})
    response = await server.api.infer(request).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT__0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT__1"), a - b)
