"""Custom metrics that models declare (counter, gauge, histogram, with labels).

The registry only holds values; the metrics frontend reads it when scraped.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any

from .errors import AlreadyExistsError, InvalidArgumentError

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


class Metric:
    """One labelled series of a family."""

    def __init__(
        self, family: MetricFamily, labels: dict[str, str], buckets: Sequence[float] | None
    ) -> None:
        self.family = family
        self.labels = dict(labels)
        self.value = 0.0
        self.buckets = sorted(buckets) if buckets is not None else None
        self.bucket_counts = [0] * (len(self.buckets) + 1) if self.buckets is not None else []
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def increment(self, value: float) -> None:
        if self.family.kind == COUNTER and value < 0:
            raise InvalidArgumentError("a counter cannot be decremented")
        if self.family.kind == HISTOGRAM:
            raise InvalidArgumentError("use observe() on a histogram")
        with self._lock:
            self.value += value

    def set(self, value: float) -> None:
        if self.family.kind != GAUGE:
            raise InvalidArgumentError(f"set() is for gauges, not a {self.family.kind}")
        with self._lock:
            self.value = value

    def observe(self, value: float) -> None:
        if self.family.kind != HISTOGRAM:
            raise InvalidArgumentError(f"observe() is for histograms, not a {self.family.kind}")
        with self._lock:
            self.bucket_counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sum += value
            self.count += 1

    def get(self) -> float:
        return self.value


class MetricFamily:
    def __init__(
        self, registry: CustomMetricsRegistry, name: str, description: str, kind: str
    ) -> None:
        self.registry = registry
        self.name = name
        self.description = description
        self.kind = kind
        self.metrics: dict[tuple[tuple[str, str], ...], Metric] = {}
        self._lock = threading.Lock()

    def metric(
        self, labels: dict[str, str] | None = None, buckets: Sequence[float] | None = None
    ) -> Metric:
        labels = labels or {}
        if self.kind == HISTOGRAM and buckets is None:
            raise InvalidArgumentError("a histogram metric needs buckets")
        key = tuple(sorted(labels.items()))
        with self._lock:
            metric = self.metrics.get(key)
            if metric is None:
                metric = self.metrics[key] = Metric(self, labels, buckets)
            return metric

    def remove(self, metric: Metric) -> None:
        with self._lock:
            self.metrics.pop(tuple(sorted(metric.labels.items())), None)


class CustomMetricsRegistry:
    def __init__(self) -> None:
        self.families: dict[str, MetricFamily] = {}
        self._lock = threading.Lock()

    def family(self, name: str, description: str, kind: str) -> MetricFamily:
        """The family of that name, made on first use; a second kind for a name is an error."""
        if kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise InvalidArgumentError(f"unknown metric kind '{kind}'")
        with self._lock:
            family = self.families.get(name)
            if family is None:
                family = self.families[name] = MetricFamily(self, name, description, kind)
            elif family.kind != kind:
                raise AlreadyExistsError(
                    f"metric family '{name}' already exists as a {family.kind}"
                )
            return family

    def remove(self, name: str) -> None:
        with self._lock:
            self.families.pop(name, None)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            families = list(self.families.values())
        return [
            {
                "name": f.name,
                "description": f.description,
                "kind": f.kind,
                "metrics": [
                    {
                        "labels": m.labels,
                        "value": m.value,
                        "buckets": m.buckets,
                        "bucket_counts": list(m.bucket_counts),
                        "sum": m.sum,
                        "count": m.count,
                    }
                    for m in list(f.metrics.values())
                ],
            }
            for f in families
        ]
