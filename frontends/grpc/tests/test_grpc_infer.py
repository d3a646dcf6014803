"""ModelInfer with tritonclient.grpc: every datatype (raw and typed contents), parameters,
classification, shared memory, async_infer, errors and cancellation."""

from __future__ import annotations

import base64
import json
import queue
import struct
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from ml_dtypes import bfloat16
from nereid.testing import DATATYPES
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

VALUES = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 7, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 7, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 7, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 7, 127], dtype=np.int8),
    "INT16": np.array([-32768, 7, 32767], dtype=np.int16),
    "INT32": np.array([-(2**31), 7, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 7, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([1.5, -2.25, 65504.0], dtype=np.float16),
    "FP32": np.array([1.5, -2.25, 3.0e38], dtype=np.float32),
    "FP64": np.array([1.5, -2.25, 1e300], dtype=np.float64),
    "BF16": np.array([1.5, -2.0, 3.0], dtype=bfloat16),
    "BYTES": np.array([b"a", b"", b"xyz\x00\xff"], dtype=object),
}

# The typed contents field for each datatype (FP16 and BF16 ride in fp32_contents).
FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BF16": "fp32_contents",
    "BYTES": "bytes_contents",
}

NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": bfloat16,
}


def _input(name, array, datatype):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _stub(url):
    channel = grpc.insecure_channel(url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _decode(response, index=0):
    output = response.outputs[index]
    raw = response.raw_output_contents[index]
    if output.datatype == "BYTES":
        from tritonclient.utils import deserialize_bytes_tensor

        return deserialize_bytes_tensor(raw).reshape(list(output.shape))
    return np.frombuffer(raw, dtype=NUMPY[output.datatype]).reshape(list(output.shape))


@pytest.mark.parametrize("datatype", DATATYPES)
def test_raw_contents_every_datatype(client, datatype):
    values = VALUES[datatype]
    result = client.infer(f"id_{datatype.lower()}", [_input("INPUT0", values, datatype)])
    output = result.get_output("OUTPUT0")
    assert output.datatype == datatype
    assert list(output.shape) == [3]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_typed_contents_every_datatype(url, datatype):
    values = VALUES[datatype]
    request = service_pb2.ModelInferRequest(model_name=f"id_{datatype.lower()}", id="typed")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[3])
    getattr(tensor.contents, FIELDS[datatype]).extend(values.tolist())
    channel, stub = _stub(url)
    with channel:
        response = stub.ModelInfer(request)
    assert response.id == "typed"
    assert response.outputs[0].datatype == datatype
    assert len(response.raw_output_contents) == 1
    np.testing.assert_array_equal(_decode(response), values)


def test_typed_contents_narrow_integers_keep_low_bytes(url):
    request = service_pb2.ModelInferRequest(model_name="id_int8")
    request.inputs.add(name="INPUT0", datatype="INT8", shape=[2]).contents.int_contents.extend(
        [-1, 300]
    )
    channel, stub = _stub(url)
    with channel:
        response = stub.ModelInfer(request)
    np.testing.assert_array_equal(_decode(response), np.array([-1, 44], dtype=np.int8))


