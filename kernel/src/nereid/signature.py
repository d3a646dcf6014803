"""A model's inputs and outputs as plain data, Triton's auto-complete of a configuration from
them, and the check of a configuration against them: the rules every backend that reads a model
file's signature shares (onnxruntime, OpenVINO).

What differs between frameworks (their type names, the wording of a few messages) comes in as a
:class:`Framework`; nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Self

from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.config.model_config_pb2 import ModelInput, ModelOutput
from nereid.types import DataType


@dataclass(frozen=True)
class Framework:
    """The framework-specific part of the rules."""

    name: str
    """As messages name its types: ``ONNX`` in "input 'X' has ONNX type tensor(float8e4m3fn)"."""
    backend: str
    """The backend name messages give: ``onnxruntime``."""
    datatype_of: Callable[[str], DataType | None]
    """The Triton datatype of a framework type name, ``None`` when there is none."""
    describe_type: Callable[[str], str]
    """A framework type name (one with a Triton datatype) as a mismatch message shows it."""
    batch_dimension_rule: str
    """What batching needs of a model's shape, completing "for the model to support batching ";
    ``{shape}`` is the model's shape."""
    unsupported_batch_fields: tuple[str, ...] = ("batch_input",)
    """Configuration fields the backend refuses (``batch_input``, ``batch_output``)."""
    checks_optional_inputs: bool = False
    """Whether an input marked ``optional`` must be one the model can do without (an
    initializer); a backend without the notion leaves the request to fail instead."""


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of the model: its name, the framework's type name (``tensor(float)``,
    ``f32``) and its shape (-1 where a dimension is variable; ``None`` when even the rank is)."""

    name: str
    framework_type: str
    shape: tuple[int, ...] | None


@dataclass
class Signature:
    """What the model takes and returns. ``initializers`` are inputs with a default value, which
    a request may leave out."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    initializers: dict[str, TensorInfo] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        inputs: Iterable[TensorInfo],
        outputs: Iterable[TensorInfo],
        initializers: Iterable[TensorInfo] = (),
    ) -> Self:
        """From lists of :class:`TensorInfo`."""

        def by_name(infos: Iterable[TensorInfo]) -> dict[str, TensorInfo]:
            return {info.name: info for info in infos}

        return cls(by_name(inputs), by_name(outputs), by_name(initializers))

    def can_batch(self) -> bool:
        """Triton's rule: every input and output has a variable first dimension."""
        return all(
            info.shape and info.shape[0] == -1
            for info in (*self.inputs.values(), *self.outputs.values())
        )


