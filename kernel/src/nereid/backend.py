"""The backend contract: a backend makes models, a model makes instances, an instance executes.

A backend registered under a name is made once per server, on the first model that names it
(that is when its framework is imported). Subclassing these classes is optional; the kernel only
calls the methods named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.model_config_pb2 import ModelConfig, ModelInstanceGroup

if TYPE_CHECKING:
    from .api import InferenceService
    from .types import InferenceRequest


@dataclass
class BackendContext:
    """What a backend is made with: its name, its ``--backend-config`` settings, the service."""

    name: str
    settings: dict[str, str]
    api: InferenceService
    options: Any = None


@dataclass
class InstanceSpec:
    """One instance of ``instance_group``: where it runs and what it is called."""

    name: str
    group: ModelInstanceGroup
    index: int
    device_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``KIND_CPU``, ``KIND_GPU`` or ``KIND_MODEL``."""
        return ModelInstanceGroup.Kind.Name(self.group.kind)


class ModelInstance:
    """Executes batches. The kernel never calls one instance from two threads at once."""

    def execute(self, requests: list[InferenceRequest]) -> None:
        """Answer every request through ``request.respond`` (once with ``final=True``; any
        number of times first for a decoupled model). An exception fails the whole batch."""
        raise NotImplementedError

    def finalize(self) -> None:
        """Release the instance's resources; called after its last batch."""

    # Optional: ``flush() -> None``. An instance that has it may return from ``execute``
    # before it has answered the batch, to take the next batch while something else (a model
    # process) still runs this one: it answers the batch during a later ``execute``, or at the
    # latest in ``flush``, which the runner calls on the instance thread before the instance
    # goes idle. Such an instance answers every request itself, failing those it cannot.


class Model:
    """A loaded model version; makes one instance per ``instance_group`` entry and count."""

    def complete_config(self, config: ModelConfig) -> None:
        """Fill in what the model file tells (auto-complete); change ``config`` in place."""

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        raise NotImplementedError

    def is_ready(self) -> bool:
        return True

    def memory_usage(self) -> list[dict[str, Any]]:
        """Memory held, as ``[{"type": "CPU", "id": 0, "byte_size": n}]`` (statistics)."""
        return []

    def finalize(self) -> None:
        """Release model-wide resources; called after every instance was finalized."""


class Backend:
    """Made once per server with a :class:`BackendContext`."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        """A model for the version folder ``path`` (``<repository>/<model>/<version>``)."""
        raise NotImplementedError
