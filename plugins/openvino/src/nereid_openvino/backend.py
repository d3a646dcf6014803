"""The ``openvino`` backend: the kernel's Backend -> Model -> ModelInstance contract over
OpenVINO compiled models. This is the one module that imports openvino; the kernel imports it
when the first OpenVINO model loads.

A model version is ``<version>/model.xml`` (with ``model.bin`` beside it) or the file named by
``default_model_filename`` (``model.onnx``, or any format ``ov.Core.read_model`` reads). The
model is read once, reshaped for a dynamic batch dimension when the configuration batches, and
compiled once per device; the instances on a device share the compiled model and each runs its
own infer request on its own kernel thread (OpenVINO releases the GIL while it infers).

Each instance has two infer requests (``NUM_INFER_REQUESTS``) and runs them asynchronously:
``execute`` starts a batch and returns, the instance takes its next batch while OpenVINO's stream
still computes, and answers a batch when it needs its infer request again or, at the latest, in
``flush`` when it goes idle (the kernel's contract for instances that answer late). OpenVINO
computes on its own stream threads, so without this the stream idles while the instance thread
gathers, answers and pulls (see ``docs/openvino.md`` for the measurement).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.errors import InternalError, InvalidArgumentError, NereidError, UnavailableError
from nereid.runtime.batching import gather_inputs, scatter_outputs
from nereid.types import DataType, InferenceRequest

from .options import CompilePlan, compile_plan
from .signature import (
    Signature,
    TensorInfo,
    check_config,
    complete_config,
    config_shape,
    scalar_tensors,
)

log = logging.getLogger("nereid.openvino")

MODEL_FILENAME = "model.xml"
DEFAULT_MAX_BATCH_SIZE = 4
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")

# openvino's ``Type.to_dtype`` fills a function-local static that needs pybind11's numpy API,
# which pybind11 sets up once with the GIL released: two threads making their first call at once
# can deadlock (two instances taking their first requests together hung for good). One call
# here, under the import lock, before any instance thread exists, sets both up.
ov.Type.f32.to_dtype()


class OpenVINOBackend(Backend):
    """One ``ov.Core`` per server. ``--backend-config=openvino,default-max-batch-size=<n>``
    sets the ``max_batch_size`` auto-complete gives a model that can batch (default 4)."""

    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        self.core = ov.Core()
        value = (context.settings or {}).get("default-max-batch-size")
        try:
            self.default_max_batch_size = (
                DEFAULT_MAX_BATCH_SIZE if value is None else max(int(value), 0)
            )
        except ValueError:
            raise InvalidArgumentError(
                f"--backend-config=openvino,default-max-batch-size={value}: expected an integer"
            ) from None
        self._extensions: set[str] = set()
        self._lock = threading.Lock()

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return OpenVINOModel(self, config, Path(path))

    def scheduler_installed(self, name: str) -> bool:
        api = self.context.api
        return api is None or api.scheduler_installed(name)

    def add_extensions(self, libraries: Sequence[str]) -> None:
        with self._lock:
            for library in libraries:
                if library not in self._extensions:
                    self.core.add_extension(library)
                    self._extensions.add(library)


def signature_of(model: Any) -> Signature:
    """Inputs and outputs of an ``ov.Model`` or ``ov.CompiledModel`` as plain data."""

    def info(port: Any) -> TensorInfo:
        shape = port.get_partial_shape()
        dims = (
            None
            if shape.rank.is_dynamic
            else tuple(d.get_length() if d.is_static else -1 for d in shape)
        )
        return TensorInfo(port.any_name, port.get_element_type().get_type_name(), dims)

    return Signature.of([info(p) for p in model.inputs], [info(p) for p in model.outputs])


class OpenVINOModel(Model):
    def __init__(self, backend: OpenVINOBackend, config: ModelConfig, path: Path) -> None:
        self.backend = backend
        self.core = backend.core
        self.config = config  # completed and validated in place by the kernel before instances
        self.path = path
        self.name = config.name or path.parent.name
        self._lock = threading.Lock()
        self._ov_model: Any = None
        self._prepared = False
        self._signature: Signature | None = None
        self._compiled: dict[str, tuple[Any, CompilePlan]] = {}
        self._users: dict[str, int] = {}

    # -- files -----------------------------------------------------------------------------------

    def model_file(self) -> Path:
        path = self.path / (self.config.default_model_filename or MODEL_FILENAME)
        if not path.exists():
            raise UnavailableError(f"unable to find '{path}' for model '{self.name}'")
        return path

    def _byte_size(self) -> int:
        path = self.model_file()
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        size = path.stat().st_size
        weights = path.with_suffix(".bin")
        if path.suffix == ".xml" and weights.is_file():
            size += weights.stat().st_size
        return size

    def _read(self) -> Any:
        if self._ov_model is None:
            path = self.model_file()
            extension = self.config.parameters.get("CPU_EXTENSION_PATH")
            if extension is not None and extension.string_value.strip():
                self.backend.add_extensions([extension.string_value.strip()])
            try:
                self._ov_model = self.core.read_model(str(path))
            except Exception as exc:
                raise InvalidArgumentError(
                    f"unable to load model '{self.name}' from '{path}': openvino: {exc}"
                ) from None
        return self._ov_model

    # -- auto-complete ---------------------------------------------------------------------------

    def complete_config(self, config: ModelConfig) -> None:
        complete_config(
            config,
            signature_of(self._read()),
            default_max_batch_size=self.backend.default_max_batch_size,
            dynamic_batching_available=self.backend.scheduler_installed("dynamic"),
        )

    # -- reshape, check, compile -----------------------------------------------------------------

    def _prepare(self, plan: CompilePlan) -> None:
        """Reshape the model as the configuration asks and check the configuration against it
        (once, before the first compilation)."""
        if self._prepared:
            return
        config = self.config
        model = self._read()
        batching = config.max_batch_size > 0
        shapes: dict[str, ov.PartialShape] = {}
        if plan.reshape_io_layers:
            for tensor in config.input:
                shape = config_shape(tensor, batching)
                if batching and plan.skip_dynamic_batch:
                    shape[0] = config.max_batch_size
                shapes[tensor.name] = ov.PartialShape(shape)
        elif batching:
            first = config.max_batch_size if plan.skip_dynamic_batch else -1
            for port in model.inputs:
                shape = port.get_partial_shape()
                if shape.rank.is_dynamic or len(shape) == 0:
                    continue
                dims = [d.get_length() if d.is_static else -1 for d in shape]
                if dims[0] != first:
                    dims[0] = first
                    shapes[port.any_name] = ov.PartialShape(dims)
        if shapes:
            try:
                model.reshape(shapes)
            except Exception as exc:
                wanted = ", ".join(f"{k}: {v}" for k, v in shapes.items())
                raise ConfigError(
                    f"unable to load model '{self.name}': openvino cannot reshape the model's "
                    f"inputs to {{{wanted}}}: {exc}"
                ) from None
        self._signature = signature_of(model)
        check_config(config, self._signature, static_batch=plan.skip_dynamic_batch and batching)
        self._prepared = True

    def _compiled_for(self, spec: InstanceSpec) -> tuple[Any, CompilePlan]:
        plan = compile_plan(self.config, spec.kind, spec.device_id)
        with self._lock:
            self._prepare(plan)
            entry = self._compiled.get(plan.device)
            if entry is None:
                self._check_device(plan.device, spec)
                try:
                    compiled = self.core.compile_model(self._ov_model, plan.device, plan.properties)
                except Exception as exc:
                    raise ConfigError(
                        f"unable to load model '{self.name}': openvino cannot compile it for "
                        f"{plan.device} with {plan.properties}: {exc}"
                    ) from None
                entry = (compiled, plan)
                self._compiled[plan.device] = entry
                log.info(
                    "model '%s' compiled for %s with %s",
                    self.name,
                    plan.device,
                    plan.properties,
                )
            self._users[plan.device] = self._users.get(plan.device, 0) + 1
        return entry

    def _check_device(self, device: str, spec: InstanceSpec) -> None:
        base = device.split(":")[0].split(".")[0].upper()
        if base in VIRTUAL_DEVICES:
            return
        available = self.core.available_devices
        if device not in available and base not in available:
            raise UnavailableError(
                f"unable to load model '{self.name}' instance '{spec.name}' ({spec.kind}): "
                f"OpenVINO device {device} is not available (available: {available})"
            )

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        compiled, plan = self._compiled_for(spec)
        try:
            return OpenVINOInstance(self, compiled, plan, spec)
        except BaseException:
            self.release(plan.device)
            raise

    def release(self, device: str) -> None:
        with self._lock:
            users = self._users.get(device, 0) - 1
            if users > 0:
                self._users[device] = users
                return
            self._users.pop(device, None)
            self._compiled.pop(device, None)

    # -- state -----------------------------------------------------------------------------------

    def memory_usage(self) -> list[dict[str, Any]]:
        """The model's size on disk for every compiled model (each holds its weights)."""
        try:
            size = self._byte_size()
        except NereidError:
            return []
        with self._lock:
            devices = list(self._compiled)
        return [
            {"type": "CPU" if d.upper().startswith("CPU") else "GPU", "id": 0, "byte_size": size}
            for d in devices
        ]

    def finalize(self) -> None:
        with self._lock:
            self._compiled.clear()
            self._users.clear()
            self._ov_model = None


