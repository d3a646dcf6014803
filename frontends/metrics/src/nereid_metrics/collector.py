"""The Collector: every metric family, built from the server's state when scraped.

Nothing is copied into prometheus_client objects on the request path. At scrape time the
collector reads, for each ready model version, the kernel's statistics (counts, cumulative
durations, pending requests, load time) and the observers' failure reasons, summaries and
histograms; then the last CPU and GPU readings; then the custom metrics models declared.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .observers import REASONS, MetricsObservers
from .system import CpuReading, GpuReading

log = logging.getLogger("nereid.metrics")

COUNTER, GAUGE, SUMMARY, HISTOGRAM = "counter", "gauge", "summary", "histogram"

# (name, help) of the per-model families, with Triton's names and help texts
SUCCESS = (
    "nv_inference_request_success",
    "Number of successful inference requests, all batch sizes",
)
FAILURE = ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes")
INFERENCE_COUNT = (
    "nv_inference_count",
    "Number of inferences performed (does not include cached requests)",
)
EXEC_COUNT = (
    "nv_inference_exec_count",
    "Number of model executions performed (does not include cached requests)",
)
PENDING = (
    "nv_inference_pending_request_count",
    "Instantaneous number of pending requests awaiting execution per-model.",
)
LOAD_DURATION = ("nv_model_load_duration_secs", "Model load time in seconds")
# (kernel statistics field, name, help) of the cumulative latency counters
DURATIONS = (
    (
        "success",
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    (
        "queue",
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    (
        "compute_input",
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    (
        "compute_infer",
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    (
        "compute_output",
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
    ),
)
# (observer summary, name, help) of the latency summaries
SUMMARIES = (
    (
        "request",
        "nv_inference_request_summary_us",
        "Summary of inference request duration in microseconds (includes cached requests)",
    ),
    (
        "queue",
        "nv_inference_queue_summary_us",
        "Summary of inference queuing duration in microseconds (includes cached requests)",
    ),
    (
        "compute_input",
        "nv_inference_compute_input_summary_us",
        "Summary of compute input duration in microseconds (does not include cached requests)",
    ),
    (
        "compute_infer",
        "nv_inference_compute_infer_summary_us",
        "Summary of compute inference duration in microseconds (does not include cached requests)",
    ),
    (
        "compute_output",
        "nv_inference_compute_output_summary_us",
        "Summary of inference compute output duration in microseconds (does not include cached "
        "requests)",
    ),
)
FIRST_RESPONSE = (
    "nv_inference_first_response_histogram_ms",
    "Duration from request to first response in milliseconds",
)
CPU = (
    ("utilization", "nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]"),
    ("memory_total_bytes", "nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes"),
    ("memory_used_bytes", "nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes"),
)
GPU = (
    ("utilization", "nv_gpu_utilization", GAUGE, "GPU utilization rate [0.0 - 1.0)"),
    ("memory_total_bytes", "nv_gpu_memory_total_bytes", GAUGE, "GPU total memory, in bytes"),
    ("memory_used_bytes", "nv_gpu_memory_used_bytes", GAUGE, "GPU used memory, in bytes"),
    ("power_usage_watts", "nv_gpu_power_usage", GAUGE, "GPU power usage in watts"),
    ("power_limit_watts", "nv_gpu_power_limit", GAUGE, "GPU power management limit in watts"),
    (
        "energy_joules",
        "nv_energy_consumption",
        COUNTER,
        "GPU energy consumption in joules since the server started",
    ),
)
BUILTIN_NAMES = frozenset(
    [SUCCESS[0], FAILURE[0], INFERENCE_COUNT[0], EXEC_COUNT[0], PENDING[0], LOAD_DURATION[0]]
    + [d[1] for d in DURATIONS]
    + [s[1] for s in SUMMARIES]
    + [FIRST_RESPONSE[0]]
    + [c[1] for c in CPU]
    + [g[1] for g in GPU]
)
_CUSTOM_KINDS = {"counter": COUNTER, "gauge": GAUGE, "histogram": HISTOGRAM}


class ServerCollector(Collector):
    """Reads one server's metrics when collected (``registry.collect()``, on the loop)."""

    def __init__(
        self,
        models: Callable[[], list[Any]],
        observers: MetricsObservers | None,
        custom_metrics: Any = None,
        readings: Callable[[], tuple[CpuReading | None, list[GpuReading]]] = lambda: (None, []),
    ) -> None:
        self.models = models
        self.observers = observers
        self.settings = observers.settings if observers is not None else None
        self.custom_metrics = custom_metrics
        self.readings = readings
        self._refused: set[str] = set()

    def describe(self) -> list[Metric]:
        return []  # the families vary with the models: no name clash checks at registration

    def collect(self) -> Iterator[Metric]:
        yield from _non_empty(self._model_families())
        cpu, gpus = self.readings()
        if cpu is not None:
            for field, name, help_text in CPU:
                family = Metric(name, help_text, GAUGE)
                family.add_sample(name, {}, getattr(cpu, field))
                yield family
        if gpus:
            yield from _non_empty(self._gpu_families(gpus))
        if self.custom_metrics is not None:
            yield from self._custom_families()

    # -- per model ---------------------------------------------------------------------------

    def _model_families(self) -> list[Metric]:
        settings = self.settings
        observers = self.observers
        counter_latencies = settings is None or settings.counter_latencies
        success = Metric(*SUCCESS, COUNTER)
        failure = Metric(*FAILURE, COUNTER)
        inferences = Metric(*INFERENCE_COUNT, COUNTER)
        executions = Metric(*EXEC_COUNT, COUNTER)
        pending = Metric(*PENDING, GAUGE)
        load = Metric(*LOAD_DURATION, GAUGE)
        durations = (
            [(field, Metric(name, help_text, COUNTER)) for field, name, help_text in DURATIONS]
            if counter_latencies
            else []
        )
        failures = observers.failures if observers is not None else None
        summaries = observers.summaries if observers is not None else None
        first_response = observers.first_response if observers is not None else None
        summary_families = (
            [(kind, Metric(name, help_text, SUMMARY)) for kind, name, help_text in SUMMARIES]
            if summaries is not None
            else []
        )
        quantiles = [q for q, _ in settings.summary_quantiles] if settings is not None else []
        quantile_texts = [_format_bound(q) for q in quantiles]
        histogram_family = Metric(*FIRST_RESPONSE, HISTOGRAM)

        for model in self.models():
            labels = {"model": model.name, "version": model.version_str}
            stats = model.statistics
            success.add_sample(SUCCESS[0], labels, stats.duration("success")["count"])
            counts = failures.counts(model) if failures is not None else None
            if counts is None:
                counts = dict.fromkeys(REASONS, 0)
                if failures is None:  # no observer: every failure is uncategorized
                    counts["OTHER"] = stats.duration("fail")["count"]
            for reason in REASONS:
                failure.add_sample(FAILURE[0], {**labels, "reason": reason}, counts[reason])
            inferences.add_sample(INFERENCE_COUNT[0], labels, stats.inference_count)
            executions.add_sample(EXEC_COUNT[0], labels, stats.execution_count)
            pending.add_sample(PENDING[0], labels, max(stats.pending, 0))
            load_ns = getattr(model, "load_duration_ns", 0)
            if load_ns:
                load.add_sample(LOAD_DURATION[0], labels, load_ns / 1e9)
            for field, family in durations:
                family.add_sample(family.name, labels, stats.duration(field)["ns"] // 1000)
            if summary_families:
                model_summaries = summaries.summaries(model)
                if model_summaries is not None:
                    # one label set per quantile, shared by the model's five summaries
                    quantile_labels = [{**labels, "quantile": text} for text in quantile_texts]
                    for kind, family in summary_families:
                        summary = getattr(model_summaries, kind)
                        _add_summary(family, labels, summary, quantiles, quantile_labels)
            if first_response is not None:
                histogram = first_response.histogram(model)
                if histogram is not None:
                    _add_histogram(
                        histogram_family,
                        labels,
                        histogram.buckets,
                        histogram.counts,
                        histogram.sum,
                        histogram.count,
                    )
        families = [success, failure, inferences, executions, pending]
        families += [family for _, family in durations]
        families.append(load)
        families += [family for _, family in summary_families]
        families.append(histogram_family)
        return families

    # -- GPUs --------------------------------------------------------------------------------

    def _gpu_families(self, gpus: list[GpuReading]) -> list[Metric]:
        families = []
        for field, name, kind, help_text in GPU:
            family = Metric(name, help_text, kind)
            for gpu in gpus:
                value = getattr(gpu, field)
                if value is not None:
                    family.add_sample(name, {"gpu_uuid": gpu.uuid}, value)
            families.append(family)
        return families

    # -- custom metrics ----------------------------------------------------------------------

    def _custom_families(self) -> Iterator[Metric]:
        for snapshot in self.custom_metrics.snapshot():
            name = snapshot["name"]
            kind = _CUSTOM_KINDS.get(snapshot["kind"])
            if kind is None or name in BUILTIN_NAMES or not snapshot["metrics"]:
                if name in BUILTIN_NAMES:
                    self._refuse(name, "it is the name of one of the server's own metrics")
                continue
            try:
                family = Metric(name, snapshot["description"], kind)
            except ValueError as exc:
                self._refuse(name, str(exc))
                continue
            for metric in snapshot["metrics"]:
                labels = {str(k): str(v) for k, v in metric["labels"].items()}
                if kind == HISTOGRAM:
                    _add_histogram(
                        family,
                        labels,
                        metric["buckets"] or [],
                        metric["bucket_counts"],
                        metric["sum"],
                        metric["count"],
                    )
                else:
                    family.add_sample(name, labels, metric["value"])
            yield family

    def _refuse(self, name: str, why: str) -> None:
        if name not in self._refused:
            self._refused.add(name)
            log.warning("custom metric family '%s' is not exported: %s", name, why)


def _non_empty(families: Iterable[Metric]) -> Iterator[Metric]:
    return (family for family in families if family.samples)


def _add_summary(
    family: Metric,
    labels: dict[str, str],
    summary: Any,
    quantiles: list[float],
    quantile_labels: list[dict[str, str]],
) -> None:
    name = family.name
    family.add_sample(name + "_count", labels, summary.count)
    family.add_sample(name + "_sum", labels, summary.sum)
    values = summary.window.query(quantiles)
    for value, quantile_label in zip(values, quantile_labels, strict=True):
        family.add_sample(name, quantile_label, value)


def _add_histogram(
    family: Metric,
    labels: dict[str, str],
    buckets: list[float],
    counts: list[int],
    total: float,
    count: int,
) -> None:
    name = family.name
    family.add_sample(name + "_count", labels, count)
    family.add_sample(name + "_sum", labels, total)
    cumulative = 0
    for bound, bucket_count in zip(buckets, counts, strict=False):
        cumulative += bucket_count
        family.add_sample(name + "_bucket", {**labels, "le": _format_bound(bound)}, cumulative)
    family.add_sample(name + "_bucket", {**labels, "le": "+Inf"}, count)


def _format_bound(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))
