"""A model's inputs and outputs as OpenVINO reports them, auto-complete of a configuration from
them (the rules of Triton's openvino backend), and the check of a configuration against them.

Everything here works on plain data (:class:`Signature`) and the ``ModelConfig`` proto, so it is
tested without OpenVINO; nothing imports openvino.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.types import DataType

# OpenVINO element type names (``ov.Type.get_type_name()``) and Triton datatypes.
OV_TYPES = {
    "boolean": DataType.BOOL,
    "u8": DataType.UINT8,
    "u16": DataType.UINT16,
    "u32": DataType.UINT32,
    "u64": DataType.UINT64,
    "i8": DataType.INT8,
    "i16": DataType.INT16,
    "i32": DataType.INT32,
    "i64": DataType.INT64,
    "f16": DataType.FP16,
    "f32": DataType.FP32,
    "f64": DataType.FP64,
}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: a name, the OpenVINO element type name and the shape (-1 where a
    dimension is dynamic; ``None`` when even the rank is dynamic)."""

    name: str
    ov_type: str
    shape: tuple[int, ...] | None

    @property
    def datatype(self) -> DataType | None:
        return OV_TYPES.get(self.ov_type)


@dataclass
class Signature:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    @classmethod
    def of(cls, inputs: Iterable[TensorInfo], outputs: Iterable[TensorInfo]) -> Signature:
        return cls({t.name: t for t in inputs}, {t.name: t for t in outputs})

    def can_batch(self) -> bool:
        """Every input and output has a dynamic first dimension."""
        return all(
            info.shape is not None and len(info.shape) > 0 and info.shape[0] == -1
            for info in (*self.inputs.values(), *self.outputs.values())
        )


def _fmt(shape: Iterable[int] | None) -> str:
    return "[...]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


# -- auto-complete ----------------------------------------------------------------------------


def complete_config(
    config: ModelConfig,
    signature: Signature,
    *,
    default_max_batch_size: int = 4,
    dynamic_batching_available: bool = True,
) -> None:
    """Fill in ``config`` from the model, in place, as Triton's openvino backend does.

    - When the configuration lists no inputs or no outputs: if every input and output has a
      dynamic first dimension the model can batch, and ``max_batch_size`` 0 (or absent) becomes
      ``default_max_batch_size``; the missing inputs / outputs are added with datatypes and dims
      (without the batch dimension when batching). Inputs and outputs already listed are kept.
    - ``dynamic_batching`` is turned on when the model batches (``max_batch_size`` > 1) and no
      scheduler is configured, if the dynamic scheduler is installed.
    """
    if len(config.input) and len(config.output):
        return
    name = config.name
    if signature.can_batch():
        if config.max_batch_size == 0:
            config.max_batch_size = max(default_max_batch_size, 0)
    elif config.max_batch_size != 0:
        raise ConfigError(
            f"autofill failed for model '{name}': model does not support batching while "
            "non-zero max_batch_size is specified (every input and output needs a dynamic "
            "first dimension)"
        )
    batching = config.max_batch_size > 0
    for kind, infos, tensors in (
        ("input", signature.inputs, config.input),
        ("output", signature.outputs, config.output),
    ):
        if len(tensors):
            continue
        for info in infos.values():
            if info.datatype is None:
                raise ConfigError(
                    f"autofill failed for model '{name}': {kind} '{info.name}' has OpenVINO "
                    f"type {info.ov_type}, which Nereid cannot serve"
                )
            if info.shape is None:
                raise ConfigError(
                    f"autofill failed for model '{name}': {kind} '{info.name}' has a dynamic "
                    "rank; give its dims in config.pbtxt"
                )
            tensor = tensors.add(
                name=info.name, data_type=ProtoDataType.Value(info.datatype.config_name)
            )
            dims = list(info.shape[1:] if batching else info.shape)
            if dims:
                tensor.dims.extend(dims)
            else:
                tensor.dims.append(1)
                if batching:
                    tensor.reshape.SetInParent()
    if (
        config.max_batch_size > 1
        and dynamic_batching_available
        and not config.HasField("dynamic_batching")
        and not config.HasField("sequence_batching")
    ):
        config.dynamic_batching.SetInParent()


