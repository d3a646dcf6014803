"""Every non-inference RPC of GRPCInferenceService, and grpc.health.v1.Health/Check."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from nereid_grpc.protos import health_pb2
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def _fails(call):
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def _infer(client, model, data):
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(model, [tensor])


def test_health(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identity")
    assert client.is_model_ready("identity", "1")
    assert not client.is_model_ready("identity", "2")
    assert not client.is_model_ready("missing")
    status, message = _fails(lambda: client.is_model_ready("identity", "one"))
    assert status == "StatusCode.INVALID_ARGUMENT" and "version" in message


def test_grpc_health_check(url):
    with grpc.insecure_channel(url) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        response = check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            next(iter(watch(health_pb2.HealthCheckRequest())))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_server_metadata(client):
    meta = client.get_server_metadata()
    assert meta.name == "nereid"
    assert meta.version
    assert "model_repository" in meta.extensions
    assert "system_shared_memory" in meta.extensions


def test_model_metadata(client):
    meta = client.get_model_metadata("identity")
    assert (meta.name, list(meta.versions), meta.platform) == ("identity", ["1"], "identity")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "FP32", [-1, 16])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("OUTPUT0", "FP32", [-1, 16])
    ]
    as_json = client.get_model_metadata("repeat", as_json=True)
    assert [t["name"] for t in as_json["inputs"]] == ["IN", "DELAY", "WAIT"]
    status, message = _fails(lambda: client.get_model_metadata("missing"))
    assert status == "StatusCode.NOT_FOUND" and "missing" in message


def test_model_config(client):
    config = client.get_model_config("repeat").config
    assert config.name == "repeat"
    assert config.backend == "repeat"
    assert config.model_transaction_policy.decoupled
    assert [i.name for i in config.input] == ["IN", "DELAY", "WAIT"]
    config = client.get_model_config("identity", "1", as_json=True)["config"]
    assert config["max_batch_size"] == 8
    status, _ = _fails(lambda: client.get_model_config("missing"))
    assert status == "StatusCode.NOT_FOUND"


def test_model_statistics(client):
    before = client.get_inference_statistics("identity").model_stats[0]
    _infer(client, "identity", np.zeros((2, 16), dtype=np.float32))
    stats = client.get_inference_statistics("identity", "1").model_stats
    assert len(stats) == 1
    after = stats[0]
    assert (after.name, after.version) == ("identity", "1")
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_count == before.inference_count + 2
    assert after.execution_count == before.execution_count + 1
    assert after.inference_stats.success.ns > 0
    assert after.last_inference > 0
    assert any(b.batch_size == 2 for b in after.batch_stats)
    everything = client.get_inference_statistics()
    assert {"identity", "repeat", "echo"} <= {s.name for s in everything.model_stats}
    status, _ = _fails(lambda: client.get_inference_statistics("missing"))
    assert status == "StatusCode.NOT_FOUND"


def test_decoupled_response_statistics(client):
    results = []
    client.start_stream(callback=lambda result, error: results.append((result, error)))
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([2], dtype=np.int32))
    client.async_stream_infer("square", [tensor])
    client.stop_stream()
    assert len(results) == 2
    stats = client.get_inference_statistics("square").model_stats[0]
    assert set(stats.response_stats) >= {"0", "1", "2"}
    assert stats.response_stats["0"].success.count >= 1
    assert stats.response_stats["2"].empty_response.count >= 1


def test_repository_index(client):
    index = client.get_model_repository_index()
    rows = {(m.name, m.version, m.state) for m in index.models}
    assert ("identity", "1", "READY") in rows
    assert ("repeat", "1", "READY") in rows
    ready = client.get_model_repository_index(as_json=True)
    assert all(m.get("state") == "READY" for m in ready["models"])


def test_repository_name_is_unsupported(url):
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call, request in (
            (stub.RepositoryIndex, service_pb2.RepositoryIndexRequest(repository_name="r")),
            (
                stub.RepositoryModelLoad,
                service_pb2.RepositoryModelLoadRequest(repository_name="r", model_name="spare"),
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(request)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "'repository_name' specification is not supported" in info.value.details()


def test_load_with_config_and_files_then_unload(client):
    config = {
        "backend": "identity",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    }
    client.load_model(
        "uploaded", config=json.dumps(config), files={"file:1/weights.bin": b"\x00\x01"}
    )
    assert client.is_model_ready("uploaded")
    result = _infer(client, "uploaded", np.array([1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [1.0, 2.0])
    client.unload_model("uploaded", unload_dependents=True)
    assert not client.is_model_ready("uploaded")


def test_reload_with_a_config_override(client):
    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    states = {m.name: m.state for m in client.get_model_repository_index().models}
    assert states["spare"] == "UNAVAILABLE"
    override = {
        "backend": "identity",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
    }
    client.load_model("spare", config=json.dumps(override))
    assert client.get_model_config("spare").config.max_batch_size == 4
    client.load_model("spare")


def test_load_errors(client, url):
    _, message = _fails(lambda: client.load_model("not-in-repository"))
    assert "failed to load 'not-in-repository'" in message
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.RepositoryModelLoadRequest(model_name="spare")
        request.parameters["config"].bytes_param = b"{}"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected string_param" in info.value.details()
        request = service_pb2.RepositoryModelLoadRequest(model_name="spare")
        request.parameters["bogus"].string_param = "x"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert "unrecognized load parameter 'bogus'" in info.value.details()
        request = service_pb2.RepositoryModelUnloadRequest(model_name="spare")
        request.parameters["unload_dependents"].string_param = "yes"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelUnload(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_log_settings(client):
    settings = client.get_log_settings(as_json=True)["settings"]
    assert set(settings) == {
        "log_file",
        "log_info",
        "log_warning",
        "log_error",
        "log_verbose_level",
        "log_format",
    }
    original = client.get_log_settings().settings
    try:
        updated = client.update_log_settings({"log_verbose_level": 2, "log_format": "ISO8601"})
        assert updated.settings["log_verbose_level"].uint32_param == 2
        assert updated.settings["log_format"].string_param == "ISO8601"
        assert client.get_log_settings().settings["log_verbose_level"].uint32_param == 2
    finally:
        client.update_log_settings(
            {
                "log_verbose_level": original["log_verbose_level"].uint32_param,
                "log_format": original["log_format"].string_param,
                "log_info": original["log_info"].bool_param,
            }
        )
    status, message = _fails(lambda: client.update_log_settings({"log_file": "/tmp/x.log"}))
    assert status == "StatusCode.UNIMPLEMENTED" and "log file location" in message
    status, message = _fails(lambda: client.update_log_settings({"log_format": "json"}))
    assert status == "StatusCode.INVALID_ARGUMENT" and "log_format" in message


@pytest.mark.parametrize(
    ("key", "kind", "value", "expected"),
    [
        ("log_info", "uint32_param", 1, "expect boolean for 'log_info'"),
        ("log_verbose_level", "bool_param", True, "expect int32 for 'log_verbose_level'"),
        ("log_format", "bool_param", True, "expect string for 'log_format'"),
        ("log_colour", "string_param", "red", "log_colour"),
    ],
)
def test_log_settings_type_errors(url, key, kind, value, expected):
    request = service_pb2.LogSettingsRequest()
    setattr(request.settings[key], kind, value)
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.LogSettings(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in info.value.details()


def test_trace_setting_is_unavailable(client):
    status, message = _fails(lambda: client.get_trace_settings())
    assert status == "StatusCode.UNAVAILABLE"
    assert "trace" in message
