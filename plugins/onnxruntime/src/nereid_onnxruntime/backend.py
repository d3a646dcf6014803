"""The ``onnxruntime`` backend: the kernel's Backend -> Model -> ModelInstance contract over
onnxruntime ``InferenceSession`` objects. This is the one module that imports onnxruntime; the
kernel imports it when the first ONNX model loads.

A model version is ``<version>/model.onnx`` (or ``default_model_filename``): a file, or a
folder holding ``model.onnx`` and its external data. Each instance has its own session (or
shares its group's with ``share_session_between_instances``) and runs on its own kernel
thread; onnxruntime releases the GIL while it runs, so instances run in parallel.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.errors import InternalError, InvalidArgumentError, NereidError, UnavailableError
from nereid.runtime.batching import gather_inputs, runs_of, scatter_outputs
from nereid.types import DataType, InferenceRequest

from . import datatypes
from .options import (
    PROVIDER_DISTRIBUTIONS,
    SessionPlan,
    missing_providers,
    session_plan,
)
from .settings import BackendSettings
from .signature import Signature, check_config, complete_config, scalar_tensors

log = logging.getLogger("nereid.onnxruntime")

MODEL_FILENAME = "model.onnx"

_global_pool_lock = threading.Lock()
_global_pool: tuple[int, int] | None = None


def _enable_global_threadpool(settings: BackendSettings) -> None:
    """Size onnxruntime's process-wide thread pools (once per process, before any session)."""
    global _global_pool
    sizes = (settings.intra_op_thread_count, settings.inter_op_thread_count)
    with _global_pool_lock:
        if _global_pool is None:
            ort.set_global_thread_pool_sizes(*sizes)
            _global_pool = sizes
        elif _global_pool != sizes:
            log.warning(
                "onnxruntime's global thread pools are already sized %s in this process; "
                "ignoring %s",
                _global_pool,
                sizes,
            )


class OnnxRuntimeBackend(Backend):
    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.settings = BackendSettings.parse(context.settings)
        if self.settings.global_threadpool:
            _enable_global_threadpool(self.settings)

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return OnnxModel(self, config, Path(path))

    def scheduler_installed(self, name: str) -> bool:
        """Whether the server has the scheduler ``name`` (auto-complete turns dynamic batching
        on only when it does; a backend made without a server, in unit tests, assumes so)."""
        api = self.context.api
        return api is None or api.scheduler_installed(name)


def _ort_error(exc: Exception, what: str) -> NereidError:
    """An onnxruntime exception as the kernel's error (INVALID_ARG for onnxruntime's
    InvalidArgument, INTERNAL otherwise)."""
    message = f"{what}: onnxruntime: {exc}"
    invalid = ("InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented")
    if type(exc).__name__ in invalid:
        return InvalidArgumentError(message)
    return InternalError(message)


