"""The ``pytorch`` backend: the kernel's Backend -> Model -> ModelInstance contract over
TorchScript modules and ``torch.export`` programs. This is the one module that imports torch;
the kernel imports it when the first PyTorch model loads.

A model version holds ``model.pt`` (TorchScript, ``torch.jit.save`` of a traced or scripted
module, loaded with ``torch.jit.load``) or ``model.pt2`` (``torch.export.save`` of an exported
program, loaded with ``torch.export.load(...).module()``). ``default_model_filename`` names
another file: one ending in ``.pt2`` is an exported program, any other is TorchScript. Without
it ``model.pt`` is used, else ``model.pt2``.

Each instance has its own module (or shares its device's with ``ENABLE_WEIGHT_SHARING``) and runs
on its own kernel thread; torch releases the GIL inside its operators, so instances run in
parallel.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.errors import InternalError, InvalidArgumentError, UnavailableError
from nereid.runtime.batching import gather_inputs, runs_of, scatter_outputs
from nereid.types import BF16_DTYPE, DataType, InferenceRequest

from .naming import InputPlan, plan_inputs, plan_outputs
from .options import TorchOptions

log = logging.getLogger("nereid.pytorch")

TORCHSCRIPT_FILENAME = "model.pt"
EXPORTED_FILENAME = "model.pt2"
DEFAULT_MAX_BATCH_SIZE = 4

_TORCH_TYPES: dict[Any, DataType] = {
    torch.bool: DataType.BOOL,
    torch.uint8: DataType.UINT8,
    torch.int8: DataType.INT8,
    torch.int16: DataType.INT16,
    torch.int32: DataType.INT32,
    torch.int64: DataType.INT64,
    torch.float16: DataType.FP16,
    torch.float32: DataType.FP32,
    torch.float64: DataType.FP64,
    torch.bfloat16: DataType.BF16,
}
for _name, _type in (("uint16", DataType.UINT16), ("uint32", DataType.UINT32)):
    if hasattr(torch, _name):
        _TORCH_TYPES[getattr(torch, _name)] = _type
if hasattr(torch, "uint64"):
    _TORCH_TYPES[torch.uint64] = DataType.UINT64


def _datatype(config_type: int) -> DataType:
    return DataType.parse(ProtoDataType.Name(config_type))


# -- process-wide torch switches -------------------------------------------------------------------

_globals_lock = threading.Lock()
_intra_threads: int | None = None
_inter_threads: int | None = None


def _apply_globals(name: str, options: TorchOptions, torchscript: bool) -> None:
    """Apply the process-wide switches a model asks for (logged: they affect every model)."""
    global _intra_threads, _inter_threads
    with _globals_lock:
        if options.intra_op_threads and options.intra_op_threads != _intra_threads:
            if _intra_threads is not None:
                log.warning(
                    "model '%s': torch intra-op threads %d -> %d for the whole process "
                    "(torch.set_num_threads is process-wide)",
                    name,
                    _intra_threads,
                    options.intra_op_threads,
                )
            torch.set_num_threads(options.intra_op_threads)
            _intra_threads = options.intra_op_threads
        if options.inter_op_threads and options.inter_op_threads != _inter_threads:
            try:
                torch.set_num_interop_threads(options.inter_op_threads)
                _inter_threads = options.inter_op_threads
            except RuntimeError:
                log.warning(
                    "model '%s': INTER_OP_THREAD_COUNT %d ignored: torch's inter-op thread "
                    "count can be set once per process, before any inter-op work (it is %d)",
                    name,
                    options.inter_op_threads,
                    torch.get_num_interop_threads(),
                )
        switches = (
            ("ENABLE_JIT_EXECUTOR", options.jit_executor, "_jit_set_profiling_executor"),
            ("ENABLE_JIT_PROFILING", options.jit_profiling, "_jit_set_profiling_mode"),
            ("ENABLE_TENSOR_FUSER", options.tensor_fuser, "_jit_set_texpr_fuser_enabled"),
        )
        for key, value, setter in switches:
            if value is None:
                continue
            if not torchscript:
                log.info("model '%s': %s applies to TorchScript only; ignored", name, key)
            elif hasattr(torch._C, setter):
                getattr(torch._C, setter)(value)
                log.info("model '%s': %s=%s (process-wide)", name, key, value)
            else:
                log.warning("model '%s': %s ignored: not in torch %s", name, key, torch.__version__)
        if options.nvfuser is not None:
            log.warning("model '%s': ENABLE_NVFUSER ignored: nvFuser is gone from PyTorch", name)
        if options.disable_cudnn:
            torch.backends.cudnn.enabled = False
            log.info("model '%s': DISABLE_CUDNN: cuDNN disabled for the whole process", name)


# -- the exported program's signature -------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: DataType | None
    shape: tuple[int, ...]  # -1 where dynamic


@dataclass(frozen=True)
class ProgramSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def dynamic_batch(self) -> bool:
        every = self.inputs + self.outputs
        return bool(self.inputs) and all(t.shape and t.shape[0] == -1 for t in every)


def _spec(name: str, value: Any) -> TensorSpec:
    if not isinstance(value, torch.Tensor):
        return TensorSpec(name, None, ())
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, _TORCH_TYPES.get(value.dtype), shape)


def program_signature(program: Any) -> ProgramSignature:
    """User inputs (named as the forward's arguments) and outputs (``OUTPUT__<i>``)."""
    from torch.export.graph_signature import InputKind, OutputKind

    nodes = {node.name: node for node in program.graph.nodes}
    inputs, outputs = [], []
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT and hasattr(spec.arg, "name"):
            node = nodes.get(spec.arg.name)
            inputs.append(_spec(spec.arg.name, node.meta.get("val") if node else None))
    for spec in program.graph_signature.output_specs:
        if spec.kind == OutputKind.USER_OUTPUT:
            node = nodes.get(getattr(spec.arg, "name", ""))
            value = node.meta.get("val") if node is not None else None
            outputs.append(_spec(f"OUTPUT__{len(outputs)}", value))
    return ProgramSignature(tuple(inputs), tuple(outputs))


# -- backend and model ----------------------------------------------------------------------------


class PyTorchBackend(Backend):
    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)
        value = context.settings.get("default-max-batch-size", str(DEFAULT_MAX_BATCH_SIZE))
        try:
            self.default_max_batch_size = int(value)
        except ValueError:
            raise InvalidArgumentError(
                f"--backend-config=pytorch,default-max-batch-size={value}: expected an integer"
            ) from None

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return TorchModel(self, config, Path(path))

    def scheduler_installed(self, name: str) -> bool:
        api = self.context.api
        return api is None or api.scheduler_installed(name)


