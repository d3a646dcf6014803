"""Inference through tritonclient: every datatype as JSON and binary, parameters,
classification, compression, and the response shapes."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NUMERIC = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([0, 7, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 7, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 7, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-32768, 1, 32767], dtype=np.int16),
    "INT32": np.array([-(2**31), 1, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 1, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([-1.5, 0.0009765625, 65504.0], dtype=np.float16),
    "FP32": np.array([-1.25, 0.1, 3.4e38], dtype=np.float32),
    "FP64": np.array([-1.25, 0.1, 1e300], dtype=np.float64),
    "BF16": np.array([-1.5, 0.15625, 3.0e38], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([b"alpha", b"", "\u00e9t\u00e9".encode()], dtype=object),
}


def _all_inputs(binary: bool, json_types: set[str] | None = None):
    inputs = []
    for datatype, values in NUMERIC.items():
        tensor = httpclient.InferInput(f"IN_{datatype}", list(values.shape), datatype)
        as_binary = binary or (json_types is not None and datatype not in json_types)
        tensor.set_data_from_numpy(values, binary_data=as_binary)
        inputs.append(tensor)
    return inputs


def _check_all(result) -> None:
    for datatype, values in NUMERIC.items():
        got = result.as_numpy(f"OUT_{datatype}")
        assert got is not None, datatype
        assert got.shape == values.shape, datatype
        if datatype == "BYTES":
            # tritonclient gives str elements for JSON BYTES, bytes for binary ones
            assert [v.encode() if isinstance(v, str) else v for v in got] == list(values)
        else:
            assert got.dtype == values.dtype, datatype
            np.testing.assert_array_equal(got, values, err_msg=datatype)


def test_every_datatype_binary(client):
    outputs = [httpclient.InferRequestedOutput(f"OUT_{dt}", binary_data=True) for dt in NUMERIC]
    result = client.infer("all_types", _all_inputs(binary=True), outputs=outputs)
    _check_all(result)
    response = result.get_response()
    assert response["model_name"] == "all_types"
    assert response["model_version"] == "1"
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in response["outputs"]}
    assert sizes["OUT_FP64"] == 24
    assert sizes["OUT_BF16"] == 6
    assert sizes["OUT_BYTES"] == 3 * 4 + 5 + 0 + len("\u00e9t\u00e9".encode())


def test_every_datatype_json(client):
    # tritonclient refuses BF16 as JSON, so BF16 travels binary here (JSON BF16 is tested raw).
    json_types = set(NUMERIC) - {"BF16"}
    outputs = [httpclient.InferRequestedOutput(f"OUT_{dt}", binary_data=False) for dt in NUMERIC]
    result = client.infer(
        "all_types", _all_inputs(binary=False, json_types=json_types), outputs=outputs
    )
    _check_all(result)
    response = result.get_response()
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["OUT_BOOL"]["data"] == [True, False, True]
    assert by_name["OUT_UINT64"]["data"] == [0, 7, 2**64 - 1]
    assert by_name["OUT_INT64"]["data"] == [-(2**63), 1, 2**63 - 1]
    assert by_name["OUT_FP32"]["data"] == [-1.25, 0.1, 3.4e38]
    assert by_name["OUT_BYTES"]["data"] == ["alpha", "", "\u00e9t\u00e9"]
    assert by_name["OUT_BF16"]["datatype"] == "BF16"
    assert by_name["OUT_BF16"]["data"] == [-1.5, 0.15625, pytest.approx(3.0e38, rel=1e-2)]
    assert "parameters" not in by_name["OUT_FP32"]


def test_unnamed_outputs_follow_binary_data_output(client):
    tensor = httpclient.InferInput("INPUT0", [2, 3], "FP32")
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor.set_data_from_numpy(values, binary_data=False)
    # tritonclient asks for binary_data_output when no outputs are named.
    result = client.infer("identity", [tensor])
    out = result.get_response()["outputs"][0]
    assert out == {
        "name": "OUTPUT0",
        "datatype": "FP32",
        "shape": [2, 3],
        "parameters": {"binary_data_size": 24},
    }
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    # An output named without binary_data is JSON.
    result = client.infer(
        "identity", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", False)]
    )
    out = result.get_response()["outputs"][0]
    assert out["data"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_request_id_and_bytes_binary_non_utf8(client):
    values = np.array([b"\xff\x00\xfe", b"ok"], dtype=object)
    tensor = httpclient.InferInput("INPUT0", [2], "BYTES")
    tensor.set_data_from_numpy(values, binary_data=True)
    result = client.infer(
        "bytes_id",
        [tensor],
        request_id="req-42",
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)],
    )
    assert result.get_response()["id"] == "req-42"
    assert list(result.as_numpy("OUTPUT0")) == [b"\xff\x00\xfe", b"ok"]
    # Not UTF-8, so it cannot be written as JSON: a clear 400.
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        client.infer(
            "bytes_id", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", False)]
        )


def test_parameters_reach_the_request(client):
    tensor = httpclient.InferInput("INPUT0", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer(
        "paramecho",
        [tensor],
        request_id="abc",
        sequence_id=42,
        sequence_start=True,
        sequence_end=False,
        priority=3,
        timeout=1500,
        parameters={"temperature": 0.5, "mode": "fast", "steps": 7, "flag": True},
    )
    seen = json.loads(result.as_numpy("OUTPUT0")[0])
    assert seen == {
        "id": "abc",
        "parameters": {"temperature": 0.5, "mode": "fast", "steps": 7, "flag": True},
        "priority": 3,
        "timeout_us": 1500,
        "sequence_id": 42,
        "sequence_start": True,
        "sequence_end": False,
    }
    # Response parameters come back in the response JSON.
    assert result.get_response()["parameters"] == {"echoed": True, "count": 1}


def test_string_sequence_id(client):
    tensor = httpclient.InferInput("INPUT0", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer(
        "paramecho", [tensor], sequence_id="session-7", sequence_start=False, sequence_end=True
    )
    seen = json.loads(result.as_numpy("OUTPUT0")[0])
    assert seen["sequence_id"] == "session-7"
    assert seen["sequence_end"] is True


def test_identity_accepts_scheduling_parameters(client):
    tensor = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1.5, 2.5]], dtype=np.float32))
    result = client.infer(
        "identity", [tensor], sequence_id=9, sequence_start=True, priority=1, timeout=100
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[1.5, 2.5]])


def test_classification(client):
    values = np.array([[0.1, 0.7, 0.05, 0.15], [0.9, 0.0, 0.3, 0.2]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_data_from_numpy(values)
    for binary in (True, False):
        output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=2)
        result = client.infer("classifier", [tensor], outputs=[output])
        classes = result.as_numpy("OUTPUT0")
        assert classes.shape == (2, 2)
        decoded = [[c.decode() if isinstance(c, bytes) else c for c in row] for row in classes]
        assert decoded == [
            ["0.700000:1:dog", "0.150000:3:bird"],
            ["0.900000:0:cat", "0.300000:2:fish"],
        ]
        assert result.get_response()["outputs"][0]["datatype"] == "BYTES"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(client, algorithm):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)
    for binary in (True, False):
        tensor = httpclient.InferInput("INPUT0", [1, 64], "FP32")
        tensor.set_data_from_numpy(values, binary_data=binary)
        result = client.infer(
            "identity",
            [tensor],
            outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_async_infer_many(client):
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    handles = []
    for i in range(8):
        tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
        handles.append(client.async_infer("identity", [tensor]))
    for i, handle in enumerate(handles):
        np.testing.assert_array_equal(handle.get_result().as_numpy("OUTPUT0"), np.full((1, 4), i))


def test_metadata_and_config(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identity")
    assert client.is_model_ready("identity", "1")
    assert not client.is_model_ready("identity", "2")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "nereid"
    assert "binary_tensor_data" in metadata["extensions"]
    assert "classification" in metadata["extensions"]
    model = client.get_model_metadata("identity", "1")
    assert model["name"] == "identity"
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    config = client.get_model_config("classifier")
    assert config["name"] == "classifier"
    assert config["max_batch_size"] == 8
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert config["input"][0]["dims"] == [4]


def test_statistics(client):
    tensor = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    before = client.get_inference_statistics("identity")["model_stats"][0]
    for _ in range(3):
        client.infer("identity", [tensor])
    stats = client.get_inference_statistics("identity", "1")["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert entry["name"] == "identity"
    assert entry["version"] == "1"
    assert entry["inference_count"] == before["inference_count"] + 3
    assert entry["execution_count"] == before["execution_count"] + 3
    success = entry["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 3
    every = client.get_inference_statistics()["model_stats"]
    assert {"identity", "classifier", "all_types"} <= {s["name"] for s in every}
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_inference_statistics("no_such_model")
