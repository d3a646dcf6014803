"""The request observers behind the metrics that the kernel's statistics do not hold.

The counters, durations and the pending count are the kernel's own statistics, read at scrape
time; what they lack is gathered here, on the event loop, by observers the kernel calls
directly (never through a hook):

- :class:`FailureCounter` (always): failures by Triton's reason label. Its ``on_complete``
  returns at once for a success, which is all it costs a request that does not fail.
- :class:`LatencySummaries` (``summary_latencies=true``): per-request latencies for the
  quantile summaries (``on_execution_end`` and ``on_complete``).
- :class:`FirstResponseHistogram` (``histogram_latencies=true``): time to the first response
  of a decoupled model (``on_response``).

Per-model state is keyed by the kernel's loaded model version object, weakly, so a reloaded
model starts from zero (as its statistics do) and an unloaded one is forgotten.

This module imports nothing heavy; the entry point imports it when the server starts.
"""

from __future__ import annotations

import bisect
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from nereid.errors import NereidError

from .settings import SUMMARY_AGE_BUCKETS, SUMMARY_MAX_AGE_S, MetricsSettings

REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
FIRST_RESPONSE_FAMILY = "nv_inference_first_response_histogram_ms"
DEFAULT_FIRST_RESPONSE_BUCKETS = (100.0, 500.0, 2000.0, 5000.0)
SUMMARY_KINDS = ("request", "queue", "compute_input", "compute_infer", "compute_output")


def _model_of(request: Any, resolve: Callable[[str, int], Any] | None) -> Any:
    """The loaded model version a request went to: its stream's, or (for a request refused
    before it was queued) the version the service resolves for it."""
    stream = request.stream
    if stream is not None:
        return stream.model
    if resolve is None:
        return None
    try:
        return resolve(request.model_name, request.model_version)
    except NereidError:
        return None


class FailureCounter:
    """Failed requests per model version and reason (REJECTED, CANCELED, BACKEND, OTHER)."""

    def __init__(self, resolve: Callable[[str, int], Any] | None = None) -> None:
        self.resolve = resolve
        self.by_model: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()

    def on_complete(self, request: Any, failure: Any) -> None:
        if failure is None:
            return
        model = _model_of(request, self.resolve)
        if model is None:
            return
        counts = self.by_model.get(model)
        if counts is None:
            counts = self.by_model[model] = dict.fromkeys(REASONS, 0)
        reason = failure.value
        counts[reason] = counts.get(reason, 0) + 1

    def counts(self, model: Any) -> dict[str, int] | None:
        return self.by_model.get(model)


# How long observations may wait in a model's lists before they reach its windows: a quarter
# of an age bucket (so an observation lands in the window at most 3 s late), or 512 of them.
_PENDING_NS = int(SUMMARY_MAX_AGE_S * 1e9 / SUMMARY_AGE_BUCKETS / 4)
_PENDING_MAX = 512


class Summary:
    """A summary's cumulative count and sum, and its windowed quantiles."""

    __slots__ = ("count", "sum", "window")

    def __init__(self, window: Any) -> None:
        self.window = window
        self.count = 0
        self.sum = 0.0

    def add(self, values: Any, now_ns: int) -> None:
        self.count += len(values)
        self.sum += float(values.sum())
        self.window.observe_many(values, now_ns)


class ModelSummaries:
    """The five summaries of one model version. The request path only appends to two lists;
    the lists reach the summaries (numpy, in bulk) every 512 entries, every 3 s, and when
    scraped."""

    __slots__ = (*SUMMARY_KINDS, "completed", "executed", "since")

    def __init__(self, targets: Sequence[tuple[float, float]]) -> None:
        from .quantiles import WindowQuantiles

        for kind in SUMMARY_KINDS:
            window = WindowQuantiles(targets, SUMMARY_MAX_AGE_S, SUMMARY_AGE_BUCKETS)
            setattr(self, kind, Summary(window))
        # (queue, compute input, compute infer, compute output) ns of each executed request
        self.executed: list[tuple[int, int, int, int]] = []
        self.completed: list[int] = []  # end-to-end ns of each successful request
        self.since = time.monotonic_ns()

    def ingest(self, now_ns: int) -> None:
        import numpy as np

        self.since = now_ns
        if self.executed:
            rows = np.maximum(np.array(self.executed, dtype=np.float64), 0.0) / 1000
            self.executed = []
            parts = (self.queue, self.compute_input, self.compute_infer, self.compute_output)
            for summary, column in zip(parts, rows.T, strict=True):
                summary.add(column, now_ns)
        if self.completed:
            self.request.add(np.array(self.completed, dtype=np.float64) / 1000, now_ns)
            self.completed = []