class TorchModel(Model):
    def __init__(self, backend: PyTorchBackend, config: ModelConfig, path: Path) -> None:
        self.backend = backend
        self.config = config  # completed and validated in place by the kernel before instances
        self.path = path
        self.name = config.name or path.parent.name
        self._lock = threading.Lock()
        self._checked: tuple[InputPlan, list[tuple[str, int]]] | None = None
        self._program: Any = None  # the loaded ExportedProgram, CPU
        self._signature: ProgramSignature | None = None
        self._shared: dict[str, Any] = {}  # device -> module, with ENABLE_WEIGHT_SHARING
        self._modules: dict[int, tuple[Any, int]] = {}  # id -> (module, instances using it)
        self._load_lock = threading.RLock()

    # -- files -------------------------------------------------------------------------------

    def model_file(self) -> Path:
        filename = self.config.default_model_filename
        if not filename:
            exported = self.path / EXPORTED_FILENAME
            torchscript = self.path / TORCHSCRIPT_FILENAME
            only_exported = exported.is_file() and not torchscript.is_file()
            filename = EXPORTED_FILENAME if only_exported else TORCHSCRIPT_FILENAME
        path = self.path / filename
        if not path.is_file():
            raise UnavailableError(
                f"unable to find '{path}' for model '{self.name}' (the pytorch backend loads "
                f"'{TORCHSCRIPT_FILENAME}' (TorchScript), '{EXPORTED_FILENAME}' (torch.export) "
                "or the file named by default_model_filename)"
            )
        return path

    @property
    def exported(self) -> bool:
        name = self.config.default_model_filename
        if name:
            return name.endswith(".pt2")
        return self.model_file().suffix == ".pt2"

    def program(self) -> Any:
        with self._load_lock:
            if self._program is None:
                self._program = self._load_program()
            return self._program

    def _load_program(self) -> Any:
        path = self.model_file()
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise InvalidArgumentError(
                f"unable to load model '{self.name}': '{path}' is not a torch.export "
                f"program saved with torch.export.save: {exc}"
            ) from None
        self._signature = program_signature(program)
        return program

    def signature(self) -> ProgramSignature:
        self.program()
        assert self._signature is not None
        return self._signature

    # -- auto-complete -----------------------------------------------------------------------

    def complete_config(self, config: ModelConfig) -> None:
        """Platform ``pytorch_libtorch``; for exported programs, inputs, outputs and
        ``max_batch_size`` from the program (TorchScript carries no names or types)."""
        if not config.platform:
            config.platform = "pytorch_libtorch"
        if not self.exported:
            return
        signature = self.signature()
        batching = signature.dynamic_batch
        if config.max_batch_size == 0 and batching and not (config.input or config.output):
            config.max_batch_size = self.backend.default_max_batch_size
        skip = 1 if config.max_batch_size > 0 else 0

        def dims(spec: TensorSpec) -> list[int]:
            return list(spec.shape[skip:])

        if not config.input:
            for spec in signature.inputs:
                if spec.datatype is None:
                    continue
                tensor = config.input.add(name=spec.name, dims=dims(spec))
                tensor.data_type = ProtoDataType.Value(spec.datatype.config_name)
        if not config.output:
            for spec in signature.outputs:
                if spec.datatype is None:
                    continue
                tensor = config.output.add(name=spec.name, dims=dims(spec))
                tensor.data_type = ProtoDataType.Value(spec.datatype.config_name)
        if (
            config.max_batch_size > 1
            and not config.HasField("dynamic_batching")
            and not config.HasField("sequence_batching")
            and self.backend.scheduler_installed("dynamic")
        ):
            config.dynamic_batching.SetInParent()

    # -- checks ------------------------------------------------------------------------------

    def input_names(self) -> list[str]:
        """The configuration's inputs, then those a sequence batcher adds (controls, state)."""
        names = [t.name for t in self.config.input]
        if self.config.HasField("sequence_batching"):
            seq = self.config.sequence_batching
            extra = [c.name for c in seq.control_input] + [s.input_name for s in seq.state]
            names += [n for n in extra if n not in names]
        return names

    def output_names(self) -> list[str]:
        names = [t.name for t in self.config.output]
        if self.config.HasField("sequence_batching"):
            names += [
                s.output_name
                for s in self.config.sequence_batching.state
                if s.output_name not in names
            ]
        return names

    def check(self, module: Any) -> tuple[InputPlan, list[tuple[str, int]]]:
        """The configuration against the model, once: raises ConfigError."""
        with self._lock:
            if self._checked is None:
                self._checked = self._check(module)
            return self._checked

    def _check(self, module: Any) -> tuple[InputPlan, list[tuple[str, int]]]:
        config = self.config

        def fail(message: str) -> ConfigError:
            return ConfigError(f"model '{self.name}': {message}")

        tensors = [("input", t) for t in config.input] + [("output", t) for t in config.output]
        if config.HasField("sequence_batching"):
            tensors += [("state", s) for s in config.sequence_batching.state]
        for kind, tensor in tensors:
            if tensor.data_type == ProtoDataType.TYPE_STRING:
                name = getattr(tensor, "name", "") or getattr(tensor, "input_name", "")
                raise fail(
                    f"{kind} '{name}' is TYPE_STRING (BYTES): the pytorch backend serves "
                    "numeric and boolean tensors only (torch has no string tensor)"
                )
        if config.batch_input or config.batch_output:
            raise fail("batch_input and batch_output are not supported by the pytorch backend")
        what = "an exported program" if self.exported else "TorchScript"
        if not config.input:
            raise fail(
                f"no inputs in the configuration: {what} models need every input listed "
                "(name, data_type, dims), as in Triton"
                + ("" if self.exported else "; TorchScript carries no names or types")
            )
        if not config.output:
            raise fail(f"no outputs in the configuration: {what} models need every output listed")
        names = self.input_names()
        try:
            if self.exported:
                signature = self.signature()
                arguments = [t.name for t in signature.inputs]
                plan = plan_inputs(names, arguments)
            else:
                arguments, required, dict_input = _script_arguments(module)
                plan = plan_inputs(names, arguments, required, dict_input)
        except ValueError as exc:
            raise fail(str(exc)) from None
        outputs = plan_outputs(self.output_names())
        if self.exported:
            self._check_program(plan, outputs, fail)
        return plan, outputs

    def _check_program(self, plan: InputPlan, outputs: list[tuple[str, int]], fail) -> None:
        signature = self.signature()
        config = self.config
        batch = 1 if config.max_batch_size > 0 else 0
        configured = {t.name: ("input", t) for t in config.input}
        configured.update({t.name: ("output", t) for t in config.output})
        pairs = [(name, signature.inputs[i]) for i, name in enumerate(plan.order) if name]
        pairs += [(name, signature.outputs[i]) for name, i in outputs if i < len(signature.outputs)]
        for name, index in outputs:
            if index >= len(signature.outputs):
                raise fail(
                    f"output '{name}' takes result {index} but the program returns "
                    f"{len(signature.outputs)} tensor(s)"
                )
        for name, spec in pairs:
            if name not in configured:
                continue
            kind, tensor = configured[name]
            want = _datatype(tensor.data_type)
            if spec.datatype is not None and want != spec.datatype:
                raise fail(
                    f"{kind} '{name}' is {want.config_name} in the configuration but "
                    f"{spec.datatype.config_name} in the program"
                )
            if batch and spec.shape and spec.shape[0] != -1:
                raise fail(
                    f"max_batch_size {config.max_batch_size} needs a dynamic first dimension "
                    f"but {kind} '{name}' has shape {list(spec.shape)} in the program (export "
                    "with dynamic_shapes, a torch.export.Dim for dimension 0)"
                )
            model_dims = spec.shape[batch:]
            dims = list(tensor.dims)
            if len(dims) != len(model_dims) or any(
                d != m and d != -1 and m != -1 for d, m in zip(dims, model_dims, strict=False)
            ):
                raise fail(
                    f"{kind} '{name}' has dims {dims} in the configuration but "
                    f"{list(model_dims)} in the program"
                    + (" (after the batch dimension)" if batch else "")
                )

    # -- instances ---------------------------------------------------------------------------

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        options = TorchOptions.of(self.config)
        if spec.kind == "KIND_GPU":
            if not torch.cuda.is_available():
                raise UnavailableError(
                    f"unable to load model '{self.name}' instance '{spec.name}': KIND_GPU but "
                    f"this torch ({torch.__version__}) sees no CUDA device"
                )
            if spec.device_id >= torch.cuda.device_count():
                raise UnavailableError(
                    f"unable to load model '{self.name}' instance '{spec.name}': GPU "
                    f"{spec.device_id} not found ({torch.cuda.device_count()} visible)"
                )
            device: str | None = f"cuda:{spec.device_id}"
        elif spec.kind == "KIND_MODEL":
            device = None  # the model places itself; inputs arrive on the CPU
        else:
            device = "cpu"
        _apply_globals(self.name, options, not self.exported)
        module = self._module_for(device, options)
        try:
            plan, outputs = self.check(module)
        except BaseException:
            self.release(module)
            raise
        return TorchInstance(self, module, device, plan, outputs, options, spec)

    def _module_for(self, device: str | None, options: TorchOptions) -> Any:
        key = device or "model"
        with self._lock:
            module = self._shared.get(key) if options.weight_sharing else None
        if module is None:
            module = self._load(device)
            with self._lock:
                if options.weight_sharing:
                    self._shared[key] = module
        with self._lock:
            entry = self._modules.get(id(module))
            self._modules[id(module)] = (module, (entry[1] if entry else 0) + 1)
        return module

    def _load(self, device: str | None) -> Any:
        path = self.model_file()
        if self.exported:
            module = self.program().module()
            if device is not None:
                module = module.to(device)
            return module
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise InvalidArgumentError(
                f"unable to load model '{self.name}': '{path}' is not a TorchScript module "
                f"saved with torch.jit.save (exported programs go in '{EXPORTED_FILENAME}' or a "
                f"'.pt2' default_model_filename): {exc}"
            ) from None
        module.eval()
        return module

    def release(self, module: Any) -> None:
        with self._lock:
            entry = self._modules.get(id(module))
            if entry is None:
                return
            if entry[1] > 1:
                self._modules[id(module)] = (module, entry[1] - 1)
                return
            del self._modules[id(module)]
            for key, shared in list(self._shared.items()):
                if shared is module:
                    del self._shared[key]

    # -- state -------------------------------------------------------------------------------

    def memory_usage(self) -> list[dict[str, Any]]:
        """Bytes of parameters and buffers of every module held, by device."""
        totals: dict[tuple[str, int], int] = {}
        with self._lock:
            modules = [module for module, _ in self._modules.values()]
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                where = ("GPU", tensor.device.index or 0) if tensor.is_cuda else ("CPU", 0)
                totals[where] = totals.get(where, 0) + tensor.numel() * tensor.element_size()
        return [{"type": t, "id": i, "byte_size": n} for (t, i), n in totals.items()]

    def finalize(self) -> None:
        with self._lock:
            self._shared.clear()
            self._modules.clear()
        self._program = None


