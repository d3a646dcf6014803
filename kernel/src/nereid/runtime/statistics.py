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

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ResponseStats:
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    empty_response: Duration = field(default_factory=Duration)
    cancel: Duration = field(default_factory=Duration)


# Triton's inference_stats durations, in order; the hot path keeps each as a (count, ns) pair of
# slots in one flat list, which costs far less per request than an object per duration.
INFER_FIELDS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)
_SUCCESS, _FAIL, _QUEUE, _INPUT, _INFER, _OUTPUT = 0, 2, 4, 6, 8, 10


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
        self._last_end_ns = 0
        self._queued = 0  # written on the loop only
        self._started: list[StartCounter] = []  # one per runner, each written by its thread
        self._infer = [0] * (2 * len(INFER_FIELDS))
        # batch size -> [count, compute_input ns, compute_infer ns, compute_output ns]
        self._batches: dict[int, list[int]] = {}
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

    @property
    def last_inference_ms(self) -> int:
        """Wall-clock milliseconds of the last executed batch (0 before any)."""
        if not self._last_end_ns:
            return 0
        ago_ns = time.monotonic_ns() - self._last_end_ns
        return int(time.time() * 1000 - ago_ns / 1e6)

    def record_batch(self, batch: list[InferenceRequest], start_ns: int, end_ns: int) -> None:
        """An executed batch: per-request queue and compute times, and the batch's own."""
        count = len(batch)
        first = batch[0]
        if count == 1:
            size, queue_ns = first.batch_size, start_ns - first.queue_start_ns
        else:
            size = sum(r.batch_size for r in batch)
            queue_ns = count * start_ns - sum(r.queue_start_ns for r in batch)
        self.execution_count += 1
        self.inference_count += size
        self._last_end_ns = end_ns
        input_end = first.compute_input_end_ns or start_ns
        # An instance with ``flush`` may answer after its execute ended (and after this runs).
        output_start = min(first.compute_output_start_ns or end_ns, end_ns)
        compute_input = input_end - start_ns
        compute_infer = output_start - input_end
        compute_output = end_ns - output_start
        stats = self._batches.get(size)
        if stats is None:
            stats = self._batches[size] = [0, 0, 0, 0]
        stats[0] += 1
        stats[1] += compute_input
        stats[2] += compute_infer
        stats[3] += compute_output
        infer = self._infer
        infer[_QUEUE] += count
        infer[_QUEUE + 1] += queue_ns
        infer[_INPUT] += count
        infer[_INPUT + 1] += count * compute_input
        infer[_INFER] += count
        infer[_INFER + 1] += count * compute_infer
        infer[_OUTPUT] += count
        infer[_OUTPUT + 1] += count * compute_output

    def record_completion(self, request: InferenceRequest, error: bool, now_ns: int) -> None:
        index = _FAIL if error else _SUCCESS
        self._infer[index] += 1
        self._infer[index + 1] += now_ns - request.arrival_ns

    def duration(self, name: str) -> dict[str, int]:
        """One of Triton's ``inference_stats`` entries, as ``{"count", "ns"}``."""
        index = 2 * INFER_FIELDS.index(name)
        return {"count": self._infer[index], "ns": self._infer[index + 1]}

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
            "inference_stats": {key: self.duration(key) for key in INFER_FIELDS},
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
                    "compute_input": {"count": count, "ns": input_ns},
                    "compute_infer": {"count": count, "ns": infer_ns},
                    "compute_output": {"count": count, "ns": output_ns},
                }
                for size, (count, input_ns, infer_ns, output_ns) in sorted(self._batches.items())
            ],
            "memory_usage": list(self.memory_usage),
        }
