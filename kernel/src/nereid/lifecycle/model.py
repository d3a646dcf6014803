"""One loaded model version: its configuration, backend model, scheduler and instance runners."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backend import InstanceSpec, Model
from ..config import ModelConfig, scheduler_name
from ..config.model_config_pb2 import DataType as ProtoDataType
from ..config.model_config_pb2 import ModelInstanceGroup
from ..config.validation import missing_scheduler_error
from ..runtime.runner import InstanceHandle, InstanceRunner
from ..runtime.statistics import ModelStatistics
from ..scheduler import Scheduler, SchedulerContext
from ..types import DataType

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    UNKNOWN = "UNKNOWN"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class TensorSpec:
    """What a request's input (or a response's output) must look like, from the config."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None
    optional: bool = False
    labels: tuple[str, ...] = ()


def tensor_datatype(proto_type: int) -> DataType:
    return DataType.parse(ProtoDataType.Name(proto_type))


def _input_specs(config: ModelConfig) -> dict[str, TensorSpec]:
    return {
        t.name: TensorSpec(
            t.name,
            tensor_datatype(t.data_type),
            tuple(t.dims),
            tuple(t.reshape.shape) if t.HasField("reshape") else None,
            optional=t.optional,
        )
        for t in config.input
    }


def _output_specs(config: ModelConfig, model_dir: Path | None) -> dict[str, TensorSpec]:
    specs = {}
    for t in config.output:
        labels: tuple[str, ...] = ()
        if t.label_filename and model_dir is not None:
            label_path = model_dir / t.label_filename
            if label_path.is_file():
                labels = tuple(label_path.read_text().splitlines())
        specs[t.name] = TensorSpec(
            t.name,
            tensor_datatype(t.data_type),
            tuple(t.dims),
            tuple(t.reshape.shape) if t.HasField("reshape") else None,
            labels=labels,
        )
    return specs


class LoadedModel:
    """A model version as the request path sees it. Made by :meth:`load`, ended by
    :meth:`unload`."""

    def __init__(
        self,
        server: Server,
        name: str,
        version: int,
        config: ModelConfig,
        path: Path | None,
        model: Model | None,
    ) -> None:
        self.server = server
        self.name = name
        self.version = version
        self.config = config
        self.path = path
        self.model = model
        self.max_batch_size = config.max_batch_size
        self.decoupled = config.model_transaction_policy.decoupled
        self.inputs = _input_specs(config)
        self.outputs = _output_specs(config, path.parent if path else None)
        self.required_inputs = [s.name for s in self.inputs.values() if not s.optional]
        self.statistics = ModelStatistics(name, version)
        self.scheduler: Scheduler | None = None
        self.runners: list[InstanceRunner] = []
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = False

    # -- instances -----------------------------------------------------------------------------

    def instance_specs(self) -> list[InstanceSpec]:
        specs = []
        for group in self.config.instance_group:
            devices = list(group.gpus) if group.kind == ModelInstanceGroup.KIND_GPU else [0]
            for device in devices or [0]:
                for index in range(group.count):
                    suffix = f"_{device}" if group.kind == ModelInstanceGroup.KIND_GPU else ""
                    specs.append(
                        InstanceSpec(
                            name=f"{group.name}{suffix}_{index}",
                            group=group,
                            index=index,
                            device_id=device,
                        )
                    )
        return specs

    async def start(self, scheduler_registry: Any) -> None:
        """Make the scheduler and the instances (on a worker thread), then start pulling."""
        sched_name = scheduler_name(self.config)
        entry = scheduler_registry.find(sched_name)
        if entry is None:
            raise missing_scheduler_error(sched_name, f"model '{self.name}'")
        handles: list[InstanceHandle] = []
        if self.model is not None:
            for spec in self.instance_specs():
                instance = await asyncio.to_thread(self.model.create_instance, spec)
                handles.append(InstanceHandle(spec, instance))
        context = SchedulerContext(
            model_name=self.name,
            version=self.version,
            config=self.config,
            instances=handles,
            clock=self.server.clock,
            api=self.server.api,
            statistics=self.statistics,
            model=self,
        )
        self.scheduler = entry.load()(context)
        if self.scheduler.uses_instances:
            for handle in handles:
                self._start_runner(handle)
        if self.model is not None:
            self.statistics.memory_usage = self.model.memory_usage()
        self.accepting = True

    def _start_runner(self, handle: InstanceHandle) -> None:
        runner = InstanceRunner(
            handle, self.scheduler, self.statistics, self.server.observers, self.decoupled
        )
        runner.start()
        self.runners.append(runner)

    async def set_instance_groups(self, groups: Any) -> None:
        """Apply a new ``instance_group`` without reloading: add or retire instances."""
        del self.config.instance_group[:]
        self.config.instance_group.extend(groups)
        wanted = {spec.name: spec for spec in self.instance_specs()}
        keep, retire = [], []
        for runner in self.runners:
            (keep if runner.handle.name in wanted else retire).append(runner)
        for runner in retire:
            runner.handle.retired = True
        have = {runner.handle.name for runner in keep}
        for name, spec in wanted.items():
            if name not in have:
                instance = await asyncio.to_thread(self.model.create_instance, spec)
                handle = InstanceHandle(spec, instance)
                self.runners.append(
                    InstanceRunner(
                        handle,
                        self.scheduler,
                        self.statistics,
                        self.server.observers,
                        self.decoupled,
                    )
                )
                self.runners[-1].start()
                keep.append(self.runners[-1])
        self.runners = keep
        self.scheduler.instances_changed([r.handle for r in keep])
        for runner in retire:
            await runner.stop()

    # -- requests in flight ------------------------------------------------------------------------

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def unload(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish, stop the runners and finalize."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning(
                "model '%s' version %d unloading with requests in flight", self.name, self.version
            )
        if self.scheduler is not None:
            await self.scheduler.stop(drain=timeout is None)
        for runner in self.runners:
            await runner.stop()
        self.runners = []
        if self.model is not None:
            await asyncio.to_thread(self.model.finalize)
