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
from .warmup import warm_up

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
    """A model version as the request path sees it. Made and started by the repository
    manager, ended by :meth:`unload`; ``in_flight`` counts the requests it has taken and not
    yet answered, which is what an unload or a reload waits for."""

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
        self.version_str = str(version)
        self.config = config
        self.path = path
        self.model = model
        self.max_batch_size = config.max_batch_size
        self.decoupled = config.model_transaction_policy.decoupled
        self.inputs = _input_specs(config)
        self.outputs = _output_specs(config, path.parent if path else None)
        self.reshaped_outputs = any(s.reshape is not None for s in self.outputs.values())
        self.required_inputs = [s.name for s in self.inputs.values() if not s.optional]
        self.statistics = ModelStatistics(name, version)
        self.load_duration_ns = 0  # backend model to warmed-up instances, set once loaded
        self.scheduler: Scheduler | None = None
        self.runners: list[InstanceRunner] = []
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._force = asyncio.Event()
        self._unloading: asyncio.Task | None = None
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
        """Make the scheduler and the instances (on worker threads), warm every instance up,
        then start pulling. On failure whatever was made is finalized (not the model itself:
        its maker finalizes it)."""
        sched_name = scheduler_name(self.config)
        entry = scheduler_registry.find(sched_name)
        if entry is None:
            raise missing_scheduler_error(sched_name, f"model '{self.name}'")
        handles: list[InstanceHandle] = []
        runners: list[InstanceRunner] = []
        try:
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
                runners = [self._runner(handle) for handle in handles]
            await warm_up(self, runners)
            for runner in runners:
                runner.start_thread()
        except BaseException:
            if self.scheduler is not None:
                await self.scheduler.stop(drain=False)
            if runners:
                await asyncio.gather(*(runner.stop() for runner in runners))
            else:
                for handle in handles:
                    await asyncio.to_thread(_finalize_instance, handle)
            raise
        for runner in runners:
            runner.start()
        self.runners = runners
        if self.model is not None:
            self.statistics.memory_usage = self.model.memory_usage()
        self.accepting = True

    def _runner(self, handle: InstanceHandle) -> InstanceRunner:
        return InstanceRunner(
            handle, self.scheduler, self.statistics, self.server.observers, self.decoupled
        )

    async def set_instance_groups(self, groups: Any) -> None:
        """Apply a new ``instance_group`` without reloading: make (and warm up) the instances
        that are new, then retire the ones no longer wanted once their batch is done. Requests
        keep flowing to the instances that stay. On failure nothing changes."""
        old_groups = list(self.config.instance_group)
        del self.config.instance_group[:]
        self.config.instance_group.extend(groups)
        if self.model is None or self.scheduler is None or not self.scheduler.uses_instances:
            return
        wanted = {spec.name: spec for spec in self.instance_specs()}
        keep = [runner for runner in self.runners if runner.handle.name in wanted]
        retire = [runner for runner in self.runners if runner.handle.name not in wanted]
        have = {runner.handle.name for runner in keep}
        added: list[InstanceRunner] = []
        try:
            for name, spec in wanted.items():
                if name not in have:
                    instance = await asyncio.to_thread(self.model.create_instance, spec)
                    added.append(self._runner(InstanceHandle(spec, instance)))
            await warm_up(self, added)
            for runner in added:
                runner.start_thread()
        except BaseException:
            await asyncio.gather(*(runner.stop() for runner in added))
            del self.config.instance_group[:]
            self.config.instance_group.extend(old_groups)
            raise
        for runner in added:
            runner.start()
        for runner in retire:
            runner.handle.retired = True
        self.runners = keep + added
        self.scheduler.instances_changed([runner.handle for runner in self.runners])
        await asyncio.gather(*(runner.stop() for runner in retire))
        log.info(
            "model '%s' version %d now has %d instances (added %d, retired %d)",
            self.name,
            self.version,
            len(self.runners),
            len(added),
            len(retire),
        )

    # -- requests in flight ------------------------------------------------------------------------

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def unload(self, timeout: float | None = None) -> bool:
        """Stop accepting, let in-flight requests finish (up to ``timeout`` seconds, no limit
        when ``None``), then stop the scheduler and runners and finalize the model.

        Safe to call again while an unload is under way: a later call with a timeout shortens
        the wait of the first. Returns whether every in-flight request finished.
        """
        self.accepting = False
        loop = asyncio.get_running_loop()
        if timeout is not None:
            if timeout <= 0:
                self._force.set()
            else:
                loop.call_later(timeout, self._force.set)
        if self._unloading is None:
            self._unloading = loop.create_task(self._finish_unload())
        return await asyncio.shield(self._unloading)

    async def _finish_unload(self) -> bool:
        if not self._idle.is_set():
            waits = [
                asyncio.ensure_future(self._idle.wait()),
                asyncio.ensure_future(self._force.wait()),
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
        drained = self._idle.is_set()
        if not drained:
            log.warning(
                "model '%s' version %d unloading with %d requests in flight",
                self.name,
                self.version,
                self.in_flight,
            )
        if self.scheduler is not None:
            await self.scheduler.stop(drain=drained)
        await asyncio.gather(*(runner.stop() for runner in self.runners))
        self.runners = []
        if self.model is not None:
            try:
                await asyncio.to_thread(self.model.finalize)
            except Exception:
                log.exception("finalizing model '%s' version %d failed", self.name, self.version)
        return drained


def _finalize_instance(handle: InstanceHandle) -> None:
    try:
        handle.instance.finalize()
    except Exception:
        log.exception("finalizing instance %s failed", handle.name)
