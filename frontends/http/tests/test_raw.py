"""Raw HTTP requests for what tritonclient does not send: raw binary bodies, compressed bodies,
malformed input of every kind, methods and paths. After each error the server still serves."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
import requests

MAX_INPUT = 64 * 1024


@pytest.fixture(scope="module")
def server_options():
    return {"allow_client_shm": False, "http_max_input_size": MAX_INPUT}


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


@pytest.fixture
def still_serving(session, base_url):
    """Call after an error: a good request on the same session must still be answered."""

    def check() -> None:
        body = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        reply = session.post(f"{base_url}/v2/models/identity/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == [1.0, 2.0]

    return check


def infer_url(base_url: str, model: str = "identity") -> str:
    return f"{base_url}/v2/models/{model}/infer"


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def error_of(reply: requests.Response) -> str:
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"}
    return body["error"]


def test_json_outputs_by_default(session, base_url):
    body = {
        "id": "r1",
        "inputs": [
            {"name": "INPUT0", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}
        ],
    }
    reply = session.post(infer_url(base_url), json=body)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert "Inference-Header-Content-Length" not in reply.headers
    assert reply.json() == {
        "id": "r1",
        "model_name": "identity",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}
        ],
    }


def test_json_fp16_and_bf16_inputs(session, base_url):
    """Beyond Triton (which requires binary for these): FP16 and BF16 as JSON numbers."""
    values = {dt: [0.5, -2.0, 1.25] for dt in ("FP16", "BF16")}
    body = {
        "inputs": [
            {"name": "INPUT0", "shape": [3], "datatype": "FP16", "data": values["FP16"]},
        ]
    }
    # all_types needs every input, so use it with binary for the rest via a small JSON model set
    reply = session.post(infer_url(base_url, "identity"), json=body)
    assert reply.status_code == 400
    assert "data-type is 'FP16', but model 'identity' expects 'FP32'" in error_of(reply)
    inputs = []
    for dt, data in (
        ("BOOL", [True]),
        ("UINT8", [1]),
        ("UINT16", [1]),
        ("UINT32", [1]),
        ("UINT64", [1]),
        ("INT8", [-1]),
        ("INT16", [-1]),
        ("INT32", [-1]),
        ("INT64", [-1]),
        ("FP16", values["FP16"]),
        ("FP32", [1.5]),
        ("FP64", [1.5]),
        ("BF16", values["BF16"]),
        ("BYTES", ["x"]),
    ):
        inputs.append({"name": f"IN_{dt}", "shape": [len(data)], "datatype": dt, "data": data})
    reply = session.post(infer_url(base_url, "all_types"), json={"inputs": inputs})
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["OUT_FP16"]["data"] == [0.5, -2.0, 1.25]
    assert outputs["OUT_BF16"]["data"] == [0.5, -2.0, 1.25]
    assert outputs["OUT_BF16"]["datatype"] == "BF16"
    assert outputs["OUT_UINT64"]["data"] == [1]
    assert outputs["OUT_BYTES"]["data"] == ["x"]


def test_binary_request_and_mixed_outputs(session, base_url):
    values = np.arange(6, dtype=np.float32).reshape(1, 6)
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 6],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        },
        values.tobytes(),
    )
    reply = session.post(infer_url(base_url), data=body, headers=headers)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    length = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.content[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    np.testing.assert_array_equal(
        np.frombuffer(reply.content[length:], dtype=np.float32).reshape(1, 6), values
    )


def test_raw_binary_body(session, base_url):
    """Inference-Header-Content-Length: 0: the whole body is the only input's data."""
    values = np.array([1.5, -2.0, 3.25, 8.0], dtype=np.float32)
    reply = session.post(
        infer_url(base_url, "raw_fp32"),
        data=values.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.content[:length])
    out = header["outputs"][0]
    assert out["shape"] == [4]
    assert out["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(np.frombuffer(reply.content[length:], np.float32), values)

    # A model with a batch dimension gets batch 1.
    reply = session.post(
        infer_url(base_url, "identity"),
        data=values.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 200
    length = int(reply.headers["Inference-Header-Content-Length"])
    assert json.loads(reply.content[:length])["outputs"][0]["shape"] == [1, 4]

    # BYTES: the body is the one element.
    reply = session.post(
        infer_url(base_url, "raw_bytes"),
        data=b"\x00raw text\xff",
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 200
    length = int(reply.headers["Inference-Header-Content-Length"])
    assert json.loads(reply.content[:length])["outputs"][0]["shape"] == [1]
    assert reply.content[length:] == struct.pack("<I", 10) + b"\x00raw text\xff"

    # A size that is not a whole number of elements, and a model with several inputs.
    reply = session.post(
        infer_url(base_url, "raw_fp32"),
        data=b"\x00" * 6,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 400
    assert "not a multiple of 4 bytes" in error_of(reply)
    reply = session.post(
        infer_url(base_url, "all_types"),
        data=b"\x00" * 4,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 400
    assert "Raw request must only have 1 input" in error_of(reply)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies(session, base_url, encoding):
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    ).encode()
    if encoding == "gzip":
        data = gzip.compress(body)
    elif encoding == "deflate":
        data = zlib.compress(body)
    else:
        compressor = zlib.compressobj(wbits=-15)
        data = compressor.compress(body) + compressor.flush()
    header = "gzip" if encoding == "gzip" else "deflate"
    reply = session.post(
        infer_url(base_url),
        data=data,
        headers={"Content-Encoding": header, "Accept-Encoding": header},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Encoding"] == header
    # requests decodes the response body itself
    assert reply.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]


def test_response_compression_choice(session, base_url):
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [7]}]}
    reply = session.post(
        infer_url(base_url), json=body, headers={"Accept-Encoding": "gzip;q=0.5, deflate;q=0.9"}
    )
    assert reply.headers["Content-Encoding"] == "deflate"
    reply = session.post(infer_url(base_url), json=body, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in reply.headers
    assert reply.json()["outputs"][0]["data"] == [7.0]


def test_bad_compression(session, base_url, still_serving):
    reply = session.post(
        infer_url(base_url), data=b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert reply.status_code == 400
    assert "failed to decompress the request body (gzip)" in error_of(reply)
    reply = session.post(
        infer_url(base_url),
        data=gzip.compress(b'{"inputs": []}')[:-12],
        headers={"Content-Encoding": "gzip"},
    )
    assert reply.status_code == 400
    assert "truncated" in error_of(reply)
    reply = session.post(infer_url(base_url), data=b"{}", headers={"Content-Encoding": "br"})
    assert reply.status_code == 501
    assert error_of(reply) == "Unsupported compression type"
    assert reply.headers["Accept-Encoding"] == "gzip, deflate"
    still_serving()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "failed to parse the request JSON buffer"),
        (b"", "failed to parse the request JSON buffer"),
        (b"[1, 2]", "expected an object"),
        (b'{"inputs": 3}', "Unable to parse 'inputs'"),
        (
            b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}',
            "Unable to parse 'name'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FLOAT", "data": [1]}]}',
            "invalid datatype 'FLOAT' for input 'INPUT0'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, -2], "datatype": "FP32", "data": [1]}]}',
            "Unable to parse 'shape' of input 'INPUT0'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32",'
            b' "data": [1, 2]}]}',
            "shape [1, 3] needs 3 elements but 'data' holds 2",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32",'
            b' "data": ["a", "b"]}]}',
            "FP32 elements must be numbers",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32",'
            b' "data": [[1], [2, 3]]}]}',
            "Unable to parse 'data' of input 'INPUT0'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32"}]}',
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But no field is set",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1],'
            b' "parameters": {"binary_data_size": 4}}]}',
            "But set 'data' 'binary_data_size'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": {"triton_reserved": 1}}',
            "parameter keys starting with 'triton_' are reserved for Triton usage",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": {"priority": -1}}',
            "Unable to parse 'priority'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": {"custom": [1, 2]}}',
            "parameter 'custom' has invalid type",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "NOPE"}]}',
            "unexpected inference output 'NOPE' for model 'identity'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "INT32", "data": [1]}]}',
            "data-type is 'INT32', but model 'identity' expects 'FP32'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "FP32",'
            b' "data": [1, 2, 3]}]}',
            "unexpected shape for input 'INPUT0' for model 'identity'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [9, 1], "datatype": "FP32",'
            b' "data": [1, 2, 3, 4, 5, 6, 7, 8, 9]}]}',
            "batch-size must be <= 8",
        ),
        (
            b'{"inputs": [{"name": "WRONG", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}',
            "unexpected inference input 'WRONG' for model 'identity'",
        ),
    ],
)
def test_bad_json_requests(session, base_url, still_serving, body, message):
    reply = session.post(infer_url(base_url), data=body)
    assert reply.status_code == 400, reply.text
    assert message in error_of(reply)
    still_serving()


