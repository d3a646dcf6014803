"""Test support for nereid-tracing: models, servers, a trace-file reader, an OTLP collector.

Models: ``ident`` and ``ident_b`` (identity, FP32 [-1]); ``caller`` (the ``caller`` backend
below: calls ``ident`` through the kernel API for each request, naming its request as the
parent, as a BLS model does, and answers with the result); ``pipeline`` (an ensemble
``ident`` -> ``ident_b``, when nereid-ensemble is installed).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nereid
from nereid.backend import Backend, Model, ModelInstance
from nereid.inprocess import InProcessServer
from nereid.observers import TRACE_PARENT_KEY
from nereid.testing import ModelRepositoryBuilder
from nereid.types import InferenceRequest, InferenceResponse, Tensor

HAS_ENSEMBLE = importlib.util.find_spec("nereid_ensemble") is not None

IDENTITY = """
backend: "identity"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
CALLER = """
backend: "caller"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
PIPELINE = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "ident" model_version: -1
      input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "mid" } },
    { model_name: "ident_b" model_version: -1
      input_map { key: "IN" value: "mid" } output_map { key: "OUT" value: "OUT" } }
  ]
}
"""


class CallerInstance(ModelInstance):
    """For each request: infer ``ident`` through the kernel API as a child request."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def execute(self, requests: list[InferenceRequest]) -> None:
        for request in requests:
            child = InferenceRequest("ident", [Tensor("IN", request.inputs["IN"].data)])
            child.context[TRACE_PARENT_KEY] = request
            try:
                answer = self.api.run_coroutine(self.api.infer_async(child))
            except Exception as exc:
                request.fail(exc)
                continue
            request.respond(InferenceResponse([Tensor("OUT", answer.as_numpy("OUT"))]))


class CallerModel(Model):
    def __init__(self, api: Any) -> None:
        self.api = api

    def create_instance(self, spec: Any) -> ModelInstance:
        return CallerInstance(self.api)


class CallerBackend(Backend):
    def create_model(self, config: Any, path: Path) -> Model:
        return CallerModel(self.context.api)


class CallerPlugin:
    @nereid.hookimpl
    def register_backends(self, registry: Any) -> None:
        registry.add("caller", lambda context: CallerBackend(context))


def build_repository(root: Path) -> Path:
    builder = ModelRepositoryBuilder(root)
    builder.add("ident", IDENTITY)
    builder.add("ident_b", IDENTITY)
    builder.add("caller", CALLER)
    if HAS_ENSEMBLE:
        builder.add("pipeline", PIPELINE)
    return root


def start(repo: Path, trace_config: list[str], **options: Any) -> InProcessServer:
    options.setdefault("frontends", ["http", "grpc"])
    options.setdefault("http_port", 0)
    options.setdefault("grpc_port", 0)
    options.setdefault("http_address", "127.0.0.1")
    options.setdefault("grpc_address", "127.0.0.1")
    return InProcessServer(
        str(repo), trace_config=trace_config, plugins=[CallerPlugin()], **options
    ).start()


def ports(server: InProcessServer) -> tuple[str, str]:
    frontends = server.server.frontends
    return (
        f"127.0.0.1:{frontends['http'].port}",
        f"127.0.0.1:{frontends['grpc'].port}",
    )


def read_entries(path: Path | str) -> list[dict[str, Any]]:
    text = Path(path).read_text() if Path(path).exists() else ""
    return json.loads(text) if text else []


def traces_of(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Entries grouped by trace id: model entry fields, ordered timestamps, tensors."""
    traces: dict[int, dict[str, Any]] = {}
    for entry in entries:
        trace = traces.setdefault(entry["id"], {"timestamps": [], "tensors": []})
        if "model_name" in entry:
            trace.update({k: v for k, v in entry.items() if k != "id"})
        elif "timestamps" in entry:
            trace["timestamps"].extend((t["name"], t["ns"]) for t in entry["timestamps"])
        elif "activity" in entry:
            trace["tensors"].append((entry["activity"], entry["tensor"]))
    return traces


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    """Poll until ``predicate()`` is truthy (a trace is written just after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def wait_for_traces(path: Path | str, count: int, timeout: float = 5.0) -> dict[int, Any]:
    def enough() -> dict[int, Any] | None:
        traces = traces_of(read_entries(path))
        return traces if len(traces) >= count else None

    return wait_for(enough, timeout) or traces_of(read_entries(path))


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: ``POST /v1/traces`` with protobuf bodies."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.pb = trace_service_pb2
        self.spans: list[Any] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = collector.pb.ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    collector.content_types.append(self.headers.get("Content-Type", ""))
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            collector.spans.extend(
                                (resource_spans.resource, span) for span in scope_spans.spans
                            )
                reply = collector.pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> list[Any]:
        with self.lock:
            spans, self.spans = self.spans, []
        return spans

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
