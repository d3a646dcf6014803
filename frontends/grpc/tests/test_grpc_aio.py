"""The frontend in the test's own event loop (the ``start_server`` fixture), driven by
tritonclient.grpc.aio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
from nereid.testing import REPEAT_CONFIG
from tritonclient.utils import InferenceServerException


def _tensor(name, array, datatype):
    tensor = aioclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.fixture
async def aio_url(model_repository, start_server):
    model_repository.identity("identity", "TYPE_FP32", "[ 4 ]", max_batch_size=4)
    model_repository.add("repeat", REPEAT_CONFIG)
    server = await start_server(
        frontends=["grpc"], grpc_port=0, grpc_address="127.0.0.1", log_info=False
    )
    return f"127.0.0.1:{server.frontends['grpc'].port}"


async def test_aio_client_against_an_in_loop_server(aio_url):
    async with aioclient.InferenceServerClient(aio_url) as client:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready("identity")
        meta = await client.get_model_metadata("identity")
        assert meta.inputs[0].name == "INPUT0"

        data = np.arange(8, dtype=np.float32).reshape(2, 4)
        results = await asyncio.gather(
            *(client.infer("identity", [_tensor("INPUT0", data + i, "FP32")]) for i in range(8))
        )
        for index, result in enumerate(results):
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data + index)

        with pytest.raises(InferenceServerException) as info:
            await client.infer(
                "identity", [_tensor("INPUT0", np.zeros((1, 3), np.float32), "FP32")]
            )
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"

        stats = await client.get_inference_statistics("identity")
        assert stats.model_stats[0].inference_stats.success.count == 8


async def test_aio_stream_infer_in_loop(aio_url):
    async with aioclient.InferenceServerClient(aio_url) as client:

        async def requests():
            yield {
                "model_name": "repeat",
                "inputs": [
                    _tensor("IN", np.array([5, 6, 7], dtype=np.int32), "INT32"),
                    _tensor("DELAY", np.zeros(3, dtype=np.uint32), "UINT32"),
                    _tensor("WAIT", np.zeros(1, dtype=np.uint32), "UINT32"),
                ],
                "request_id": "aio",
            }
            yield {
                "model_name": "missing",
                "inputs": [_tensor("IN", np.array([1], dtype=np.int32), "INT32")],
                "request_id": "bad",
            }

        values, errors = [], []
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                errors.append(error.message())
            else:
                values.append(int(result.as_numpy("OUT")[0]))
            if len(values) + len(errors) == 4:
                await asyncio.sleep(0.1)  # let the model send its final flag before we close
                break
        assert values == [5, 6, 7]
        assert len(errors) == 1 and "missing" in errors[0]
