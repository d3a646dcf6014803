"""Per model version statistics, in Triton's statistics schema.

Everything here is updated on the event loop thread (the runner and the response stream both
report there), except the counts of started requests, each written by its own instance thread.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..types import InferenceRequest, InferenceResponse


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(ns, 0)

    def add_many(self, count: int, ns: int) -> None:
        self.count += count
        self.ns += max(ns, 0)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ResponseStats:
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    empty_response: Duration = field(default_factory=Duration)
    cancel: Duration = field(default_factory=Duration)


_INFER_FIELDS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


class StartCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class ModelStatistics:
    """Counters and durations of one model version."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self._queued = 0  # written on the loop only
        self._started: list[StartCounter] = []  # one per runner, each written by its thread
        self.infer = {key: Duration() for key in _INFER_FIELDS}
        self.batches: dict[int, BatchStats] = defaultdict(BatchStats)
        self.responses: dict[int, ResponseStats] = defaultdict(ResponseStats)
        self.memory_usage: list[dict[str, Any]] = []

    @property
    def pending(self) -> int:
        """Requests queued and not yet started (nor answered without executing)."""
        return self._queued - sum(counter.value for counter in self._started)

    def add_queued(self, count: int) -> None:
        """On the loop: requests queued (positive) or answered without executing (negative)."""
        self._queued += count

    def start_counter(self) -> StartCounter:
        """A counter of started requests for one instance thread (one writer, no lock)."""
        counter = StartCounter()
        self._started.append(counter)
        return counter

    def record_batch(self, batch: list[InferenceRequest], start_ns: int, end_ns: int) -> None:
        """An executed batch: per-request queue and compute times, and the batch's own."""
        size = sum(r.batch_size for r in batch)
        count = len(batch)
        self.execution_count += 1
        self.inference_count += size
        self.last_inference_ms = int(time.time() * 1000)
        first = batch[0]
        input_end = first.compute_input_end_ns or start_ns
        output_start = first.compute_output_start_ns or end_ns
        compute_input = input_end - start_ns
        compute_infer = output_start - input_end
        compute_output = end_ns - output_start
        stats = self.batches[size]
        stats.compute_input.add(compute_input)
        stats.compute_infer.add(compute_infer)
        stats.compute_output.add(compute_output)
        infer = self.infer
        infer["queue"].add_many(count, sum(start_ns - r.queue_start_ns for r in batch))
        infer["compute_input"].add_many(count, count * compute_input)
        infer["compute_infer"].add_many(count, count * compute_infer)
        infer["compute_output"].add_many(count, count * compute_output)

    def record_completion(self, request: InferenceRequest, error: bool, now_ns: int) -> None:
        self.infer["fail" if error else "success"].add(now_ns - request.arrival_ns)

    def record_response(self, index: int, response: InferenceResponse, elapsed_ns: int) -> None:
        """A decoupled model's ``index``-th response (Triton's ``response_stats``)."""
        stats = self.responses[index]
        if response.error is not None:
            key = "cancel" if response.error.kind.value == "CANCELLED" else "fail"
            getattr(stats, key).add(elapsed_ns)
        elif response.empty:
            stats.empty_response.add(elapsed_ns)
        else:
            stats.success.add(elapsed_ns)
            stats.compute_infer.add(elapsed_ns)

    def as_dict(self) -> dict[str, Any]:
        """The ``model_stats`` entry of Triton's statistics JSON."""
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {key: d.as_dict() for key, d in self.infer.items()},
            "response_stats": {
                str(index): {
                    key: getattr(stats, key).as_dict()
                    for key in (
                        "compute_infer",
                        "compute_output",
                        "success",
                        "fail",
                        "empty_response",
                        "cancel",
                    )
                }
                for index, stats in sorted(self.responses.items())
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stats.compute_input.as_dict(),
                    "compute_infer": stats.compute_infer.as_dict(),
                    "compute_output": stats.compute_output.as_dict(),
                }
                for size, stats in sorted(self.batches.items())
            ],
            "memory_usage": list(self.memory_usage),
        }