class OnnxModel(Model):
    def __init__(self, backend: OnnxRuntimeBackend, config: ModelConfig, path: Path) -> None:
        self.backend = backend
        self.config = config  # completed and validated in place by the kernel before instances
        self.path = path
        self.name = config.name or path.parent.name
        self._signature: Signature | None = None
        self._checked = False
        self._lock = threading.Lock()
        self._shared: dict[str, ort.InferenceSession] = {}
        # Each live session: its memory kind and device, and how many instances use it.
        self._sessions: dict[int, tuple[tuple[str, int], int]] = {}

    # -- files -----------------------------------------------------------------------------------

    def model_file(self) -> Path:
        """``<version>/<default_model_filename or model.onnx>``; a folder of that name holds
        ``model.onnx`` and its external data."""
        filename = self.config.default_model_filename or MODEL_FILENAME
        path = self.path / filename
        if path.is_dir():
            path = path / MODEL_FILENAME
        if not path.is_file():
            raise UnavailableError(f"unable to find '{path}' for model '{self.name}'")
        return path

    def _byte_size(self) -> int:
        """The model's bytes on disk: the file, or every file of a model folder."""
        path = self.model_file()
        if path.parent != self.path:  # the folder form
            return sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file())
        return path.stat().st_size

    # -- signature and auto-complete ------------------------------------------------------------

    def signature(self) -> Signature:
        """The model's inputs and outputs, read once from a CPU session without optimizations."""
        if self._signature is None:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if _global_pool is not None:  # every session of the process must use it then
                options.use_per_session_threads = False
            else:
                options.intra_op_num_threads = 1
            options.log_severity_level = 3
            for library in self.config.model_operations.op_library_filename:
                options.register_custom_ops_library(library)
            session = self._open(options, [("CPUExecutionProvider", {})])
            self._signature = _signature_of(session)
        return self._signature

    def complete_config(self, config: ModelConfig) -> None:
        complete_config(
            config,
            self.signature(),
            default_max_batch_size=self.backend.settings.default_max_batch_size,
            dynamic_batching_available=self.backend.scheduler_installed("dynamic"),
            gpu_available="CUDAExecutionProvider" in ort.get_available_providers(),
        )

    # -- instances -------------------------------------------------------------------------------

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        plan = session_plan(self.config, spec.kind, spec.device_id, self.backend.settings)
        missing = missing_providers(plan.providers, ort.get_available_providers())
        if missing:
            raise UnavailableError(
                f"unable to load model '{self.name}' instance '{spec.name}' ({spec.kind}): "
                f"execution provider {missing[0]} is not available in this onnxruntime "
                f"(available: {ort.get_available_providers()}); install "
                f"{PROVIDER_DISTRIBUTIONS.get(missing[0], 'an onnxruntime build with it')}"
            )
        if self._signature is not None:  # known from auto-complete: check before loading
            self._check()
        session = self._session_for(spec, plan)
        try:
            if self._signature is None:
                self._signature = _signature_of(session)
            self._check()
        except BaseException:
            self.release(session)
            raise
        return OnnxInstance(self, session, plan, spec)

    def _check(self) -> None:
        with self._lock:
            if not self._checked:
                assert self._signature is not None
                check_config(self.config, self._signature)
                self._checked = True

    def _session_for(self, spec: InstanceSpec, plan: SessionPlan) -> ort.InferenceSession:
        key = f"{spec.group.name}:{spec.device_id}"
        with self._lock:
            session = self._shared.get(key) if plan.share_session else None
            if session is not None:
                memory, users = self._sessions[id(session)]
                self._sessions[id(session)] = (memory, users + 1)
                return session
        session = self._open(_session_options(plan), plan.providers)
        memory = ("GPU", spec.device_id) if spec.kind == "KIND_GPU" else ("CPU", 0)
        with self._lock:
            self._sessions[id(session)] = (memory, 1)
            if plan.share_session:
                self._shared[key] = session
        return session

    def release(self, session: Any) -> None:
        """An instance is done with ``session``; forget it once no instance uses it."""
        with self._lock:
            entry = self._sessions.get(id(session))
            if entry is None:
                return
            memory, users = entry
            if users > 1:
                self._sessions[id(session)] = (memory, users - 1)
                return
            del self._sessions[id(session)]
            for key, shared in list(self._shared.items()):
                if shared is session:
                    del self._shared[key]

    def _open(self, options: Any, providers: list[tuple[str, dict[str, str]]]) -> Any:
        path = self.model_file()
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise _ort_error(exc, f"unable to load model '{self.name}' from '{path}'") from None

    # -- state -----------------------------------------------------------------------------------

    def memory_usage(self) -> list[dict[str, Any]]:
        """The model's size on disk for every session made (each holds its own weights);
        onnxruntime's Python API does not expose its arena statistics."""
        try:
            size = self._byte_size()
        except NereidError:
            return []
        totals: dict[tuple[str, int], int] = {}
        with self._lock:
            for memory, _ in self._sessions.values():
                totals[memory] = totals.get(memory, 0) + size
        return [{"type": t, "id": i, "byte_size": n} for (t, i), n in totals.items()]

    def finalize(self) -> None:
        self._shared.clear()
        self._sessions.clear()


def _signature_of(session: Any) -> Signature:
    return Signature.of(
        session.get_inputs(), session.get_outputs(), session.get_overridable_initializers()
    )


def _session_options(plan: SessionPlan) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, plan.graph_optimization_level
    )
    options.execution_mode = getattr(ort.ExecutionMode, plan.execution_mode)
    # Once onnxruntime's global pools exist in the process, every session must use them.
    if plan.use_per_session_threads and _global_pool is None:
        options.intra_op_num_threads = plan.intra_op_num_threads
        options.inter_op_num_threads = plan.inter_op_num_threads
    else:
        options.use_per_session_threads = False
    if plan.enable_cpu_mem_arena is not None:
        options.enable_cpu_mem_arena = plan.enable_cpu_mem_arena
    if plan.enable_mem_pattern is not None:
        options.enable_mem_pattern = plan.enable_mem_pattern
    for key, value in plan.session_config.items():
        options.add_session_config_entry(key, value)
    for library in plan.custom_op_libraries:
        options.register_custom_ops_library(library)
    options.log_severity_level = 3  # errors only
    return options


