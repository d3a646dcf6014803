"""OpenTelemetry mode: spans exported over OTLP/HTTP to a collector on loopback, their
parent/child links, W3C trace context from an HTTP header and gRPC metadata, and sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tracing_testsupport import Collector, ports, start, wait_for

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def collector():
    collector = Collector()
    yield collector
    collector.close()


@pytest.fixture(scope="module")
def server(repo, collector):
    server = start(
        repo,
        [
            "mode=opentelemetry",
            f"opentelemetry,url={collector.url}",
            "opentelemetry,resource=service.name=nereid-test",
            "opentelemetry,bsp_schedule_delay=20",
            "rate=1",
            "level=TIMESTAMPS",
        ],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(server):
    http_url, grpc_url = ports(server)
    http = httpclient.InferenceServerClient(http_url)
    grpc = grpcclient.InferenceServerClient(grpc_url)
    yield http, grpc
    http.update_trace_settings(settings={"trace_rate": None})
    http.close()
    grpc.close()


@pytest.fixture(autouse=True)
def fresh(collector, clients):
    collector.take()


def traceparent() -> tuple[str, bytes, bytes]:
    n = next(_ids)
    trace_id = f"{0x4BF92F3577B34DA6A3CE929D0E0E4736 + n:032x}"
    span_id = f"{0x00F067AA0BA902B7 + n:016x}"
    return f"00-{trace_id}-{span_id}-01", bytes.fromhex(trace_id), bytes.fromhex(span_id)


def send(client, module, model, headers=None, request_id=""):
    data = np.array([1.0, 2.0, 3.0], np.float32)
    tensor = module.InferInput("IN", [3], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], headers=headers, request_id=request_id)
    np.testing.assert_array_equal(result.as_numpy("OUT"), data)


def spans_of(collector, count, trace_id=None):
    got = []

    def enough():
        got.extend(span for _, span in collector.take())
        mine = [s for s in got if trace_id is None or s.trace_id == trace_id]
        return mine if len(mine) >= count else None

    return wait_for(enough, 5.0) or got


def events(span):
    return [e.name for e in span.events]


def by_name(spans):
    return {span.name: span for span in spans}


def attributes(span):
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


@pytest.mark.parametrize("protocol", ["HTTP", "GRPC"])
def test_spans_continue_the_clients_trace(clients, collector, protocol):
    http, grpc = clients
    header, trace_id, client_span = traceparent()
    if protocol == "HTTP":
        send(http, httpclient, "ident", headers={"traceparent": header}, request_id="r1")
        front = ["HTTP_RECV_START", "HTTP_RECV_END", "HTTP_SEND_START", "HTTP_SEND_END"]
    else:
        send(grpc, grpcclient, "ident", headers={"traceparent": header}, request_id="r1")
        front = ["GRPC_WAIT_READ_START", "GRPC_WAIT_READ_END", "GRPC_SEND_START", "GRPC_SEND_END"]
    spans = by_name(spans_of(collector, 3, trace_id))
    assert set(spans) == {"InferRequest", "ident", "compute"}
    root, model, compute = spans["InferRequest"], spans["ident"], spans["compute"]
    assert {s.trace_id for s in spans.values()} == {trace_id}
    assert root.parent_span_id == client_span
    assert model.parent_span_id == root.span_id
    assert compute.parent_span_id == model.span_id
    assert events(root) == front
    assert events(model) == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
    assert events(compute) == [
        "COMPUTE_START",
        "COMPUTE_INPUT_END",
        "COMPUTE_OUTPUT_START",
        "COMPUTE_END",
    ]
    assert attributes(model) == {
        "triton.model_name": "ident",
        "triton.model_version": 1,
        "triton.trace_id": attributes(model)["triton.trace_id"],
        "triton.trace_parent_id": 0,
        "triton.request_id": "r1",
    }
    # nested in time, on the epoch clock
    assert root.start_time_unix_nano <= model.start_time_unix_nano <= compute.start_time_unix_nano
    assert compute.end_time_unix_nano <= model.end_time_unix_nano <= root.end_time_unix_nano
    assert root.start_time_unix_nano > 1_600_000_000 * 10**9
    assert collector.content_types and set(collector.content_types) == {"application/x-protobuf"}


def test_resource_attributes(clients, collector):
    http, _ = clients
    send(http, httpclient, "ident")
    exported = wait_for(lambda: collector.take() or None, 5.0)
    assert exported
    resource = exported[0][0]
    attrs = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert attrs["service.name"] == "nereid-test"


def test_child_spans_of_a_bls_call(clients, collector):
    http, _ = clients
    header, trace_id, _ = traceparent()
    send(http, httpclient, "caller", headers={"traceparent": header})
    spans = spans_of(collector, 5, trace_id)
    names = sorted(s.name for s in spans)
    assert names == ["InferRequest", "caller", "compute", "compute", "ident"]
    named = {s.name: s for s in spans if s.name != "compute"}
    caller, child = named["caller"], named["ident"]
    assert caller.parent_span_id == named["InferRequest"].span_id
    assert child.parent_span_id == caller.span_id  # the parent's model span
    child_attrs, caller_attrs = attributes(child), attributes(caller)
    assert child_attrs["triton.trace_parent_id"] == caller_attrs["triton.trace_id"]
    computes = [s for s in spans if s.name == "compute"]
    assert {c.parent_span_id for c in computes} == {caller.span_id, child.span_id}


def test_a_propagated_context_is_traced_whatever_the_rate(clients, collector):
    http, grpc = clients
    http.update_trace_settings(settings={"trace_rate": "1000"})
    try:
        for _ in range(3):
            send(http, httpclient, "ident")  # not sampled at 1 in 1000
        header, trace_id, _ = traceparent()
        send(grpc, grpcclient, "ident", headers={"traceparent": header})
        spans = spans_of(collector, 3, trace_id)
    finally:
        http.update_trace_settings(settings={"trace_rate": None})
    assert len(spans) == 3
    assert {s.trace_id for s in spans} == {trace_id}


def test_settings_in_opentelemetry_mode(clients, collector):
    http, grpc = clients
    settings = http.get_trace_settings()
    assert settings["trace_mode"] == "opentelemetry"
    assert settings["url"] == collector.url
    assert settings["bsp_schedule_delay"] == "20"
    assert "service.name=nereid-test" in settings["resource"]
    assert "trace_file" not in settings
    assert grpc.get_trace_settings(as_json=True)["settings"]["trace_mode"]["value"] == [
        "opentelemetry"
    ]


def test_new_trace_without_a_client_context(clients, collector):
    http, _ = clients
    send(http, httpclient, "ident")
    spans = spans_of(collector, 3)
    root = next(s for s in spans if s.name == "InferRequest")
    assert root.parent_span_id == b""
    assert len({s.trace_id for s in spans}) == 1
