"""Triton trace files: timestamps through HTTP, gRPC and in-process, child traces of a BLS-style
model and of ensemble steps, tensors, log-frequency files and the trace count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tracing_testsupport import (
    HAS_ENSEMBLE,
    ports,
    read_entries,
    start,
    traces_of,
    wait_for,
    wait_for_traces,
)

CORE = [
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
]
_ids = itertools.count()


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    return tmp_path_factory.mktemp("trace") / "trace.json"


@pytest.fixture(scope="module")
def server(repo, trace_file):
    server = start(repo, [f"triton,file={trace_file}", "rate=1", "level=TIMESTAMPS"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(server):
    http_url, grpc_url = ports(server)
    http = httpclient.InferenceServerClient(http_url)
    grpc = grpcclient.InferenceServerClient(grpc_url)
    yield http, grpc
    http.close()
    grpc.close()


def infer(client, module, model: str, values=(1.0, 2.0, 3.0), **kwargs):
    data = np.array(values, dtype=np.float32)
    tensor = module.InferInput("IN", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], **kwargs)
    np.testing.assert_array_equal(result.as_numpy("OUT"), data)


def trace_by_request(path, request_id, timeout=5.0):
    def find():
        for tid, trace in traces_of(read_entries(path)).items():
            if trace.get("request_id") == request_id and "parent_id" not in trace:
                return tid, trace
        return None

    found = wait_for(find, timeout)
    assert found, f"no trace with request_id {request_id!r}"
    return found


def children_of(path, parent_id, count, timeout=5.0):
    def find():
        found = {
            tid: t
            for tid, t in traces_of(read_entries(path)).items()
            if t.get("parent_id") == parent_id
        }
        return found if len(found) >= count else None

    return wait_for(find, timeout) or {}


def names(trace):
    return [name for name, _ in trace["timestamps"]]


def assert_ordered(trace):
    stamps = [ns for _, ns in trace["timestamps"]]
    assert stamps == sorted(stamps), trace["timestamps"]
    assert all(ns > 0 for ns in stamps)


def test_http_request_trace(clients, trace_file):
    http, _ = clients
    rid = f"http-{next(_ids)}"
    infer(http, httpclient, "ident", request_id=rid)
    _, trace = trace_by_request(trace_file, rid)
    assert trace["model_name"] == "ident"
    assert trace["model_version"] == 1
    assert "parent_id" not in trace
    http_stamps = ["HTTP_RECV_START", "HTTP_RECV_END", *CORE, "HTTP_SEND_START", "HTTP_SEND_END"]
    assert names(trace) == http_stamps
    assert_ordered(trace)


def test_grpc_request_trace(clients, trace_file):
    _, grpc = clients
    rid = f"grpc-{next(_ids)}"
    infer(grpc, grpcclient, "ident", request_id=rid)
    _, trace = trace_by_request(trace_file, rid)
    grpc_stamps = [
        "GRPC_WAIT_READ_START",
        "GRPC_WAIT_READ_END",
        *CORE,
        "GRPC_SEND_START",
        "GRPC_SEND_END",
    ]
    assert names(trace) == grpc_stamps
    assert_ordered(trace)


def test_in_process_request_trace(server, trace_file):
    rid = f"inproc-{next(_ids)}"
    out = server.infer("ident", {"IN": np.array([5.0], np.float32)}, id=rid)
    np.testing.assert_array_equal(out["OUT"], [5.0])
    _, trace = trace_by_request(trace_file, rid)
    assert names(trace) == CORE
    assert_ordered(trace)


def test_bls_child_trace_is_linked_to_its_parent(clients, trace_file):
    http, _ = clients
    rid = f"bls-{next(_ids)}"
    infer(http, httpclient, "caller", request_id=rid)
    parent_id, parent = trace_by_request(trace_file, rid)
    children = children_of(trace_file, parent_id, 1)
    assert len(children) == 1
    (child,) = children.values()
    assert child["model_name"] == "ident"
    assert names(child) == CORE
    assert_ordered(child)
    # the child ran inside its parent's execution
    p, c = dict(parent["timestamps"]), dict(child["timestamps"])
    assert p["COMPUTE_START"] <= c["REQUEST_START"] <= c["REQUEST_END"] <= p["COMPUTE_END"]


@pytest.mark.skipif(not HAS_ENSEMBLE, reason="nereid-ensemble is not installed")
def test_ensemble_step_traces_are_children_of_the_ensemble(clients, trace_file):
    http, grpc = clients
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        rid = f"ensemble-{next(_ids)}"
        infer(client, module, "pipeline", request_id=rid)
        ensemble_id, ensemble = trace_by_request(trace_file, rid)
        assert ensemble["model_name"] == "pipeline"
        stamps = names(ensemble)
        assert "REQUEST_START" in stamps and "REQUEST_END" in stamps
        assert_ordered(ensemble)
        steps = children_of(trace_file, ensemble_id, 2)
        assert sorted(t["model_name"] for t in steps.values()) == ["ident", "ident_b"]
        e = dict(ensemble["timestamps"])
        ordered = sorted(steps.values(), key=lambda t: dict(t["timestamps"])["REQUEST_START"])
        assert [t["model_name"] for t in ordered] == ["ident", "ident_b"]
        for step in ordered:
            assert names(step) == CORE
            assert step["request_id"] == rid  # steps carry the ensemble request's id
            s = dict(step["timestamps"])
            assert e["REQUEST_START"] <= s["REQUEST_START"] <= s["REQUEST_END"] <= e["REQUEST_END"]


def test_tensors_level(clients, trace_file):
    http, _ = clients
    http.update_trace_settings("ident_b", {"trace_level": ["TIMESTAMPS", "TENSORS"]})
    try:
        rid = f"tensors-{next(_ids)}"
        infer(http, httpclient, "ident_b", values=(1.5, -2.0, 3.0), request_id=rid)
        _, trace = trace_by_request(trace_file, rid)
    finally:
        http.update_trace_settings("ident_b", {"trace_level": None})
    assert trace["tensors"] == [
        ("TENSOR_QUEUE_INPUT", {"name": "IN", "data": "1.5,-2,3", "shape": "3", "dtype": "FP32"}),
        (
            "TENSOR_BACKEND_OUTPUT",
            {"name": "OUT", "data": "1.5,-2,3", "shape": "3", "dtype": "FP32"},
        ),
    ]
    assert names(trace)[2:-2] == CORE


def test_failed_request_is_traced(clients, trace_file):
    http, _ = clients
    rid = f"bad-{next(_ids)}"
    tensor = httpclient.InferInput("IN", [2], "INT32")
    tensor.set_data_from_numpy(np.array([1, 2], np.int32))
    with pytest.raises(Exception, match="data-type"):
        http.infer("ident", [tensor], request_id=rid)
    _, trace = trace_by_request(trace_file, rid)
    # refused before it was queued (api.infer raised: the frontend never saw a trace)
    assert names(trace) == ["REQUEST_START", "REQUEST_END"]
    assert_ordered(trace)


def test_log_frequency_writes_numbered_files(repo, tmp_path):
    path = tmp_path / "trace.json"
    server = start(
        repo,
        [f"triton,file={path}", "triton,log-frequency=2", "rate=1", "level=TIMESTAMPS"],
        frontends=[],
    )
    try:
        for i in range(5):
            server.infer("ident", {"IN": np.array([float(i)], np.float32)}, id=f"lf-{i}")
        wait_for(lambda: (tmp_path / "trace.json.1").exists())
        assert not path.exists()
        assert not (tmp_path / "trace.json.2").exists()  # the fifth waits for the stop
    finally:
        server.stop()
    ids = []
    for index in range(3):
        traces = traces_of(read_entries(tmp_path / f"trace.json.{index}"))
        ids.append(sorted(t["request_id"] for t in traces.values()))
    assert ids == [["lf-0", "lf-1"], ["lf-2", "lf-3"], ["lf-4"]]


def test_count_limits_the_traces(repo, tmp_path):
    path = tmp_path / "trace.json"
    server = start(
        repo,
        [f"triton,file={path}", "rate=2", "count=2", "level=TIMESTAMPS"],
        frontends=[],
    )
    try:
        for i in range(10):
            server.infer("ident", {"IN": np.array([float(i)], np.float32)}, id=f"c-{i}")
        traces = wait_for_traces(path, 2)
        assert server.api.tracer.get_settings()["trace_count"] == "0"
    finally:
        server.stop()
    # rate 2: the 2nd and 4th requests; then the count is spent
    assert sorted(t["request_id"] for t in traces.values()) == ["c-1", "c-3"]
    assert len(traces_of(read_entries(path))) == 2