def test_batched_identity_and_response_fields(client):
    data = np.arange(32, dtype=np.float32).reshape(2, 16)
    result = client.infer(
        "identity", [_input("INPUT0", data, "FP32")], request_id="req-7", model_version="1"
    )
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("identity", "1", "req-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_requested_outputs_and_classification(client):
    data = np.array([[0.1, 0.7, 0.05, 0.15], [0.9, 0.0, 0.05, 0.05]], dtype=np.float32)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    result = client.infer("classify", [_input("INPUT0", data, "FP32")], outputs=outputs)
    output = result.get_output("OUTPUT0")
    assert output.datatype == "BYTES"
    assert list(output.shape) == [2, 2]
    labels = result.as_numpy("OUTPUT0")
    assert labels[0][0].decode().split(":")[1:] == ["1", "dog"]
    assert labels[0][1].decode().split(":")[1:] == ["3", "fish"]
    assert labels[1][0].decode().split(":")[1:] == ["0", "cat"]


def _echo(client, **kwargs):
    result = client.infer("echo", [_input("IN", np.array([1], dtype=np.int32), "INT32")], **kwargs)
    return json.loads(result.as_numpy("OUT")[0]), result.get_response()


def test_custom_parameters_reach_the_request(client):
    seen, response = _echo(
        client,
        request_id="p1",
        parameters={"flag": True, "count": 42, "name": "value"},
        priority=3,
        timeout=5000,
    )
    assert seen["id"] == "p1"
    assert seen["parameters"] == {"flag": True, "count": 42, "name": "value"}
    assert seen["priority"] == 3
    assert seen["timeout_us"] == 5000
    params = response.parameters
    assert params["echoed"].bool_param is True
    assert params["count"].int64_param == 3
    assert params["label"].string_param == "x"
    assert params["ratio"].double_param == 0.5


@pytest.mark.parametrize("sequence_id", [17, "session-a"])
def test_sequence_parameters(client, sequence_id):
    seen, _ = _echo(client, sequence_id=sequence_id, sequence_start=True, sequence_end=False)
    assert seen["sequence_id"] == sequence_id
    assert seen["sequence_start"] is True
    assert seen["sequence_end"] is False
    assert "sequence_id" not in seen["parameters"]


def test_input_and_output_parameters_pass_through(url):
    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name="IN", datatype="INT32", shape=[1])
    tensor.parameters["note"].string_param = "input-param"
    request.raw_input_contents.append(np.array([1], dtype=np.int32).tobytes())
    request.outputs.add(name="OUT").parameters["custom"].int64_param = 9
    channel, stub = _stub(url)
    with channel:
        response = stub.ModelInfer(request)
    seen = json.loads(_decode(response)[0])
    assert seen["input_parameters"] == {"note": "input-param"}
    assert seen["outputs"] == [["OUT", {"custom": 9}]]


def test_reserved_triton_parameters_are_checked(url):
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="IN", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([1], dtype=np.int32).tobytes())
    request.parameters["triton_unknown"].bool_param = True
    channel, stub = _stub(url)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reserved for Triton usage" in info.value.details()


def test_async_infer_callbacks(client):
    results: queue.Queue = queue.Queue()
    for index in range(8):
        data = np.full((1, 16), index, dtype=np.float32)
        client.async_infer(
            "identity",
            [_input("INPUT0", data, "FP32")],
            callback=lambda result, error: results.put((result, error)),
            request_id=str(index),
        )
    seen = {}
    for _ in range(8):
        result, error = results.get(timeout=10)
        assert error is None
        seen[result.get_response().id] = result.as_numpy("OUTPUT0")[0, 0]
    assert seen == {str(i): float(i) for i in range(8)}


def test_shared_memory_inputs_and_outputs(client):
    import tritonclient.utils.shared_memory as shm

    data = np.arange(16, dtype=np.float32).reshape(1, 16)
    size = data.nbytes
    key_in, key_out = f"/nereid_grpc_in_{time.time_ns()}", f"/nereid_grpc_out_{time.time_ns()}"
    handle_in = shm.create_shared_memory_region("in_region", key_in, size)
    handle_out = shm.create_shared_memory_region("out_region", key_out, size)
    try:
        shm.set_shared_memory_region(handle_in, [data])
        client.register_system_shared_memory("in_region", key_in, size)
        client.register_system_shared_memory("out_region", key_out, size)
        status = client.get_system_shared_memory_status()
        assert set(status.regions) >= {"in_region", "out_region"}
        assert status.regions["in_region"].key == key_in
        assert status.regions["in_region"].byte_size == size
        only = client.get_system_shared_memory_status("out_region")
        assert list(only.regions) == ["out_region"]

        tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_shared_memory("in_region", size)
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("out_region", size)
        result = client.infer("identity", [tensor], outputs=[output])
        meta = result.get_output("OUTPUT0")
        assert meta.datatype == "FP32" and list(meta.shape) == [1, 16]
        assert result.get_response().raw_output_contents == [b""]
        out = shm.get_contents_as_numpy(handle_out, np.float32, [1, 16])
        np.testing.assert_array_equal(out, data)

        client.unregister_system_shared_memory("in_region")
        assert "in_region" not in client.get_system_shared_memory_status().regions
        with pytest.raises(InferenceServerException) as info:
            client.get_system_shared_memory_status("in_region")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity", [tensor])
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle_in)
        shm.destroy_shared_memory_region(handle_out)
    assert not client.get_system_shared_memory_status().regions


