"""Trace settings at run time over HTTP and gRPC (tritonclient), as Triton's trace extension has
them: shapes, per-model overrides that mirror the global setting, clearing with null / an empty
value, errors, and the settings taking effect on the requests that follow."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tracing_testsupport import ports, read_entries, start, traces_of, wait_for
from tritonclient.utils import InferenceServerException

_ids = itertools.count()
CLEAR = {"trace_level": None, "trace_rate": None, "trace_count": None, "log_frequency": None}


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    return tmp_path_factory.mktemp("trace") / "global.json"


@pytest.fixture(scope="module")
def server(repo, trace_file):
    server = start(repo, [f"triton,file={trace_file}", "rate=1", "level=TIMESTAMPS"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def urls(server):
    return ports(server)


@pytest.fixture
def http(urls):
    client = httpclient.InferenceServerClient(urls[0])
    yield client
    # back to the start-up state
    client.update_trace_settings("ident", CLEAR)
    client.update_trace_settings("ident_b", CLEAR)
    client.update_trace_settings(settings=CLEAR)
    client.close()


@pytest.fixture
def grpc(urls):
    client = grpcclient.InferenceServerClient(urls[1])
    yield client
    client.close()


def initial(file) -> dict:
    return {
        "trace_file": str(file),
        "trace_level": ["TIMESTAMPS"],
        "trace_rate": "1",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_mode": "triton",
    }


def grpc_settings(doc: dict) -> grpcclient.service_pb2.TraceSettingResponse:
    message = grpcclient.service_pb2.TraceSettingResponse()
    values = {k: {"value": v if isinstance(v, list) else [v]} for k, v in doc.items()}
    json_format.Parse(json.dumps({"settings": values}), message)
    return message


def test_trace_extension_is_listed(http, grpc):
    assert "trace" in http.get_server_metadata()["extensions"]
    assert "trace" in grpc.get_server_metadata().extensions


def test_get_settings(http, grpc, trace_file):
    expected = initial(trace_file)
    assert http.get_trace_settings() == expected
    assert http.get_trace_settings(model_name="ident") == expected
    assert grpc.get_trace_settings() == grpc_settings(expected)
    assert grpc.get_trace_settings(model_name="ident") == grpc_settings(expected)
    for client in (http, grpc):
        with pytest.raises(InferenceServerException, match="Request for unknown model : nope"):
            client.get_trace_settings(model_name="nope")


def test_model_settings_mirror_the_global_fields_they_do_not_set(http, grpc, trace_file):
    model = {**initial(trace_file), "trace_rate": "12", "log_frequency": "34"}
    assert http.update_trace_settings("ident", {"trace_rate": "12", "log_frequency": "34"}) == model
    # a global update reaches the fields the model does not set
    global_ = {**initial(trace_file), "trace_level": ["OFF"], "trace_rate": "56"}
    got = grpc.update_trace_settings(
        settings={"trace_level": ["OFF"], "trace_rate": "56"}, as_json=True
    )
    assert {k: v["value"] for k, v in got["settings"].items()} == {
        k: v if isinstance(v, list) else [v] for k, v in global_.items()
    }
    assert http.get_trace_settings("ident") == {**model, "trace_level": ["OFF"]}
    assert http.get_trace_settings("ident_b") == global_
    # clearing: the global field goes back to its start-up value, the model's mirrors again
    assert http.update_trace_settings(settings={"trace_rate": None}) == {
        **global_,
        "trace_rate": "1",
    }
    cleared = grpc.update_trace_settings("ident", {"trace_rate": None, "trace_level": None})
    expected = {**initial(trace_file), "log_frequency": "34", "trace_level": ["OFF"]}
    assert cleared == grpc_settings(expected)
    # a model with no field of its own left uses the global setting
    http.update_trace_settings("ident", {"log_frequency": None})
    http.update_trace_settings(settings={"trace_level": ["TIMESTAMPS", "TENSORS"]})
    assert http.get_trace_settings("ident")["trace_level"] == ["TIMESTAMPS", "TENSORS"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trace_file": "other.json"}, "trace file location can not be updated"),
        ({"trace_rate": "abc"}, "Unable to parse 'trace_rate', got: abc"),
        ({"trace_count": "-2"}, "Unable to parse 'trace_count'"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "Expect only one trace level 'OFF'"),
        ({"trace_level": ["LOUD"]}, "invalid trace level 'LOUD'"),
        ({"trace_rate": "0"}, "invalid trace setting :sample rate must be non-zero"),
        ({"trace_mode": "opentelemetry"}, "can not be updated at run time"),
        ({"trace_colour": "red"}, "unknown trace setting 'trace_colour'"),
    ],
)
def test_invalid_updates(http, grpc, settings, message):
    for client in (http, grpc):
        with pytest.raises(InferenceServerException, match=message):
            client.update_trace_settings(settings=settings)
    assert http.get_trace_settings()["trace_rate"] == "1"


def test_methods_and_restrictions(urls):
    url = f"http://{urls[0]}/v2/trace/setting"
    assert requests.put(url, json={}).status_code == 405
    reply = requests.post(url, data=b"[1]")
    assert reply.status_code == 400


def _send(client, module, model, rid, count=1):
    data = np.array([1.0, 2.0], np.float32)
    for i in range(count):
        tensor = module.InferInput("IN", [2], "FP32")
        tensor.set_data_from_numpy(data)
        client.infer(model, [tensor], request_id=f"{rid}-{i}")


def _traced(path, prefix, expected=None, timeout=3.0):
    def ids():
        return sorted(
            t["request_id"]
            for t in traces_of(read_entries(path)).values()
            if t.get("request_id", "").startswith(prefix + "-")
        )

    if expected is not None:
        wait_for(lambda: len(ids()) >= len(expected), timeout)
    return ids()


def test_rate_set_over_http_takes_effect(http, trace_file):
    http.update_trace_settings(settings={"trace_rate": "3"})
    rid = f"rate-{next(_ids)}"
    _send(http, httpclient, "ident", rid, count=7)
    # every third request: the 3rd and the 6th
    assert _traced(trace_file, rid, [f"{rid}-2", f"{rid}-5"]) == [f"{rid}-2", f"{rid}-5"]


def test_level_and_model_override_set_over_grpc_take_effect(http, grpc, trace_file):
    grpc.update_trace_settings(settings={"trace_level": ["OFF"]})
    grpc.update_trace_settings("ident_b", {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
    off, on = f"off-{next(_ids)}", f"on-{next(_ids)}"
    _send(grpc, grpcclient, "ident", off, count=3)
    _send(grpc, grpcclient, "ident_b", on, count=2)
    assert _traced(trace_file, on, [f"{on}-0", f"{on}-1"]) == [f"{on}-0", f"{on}-1"]
    assert _traced(trace_file, off) == []
    # the override cleared: ident_b follows the global OFF
    grpc.update_trace_settings("ident_b", {"trace_level": [], "trace_rate": []})
    again = f"again-{next(_ids)}"
    _send(http, httpclient, "ident_b", again, count=2)
    grpc.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
    marker = f"marker-{next(_ids)}"
    _send(http, httpclient, "ident_b", marker)
    assert _traced(trace_file, marker, [f"{marker}-0"]) == [f"{marker}-0"]
    assert _traced(trace_file, again) == []


def test_no_trace_flag_no_tracing(repo):
    server = start(repo, [], frontends=["http"])
    try:
        http_url = f"127.0.0.1:{server.server.frontends['http'].port}"
        assert requests.get(f"http://{http_url}/v2/trace/setting").status_code == 501
        client = httpclient.InferenceServerClient(http_url)
        assert "trace" not in client.get_server_metadata()["extensions"]
        assert server.api.tracer is None
        assert not server.server.observers.on_arrival
    finally:
        server.stop()
