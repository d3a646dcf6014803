"""OpenTelemetry mode: each trace as spans, exported over OTLP/HTTP by a batch span processor.

The spans are Triton's: a root span ``InferRequest`` (the frontend's receive and send
timestamps as events; its parent is the client's span when the request carried a W3C
``traceparent``), a span per model request named after the model (events REQUEST_START,
QUEUE_START, REQUEST_END; attributes ``triton.model_name``, ``triton.model_version``,
``triton.trace_id``, ``triton.trace_parent_id``, ``triton.request_id``), a child of the root span
or, for an ensemble step or a BLS call, of its parent's model span, and a ``compute`` span under
it (COMPUTE_START, COMPUTE_INPUT_END, COMPUTE_OUTPUT_START, COMPUTE_END). Timestamps are the
monotonic ones moved to the epoch with an offset taken when the trace started.

Imported only in this mode: the OpenTelemetry SDK is an optional dependency
(``pip install 'nereid-tracing[opentelemetry]'``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nereid.errors import UnavailableError

from .config import TraceConfig

if TYPE_CHECKING:
    from .tracer import Trace

log = logging.getLogger("nereid.tracing")

TRACER_NAME = "triton-server"
_FLUSH_TIMEOUT_MS = 5000


class OtelSink:
    def __init__(self, config: TraceConfig) -> None:
        try:
            from opentelemetry import trace as otel_trace
            from opentelemetry.context import Context
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise UnavailableError(
                "--trace-config mode=opentelemetry needs the OpenTelemetry SDK and OTLP/HTTP "
                f"exporter ({exc}): pip install 'nereid-tracing[opentelemetry]'"
            ) from None
        self._api = otel_trace
        self._context = Context
        self._server_kind = otel_trace.SpanKind.SERVER
        self.provider = TracerProvider(resource=Resource.create(config.resource_attributes()))
        self.processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=config.url),
            max_queue_size=config.bsp_max_queue_size,
            schedule_delay_millis=config.bsp_schedule_delay,
            max_export_batch_size=config.bsp_max_export_batch_size,
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer(TRACER_NAME)
        self.propagator = TraceContextTextMapPropagator()

    def emit(self, traces: list[Trace]) -> None:
        """Spans for ``traces`` (a trace comes before its children)."""
        for trace in traces:
            self._spans(trace)

    def _spans(self, trace: Trace) -> None:
        api, tracer, kind = self._api, self.tracer, self._server_kind
        offset = trace.offset_ns
        stamps = dict(trace.stamps)
        request_end = stamps.get("REQUEST_END")
        if request_end is None:
            return
        request_start = stamps.get("REQUEST_START", request_end)
        root = None
        if trace.parent is None:
            # the client's context, else a new trace (whatever is current on this thread)
            carrier = trace.carrier
            context = self.propagator.extract(carrier) if carrier else self._context()
            front = trace.frontend_stamps()
            start = front[0][1] if front else request_start
            root = tracer.start_span(
                "InferRequest", context=context, kind=kind, start_time=start + offset
            )
            for name, ns in front:
                root.add_event(name, timestamp=ns + offset)
            parent_span = root
        else:
            parent_context = trace.parent.span_context
            if parent_context is None:  # the parent wrote no span
                parent_span = api.INVALID_SPAN
            else:
                parent_span = api.NonRecordingSpan(parent_context)
        attributes = {
            "triton.model_name": trace.model_name,
            "triton.model_version": int(trace.model_version),
            "triton.trace_id": trace.id,
            "triton.trace_parent_id": trace.parent.id if trace.parent is not None else 0,
        }
        if trace.request_id:
            attributes["triton.request_id"] = trace.request_id
        model_span = tracer.start_span(
            trace.model_name,
            context=api.set_span_in_context(parent_span),
            kind=kind,
            attributes=attributes,
            start_time=request_start + offset,
        )
        for name in ("REQUEST_START", "QUEUE_START"):
            if name in stamps:
                model_span.add_event(name, timestamp=stamps[name] + offset)
        if "COMPUTE_START" in stamps and "COMPUTE_END" in stamps:
            compute = tracer.start_span(
                "compute",
                context=api.set_span_in_context(model_span),
                kind=kind,
                start_time=stamps["COMPUTE_START"] + offset,
            )
            for name in ("COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"):
                if name in stamps:
                    compute.add_event(name, timestamp=stamps[name] + offset)
            compute.add_event("COMPUTE_END", timestamp=stamps["COMPUTE_END"] + offset)
            compute.end(end_time=stamps["COMPUTE_END"] + offset)
        model_span.add_event("REQUEST_END", timestamp=request_end + offset)
        model_span.end(end_time=request_end + offset)
        trace.span_context = model_span.get_span_context()
        if root is not None:
            root.end(end_time=(trace.send_end or request_end) + offset)

    def close(self) -> None:
        try:
            self.provider.force_flush(_FLUSH_TIMEOUT_MS)
        finally:
            self.provider.shutdown()