def test_cuda_shared_memory_is_unimplemented(client):
    for call in (
        lambda: client.get_cuda_shared_memory_status(),
        lambda: client.register_cuda_shared_memory("r", base64.b64encode(b"handle"), 0, 16),
        lambda: client.unregister_cuda_shared_memory("r"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "CUDA shared memory" in info.value.message()


# -- errors ------------------------------------------------------------------------------------


def _status(call):
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_unknown_model_is_not_found(client):
    data = np.zeros((1, 16), dtype=np.float32)
    status, message = _status(lambda: client.infer("nope", [_input("INPUT0", data, "FP32")]))
    assert status == "StatusCode.NOT_FOUND"
    assert "nope" in message


def test_unknown_version_and_bad_version_string(client):
    data = np.zeros((1, 16), dtype=np.float32)
    tensor = _input("INPUT0", data, "FP32")
    status, _ = _status(lambda: client.infer("identity", [tensor], model_version="9"))
    assert status == "StatusCode.NOT_FOUND"
    status, message = _status(lambda: client.infer("identity", [tensor], model_version="x"))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "version" in message


def test_kernel_validation_errors_are_invalid_argument(client):
    wrong_shape = _input("INPUT0", np.zeros((1, 15), dtype=np.float32), "FP32")
    status, message = _status(lambda: client.infer("identity", [wrong_shape]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected shape" in message
    wrong_type = _input("INPUT0", np.zeros((1, 16), dtype=np.int32), "INT32")
    status, message = _status(lambda: client.infer("identity", [wrong_type]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "data-type" in message


def _raw_request(**fields):
    request = service_pb2.ModelInferRequest(model_name="id_fp32")
    request.inputs.add(name="INPUT0", datatype=fields.get("datatype", "FP32"), shape=[2])
    return request


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r.raw_input_contents.append(b"\x00" * 7),
            "unexpected size 7 for input 'INPUT0', expecting 8 bytes",
        ),
        (
            lambda r: (
                r.raw_input_contents.append(b"\x00" * 8),
                r.inputs[0].contents.fp32_contents.extend([1.0, 2.0]),
            ),
            "contents field must not be specified when using raw_input_contents",
        ),
        (
            lambda r: (setattr(r.inputs[0], "datatype", "FP8"), r.raw_input_contents.append(b"")),
            "invalid datatype 'FP8'",
        ),
        (lambda r: None, "unable to find data for input tensor 'INPUT0'"),
        (
            lambda r: r.inputs[0].contents.int_contents.extend([1, 2]),
            "of type 'INT32', expected datatype 'FP32'",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.extend([1.0]),
            "unexpected number of elements 1",
        ),
        (
            lambda r: r.raw_input_contents.extend([b"\x00" * 8, b"\x00" * 8]),
            "has 2 raw_input_contents",
        ),
        (
            lambda r: (
                r.raw_input_contents.append(b"\x00" * 8),
                r.parameters["sequence_id"].CopyFrom(service_pb2.InferParameter(bool_param=True)),
            ),
            "invalid value type for 'sequence_id' parameter",
        ),
        (
            lambda r: (
                r.raw_input_contents.append(b"\x00" * 8),
                r.outputs.add(name="OUTPUT0")
                .parameters["classification"]
                .CopyFrom(service_pb2.InferParameter(int64_param=0)),
            ),
            "invalid value for 'classification' parameter, expected >= 1",
        ),
    ],
)
def test_malformed_requests_are_invalid_argument(url, mutate, expected):
    request = _raw_request()
    mutate(request)
    channel, stub = _stub(url)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in info.value.details()


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        (
            [b"a"],
            "expected 2 string elements for inference input 'INPUT0' for model 'id_bytes', got 1",
        ),
        (
            [b"a", b"b", b"c"],
            "unexpected number of string elements 3 for inference input 'INPUT0' for model "
            "'id_bytes', expecting 2",
        ),
    ],
)
def test_bytes_element_count_errors_in_tritons_words(url, elements, expected):
    request = service_pb2.ModelInferRequest(model_name="id_bytes")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in elements))
    channel, stub = _stub(url)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == expected