class OnnxInstance(ModelInstance):
    """One session's worth of execution: gather, run, scatter."""

    def __init__(
        self, model: OnnxModel, session: Any, plan: SessionPlan, spec: InstanceSpec
    ) -> None:
        config = model.config
        signature = model._signature
        assert signature is not None
        self.name = spec.name
        self.model = model
        self.model_name = model.name
        self.session = session
        self.batched = config.max_batch_size > 0
        self.outputs = [t.name for t in config.output]
        self.datatypes = {
            t.name: DataType.parse(ProtoDataType.Name(t.data_type)) for t in config.output
        }
        # Implicit sequence state: the sequence batcher takes these outputs off each response.
        self.state_outputs = [
            s.output_name
            for s in config.sequence_batching.state
            if s.output_name not in self.datatypes
        ]
        for state in config.sequence_batching.state:
            if state.output_name in self.state_outputs:
                self.datatypes[state.output_name] = DataType.parse(
                    ProtoDataType.Name(state.data_type)
                )
        self.outputs += self.state_outputs
        input_types = {
            t.name: DataType.parse(ProtoDataType.Name(t.data_type)) for t in config.input
        }
        self.string_inputs = {n for n, t in input_types.items() if t is DataType.BYTES}
        self.bf16_inputs = {n for n, t in input_types.items() if t is DataType.BF16}
        self.string_outputs = {n for n, t in self.datatypes.items() if t is DataType.BYTES}
        self.bf16_outputs = {n for n, t in self.datatypes.items() if t is DataType.BF16}
        self.scalar_inputs, self.scalar_outputs = scalar_tensors(config, signature)
        self.use_ortvalues = bool(self.bf16_inputs or self.bf16_outputs)
        self.run_options = None
        if plan.run_config:
            self.run_options = ort.RunOptions()
            for key, value in plan.run_config.items():
                self.run_options.add_run_config_entry(key, value)

    def execute(self, requests: list[InferenceRequest]) -> None:
        for run in runs_of(requests, self.batched):
            self._run(run)

    def _run(self, requests: Sequence[InferenceRequest]) -> None:
        arrays = gather_inputs(requests)
        feeds = {name: self._feed(name, array) for name, array in arrays.items()}
        wanted = self._wanted(requests)
        try:
            if self.use_ortvalues:
                results = self._run_ortvalues(wanted, feeds)
            else:
                results = self.session.run(wanted, feeds, self.run_options)
        except Exception as exc:
            raise _ort_error(exc, f"model '{self.model_name}' instance '{self.name}'") from None
        outputs = {
            name: self._fetch(name, value) for name, value in zip(wanted, results, strict=True)
        }
        scatter_outputs(requests, outputs, self.datatypes, batched=self.batched)

    def _wanted(self, requests: Sequence[InferenceRequest]) -> list[str]:
        """Only the outputs some request asks for (all of them when one asks for none)."""
        asked: set[str] = set()
        for request in requests:
            if not request.requested_outputs:
                return self.outputs
            asked.update(out.name for out in request.requested_outputs)
        asked.update(self.state_outputs)
        return [name for name in self.outputs if name in asked]

    def _feed(self, name: str, array: np.ndarray) -> Any:
        if name in self.string_inputs:
            array = datatypes.strings_in(array, name)
        elif name in self.bf16_inputs:
            array = datatypes.bf16_bits(array)
        if name in self.scalar_inputs:
            array = array.reshape(())
        if not self.use_ortvalues:
            return array
        if name in self.bf16_inputs:
            return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, datatypes.ONNX_BFLOAT16)
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))

    def _run_ortvalues(self, wanted: list[str], feeds: dict[str, Any]) -> list[np.ndarray]:
        values = self.session.run_with_ort_values(wanted, feeds, self.run_options)
        return [
            _bits_of(value) if name in self.bf16_outputs else value.numpy()
            for name, value in zip(wanted, values, strict=True)
        ]

    def _fetch(self, name: str, array: np.ndarray) -> np.ndarray:
        if name in self.string_outputs:
            array = datatypes.strings_out(array)
        elif name in self.bf16_outputs:
            array = datatypes.bf16_from_bits(array)
        if name in self.scalar_outputs:
            array = array.reshape((1,))
        return array

    def finalize(self) -> None:
        if self.session is not None:
            self.model.release(self.session)
            self.session = None


def _bits_of(value: Any) -> np.ndarray:
    """A 16-bit tensor's contents (BF16, which has no numpy type here) as uint16, copied out
    of onnxruntime's buffer."""
    shape = tuple(value.shape())
    size = value.tensor_size_in_bytes()
    if size == 0:
        return np.empty(shape, dtype=np.uint16)
    buffer = (ctypes.c_uint8 * size).from_address(value.data_ptr())
    return np.frombuffer(buffer, dtype=np.uint16).copy().reshape(shape)


__all__ = ["ConfigError", "OnnxInstance", "OnnxModel", "OnnxRuntimeBackend"]
