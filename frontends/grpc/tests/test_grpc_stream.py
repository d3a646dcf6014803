"""ModelStreamInfer with tritonclient.grpc (start_stream / async_stream_infer) and
tritonclient.grpc.aio (stream_infer): decoupled models, ordering, errors, cancellation."""

from __future__ import annotations

import asyncio
import json
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient


class Stream:
    """A tritonclient stream whose callbacks land in a queue."""

    def __init__(self, client, **kwargs):
        self.client = client
        self.items: queue.Queue = queue.Queue()
        client.start_stream(
            callback=lambda result, error: self.items.put((result, error)), **kwargs
        )

    def next(self, timeout=5.0):
        return self.items.get(timeout=timeout)

    def drain(self, count, timeout=5.0):
        return [self.next(timeout) for _ in range(count)]

    def quiet(self, wait=0.3):
        try:
            item = self.items.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected stream item {item}")


def _tensor(name, values, datatype):
    tensor = grpcclient.InferInput(name, list(np.shape(values)), datatype)
    tensor.set_data_from_numpy(np.asarray(values))
    return tensor


def _repeat_inputs(values, delays, wait=0):
    return [
        _tensor("IN", np.array(values, dtype=np.int32), "INT32"),
        _tensor("DELAY", np.array(delays, dtype=np.uint32), "UINT32"),
        _tensor("WAIT", np.array([wait], dtype=np.uint32), "UINT32"),
    ]


def _final(result):
    return result.get_response().parameters["triton_final_response"].bool_param


def test_decoupled_repeat_with_empty_final(client):
    stream = Stream(client)
    client.async_stream_infer(
        "repeat",
        _repeat_inputs([4, 5, 6], [5, 5, 5], wait=5),
        request_id="r1",
        enable_empty_final_response=True,
    )
    items = stream.drain(4)
    client.stop_stream()
    assert all(error is None for _, error in items)
    results = [result for result, _ in items]
    assert [r.as_numpy("OUT")[0] for r in results[:3]] == [4, 5, 6]
    assert [r.as_numpy("IDX")[0] for r in results[:3]] == [0, 1, 2]
    assert [_final(r) for r in results] == [False, False, False, True]
    last = results[3].get_response()
    assert (last.id, last.model_name, last.model_version) == ("r1", "repeat", "1")
    assert not last.outputs


def test_decoupled_without_empty_final_sends_only_data(client):
    stream = Stream(client)
    client.async_stream_infer("square", [_tensor("IN", np.array([3], dtype=np.int32), "INT32")])
    results = [result for result, _ in stream.drain(3)]
    assert [r.as_numpy("OUT")[0] for r in results] == [3, 3, 3]
    assert not any(_final(r) for r in results)
    stream.quiet()
    client.stop_stream()


def test_square_zero_sends_only_the_final_flag(client):
    stream = Stream(client)
    client.async_stream_infer(
        "square",
        [_tensor("IN", np.array([0], dtype=np.int32), "INT32")],
        enable_empty_final_response=True,
        request_id="zero",
    )
    result, error = stream.next()
    assert error is None
    assert _final(result) and result.get_response().id == "zero"
    stream.quiet()
    client.stop_stream()


def test_requests_on_one_stream_run_concurrently(client):
    """Decoupled responses go out as produced: a quick request overtakes a slow one."""
    stream = Stream(client)
    client.async_stream_infer("repeat", _repeat_inputs([1], [400]), request_id="slow")
    client.async_stream_infer("repeat", _repeat_inputs([2, 3], [1, 1]), request_id="quick")
    ids = [result.get_response().id for result, _ in stream.drain(3)]
    client.stop_stream()
    assert ids == ["quick", "quick", "slow"]


def test_non_decoupled_responses_keep_request_order(client):
    stream = Stream(client)
    slow_input = _tensor("INPUT0", np.ones(2, dtype=np.float32), "FP32")
    quick_input = _tensor("INPUT0", np.ones((1, 16), dtype=np.float32), "FP32")
    client.async_stream_infer("slow", [slow_input], request_id="first")
    client.async_stream_infer("identity", [quick_input], request_id="second")
    items = stream.drain(2)
    client.stop_stream()
    assert [result.get_response().id for result, _ in items] == ["first", "second"]
    assert all(_final(result) for result, _ in items)
    np.testing.assert_array_equal(items[1][0].as_numpy("OUTPUT0"), np.ones((1, 16)))


def test_many_requests_on_one_stream(client):
    stream = Stream(client)
    for index in range(50):
        data = np.full((1, 16), index, dtype=np.float32)
        client.async_stream_infer(
            "identity", [_tensor("INPUT0", data, "FP32")], request_id=str(index)
        )
    items = stream.drain(50)
    client.stop_stream()
    assert [result.get_response().id for result, _ in items] == [str(i) for i in range(50)]
    assert [result.as_numpy("OUTPUT0")[0, 0] for result, _ in items] == list(range(50))