# A field-1 (model_name) string whose length runs past the end: not a ModelInferRequest.
UNPARSABLE = b"\x0a\x40identity"


@pytest.mark.parametrize(
    "method", ["ModelInfer", "ModelMetadata", "ModelStatistics", "RepositoryModelLoad"]
)
def test_an_unparsable_message_is_internal_as_in_triton(client, url, method):
    """gRPC C++ answers a payload it cannot parse with INTERNAL "Unable to parse request";
    grpc.aio on its own would answer UNKNOWN, naming a Python exception class."""
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda payload: payload,
            response_deserializer=lambda payload: payload,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(UNPARSABLE)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Unable to parse request"
    data = np.ones((1, 16), dtype=np.float32)
    result = client.infer("identity", [_input("INPUT0", data, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_model_infer_on_a_decoupled_model_is_unimplemented(client):
    tensor = _input("IN", np.array([1], dtype=np.int32), "INT32")
    status, message = _status(lambda: client.infer("square", [tensor]))
    assert status == "StatusCode.UNIMPLEMENTED"
    assert "decoupled" in message


def test_cancelled_request_is_never_executed(client):
    """A request whose client gave up while it was queued does not run."""

    def executions():
        stats = client.get_inference_statistics("slow").model_stats[0]
        return stats.execution_count, stats.inference_stats.fail.count

    before_exec, before_fail = executions()
    tensor = _input("INPUT0", np.ones(4, dtype=np.float32), "FP32")
    first: queue.Queue = queue.Queue()
    client.async_infer("slow", [tensor], callback=lambda result, error: first.put((result, error)))
    time.sleep(0.1)  # the first request is executing; the second will wait behind it
    status, _message = _status(lambda: client.infer("slow", [tensor], client_timeout=0.1))
    assert status == "StatusCode.DEADLINE_EXCEEDED"
    _result, error = first.get(timeout=5)
    assert error is None
    time.sleep(0.6)  # long enough for the second request to have run, had it not been cancelled
    after_exec, after_fail = executions()
    assert after_exec - before_exec == 1
    assert after_fail - before_fail == 1


def test_concurrent_clients(url):
    errors = []

    def work(index):
        try:
            with grpcclient.InferenceServerClient(url) as triton:
                for _ in range(20):
                    data = np.full((1, 16), index, dtype=np.float32)
                    result = triton.infer("identity", [_input("INPUT0", data, "FP32")])
                    assert result.as_numpy("OUTPUT0")[0, 0] == index
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_backend_errors_map_to_their_status(client):
    tensor = _input("IN", np.array([1], dtype=np.int32), "INT32")
    status, message = _status(lambda: client.infer("echo", [tensor], parameters={"fail": "no"}))
    assert (status, message) == ("StatusCode.INVALID_ARGUMENT", "no")
    status, message = _status(lambda: client.infer("echo", [tensor], parameters={"crash": "bug"}))
    assert (status, message) == ("StatusCode.INTERNAL", "bug")


def test_already_exists(client):
    import tritonclient.utils.shared_memory as shm

    key = f"/nereid_grpc_twice_{time.time_ns()}"
    handle = shm.create_shared_memory_region("twice", key, 64)
    try:
        client.register_system_shared_memory("twice", key, 64)
        status, message = _status(lambda: client.register_system_shared_memory("twice", key, 64))
        assert status == "StatusCode.ALREADY_EXISTS"
        assert "twice" in message
    finally:
        client.unregister_system_shared_memory("twice")
        shm.destroy_shared_memory_region(handle)


def test_status_table_covers_every_error_kind():
    from nereid import ErrorKind
    from nereid_grpc.status import STATUS_BY_KIND

    assert {kind: code.name for kind, code in STATUS_BY_KIND.items()} == {
        ErrorKind.UNKNOWN: "UNKNOWN",
        ErrorKind.INTERNAL: "INTERNAL",
        ErrorKind.NOT_FOUND: "NOT_FOUND",
        ErrorKind.INVALID_ARG: "INVALID_ARGUMENT",
        ErrorKind.UNAVAILABLE: "UNAVAILABLE",
        ErrorKind.UNSUPPORTED: "UNIMPLEMENTED",
        ErrorKind.ALREADY_EXISTS: "ALREADY_EXISTS",
        ErrorKind.CANCELLED: "CANCELLED",
    }