class LatencySummaries:
    """Microsecond latencies per request for the ``nv_inference_*_summary_us`` summaries:
    queue and compute times from each executed batch (split as the kernel's statistics split
    them), the end-to-end time of each successful request."""

    def __init__(self, targets: Sequence[tuple[float, float]]) -> None:
        self.targets = tuple(targets)
        self.by_model: weakref.WeakKeyDictionary[Any, ModelSummaries] = weakref.WeakKeyDictionary()

    def _summaries(self, model: Any) -> ModelSummaries:
        summaries = self.by_model.get(model)
        if summaries is None:
            summaries = self.by_model[model] = ModelSummaries(self.targets)
        return summaries

    def on_execution_end(self, instance: str, batch: Sequence[Any]) -> None:
        first = batch[0]
        stream = first.stream
        if stream is None:
            return
        summaries = self._summaries(stream.model)
        start, end = first.compute_start_ns, first.compute_end_ns
        input_end = first.compute_input_end_ns or start
        output_start = first.compute_output_start_ns or end
        compute = (input_end - start, output_start - input_end, end - output_start)
        executed = summaries.executed
        for request in batch:
            executed.append((start - request.queue_start_ns, *compute))
        if len(executed) >= _PENDING_MAX or end - summaries.since >= _PENDING_NS:
            summaries.ingest(end)

    def on_complete(self, request: Any, failure: Any) -> None:
        if failure is not None:
            return
        stream = request.stream
        if stream is None:
            return
        now = time.monotonic_ns()
        summaries = self._summaries(stream.model)
        completed = summaries.completed
        completed.append(now - request.arrival_ns)
        if len(completed) >= _PENDING_MAX or now - summaries.since >= _PENDING_NS:
            summaries.ingest(now)

    def summaries(self, model: Any) -> ModelSummaries | None:
        """The model's summaries, up to date (``None`` before its first request)."""
        summaries = self.by_model.get(model)
        if summaries is not None:
            summaries.ingest(time.monotonic_ns())
        return summaries


class Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = list(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


def first_response_buckets(config: Any) -> tuple[float, ...]:
    """The model's ``model_metrics`` buckets for the first-response histogram, else
    Triton's defaults."""
    metrics = getattr(config, "model_metrics", None)
    for control in getattr(metrics, "metric_control", ()):
        if control.metric_identifier.family != FIRST_RESPONSE_FAMILY:
            continue
        if control.WhichOneof("metric_options") == "histogram_options":
            buckets = sorted(set(control.histogram_options.buckets))
            if buckets:
                return tuple(buckets)
    return DEFAULT_FIRST_RESPONSE_BUCKETS


class FirstResponseHistogram:
    """Milliseconds from a request's arrival to its first response, for decoupled models
    (Triton's ``nv_inference_first_response_histogram_ms``)."""

    def __init__(self) -> None:
        self.by_model: weakref.WeakKeyDictionary[Any, Histogram] = weakref.WeakKeyDictionary()

    def on_response(self, request: Any, response: Any) -> None:
        stream = request.stream
        if stream is None or stream.delivered:
            return
        model = stream.model
        if not model.decoupled or response.error is not None or response.empty:
            return
        histogram = self.by_model.get(model)
        if histogram is None:
            histogram = self.by_model[model] = Histogram(first_response_buckets(model.config))
        histogram.observe((time.monotonic_ns() - request.arrival_ns) / 1e6)

    def histogram(self, model: Any) -> Histogram | None:
        return self.by_model.get(model)


class MetricsObservers:
    """The observers of one server, as its metrics frontend reads them."""

    def __init__(
        self, settings: MetricsSettings, resolve: Callable[[str, int], Any] | None = None
    ) -> None:
        self.settings = settings
        self.failures = FailureCounter(resolve)
        self.summaries = (
            LatencySummaries(settings.summary_quantiles) if settings.summary_latencies else None
        )
        self.first_response = FirstResponseHistogram() if settings.histogram_latencies else None

    def all(self) -> list[Any]:
        return [o for o in (self.failures, self.summaries, self.first_response) if o]