# -- checking a configuration against the model -----------------------------------------------


def check_config(config: ModelConfig, signature: Signature, *, static_batch: bool = False) -> None:
    """Raise :class:`ConfigError` naming the tensor when ``config`` contradicts the model: an
    unknown name, a missing model input, a datatype or shape that differs. ``static_batch``: the
    model's batch dimension is ``max_batch_size`` (``SKIP_OV_DYNAMIC_BATCHSIZE``)."""
    name = config.name

    def fail(message: str) -> ConfigError:
        return ConfigError(f"unable to load model '{name}': {message}")

    if len(config.batch_input) or len(config.batch_output):
        raise fail("batch_input and batch_output are not supported by the openvino backend")
    for tensor in config.input:
        info = signature.inputs.get(tensor.name)
        if info is None:
            raise fail(
                f"configuration input '{tensor.name}' is not an input of the model; the model's "
                f"inputs are {sorted(signature.inputs)}"
            )
        _check_tensor("input", tensor, info, config, static_batch, fail)
    configured = {t.name for t in config.input}
    missing = [n for n in signature.inputs if n not in configured]
    if missing:
        raise fail(
            f"the model's input '{missing[0]}' is missing from the configuration (the model's "
            f"inputs are {list(signature.inputs)})"
        )
    for tensor in config.output:
        info = signature.outputs.get(tensor.name)
        if info is None:
            raise fail(
                f"configuration output '{tensor.name}' is not an output of the model; the "
                f"model's outputs are {sorted(signature.outputs)}"
            )
        _check_tensor("output", tensor, info, config, static_batch, fail)


def config_shape(tensor: Any, batching: bool) -> list[int]:
    """The full shape the configuration gives a tensor (with -1 first when batching)."""
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    return [-1, *dims] if batching else dims


def _check_tensor(
    kind: str, tensor: Any, info: TensorInfo, config: ModelConfig, static_batch: bool, fail
) -> None:
    where = f"{kind} '{tensor.name}'"
    model_type = info.datatype
    config_type = ProtoDataType.Name(tensor.data_type)
    if model_type is None:
        raise fail(f"{where} has OpenVINO type {info.ov_type}, which Nereid cannot serve")
    if model_type.config_name != config_type:
        raise fail(
            f"configuration expects datatype {config_type} for {where}, model provides "
            f"{model_type.config_name} (OpenVINO {info.ov_type})"
        )
    if info.shape is None:  # dynamic rank: anything goes, OpenVINO checks at inference
        return
    batching = config.max_batch_size > 0
    full = config_shape(tensor, batching)
    model = list(info.shape)
    if not model:  # a scalar
        if batching:
            raise fail(f"{where} is a scalar in the model; set max_batch_size: 0")
        if any(d != 1 for d in full):
            raise fail(f"{where} is a scalar in the model; the configuration must give dims [1]")
        return
    if batching:
        first_ok = model[0] == -1 or (static_batch and model[0] == config.max_batch_size)
        if not first_ok:
            raise fail(
                f"{where}: for the model to support batching its first dimension must be "
                f"dynamic, but the model's shape is {_fmt(model)}"
            )
    if len(full) != len(model):
        raise fail(
            f"{where}: the model expects {len(model)} dimensions (shape {_fmt(model)}) but the "
            f"model configuration specifies {len(full)} dimensions (shape {_fmt(full)})"
        )
    for index, (model_dim, config_dim) in enumerate(zip(model, full, strict=True)):
        if batching and index == 0:
            continue
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

    def scalars(tensors: Any, infos: dict[str, TensorInfo]) -> set[str]:
        return {t.name for t in tensors if t.name in infos and infos[t.name].shape == ()}

    return scalars(config.input, signature.inputs), scalars(config.output, signature.outputs)
