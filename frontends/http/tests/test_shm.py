"""System shared memory through tritonclient: register, status, inputs and outputs in regions,
unregister; and the errors around it."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor


@pytest.fixture
def regions(client):
    """Create POSIX shared-memory regions; everything is unregistered and destroyed after."""
    made = []

    def create(name: str, byte_size: int):
        key = f"/nereid-http-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        made.append(handle)
        return key, handle

    client.unregister_system_shared_memory()
    yield create
    client.unregister_system_shared_memory()
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def test_register_status_unregister(client, regions):
    key, _ = regions("status_region", 64)
    client.register_system_shared_memory("status_region", key, 64)
    client.register_system_shared_memory("status_offset", key, 32, offset=16)
    status = client.get_system_shared_memory_status()
    by_name = {region["name"]: region for region in status}
    assert by_name == {
        "status_region": {"name": "status_region", "key": key, "offset": 0, "byte_size": 64},
        "status_offset": {"name": "status_offset", "key": key, "offset": 16, "byte_size": 32},
    }
    assert client.get_system_shared_memory_status("status_offset") == [by_name["status_offset"]]
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("status_region", key, 64)
    client.unregister_system_shared_memory("status_offset")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["status_region"]
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory"):
        client.get_system_shared_memory_status("status_offset")
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []


def test_register_errors(client, regions):
    key, _ = regions("small", 16)
    with pytest.raises(InferenceServerException, match="Unable to open shared memory region"):
        client.register_system_shared_memory("nope", "/nereid-no-such-key", 16)
    with pytest.raises(InferenceServerException, match="cannot hold offset"):
        client.register_system_shared_memory("too_big", key, 64)


def test_keys_cannot_reach_files_outside_dev_shm(client, tmp_path):
    """A key is one name under /dev/shm, as shm_open takes it: a path that climbs out, a
    directory, or a symbolic link is refused, so no client can map (and have outputs written
    into) a file of the server's."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"server file " * 8)
    link = f"/dev/shm/nereid-link-{uuid.uuid4().hex[:12]}"
    os.symlink(secret, link)
    try:
        for key in (
            os.path.relpath(secret, "/dev/shm"),
            "/" + os.path.relpath(secret, "/dev/shm"),
            link.removeprefix("/dev/shm"),
            "..",
            "/",
        ):
            with pytest.raises(InferenceServerException) as info:
                client.register_system_shared_memory("outside", key, 16)
            assert f"Unable to open shared memory region: '{key}'" in info.value.message()
        assert client.get_system_shared_memory_status() == []
    finally:
        os.unlink(link)
    assert secret.read_bytes() == b"server file " * 8


def test_a_region_truncated_by_its_client_is_an_error_not_a_crash(client, regions):
    """Mapped, the region's pages past the new end of file would raise SIGBUS in the server."""
    values = np.ones((1, 4), dtype=np.float32)
    key, handle = regions("shrinking", values.nbytes)
    shm.set_shared_memory_region(handle, [values])
    client.register_system_shared_memory("shrinking", key, values.nbytes)
    os.truncate(f"/dev/shm{key}", 0)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_shared_memory("shrinking", values.nbytes)
    with pytest.raises(InferenceServerException) as info:
        client.infer("identity", [tensor])
    assert info.value.status() == "400"
    assert "'shrinking' is smaller than when it was registered" in info.value.message()
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(values)
    output = httpclient.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("shrinking", values.nbytes)
    with pytest.raises(InferenceServerException, match="smaller than when it was registered"):
        client.infer("identity", [tensor], outputs=[output])
    assert client.infer("identity", [tensor]).as_numpy("OUTPUT0").tolist() == values.tolist()


def test_inputs_and_outputs_in_shared_memory(client, regions):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5
    size = values.nbytes
    in_key, in_handle = regions("input_data", size)
    out_key, out_handle = regions("output_data", size)
    shm.set_shared_memory_region(in_handle, [values])
    client.register_system_shared_memory("input_data", in_key, size)
    client.register_system_shared_memory("output_data", out_key, size)

    tensor = httpclient.InferInput("INPUT0", [3, 4], "FP32")
    tensor.set_shared_memory("input_data", size)
    output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
    output.set_shared_memory("output_data", size)
    result = client.infer("identity", [tensor], outputs=[output])

    out = result.get_output("OUTPUT0")
    assert out["shape"] == [3, 4]
    assert out["datatype"] == "FP32"
    assert "data" not in out
    assert out["parameters"]["shared_memory_region"] == "output_data"
    assert out["parameters"]["shared_memory_byte_size"] == size
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [3, 4]), values)


def test_bytes_and_offsets_in_shared_memory(client, regions):
    values = np.array([b"one", b"\x00two", b""], dtype=object)
    serialized = serialize_byte_tensor(values)
    data = serialized.item()
    key, handle = regions("bytes_region", 256)
    shm.set_shared_memory_region(handle, [serialized], offset=32)
    client.register_system_shared_memory("bytes_region", key, 256)

    tensor = httpclient.InferInput("INPUT0", [3], "BYTES")
    tensor.set_shared_memory("bytes_region", len(data), offset=32)
    # the output goes to the same region, further on; binary output would be refused
    output = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
    output.set_shared_memory("bytes_region", 100, offset=128)
    result = client.infer("bytes_id", [tensor], outputs=[output])
    out = result.get_output("OUTPUT0")
    assert out["parameters"]["shared_memory_byte_size"] == len(data)
    assert out["parameters"]["shared_memory_offset"] == 128
    got = shm.get_contents_as_numpy(handle, np.object_, [3], offset=128)
    assert list(got) == [b"one", b"\x00two", b""]


def test_shared_memory_request_errors(client, regions, base_url):
    key, _ = regions("err_region", 16)
    client.register_system_shared_memory("err_region", key, 16)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_shared_memory("missing_region", 16)
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory"):
        client.infer("identity", [tensor])
    tensor.set_shared_memory("err_region", 32)
    with pytest.raises(InferenceServerException, match="Invalid offset \\+ byte size"):
        client.infer("identity", [tensor])
    # output region too small for the result
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    output = httpclient.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("err_region", 8)
    with pytest.raises(InferenceServerException, match="should be at least 16 bytes"):
        client.infer("identity", [tensor], outputs=[output])
    # classification or binary data with shared memory on one output (tritonclient refuses to
    # send these, so they go raw)
    shm_params = {"shared_memory_region": "err_region", "shared_memory_byte_size": 16}
    for extra, message in (
        (
            {"classification": 1},
            "Output can't set both 'shared_memory_region' and 'classification'",
        ),
        ({"binary_data": True}, "Output can't set both 'shared_memory_region' and 'binary_data'"),
        ({"shared_memory_byte_size": None}, "no 'shared_memory_byte_size'"),
    ):
        params = {k: v for k, v in {**shm_params, **extra}.items() if v is not None}
        body = {
            "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
            "outputs": [{"name": "OUTPUT0", "parameters": params}],
        }
        reply = requests.post(f"{base_url}/v2/models/identity/infer", json=body, timeout=10)
        assert reply.status_code == 400
        assert message in reply.json()["error"]


def test_keys_live_under_dev_shm(regions):
    key, _ = regions("probe", 8)
    assert os.path.exists(os.path.join("/dev/shm", key.lstrip("/")))
