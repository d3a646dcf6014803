"""The example ensemble in docs/examples/model_repository loads and answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nereid.testing import make_request

pytest.importorskip("nereid_python")

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "model_repository"


async def test_example_pipeline(start_server):
    server = await start_server(
        str(EXAMPLES),
        model_control_mode="explicit",
        load_model=["add_sub_pipeline"],  # loads the step models first
    )
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    b = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    response = await server.api.infer(make_request("add_sub_pipeline", {"A": a, "B": b})).single()
    np.testing.assert_array_equal(response.as_numpy("SUM"), a + b)
    np.testing.assert_array_equal(response.as_numpy("TWICE_A"), 2 * a)
    np.testing.assert_array_equal(response.as_numpy("TWICE_B"), 2 * b)
    assert server.api.model_statistics("add_sub_python")[0]["inference_count"] == 2