def _script_arguments(module: Any) -> tuple[list[str] | None, int | None, bool]:
    """A TorchScript module's forward argument names (without ``self``), how many have no
    default, and whether it takes one ``Dict[str, Tensor]``."""
    try:
        arguments = list(module.forward.schema.arguments)[1:]
    except Exception:  # pragma: no cover - a module without a scripted forward
        return None, None, False
    names = [a.name for a in arguments]
    required = sum(1 for a in arguments if not a.has_default_value())
    dict_input = len(arguments) == 1 and isinstance(arguments[0].type, torch._C.DictType)
    return names, required, dict_input


# -- execution ------------------------------------------------------------------------------------


class TorchInstance(ModelInstance):
    """One module's worth of execution: gather, run, scatter."""

    def __init__(
        self,
        model: TorchModel,
        module: Any,
        device: str | None,
        plan: InputPlan,
        outputs: list[tuple[str, int]],
        options: TorchOptions,
        spec: InstanceSpec,
    ) -> None:
        config = model.config
        self.model = model
        self.model_name = model.name
        self.name = spec.name
        self.module = module
        self.device = torch.device(device) if device and device != "cpu" else None
        self.plan = plan
        self.outputs = outputs
        self.input_names = list(model.input_names())
        self.batched = config.max_batch_size > 0
        self.datatypes = {t.name: _datatype(t.data_type) for t in config.output}
        if config.HasField("sequence_batching"):
            for state in config.sequence_batching.state:
                self.datatypes.setdefault(state.output_name, _datatype(state.data_type))
        self.inference_mode = options.inference_mode
        self.optimized = not (options.disable_optimized_execution and not model.exported)
        self.cache_cleaning = options.cache_cleaning and self.device is not None
        self.stream = torch.cuda.Stream(self.device) if self.device is not None else None

    def execute(self, requests: list[InferenceRequest]) -> None:
        for run in runs_of(requests, self.batched):
            self._run(run)
        if self.cache_cleaning:
            torch.cuda.empty_cache()

    def _context(self) -> Any:
        if self.optimized and self.stream is None:  # the common CPU case: one context
            return torch.inference_mode() if self.inference_mode else torch.no_grad()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.inference_mode else torch.no_grad())
        if not self.optimized:
            stack.enter_context(torch.jit.optimized_execution(False))
        if self.stream is not None:
            stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def _run(self, requests: Sequence[InferenceRequest]) -> None:
        arrays = gather_inputs(requests, self.input_names)
        with self._context():
            tensors = {name: self._tensor(array) for name, array in arrays.items()}
            if self.plan.mode == "dict":
                args: tuple[Any, ...] = (tensors,)
            else:
                args = tuple(tensors.get(name) if name else None for name in self.plan.order)
            try:
                result = self.module(*args)
            except Exception as exc:
                raise InternalError(
                    f"model '{self.model_name}' instance '{self.name}': PyTorch execute "
                    f"failure: {exc}"
                ) from None
            results = self._results(result)
            outputs = {}
            for name, index in self.outputs:
                if index >= len(results):
                    raise InternalError(
                        f"model '{self.model_name}': output '{name}' takes result {index} but "
                        f"the model returned {len(results)} tensor(s)"
                    )
                outputs[name] = self._array(name, results[index], requests)
        scatter_outputs(requests, outputs, self.datatypes, batched=self.batched)

    def _tensor(self, array: np.ndarray) -> Any:
        if not array.flags.writeable:  # torch tensors are writable; never alias read-only memory
            array = array.copy()
        if array.dtype == BF16_DTYPE and np.dtype(np.uint16) != BF16_DTYPE:
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        if self.device is not None:
            tensor = tensor.to(self.device, non_blocking=True)
        return tensor

    def _results(self, result: Any) -> list[Any]:
        if isinstance(result, torch.Tensor):
            return [result]
        if isinstance(result, (tuple, list)):
            return list(result)
        raise InternalError(
            f"model '{self.model_name}' returned {type(result).__name__}: the pytorch backend "
            "takes a tensor, or a tuple or list of tensors"
        )

    def _array(self, name: str, value: Any, requests: Sequence[InferenceRequest]) -> np.ndarray:
        if not isinstance(value, torch.Tensor):
            raise InternalError(
                f"model '{self.model_name}': output '{name}' is {type(value).__name__}, "
                "not a tensor"
            )
        want = self.datatypes.get(name)
        got = _TORCH_TYPES.get(value.dtype)
        if want is not None and got != want:
            raise InternalError(
                f"model '{self.model_name}': output '{name}' is {value.dtype} but the "
                f"configuration says {want.config_name}"
            )
        if self.batched:
            rows = sum(request.batch_size for request in requests)
            if value.dim() == 0 or value.shape[0] != rows:
                raise InternalError(
                    f"model '{self.model_name}': output '{name}' has shape "
                    f"{list(value.shape)}, expected {rows} row(s) in dimension 0"
                )
        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy().view(BF16_DTYPE)
        return value.numpy()

    def finalize(self) -> None:
        if self.module is not None:
            self.model.release(self.module)
            self.module = None


__all__ = ["PyTorchBackend", "TorchInstance", "TorchModel", "program_signature"]
