"""tritonclient.http.aio: against an in-process server on its own thread, and against a server
started in the test's own event loop (the ``start_server`` fixture)."""

from __future__ import annotations

import asyncio

import numpy as np
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException


async def test_aio_client(url):
    async with aioclient.InferenceServerClient(url) as client:
        assert await client.is_server_ready()
        assert await client.is_model_ready("identity")

        async def one(i: int) -> np.ndarray:
            tensor = aioclient.InferInput("INPUT0", [1, 3], "FP32")
            tensor.set_data_from_numpy(np.full((1, 3), i, dtype=np.float32), binary_data=i % 2 == 0)
            output = aioclient.InferRequestedOutput("OUTPUT0", binary_data=i % 3 == 0)
            result = await client.infer("identity", [tensor], outputs=[output])
            return result.as_numpy("OUTPUT0")

        results = await asyncio.gather(*(one(i) for i in range(12)))
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result, np.full((1, 3), i, dtype=np.float32))
        stats = await client.get_inference_statistics("identity")
        assert stats["model_stats"][0]["inference_count"] >= 12
        try:
            await client.get_model_metadata("missing")
        except InferenceServerException as exc:
            assert exc.status() == "404"
        else:  # pragma: no cover
            raise AssertionError("expected a 404")


async def test_in_loop_server(start_server, model_repository):
    """The frontend inside the test's own loop (tritonclient.http.aio only: a blocking client
    would stall the loop the server runs on)."""
    model_repository.identity("identity", "TYPE_INT32", "[ 2 ]", max_batch_size=0)
    server = await start_server(frontends=["http"], http_port=0, http_address="127.0.0.1")
    port = server.frontends["http"].port
    async with aioclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        tensor = aioclient.InferInput("INPUT0", [2], "INT32")
        tensor.set_data_from_numpy(np.array([5, 6], dtype=np.int32))
        result = await client.infer("identity", [tensor])
        assert result.as_numpy("OUTPUT0").tolist() == [5, 6]
        metadata = await client.get_model_metadata("identity")
        assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "INT32", "shape": [2]}]
