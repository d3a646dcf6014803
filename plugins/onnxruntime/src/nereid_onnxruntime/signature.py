"""A model's inputs and outputs as onnxruntime reports them, auto-complete of a configuration
from them (Triton's rules), and the check of a configuration against them.

Everything here works on plain data (:class:`Signature`) and the ``ModelConfig`` proto, so it
is tested without a session; nothing imports onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.config.model_config_pb2 import ModelInstanceGroup
from nereid.types import DataType

from .datatypes import datatype_of, onnx_type_name

# Triton's default instance count for KIND_CPU groups of onnxruntime models (tritonserver's
# SetDefaultInstanceCount gives 2 to onnxruntime and tensorflow models, 1 to the others).
DEFAULT_CPU_INSTANCE_COUNT = 2


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of the model: its name, onnxruntime type and shape (-1 where the
    dimension is symbolic or unknown)."""

    name: str
    onnx_type: str
    shape: tuple[int, ...]

    @property
    def datatype(self) -> DataType | None:
        return datatype_of(self.onnx_type)


@dataclass
class Signature:
    """What the model takes and returns. ``initializers`` are the overridable initializers:
    inputs with a default value, which a request may leave out."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    initializers: dict[str, TensorInfo] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        inputs: Iterable[Any],
        outputs: Iterable[Any],
        initializers: Iterable[Any] = (),
    ) -> Signature:
        """From onnxruntime ``NodeArg`` objects (``.name``, ``.type``, ``.shape``)."""

        def infos(args: Iterable[Any]) -> dict[str, TensorInfo]:
            return {a.name: TensorInfo(a.name, a.type, _dims(a.shape)) for a in args}

        return cls(infos(inputs), infos(outputs), infos(initializers))

    def can_batch(self) -> bool:
        """Triton's rule: every input and output has a variable first dimension."""
        return all(
            info.shape and info.shape[0] == -1
            for info in (*self.inputs.values(), *self.outputs.values())
        )