def _fmt(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def config_shape(tensor: ModelInput | ModelOutput, batching: bool) -> list[int]:
    """The full shape the configuration gives a tensor (with -1 first when batching)."""
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    return [-1, *dims] if batching else dims


# -- auto-complete ----------------------------------------------------------------------------


def complete_config(
    config: ModelConfig,
    signature: Signature,
    framework: Framework,
    *,
    default_max_batch_size: int = 4,
    dynamic_batching_available: bool = True,
) -> None:
    """Fill in ``config``'s inputs, outputs and batching from the model, in place, by Triton's
    rules.

    - When the configuration lists no inputs or no outputs: if every input and output has a
      variable first dimension the model can batch, and ``max_batch_size`` 0 (or absent)
      becomes ``default_max_batch_size``; then the missing inputs / outputs are added with
      their datatypes and dims (without the batch dimension when batching; a scalar becomes
      dims [1], with an empty reshape when batching). A model that cannot batch with a non-zero
      ``max_batch_size`` fails. When the configuration lists both, they are left as written.
    - ``dynamic_batching`` is then turned on when the model batches (``max_batch_size`` > 1)
      and no scheduler is configured, if the dynamic scheduler is installed.
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
            datatype = framework.datatype_of(info.framework_type)
            if datatype is None:
                raise ConfigError(
                    f"autofill failed for model '{name}': {kind} '{info.name}' has "
                    f"{framework.name} type {info.framework_type}, which has no Triton datatype"
                )
            if info.shape is None:
                raise ConfigError(
                    f"autofill failed for model '{name}': {kind} '{info.name}' has a dynamic "
                    "rank; give its dims in config.pbtxt"
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
    if (
        config.max_batch_size > 1
        and dynamic_batching_available
        and not config.HasField("dynamic_batching")
        and not config.HasField("sequence_batching")
    ):
        config.dynamic_batching.SetInParent()


# -- checking a configuration against the model -----------------------------------------------


def check_config(
    config: ModelConfig,
    signature: Signature,
    framework: Framework,
    *,
    provided_inputs: Collection[str] = (),
    static_batch: bool = False,
) -> None:
    """Raise :class:`ConfigError` naming the tensor when ``config`` contradicts the model: an
    unknown name, a missing model input, a datatype or a shape that differs, an optional input
    the model requires (where ``framework`` checks those).

    ``provided_inputs``: model inputs the server feeds itself (a sequence batcher's controls),
    which the configuration need not list. ``static_batch``: the model's batch dimension is
    fixed at ``max_batch_size`` instead of variable.
    """
    name = config.name

    def fail(message: str) -> ConfigError:
        return ConfigError(f"unable to load model '{name}': {message}")

    refused = framework.unsupported_batch_fields
    if any(len(getattr(config, field_name)) for field_name in refused):
        verb = "is" if len(refused) == 1 else "are"
        raise fail(
            f"{' and '.join(refused)} {verb} not supported by the {framework.backend} backend"
        )
    accepted = {**signature.initializers, **signature.inputs}
    for tensor in config.input:
        info = accepted.get(tensor.name)
        if info is None:
            raise fail(
                f"configuration input '{tensor.name}' is not an input of the model; the model's "
                f"inputs are {sorted(accepted)}"
            )
        if framework.checks_optional_inputs and tensor.optional and tensor.name in signature.inputs:
            raise fail(
                f"input '{tensor.name}' is optional in the configuration, but the model "
                "requires it (only an input with an initializer can be left out)"
            )
        _check_tensor("input", tensor, info, config, framework, static_batch, fail)

    configured = {t.name for t in config.input} | set(provided_inputs)
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
                f"model's outputs are {sorted(signature.outputs)}"
            )
        _check_tensor("output", tensor, info, config, framework, static_batch, fail)


def _check_tensor(
    kind: str,
    tensor: ModelInput | ModelOutput,
    info: TensorInfo,
    config: ModelConfig,
    framework: Framework,
    static_batch: bool,
    fail: Callable[[str], ConfigError],
) -> None:
    where = f"{kind} '{tensor.name}'"
    model_type = framework.datatype_of(info.framework_type)
    config_type = ProtoDataType.Name(tensor.data_type)
    if model_type is None:
        raise fail(
            f"{where} has {framework.name} type {info.framework_type}, which has no Triton "
            "datatype and cannot be served"
        )
    if model_type.config_name != config_type:
        raise fail(
            f"configuration expects datatype {config_type} for {where}, model provides "
            f"{framework.describe_type(info.framework_type)}"
        )
    if info.shape is None:  # dynamic rank: anything goes, the framework checks at inference
        return
    batching = config.max_batch_size > 0
    full = config_shape(tensor, batching)
    model = list(info.shape)
    if not model:  # a scalar
        if batching:
            raise fail(
                f"{where} is a scalar in the model, which cannot have a batch dimension; "
                "set max_batch_size: 0"
            )
        if any(d != 1 for d in full):
            raise fail(
                f"{where} is a scalar in the model; the configuration must give dims [1], not "
                f"{_fmt(full)}"
            )
        return
    note = ""
    if batching:
        fixed_batch = static_batch and model[0] == config.max_batch_size
        if model[0] != -1 and not fixed_batch:
            rule = framework.batch_dimension_rule.format(shape=_fmt(model))
            raise fail(f"{where}: for the model to support batching {rule}")
        note = (
            " (an initial batch dimension because max_batch_size > 0 followed by the explicit "
            "tensor shape)"
        )
    if len(full) != len(model):
        raise fail(
            f"{where}: the model expects {len(model)} dimensions (shape {_fmt(model)}) but the "
            f"model configuration specifies {len(full)} dimensions (shape {_fmt(full)}){note}"
        )
    for index, (model_dim, config_dim) in enumerate(zip(model, full, strict=True)):
        if batching and index == 0:  # -1 in the configuration; the model's was checked above
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

    def scalars(
        tensors: Iterable[ModelInput | ModelOutput], infos: dict[str, TensorInfo]
    ) -> set[str]:
        return {t.name for t in tensors if t.name in infos and infos[t.name].shape == ()}

    accepted = {**signature.initializers, **signature.inputs}
    return scalars(config.input, accepted), scalars(config.output, signature.outputs)