def test_int_ranges(session, base_url):
    def send(dt: str, data: list) -> requests.Response:
        inputs = [{"name": "INPUT0", "shape": [len(data)], "datatype": dt, "data": data}]
        return session.post(infer_url(base_url, "all_types"), json={"inputs": inputs})

    reply = send("UINT8", [256])
    # all_types wants every input; the value check comes first
    assert reply.status_code == 400
    assert "value out of range for UINT8" in error_of(reply)
    reply = send("INT32", [1.5])
    assert "INT32 elements must be integers" in error_of(reply)
    reply = send("UINT64", [-1, 2**64 - 1])
    assert "UINT64 elements must be integers in [0, 18446744073709551615]" in error_of(reply)
    reply = send("BOOL", [1, 0])
    assert "BOOL elements must be true or false" in error_of(reply)
    reply = send("BYTES", ["a", 1])
    assert "BYTES elements must be strings" in error_of(reply)


def test_bad_binary_requests(session, base_url, still_serving):
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
    # truncated binary part
    body, headers = binary_body(header, b"\x00" * 10)
    reply = session.post(infer_url(base_url), data=body, headers=headers)
    assert reply.status_code == 400
    assert error_of(reply) == (
        "unexpected size for input 'INPUT0', expecting 6 additional bytes for model 'identity'"
    )
    # extra bytes after the last input
    body, headers = binary_body(header, b"\x00" * 20)
    reply = session.post(infer_url(base_url), data=body, headers=headers)
    assert reply.status_code == 400
    assert error_of(reply) == "unexpected additional input data for model 'identity'"
    # size that does not match the shape
    header["inputs"][0]["parameters"]["binary_data_size"] = 12
    body, headers = binary_body(header, b"\x00" * 12)
    reply = session.post(infer_url(base_url), data=body, headers=headers)
    assert reply.status_code == 400
    assert "unexpected size 12 for input 'INPUT0', expecting 16 bytes" in error_of(reply)
    # header length past the body, and not a number
    reply = session.post(
        infer_url(base_url), data=b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    assert reply.status_code == 400
    assert "inference header size should be in range (0, 2), got: 99" in error_of(reply)
    reply = session.post(
        infer_url(base_url), data=b"{}", headers={"Inference-Header-Content-Length": "x"}
    )
    assert reply.status_code == 400
    assert "Unable to parse Inference-Header-Content-Length" in error_of(reply)
    # binary_data_size without the header-length header
    reply = session.post(infer_url(base_url), json=header)
    assert reply.status_code == 400
    assert "must specify valid 'Inference-Header-Content-Length'" in error_of(reply)
    # a BYTES tensor whose length prefix runs past its data
    bytes_header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 6},
            }
        ]
    }
    body, headers = binary_body(bytes_header, struct.pack("<I", 9) + b"ab")
    reply = session.post(infer_url(base_url, "bytes_id"), data=body, headers=headers)
    assert reply.status_code == 400
    assert error_of(reply) == (
        "string element 0 of inference input 'INPUT0' for model 'bytes_id' claims 9 bytes, "
        "but only 2 bytes are left"
    )
    still_serving()


def test_oversize_body(session, base_url, still_serving):
    data = [0.0] * (MAX_INPUT // 4)
    body = {
        "inputs": [{"name": "INPUT0", "shape": [1, len(data)], "datatype": "FP32", "data": data}]
    }
    reply = session.post(infer_url(base_url), json=body)
    assert reply.status_code == 400
    assert f"exceeds the maximum allowed value of {MAX_INPUT} bytes" in error_of(reply)
    assert "--http-max-input-size" in error_of(reply)
    # chunked, without Content-Length
    payload = json.dumps(body).encode()
    reply = session.post(
        infer_url(base_url), data=iter([payload[: len(payload) // 2], payload[len(payload) // 2 :]])
    )
    assert reply.status_code == 400
    assert "exceeds the maximum allowed value" in error_of(reply)
    # a small gzip body that inflates beyond the limit
    reply = session.post(
        infer_url(base_url),
        data=gzip.compress(b" " * (MAX_INPUT * 2)),
        headers={"Content-Encoding": "gzip"},
    )
    assert reply.status_code == 400
    assert "exceeds the maximum allowed value" in error_of(reply)
    still_serving()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/identity/infer"),
        ("POST", "/v2/health/ready"),
        ("POST", "/v2"),
        ("DELETE", "/v2/models/identity"),
        ("POST", "/v2/models/identity/config"),
        ("GET", "/v2/repository/index"),
        ("GET", "/v2/systemsharedmemory/register"),
        ("POST", "/v2/systemsharedmemory/status"),
        ("PUT", "/v2/logging"),
        ("GET", "/v2/models/text/generate"),
    ],
)
def test_wrong_method(session, base_url, still_serving, method, path):
    reply = session.request(method, base_url + path)
    assert reply.status_code == 405
    assert error_of(reply) == "Method Not Allowed"
    still_serving()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/models/identity",
        "/v2/",
        "/v2/models",
        "/v2/models/identity/versions/x",
        "/v2/models/identity/versions/1/nope",
        "/v2/models/identity/extra/infer",
        "/v2/health/alive",
        "/v2/systemsharedmemory/region/x",
    ],
)
def test_unknown_paths(session, base_url, path):
    reply = session.get(base_url + path)
    assert reply.status_code == 404
    assert error_of(reply) == "Not Found"


def test_errors_by_kind(session, base_url, still_serving):
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
    # NOT_FOUND
    reply = session.post(infer_url(base_url, "missing"), json=body)
    assert reply.status_code == 404
    assert error_of(reply) == "Request for unknown model: 'missing' is not found"
    reply = session.get(f"{base_url}/v2/models/missing")
    assert reply.status_code == 404
    reply = session.post(f"{base_url}/v2/models/identity/versions/7/infer", json=body)
    assert reply.status_code == 404
    assert "version 7 is not found" in error_of(reply)
    # UNSUPPORTED: decoupled model on /infer, CUDA shared memory, tracing
    reply = session.post(infer_url(base_url, "square"), json=body)
    assert reply.status_code == 501
    assert (
        error_of(reply) == "HTTP end point doesn't support models with decoupled transaction policy"
    )
    reply = session.get(f"{base_url}/v2/cudasharedmemory/status")
    assert reply.status_code == 501
    assert "CUDA shared memory is not supported" in error_of(reply)
    reply = session.post(
        f"{base_url}/v2/cudasharedmemory/region/r/register",
        json={"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 4},
    )
    assert reply.status_code == 501
    reply = session.post(f"{base_url}/v2/cudasharedmemory/unregister")
    assert reply.status_code == 501
    reply = session.get(f"{base_url}/v2/trace/setting")
    assert reply.status_code == 501
    # UNAVAILABLE: client shared memory is off on this server
    reply = session.post(
        f"{base_url}/v2/systemsharedmemory/region/r/register",
        json={"key": "/k", "byte_size": 4},
    )
    assert reply.status_code == 503
    assert "--allow-client-shm=true" in error_of(reply)
    shm_body = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 1],
                "datatype": "FP32",
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4},
            }
        ]
    }
    reply = session.post(infer_url(base_url), json=shm_body)
    assert reply.status_code == 503
    assert "Client shared memory is disabled" in error_of(reply)
    # status lists nothing (nothing can be registered)
    reply = session.get(f"{base_url}/v2/systemsharedmemory/status")
    assert reply.status_code == 200
    assert reply.json() == []
    still_serving()


def test_health_and_ready_bodies(session, base_url):
    reply = session.get(f"{base_url}/v2/health/live")
    assert reply.status_code == 200
    assert reply.content == b""
    reply = session.get(f"{base_url}/v2/models/identity/ready")
    assert reply.status_code == 200
    reply = session.get(f"{base_url}/v2/models/missing/ready")
    assert reply.status_code == 400
    assert error_of(reply) == "Model version not ready"
    # a URL-encoded model name is decoded
    reply = session.get(f"{base_url}/v2/models/%69dentity")
    assert reply.status_code == 200
    assert reply.json()["name"] == "identity"
    # query strings are ignored
    reply = session.get(f"{base_url}/v2/models/identity?x=1")
    assert reply.status_code == 200
