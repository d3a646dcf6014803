"""Request observers: per-request concerns (metrics, tracing, a cache) as plain objects.

The kernel calls every observer's methods directly, on the event loop thread, at fixed points of
each request. An observer implements any subset of :class:`RequestObserver`'s methods; the
kernel only calls the ones a given observer defines, so an unused point costs nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import InferenceRequest, InferenceResponse

log = logging.getLogger(__name__)


# ``request.context`` keys of request tracing (a tracing plugin installs the tracer; see
# docs/tracing.md). Nothing else on the request path reads them.
#
# TRACE_KEY: the trace of a request that is being traced, set by the tracer when it samples the
# request (absent otherwise). A frontend that sees one after ``api.infer`` reports its own
# timestamps to it: ``trace.received(protocol, recv_start_ns, recv_end_ns)`` at once, then
# ``trace.sent(send_start_ns, send_end_ns)`` after writing the response (``protocol`` "HTTP" or
# "GRPC"; monotonic ns).
TRACE_KEY = "nereid.trace"
# TRACE_PARENT_KEY: on a request made on behalf of another (an ensemble step, a BLS call), the
# parent InferenceRequest; the tracer traces it as a child of the parent's trace, if any.
TRACE_PARENT_KEY = "nereid.trace.parent"
# TRACE_CARRIER_KEY: W3C trace-context headers the client sent ({"traceparent": ...,
# "tracestate": ...}), attached by a frontend while ``api.tracer.propagate`` is true.
TRACE_CARRIER_KEY = "nereid.trace.carrier"


class FailureReason(enum.Enum):
    """Why a request failed, with Triton's metric label values."""

    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    BACKEND = "BACKEND"
    OTHER = "OTHER"


class RequestObserver:
    """The points of a request's path; every method is optional."""

    def on_arrival(self, request: InferenceRequest) -> None: ...
    def on_queued(self, request: InferenceRequest) -> None: ...
    def on_execution_start(self, instance: str, batch: Sequence[InferenceRequest]) -> None: ...
    def on_execution_end(self, instance: str, batch: Sequence[InferenceRequest]) -> None: ...
    def on_response(self, request: InferenceRequest, response: InferenceResponse) -> None: ...
    def on_complete(self, request: InferenceRequest, failure: FailureReason | None) -> None: ...


_POINTS = (
    "on_arrival",
    "on_queued",
    "on_execution_start",
    "on_execution_end",
    "on_response",
    "on_complete",
)


class ObserverSet:
    """For each point, the bound methods of the observers that define it."""

    def __init__(self, observers: Sequence[Any] = ()) -> None:
        self.observers: list[Any] = []
        for point in _POINTS:
            setattr(self, point, [])
        for observer in observers:
            self.add(observer)

    def add(self, observer: Any) -> None:
        self.observers.append(observer)
        for point in _POINTS:
            method = getattr(observer, point, None)
            base = getattr(RequestObserver, point)
            if method is not None and getattr(method, "__func__", None) is not base:
                getattr(self, point).append(method)

    @staticmethod
    def notify(methods: list, *args: Any) -> None:
        """Call each method; an observer's exception is logged, never reaches the request."""
        for method in methods:
            try:
                method(*args)
            except Exception:
                log.exception("request observer %r failed", method)
