"""The example FIL model in docs/examples/model_repository loads and answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nereid.testing import make_request

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "model_repository"


async def test_example_model(start_server):
    server = await start_server(
        str(EXAMPLES), model_control_mode="explicit", load_model=["fil_xgboost"]
    )
    x = np.array([[2, 2, 0, 0], [-2, -2, 0, 0]], np.float32)
    response = await server.api.infer(make_request("fil_xgboost", {"input__0": x})).single()
    p = response.as_numpy("output__0")
    assert p.shape == (2, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert p[0, 1] > 0.5 > p[1, 1]
