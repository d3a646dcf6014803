"""The in-process API: a server on a background loop, called with numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest
from nereid import InvalidArgumentError
from nereid.inprocess import InProcessServer


def test_infer_and_stream(model_repository):
    model_repository.identity("id", dims="[ 2 ]")
    model_repository.add(
        "square_int32",
        """
        backend: "square"
        model_transaction_policy { decoupled: true }
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        """,
    )
    with InProcessServer(str(model_repository.root)) as server:
        x = np.array([[1.0, 2.0]], np.float32)
        np.testing.assert_array_equal(server.infer("id", {"INPUT0": x})["OUTPUT0"], x)
        outs = [o["OUT"][0] for o in server.stream("square_int32", {"IN": np.array([2], np.int32)})]
        assert outs == [2, 2]
        with pytest.raises(InvalidArgumentError, match="unexpected shape"):
            server.infer("id", {"INPUT0": np.zeros((1, 3), np.float32)})
        versioned = server.infer("id", {"INPUT0": x}, version=1)
        np.testing.assert_array_equal(versioned["OUTPUT0"], x)