def test_sequence_over_one_stream(client):
    stream = Stream(client)
    flags = [(True, False), (False, False), (False, True)]
    for step, (start, end) in enumerate(flags):
        client.async_stream_infer(
            "echo",
            [_tensor("IN", np.array([step], dtype=np.int32), "INT32")],
            sequence_id=1234,
            sequence_start=start,
            sequence_end=end,
            request_id=f"s{step}",
        )
    seen = [json.loads(result.as_numpy("OUT")[0]) for result, _ in stream.drain(3)]
    client.stop_stream()
    assert [s["id"] for s in seen] == ["s0", "s1", "s2"]
    assert all(s["sequence_id"] == 1234 for s in seen)
    assert [(s["sequence_start"], s["sequence_end"]) for s in seen] == flags


def test_errors_are_stream_messages_and_the_stream_goes_on(client):
    stream = Stream(client)
    data = _tensor("INPUT0", np.ones((1, 16), dtype=np.float32), "FP32")
    client.async_stream_infer("missing", [data], request_id="bad")
    client.async_stream_infer("identity", [data], request_id="good")
    client.async_stream_infer(
        "echo",
        [_tensor("IN", np.array([1], dtype=np.int32), "INT32")],
        parameters={"fail": "asked to fail"},
        request_id="fails-later",
    )
    (r1, e1), (r2, e2), (r3, e3) = stream.drain(3)
    client.stop_stream()
    assert r1 is None and "missing" in e1.message()
    assert e2 is None and r2.get_response().id == "good"
    assert r3 is None and e3.message() == "asked to fail"


def test_triton_grpc_error_header_ends_the_stream_with_a_status(client):
    stream = Stream(client, headers={"triton_grpc_error": "true"})
    data = _tensor("INPUT0", np.ones((1, 16), dtype=np.float32), "FP32")
    client.async_stream_infer("identity", [data], request_id="ok")
    result, error = stream.next()
    assert error is None and result.get_response().id == "ok"
    client.async_stream_infer("missing", [data], request_id="bad")
    result, error = stream.next()
    assert result is None
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "missing" in error.message()
    client.stop_stream()


def test_triton_grpc_error_header_for_an_error_after_queueing(client):
    stream = Stream(client, headers={"triton_grpc_error": "true"})
    client.async_stream_infer(
        "echo",
        [_tensor("IN", np.array([1], dtype=np.int32), "INT32")],
        parameters={"fail": "boom"},
    )
    result, error = stream.next()
    assert result is None
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert error.message() == "boom"
    client.stop_stream()


def test_an_unparsable_message_ends_the_stream_with_internal(client, url):
    """A stream message protobuf cannot parse ends the stream with INTERNAL (what a request
    on it had not answered yet is cancelled); the server serves on."""
    import grpc
    from tritonclient.grpc import service_pb2

    good = service_pb2.ModelInferRequest(model_name="identity", id="before")
    good.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    good.raw_input_contents.append(np.ones((1, 16), dtype=np.float32).tobytes())
    outgoing: queue.Queue = queue.Queue()
    with grpc.insecure_channel(url) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda payload: payload,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        responses = call(iter(outgoing.get, None))
        outgoing.put(good.SerializeToString())
        first = next(responses)
        assert first.error_message == "" and first.infer_response.id == "before"
        outgoing.put(b"\x0a\x40identity")  # model_name's length runs past the end
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        outgoing.put(None)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Unable to parse request"
    data = _tensor("INPUT0", np.ones((1, 16), dtype=np.float32), "FP32")
    assert client.infer("identity", [data]).as_numpy("OUTPUT0").sum() == 16


def test_closing_the_stream_cancels_its_requests(client):
    def executions():
        return client.get_inference_statistics("slow").model_stats[0].execution_count

    before = executions()
    Stream(client)
    data = _tensor("INPUT0", np.ones(2, dtype=np.float32), "FP32")
    for index in range(3):
        client.async_stream_infer("slow", [data], request_id=str(index))
    time.sleep(0.15)  # the first is executing, two are queued
    client.stop_stream(cancel_requests=True)
    time.sleep(1.2)  # enough for all three to have run, had they not been cancelled
    assert executions() - before <= 1  # the one executing, if it had started


@pytest.mark.asyncio
async def test_aio_stream_infer(url):
    async with aioclient.InferenceServerClient(url) as triton:

        async def requests():
            for values in ([1, 2], [3]):
                yield {
                    "model_name": "repeat",
                    "inputs": [
                        _aio_tensor("IN", np.array(values, dtype=np.int32), "INT32"),
                        _aio_tensor("DELAY", np.zeros(len(values), dtype=np.uint32), "UINT32"),
                        _aio_tensor("WAIT", np.zeros(1, dtype=np.uint32), "UINT32"),
                    ],
                    "request_id": str(values[0]),
                }
                await asyncio.sleep(0.05)

        seen = []
        async for result, error in triton.stream_infer(requests()):
            assert error is None
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            outputs = result.as_numpy("OUT").tolist() if response.outputs else None
            seen.append((response.id, outputs, final))
            if len(seen) == 3:
                await asyncio.sleep(0.1)  # let the model send its final flag before we close
                break
    # tritonclient.grpc.aio cannot ask for empty final responses: only data responses come.
    assert seen == [("1", [1], False), ("1", [2], False), ("3", [3], False)]


def _aio_tensor(name, array, datatype):
    tensor = aioclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor
