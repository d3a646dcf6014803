"""Model repository control (explicit mode): index, load with a config override and with file
contents, unload; and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from nereid.testing import ModelRepositoryBuilder
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    builder = ModelRepositoryBuilder(tmp_path_factory.mktemp("repo") / "models")
    builder.identity("identity", "TYPE_FP32", "[ -1 ]", max_batch_size=8)
    builder.identity("second", "TYPE_INT32", "[ 2 ]", max_batch_size=0)
    return builder.root


@pytest.fixture(scope="module")
def server_options():
    return {"model_control_mode": "explicit", "load_model": ["identity"]}


def _infer_fp32(client, model: str, values: np.ndarray) -> np.ndarray:
    tensor = httpclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return client.infer(model, [tensor]).as_numpy("OUTPUT0")


def test_index_load_unload(client):
    index = client.get_model_repository_index()
    assert {"name": "identity", "version": "1", "state": "READY"} in index
    assert {"name": "second"} in index
    ready = client.get_model_repository_index(query_params=None, headers=None)
    assert ready == index
    client.load_model("second")
    assert client.is_model_ready("second")
    tensor = httpclient.InferInput("INPUT0", [2], "INT32")
    tensor.set_data_from_numpy(np.array([3, 4], dtype=np.int32))
    np.testing.assert_array_equal(client.infer("second", [tensor]).as_numpy("OUTPUT0"), [3, 4])
    client.unload_model("second")
    assert not client.is_model_ready("second")
    with pytest.raises(InferenceServerException) as failed:
        client.infer("second", [tensor])
    assert failed.value.status() == "503"
    entry = next(e for e in client.get_model_repository_index() if e["name"] == "second")
    assert entry["state"] == "UNAVAILABLE"


def test_index_ready_filter(base_url):
    everything = requests.post(f"{base_url}/v2/repository/index", timeout=10).json()
    ready = requests.post(f"{base_url}/v2/repository/index", json={"ready": True}, timeout=10)
    assert ready.status_code == 200
    names = {entry["name"] for entry in ready.json()}
    assert "identity" in names
    assert all(entry["state"] == "READY" for entry in ready.json())
    assert len(everything) >= len(ready.json())
    bad = requests.post(f"{base_url}/v2/repository/index", json={"ready": "yes"}, timeout=10)
    assert bad.status_code == 400
    assert "Unable to parse 'ready'" in bad.json()["error"]


def test_load_with_config_override(client):
    config = {
        "backend": "identity",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [3]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [3]}],
    }
    client.load_model("identity", config=json.dumps(config))
    loaded = client.get_model_config("identity")
    assert loaded["max_batch_size"] == 4
    assert loaded["input"][0]["dims"] == [3]
    values = np.array([[1, 2, 3]], dtype=np.float32)
    np.testing.assert_array_equal(_infer_fp32(client, "identity", values), values)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 4"):
        _infer_fp32(client, "identity", np.zeros((5, 3), dtype=np.float32))
    # back to the configuration on disk
    client.load_model("identity")
    assert client.get_model_config("identity")["max_batch_size"] == 8


def test_load_with_file_contents(client, base_url):
    config = {
        "backend": "identity",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    }
    client.load_model(
        "uploaded",
        config=json.dumps(config),
        files={"file:1/weights.bin": b"\x00\x01binary\xff", "file:labels.txt": b"a\nb\n"},
    )
    assert client.is_model_ready("uploaded", "1")
    values = np.array([0.5, 1.5], dtype=np.float32)
    np.testing.assert_array_equal(_infer_fp32(client, "uploaded", values), values)
    assert client.get_model_metadata("uploaded")["versions"] == ["1"]
    # unload_dependents is accepted (there are none)
    client.unload_model("uploaded", unload_dependents=True)
    assert not client.is_model_ready("uploaded")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"parameters": {"config": "{}", "file:1/model.bin": "not base64!"}},
            400,
            "failed to decode base64 content of 'file:1/model.bin'",
        ),
        ({"parameters": {"config": 7}}, 400, "Unable to parse parameter 'config'"),
        ({"parameters": {"colour": "blue"}}, 400, "unexpected load parameter 'colour'"),
        ({"parameters": []}, 400, "Unable to parse 'parameters'"),
        ({"parameters": {"config": "{not json"}}, 400, "invalid config JSON"),
        ({"parameters": {"file:1/model.bin": "AAAA"}}, 400, "'config' must be"),
    ],
)
def test_load_errors(base_url, client, body, status, message):
    reply = requests.post(f"{base_url}/v2/repository/models/second/load", json=body, timeout=10)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    assert client.is_server_live()


def test_unload_and_repository_errors(base_url):
    reply = requests.post(f"{base_url}/v2/repository/models/nowhere/load", timeout=10)
    assert reply.status_code == 500  # INTERNAL, as Triton answers
    assert reply.json()["error"] == (
        "failed to load 'nowhere', failed to poll from model repository"
    )
    reply = requests.post(
        f"{base_url}/v2/repository/models/identity/unload",
        json={"parameters": {"unload_dependents": "yes"}},
        timeout=10,
    )
    assert reply.status_code == 400
    assert "Unable to parse 'unload_dependents'" in reply.json()["error"]
    reply = requests.post(f"{base_url}/v2/repository/models/nowhere/unload", timeout=10)
    assert reply.status_code in (200, 404)  # the kernel's answer, passed through
    reply = requests.post(f"{base_url}/v2/repository/myrepo/index", timeout=10)
    assert reply.status_code == 501
    assert reply.json()["error"] == "'repository_name' specification is not supported"
    reply = requests.post(f"{base_url}/v2/repository/myrepo/models/identity/load", timeout=10)
    assert reply.status_code == 501