def _dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    if shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _fmt(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# -- auto-complete ----------------------------------------------------------------------------


def complete_config(
    config: ModelConfig,
    signature: Signature,
    *,
    default_max_batch_size: int = 4,
    dynamic_batching_available: bool = True,
    gpu_available: bool = False,
) -> None:
    """Fill in ``config`` from the model, in place, as Triton's onnxruntime backend does.

    - ``platform`` becomes ``onnxruntime_onnx`` when empty.
    - When the configuration lists no inputs or no outputs: if every input and output has a
      variable first dimension the model can batch, and ``max_batch_size`` 0 (or absent)
      becomes ``default_max_batch_size``; then the missing inputs / outputs are added with
      their datatypes and dims (without the batch dimension when batching; a scalar becomes
      dims [1], with an empty reshape when batching). A model that cannot batch with a non-zero
      ``max_batch_size`` fails. When the configuration lists both, they are left as written.
    - ``dynamic_batching`` is turned on when the model batches (``max_batch_size`` > 1) and
      no scheduler is configured, if the dynamic scheduler is installed.
    - Instance groups: none given becomes one group of 2 CPU instances (one GPU instance when
      onnxruntime has the CUDA provider); a CPU group without a count gets 2.
    """
    if not config.platform:
        config.platform = "onnxruntime_onnx"
    if not config.input or not config.output:
        _complete_io(config, signature, default_max_batch_size)
        if (
            config.max_batch_size > 1
            and signature.can_batch()
            and dynamic_batching_available
            and not config.HasField("dynamic_batching")
            and not config.HasField("sequence_batching")
        ):
            config.dynamic_batching.SetInParent()
    _complete_instance_groups(config, gpu_available)


def _complete_io(config: ModelConfig, signature: Signature, default_max_batch_size: int) -> None:
    name = config.name
    if signature.can_batch():
        if config.max_batch_size == 0:
            config.max_batch_size = max(default_max_batch_size, 0)
    elif config.max_batch_size != 0:
        raise ConfigError(
            f"autofill failed for model '{name}': model does not support batching while "
            f"non-zero max_batch_size is specified (every input and output needs a variable "
            f"first dimension)"
        )
    batching = config.max_batch_size > 0
    for kind, infos, tensors in (
        ("input", signature.inputs, config.input),
        ("output", signature.outputs, config.output),
    ):
        if len(tensors):
            continue
        for info in infos.values():
            datatype = info.datatype
            if datatype is None:
                raise ConfigError(
                    f"autofill failed for model '{name}': {kind} '{info.name}' has ONNX type "
                    f"{info.onnx_type}, which has no Triton datatype"
                )
            tensor = tensors.add(
                name=info.name, data_type=ProtoDataType.Value(datatype.config_name)
            )
            dims = list(info.shape[1:] if batching else info.shape)
            if dims:
                tensor.dims.extend(dims)
            else:
                tensor.dims.append(1)
                if batching:
                    tensor.reshape.SetInParent()


def _complete_instance_groups(config: ModelConfig, gpu_available: bool) -> None:
    kind_gpu, kind_cpu, kind_auto = (
        ModelInstanceGroup.KIND_GPU,
        ModelInstanceGroup.KIND_CPU,
        ModelInstanceGroup.KIND_AUTO,
    )
    if not config.instance_group:
        group = config.instance_group.add()
        group.kind = kind_gpu if gpu_available else kind_cpu
        group.count = 1 if gpu_available else DEFAULT_CPU_INSTANCE_COUNT
        return
    for group in config.instance_group:
        if group.kind == kind_auto and not group.gpus and gpu_available:
            group.kind = kind_gpu
        on_cpu = group.kind == kind_cpu or (group.kind == kind_auto and not group.gpus)
        if group.count == 0 and on_cpu:
            group.count = DEFAULT_CPU_INSTANCE_COUNT


# -- checking a configuration against the model -----------------------------------------------


def check_config(config: ModelConfig, signature: Signature) -> None:
    """Raise :class:`ConfigError` naming the tensor when ``config`` contradicts the model: an
    unknown name, a missing model input, a datatype or a shape that differs, an optional input
    the model requires."""
    name = config.name
    batching = config.max_batch_size > 0

    def fail(message: str) -> ConfigError:
        return ConfigError(f"unable to load model '{name}': {message}")

    if len(config.batch_input):
        raise fail("batch_input is not supported by the onnxruntime backend")
    accepted = {**signature.initializers, **signature.inputs}
    for tensor in config.input:
        info = accepted.get(tensor.name)
        if info is None:
            raise fail(
                f"configuration input '{tensor.name}' is not an input of the model; the model's "
                f"inputs are {sorted(accepted)}"
            )
        if tensor.optional and tensor.name in signature.inputs:
            raise fail(
                f"input '{tensor.name}' is optional in the configuration, but the model "
                "requires it (only an input with an initializer can be left out)"
            )
        _check_tensor("input", tensor, info, batching, fail)

    configured = {t.name for t in config.input} | _sequence_inputs(config)
    missing = [n for n in signature.inputs if n not in configured]
    if missing:
        raise fail(
            f"the model's input '{missing[0]}' is missing from the configuration "
            f"(configuration expects {len(config.input)} inputs, model provides "
            f"{len(signature.inputs)}: {list(signature.inputs)})"
        )
    for tensor in config.output:
        info = signature.outputs.get(tensor.name)
        if info is None:
            raise fail(
                f"configuration output '{tensor.name}' is not an output of the model; the "
                f"model's outputs are {list(signature.outputs)}"
            )
        _check_tensor("output", tensor, info, batching, fail)


def _sequence_inputs(config: ModelConfig) -> set[str]:
    """Inputs a sequence batcher provides (control tensors, implicit state)."""
    if not config.HasField("sequence_batching"):
        return set()
    seq = config.sequence_batching
    return {c.name for c in seq.control_input} | {s.input_name for s in seq.state}


def _check_tensor(kind: str, tensor: Any, info: TensorInfo, batching: bool, fail) -> None:
    where = f"{kind} '{tensor.name}'"
    model_type = info.datatype
    config_type = ProtoDataType.Name(tensor.data_type)
    if model_type is None:
        raise fail(
            f"{where} has ONNX type {info.onnx_type}, which has no Triton datatype and cannot "
            "be served"
        )
    if model_type.config_name != config_type:
        raise fail(
            f"configuration expects datatype {config_type} for {where}, model provides "
            f"{onnx_type_name(info.onnx_type)}"
        )
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    model = list(info.shape)
    if not model:  # a scalar
        if batching:
            raise fail(
                f"{where} is a scalar in the model, which cannot have a batch dimension; "
                "set max_batch_size: 0"
            )
        if any(d != 1 for d in dims):
            raise fail(
                f"{where} is a scalar in the model; the configuration must give dims [1], not "
                f"{_fmt(dims)}"
            )
        return
    if batching:
        if model[0] != -1:
            raise fail(
                f"{where}: for the model to support batching the shape should have at least 1 "
                "dimension and the first dimension must be -1; but shape expected by the "
                f"model is {_fmt(model)}"
            )
        full = [-1, *dims]
        note = (
            " (an initial batch dimension because max_batch_size > 0 followed by the explicit "
            "tensor shape)"
        )
    else:
        full, note = dims, ""
    if len(full) != len(model):
        raise fail(
            f"{where}: the model expects {len(model)} dimensions (shape {_fmt(model)}) but the "
            f"model configuration specifies {len(full)} dimensions (shape {_fmt(full)}){note}"
        )
    for model_dim, config_dim in zip(model, full, strict=True):
        if model_dim != -1 and model_dim != config_dim:
            raise fail(
                f"{where}: the model expects shape {_fmt(model)} but the model configuration "
                f"specifies shape {_fmt(full)}"
            )


def scalar_tensors(config: ModelConfig, signature: Signature) -> tuple[set[str], set[str]]:
    """Inputs and outputs that are scalars in a non-batching model (dims [1] in the
    configuration): requests carry them as [1], the model takes and returns []."""
    if config.max_batch_size > 0:
        return set(), set()
    accepted = {**signature.initializers, **signature.inputs}
    inputs = {t.name for t in config.input if t.name in accepted and not accepted[t.name].shape}
    outputs = {
        t.name
        for t in config.output
        if t.name in signature.outputs and not signature.outputs[t.name].shape
    }
    return inputs, outputs