@dataclass
class _Running:
    """A batch on an infer request: what its answer needs, and the inputs OpenVINO reads from
    (shared, so they must live until the request completes)."""

    infer_request: Any
    requests: list[InferenceRequest]
    feeds: dict[Any, np.ndarray]
    rows: int


class OpenVINOInstance(ModelInstance):
    """Infer requests on the shared compiled model, ``plan.infer_requests`` of them: gather,
    start, and answer each batch when its request completes (see the module docstring)."""

    def __init__(self, model: OpenVINOModel, compiled: Any, plan: CompilePlan, spec: InstanceSpec):
        config = model.config
        signature = model._signature
        assert signature is not None
        self.name = spec.name
        self.model = model
        self.device = plan.device
        self.free = [compiled.create_infer_request() for _ in range(plan.infer_requests)]
        self.running: collections.deque[_Running] = collections.deque()
        self.batched = config.max_batch_size > 0
        self.max_batch_size = config.max_batch_size
        self.static_batch = self.batched and plan.skip_dynamic_batch
        self.batch_padding = plan.batch_padding
        self.input_names = [t.name for t in config.input]
        self.inputs = {name: compiled.input(name) for name in self.input_names}
        self.outputs = {t.name: compiled.output(t.name) for t in config.output}
        self.datatypes = {
            t.name: DataType.parse(ProtoDataType.Name(t.data_type)) for t in config.output
        }
        self.scalar_inputs, self.scalar_outputs = scalar_tensors(config, signature)

    def execute(self, requests: list[InferenceRequest]) -> None:
        arrays = gather_inputs(requests, self.input_names)
        rows = sum(r.batch_size for r in requests) if self.batched else 0
        pad = 0
        if self.static_batch and rows != self.max_batch_size:
            if not self.batch_padding:
                raise InvalidArgumentError(
                    f"model '{self.model.name}' has a static batch size of "
                    f"{self.max_batch_size} (SKIP_OV_DYNAMIC_BATCHSIZE) and received a batch of "
                    f"{rows}; set ENABLE_BATCH_PADDING to YES to pad smaller batches"
                )
            pad = self.max_batch_size - rows
        feeds = {}
        for name, array in arrays.items():
            if name in self.scalar_inputs:
                array = array.reshape(())
            elif pad:
                array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
            feeds[self.inputs[name]] = np.ascontiguousarray(array)
        if not self.free:
            self._answer_oldest()
        infer_request = self.free.pop()
        try:
            infer_request.start_async(feeds, share_inputs=True)
        except Exception as exc:
            self.free.append(infer_request)
            raise self._failure(exc) from None
        self.running.append(_Running(infer_request, requests, feeds, rows))

    def flush(self) -> None:
        """Answer every batch still running (the runner calls this before going idle)."""
        while self.running:
            self._answer_oldest()

    def _answer_oldest(self) -> None:
        done = self.running.popleft()
        infer_request, requests = done.infer_request, done.requests
        try:
            infer_request.wait()
            results = infer_request.results  # copies: the request's tensors are reused
        except Exception as exc:
            error = self._failure(exc)
            for request in requests:
                request.fail(error)
            return
        finally:
            self.free.append(infer_request)
        outputs: dict[str, np.ndarray] = {}
        for name in self._wanted(requests):
            array = results[self.outputs[name]]
            if name in self.scalar_outputs:
                array = array.reshape((1,))
            elif self.static_batch:
                array = array[: done.rows]
            outputs[name] = array
        scatter_outputs(requests, outputs, self.datatypes, batched=self.batched)

    def _failure(self, exc: Exception) -> InternalError:
        return InternalError(f"model '{self.model.name}': openvino: {exc}")

    def _wanted(self, requests: Sequence[InferenceRequest]) -> list[str]:
        """Only the outputs some request asks for (all of them when one asks for none)."""
        asked: set[str] = set()
        for request in requests:
            if not request.requested_outputs:
                return list(self.outputs)
            asked.update(out.name for out in request.requested_outputs)
        return [name for name in self.outputs if name in asked]

    def finalize(self) -> None:
        self.flush()
        if self.free:
            self.free.clear()
            self.model.release(self.device)


__all__ = ["OpenVINOBackend", "OpenVINOInstance", "OpenVINOModel"]
