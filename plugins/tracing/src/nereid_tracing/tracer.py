"""The tracer: a request observer that samples requests and writes their traces.

Every request costs it two calls: ``on_arrival`` (a countdown decrement, for a request that is
not sampled) and ``on_complete`` (an empty-dict check). A sampled request gets a :class:`Trace`
in ``request.context[TRACE_KEY]``; the request's timestamps are read when it completes, so no
other point of the request path is observed (``on_response`` only while a setting traces
tensors). A request made for another one (an ensemble step, a BLS call) names its parent in
``request.context[TRACE_PARENT_KEY]`` and is traced as a child of the parent's trace, whatever
the sampling.

A trace is written when its request is complete and, for a request a frontend received, once
the frontend has sent the response (``trace.sent``), with its children that are complete by
then; a child that completes later is written on its own (with its ``parent_id``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from nereid.errors import InvalidArgumentError
from nereid.observers import TRACE_CARRIER_KEY, TRACE_KEY, TRACE_PARENT_KEY

from .config import MODE_OPENTELEMETRY, TENSORS, TIMESTAMPS, TraceConfig
from .settings import NEVER, SettingsRegistry, TraceSetting
from .tritonfile import TritonSink

if TYPE_CHECKING:
    from nereid.observers import FailureReason
    from nereid.server import Server
    from nereid.types import InferenceRequest, InferenceResponse

log = logging.getLogger("nereid.tracing")

_ids = itertools.count(1)
_now = time.monotonic_ns
# How long a trace whose request a frontend received waits for the frontend to report the send
# (a response that could not be written never is); it is then written without send timestamps.
SEND_WAIT_S = 5.0
_FRONTEND_STAMPS = {
    "HTTP": ("HTTP_RECV_START", "HTTP_RECV_END", "HTTP_SEND_START", "HTTP_SEND_END"),
    "GRPC": ("GRPC_WAIT_READ_START", "GRPC_WAIT_READ_END", "GRPC_SEND_START", "GRPC_SEND_END"),
}


class Trace:
    """The trace of one request, and of the requests made for it (``children``)."""

    __slots__ = (
        "carrier",
        "children",
        "completed",
        "emitted",
        "file",
        "frontend",
        "id",
        "inputs",
        "level",
        "log_frequency",
        "model_name",
        "model_version",
        "offset_ns",
        "outputs",
        "parent",
        "protocol",
        "recv_end",
        "recv_start",
        "request_id",
        "send_end",
        "send_start",
        "sent_done",
        "span_context",
        "stamps",
        "timer",
        "tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        request: InferenceRequest,
        level: int,
        parent: Trace | None = None,
        setting: TraceSetting | None = None,
    ) -> None:
        self.tracer = tracer
        self.id = next(_ids)
        self.parent = parent
        if not tracer.records_tensors:  # opentelemetry: spans need the timestamps, no tensors
            level = TIMESTAMPS
        self.level = level
        self.model_name = request.model_name
        self.model_version = request.model_version
        self.request_id = request.id
        tensors = bool(level & TENSORS) and tracer.records_tensors
        self.inputs = list(request.inputs.values()) if tensors else None
        self.outputs: list | None = [] if tensors else None
        self.children: list[Trace] = []
        self.stamps: list[tuple[str, int]] = []
        self.protocol = ""
        self.recv_start = self.recv_end = self.send_start = self.send_end = 0
        self.completed = self.emitted = self.frontend = self.sent_done = False
        self.timer: asyncio.TimerHandle | None = None
        self.carrier: dict[str, str] | None = None
        self.span_context: Any = None
        if parent is None:
            # monotonic -> epoch, taken when the trace starts (as Triton does)
            self.offset_ns = time.time_ns() - _now()
            self.file = setting.file if setting is not None else ""
            self.log_frequency = setting.log_frequency if setting is not None else 0
        else:
            self.offset_ns = parent.offset_ns
            self.file = parent.file
            self.log_frequency = parent.log_frequency

    # -- what frontends report ---------------------------------------------------------------

    def received(self, protocol: str, recv_start_ns: int, recv_end_ns: int) -> None:
        """The frontend that received the request: its receive timestamps; the trace then waits
        for :meth:`sent`."""
        self.protocol = protocol
        self.recv_start = recv_start_ns
        self.recv_end = recv_end_ns
        self.frontend = True

    def sent(self, send_start_ns: int, send_end_ns: int) -> None:
        """The frontend has written the response."""
        if self.emitted:
            return
        self.send_start = send_start_ns
        self.send_end = send_end_ns
        self.sent_done = True
        if self.completed:
            self._emit()

    # -- the request's end -------------------------------------------------------------------

    def spawn(self, request: InferenceRequest) -> Trace:
        child = Trace(self.tracer, request, self.level, parent=self)
        self.children.append(child)
        return child

    def complete(self, request: InferenceRequest, failure: FailureReason | None) -> None:
        end = _now()
        stream = request.stream
        if stream is not None and stream.model is not None:
            self.model_version = stream.model.version
        else:  # refused before it was queued: the version it was for
            try:
                self.model_version = self.tracer.server.api.model(
                    self.model_name, self.model_version
                ).version
            except Exception:
                pass
        if self.level & TIMESTAMPS:
            stamps = self.stamps
            r = request
            if r.arrival_ns:
                stamps.append(("REQUEST_START", r.arrival_ns))
            if r.queue_start_ns:
                stamps.append(("QUEUE_START", r.queue_start_ns))
            if r.compute_end_ns:  # executed (an ensemble's own request is not)
                stamps.append(("COMPUTE_START", r.compute_start_ns))
                if r.compute_input_end_ns:
                    stamps.append(("COMPUTE_INPUT_END", r.compute_input_end_ns))
                if r.compute_output_start_ns:
                    stamps.append(("COMPUTE_OUTPUT_START", r.compute_output_start_ns))
                stamps.append(("COMPUTE_END", r.compute_end_ns))
            stamps.append(("REQUEST_END", end))
        self.completed = True
        parent = self.parent
        if parent is not None:
            if parent.emitted:  # too late to go with its parent: written by itself
                self.tracer.emit(self)
            return
        if self.frontend and failure is None:
            if self.sent_done:
                self._emit()
            else:
                self.timer = self.tracer.loop.call_later(SEND_WAIT_S, self._emit)
        else:
            # a frontend reports right after api.infer returns, which may come after this (a
            # request answered at once): give it that chance
            self.tracer.loop.call_soon(self._settle, failure)

    def _settle(self, failure: FailureReason | None) -> None:
        if self.emitted:
            return
        if self.frontend and failure is None and not self.sent_done:
            self.timer = self.tracer.loop.call_later(SEND_WAIT_S, self._emit)
        else:
            self._emit()

    def _emit(self) -> None:
        if self.emitted:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.tracer.emit(self)

    # -- reading -----------------------------------------------------------------------------

    def frontend_stamps(self) -> list[tuple[str, int]]:
        names = _FRONTEND_STAMPS.get(self.protocol)
        if names is None or not self.level & TIMESTAMPS:
            return []
        values = (self.recv_start, self.recv_end, self.send_start, self.send_end)
        return [(name, ns) for name, ns in zip(names, values, strict=True) if ns]

    def timeline(self) -> list[tuple[str, int | None]]:
        """Timestamps in order, with ``(activity, None)`` where the tensors of a TENSORS trace
        go (inputs after QUEUE_START, outputs before REQUEST_END)."""
        front = self.frontend_stamps()
        items: list[tuple[str, int | None]] = [p for p in front if "SEND" not in p[0]]
        stamps = self.stamps
        tensors = self.inputs is not None
        placed_inputs = False
        for name, ns in stamps:
            if tensors and name == "REQUEST_END":
                if not placed_inputs:
                    items.append(("TENSOR_QUEUE_INPUT", None))
                    placed_inputs = True
                items.append(("TENSOR_BACKEND_OUTPUT", None))
            items.append((name, ns))
            if tensors and name == "QUEUE_START":
                items.append(("TENSOR_QUEUE_INPUT", None))
                placed_inputs = True
        if tensors and not stamps:
            items.append(("TENSOR_QUEUE_INPUT", None))
            items.append(("TENSOR_BACKEND_OUTPUT", None))
        items.extend(p for p in front if "SEND" in p[0])
        return items

    def collect(self) -> list[Trace]:
        """This trace and its complete descendants not yet written, marked written."""
        self.emitted = True
        out = [self]
        for child in self.children:
            if child.completed and not child.emitted:
                out.extend(child.collect())
        return out


class _OutputTap:
    """Keeps the outputs of traced requests (added while a setting traces tensors)."""

    def on_response(self, request: InferenceRequest, response: InferenceResponse) -> None:
        context = request.context
        if context:
            trace = context.get(TRACE_KEY)
            if trace is not None and trace.outputs is not None and response.outputs:
                trace.outputs.extend(response.outputs)


class Tracer:
    """The request observer, and the object frontends find at ``api.tracer``."""

    def __init__(self, server: Server, config: TraceConfig) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop = server.loop or asyncio.get_running_loop()
        self.config = config
        self.mode = config.mode
        # Frontends attach the client's W3C trace-context headers while this is true.
        self.propagate = config.mode == MODE_OPENTELEMETRY
        # Triton traces no tensors in opentelemetry mode.
        self.records_tensors = config.mode != MODE_OPENTELEMETRY
        self.registry = SettingsRegistry(config, on_change=self._settings_changed)
        self._global: TraceSetting = self.registry.global_
        self._models: dict[str, TraceSetting] = {}
        self._tap: _OutputTap | None = None
        self.traces_written = 0
        if self.mode == MODE_OPENTELEMETRY:
            from .otel import OtelSink

            self.sink: Any = OtelSink(config)
        else:
            self.sink = TritonSink()
        self._settings_changed()

    # -- observer points (every request) -------------------------------------------------------

    def on_arrival(self, request: InferenceRequest) -> None:
        if request.context:
            self._arrival_with_context(request)
            return
        models = self._models
        setting = models.get(request.model_name, self._global) if models else self._global
        left = setting.left - 1
        if left:
            setting.left = left
            return
        self._sample(request, setting)

    def on_complete(self, request: InferenceRequest, failure: FailureReason | None) -> None:
        context = request.context
        if context:
            trace = context.get(TRACE_KEY)
            if trace is not None and not trace.completed:
                try:
                    trace.complete(request, failure)
                except Exception:
                    log.exception("tracing request %r failed", request)

    # -- sampling ------------------------------------------------------------------------------

    def _arrival_with_context(self, request: InferenceRequest) -> None:
        context = request.context
        if TRACE_KEY in context:
            return
        parent = context.get(TRACE_PARENT_KEY)
        if parent is not None:
            trace = getattr(parent, "context", {}).get(TRACE_KEY)
            if trace is not None:
                context[TRACE_KEY] = trace.spawn(request)
            return  # a request made for another is traced with it or not at all
        models = self._models
        setting = models.get(request.model_name, self._global) if models else self._global
        carrier = context.get(TRACE_CARRIER_KEY)
        if carrier is not None and self.propagate and setting.level:
            # a propagated context is traced whatever the rate and count (as Triton does)
            trace = Trace(self, request, setting.level, setting=setting)
            trace.carrier = carrier
            context[TRACE_KEY] = trace
            return
        left = setting.left - 1
        if left:
            setting.left = left
            return
        self._sample(request, setting)

    def _sample(self, request: InferenceRequest, setting: TraceSetting) -> None:
        count = setting.count
        if count == 0:  # no traces left to take
            setting.left = NEVER
            return
        if count > 0:
            count = setting.count = count - 1
        setting.left = setting.rate if count != 0 else NEVER
        request.context[TRACE_KEY] = Trace(self, request, setting.level, setting=setting)

    # -- writing -------------------------------------------------------------------------------

    def emit(self, trace: Trace) -> None:
        """Write ``trace`` with its complete descendants (called once per written group)."""
        traces = trace.collect()
        self.traces_written += 1
        try:
            if self.mode == MODE_OPENTELEMETRY:
                self.sink.emit(traces)
            else:
                self.sink.emit(traces, trace.file, trace.log_frequency)
        except Exception:
            log.exception("writing trace %d failed", trace.id)

    def close(self) -> None:
        """Flush and release the sink (the server has stopped)."""
        for setting in (self._global, *self._models.values()):
            setting.left = NEVER
        try:
            self.sink.close()
        except Exception:
            log.exception("closing the trace output failed")

    # -- the settings API (frontends call these on the loop) ------------------------------------

    def get_settings(self, model_name: str = "") -> dict[str, Any]:
        self._check_model(model_name)
        return self.registry.get(model_name)

    def update_settings(self, model_name: str, changes: dict[str, Any]) -> dict[str, Any]:
        self._check_model(model_name)
        return self.registry.update(model_name, changes)

    def _check_model(self, model_name: str) -> None:
        if model_name and not self.server.api.model_ready(model_name):
            raise InvalidArgumentError(f"Request for unknown model : {model_name}")

    def _settings_changed(self) -> None:
        registry = self.registry
        self._global = registry.global_
        self._models = dict(registry.models)
        if self._tap is None and self.records_tensors and registry.any_tensors():
            self._tap = _OutputTap()
            self.server.observers.add(self._tap)
