"""The scheduler contract, and the context a scheduler is made with.

A scheduler owns a model version's queue. ``enqueue`` is called by the InferenceService and
never blocks. Each instance's runner awaits ``next_batch(instance)`` when the instance is free,
executes what it gets, then calls ``batch_done``: instances pull, so a busy instance never has
work pushed to it. A scheduler with ``uses_instances = False`` (an ensemble) gets no runners and
answers requests itself, typically by calling the InferenceService.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .clock import Clock
from .config.model_config_pb2 import ModelConfig

if TYPE_CHECKING:
    from .api import InferenceService
    from .runtime.runner import InstanceHandle
    from .runtime.statistics import ModelStatistics
    from .types import InferenceRequest


@dataclass
class SchedulerContext:
    model_name: str
    version: int
    config: ModelConfig
    instances: list[InstanceHandle]
    clock: Clock
    api: InferenceService
    statistics: ModelStatistics
    model: Any = None


@runtime_checkable
class Scheduler(Protocol):
    uses_instances: bool

    def enqueue(self, request: InferenceRequest) -> None:
        """Queue a request; raise ``UnavailableError`` to reject it (queue full)."""

    async def next_batch(self, instance: InstanceHandle) -> list[InferenceRequest] | None:
        """The next batch for a free instance; ``None`` tells the runner to stop."""

    def batch_done(self, instance: InstanceHandle, batch: list[InferenceRequest]) -> None:
        """The instance has executed ``batch`` and is free again."""

    # Optional: ``poll_batch(instance) -> list[InferenceRequest] | None``, called from the
    # instance's own thread right after it executed a batch: return a batch only if one is
    # ready now, without waiting or touching the event loop. It saves the loop round trip per
    # batch when requests are queued; a scheduler without it is only asked through
    # ``next_batch``.

    def instances_changed(self, instances: list[InstanceHandle]) -> None:
        """The model's instances were added or removed (an instance-count update)."""

    async def stop(self, drain: bool) -> None:
        """Stop: with ``drain`` let queued requests run first, else fail them UNAVAILABLE;
        afterwards every ``next_batch`` returns ``None``."""


def batch_key_function(config: ModelConfig) -> Callable[[InferenceRequest], Any] | None:
    """What two requests must share to be in one batch (Triton's rule), for batching
    schedulers: the shape of each variable-size input that is not ``allow_ragged_batch``, the
    values of shape tensors, and which inputs are present when some are optional. ``None`` when
    any two requests can be batched."""
    if config.max_batch_size <= 0:
        return None
    shaped = [
        i.name
        for i in config.input
        if not i.allow_ragged_batch and not i.is_shape_tensor and any(d < 0 for d in i.dims)
    ]
    shape_tensors = [i.name for i in config.input if i.is_shape_tensor]
    optional = any(i.optional for i in config.input)
    if not shaped and not shape_tensors and not optional:
        return None

    def key(request: InferenceRequest) -> Any:
        inputs = request.inputs
        parts: list[Any] = [inputs[name].shape[1:] if name in inputs else None for name in shaped]
        for name in shape_tensors:
            tensor = inputs.get(name)
            parts.append(
                (tensor.shape[1:], tensor.data[:1].tobytes()) if tensor is not None else None
            )
        if optional:
            parts.append(frozenset(inputs))
        return tuple(parts)

    return key
