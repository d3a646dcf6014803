"""A model's inputs and outputs as onnxruntime reports them, and what the onnxruntime backend
adds to the kernel's auto-complete and configuration check (:mod:`nereid.signature`): ONNX type
names, initializers (optional inputs), sequence-batcher inputs, the platform and the instance
groups.

Everything here works on plain data and the ``ModelConfig`` proto, so it is tested without a
session; nothing imports onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Self

from nereid import signature as kernel_signature
from nereid.config import ModelConfig
from nereid.config.model_config_pb2 import ModelInstanceGroup
from nereid.signature import TensorInfo, scalar_tensors

from .datatypes import datatype_of, onnx_type_name

__all__ = [
    "ONNX",
    "Signature",
    "TensorInfo",
    "check_config",
    "complete_config",
    "scalar_tensors",
]

ONNX = kernel_signature.Framework(
    name="ONNX",
    backend="onnxruntime",
    datatype_of=datatype_of,
    describe_type=onnx_type_name,
    batch_dimension_rule=(
        "the shape should have at least 1 dimension and the first dimension must be -1; but "
        "shape expected by the model is {shape}"
    ),
    checks_optional_inputs=True,
)

# Triton's default instance count for KIND_CPU groups of onnxruntime models (tritonserver's
# SetDefaultInstanceCount gives 2 to onnxruntime and tensorflow models, 1 to the others).
DEFAULT_CPU_INSTANCE_COUNT = 2


class Signature(kernel_signature.Signature):
    """The kernel's signature, made from onnxruntime's ``NodeArg`` objects; ``initializers``
    are the overridable initializers."""

    @classmethod
    def of(
        cls,
        inputs: Iterable[Any],
        outputs: Iterable[Any],
        initializers: Iterable[Any] = (),
    ) -> Self:
        """From onnxruntime ``NodeArg`` objects (``.name``, ``.type``, ``.shape``)."""

        def infos(args: Iterable[Any]) -> list[TensorInfo]:
            return [TensorInfo(a.name, a.type, _dims(a.shape)) for a in args]

        return super().of(infos(inputs), infos(outputs), infos(initializers))


def _dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    """onnxruntime's shape (symbolic dimensions are strings or None) with -1 for the unknown."""
    if shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def complete_config(
    config: ModelConfig,
    signature: kernel_signature.Signature,
    *,
    default_max_batch_size: int = 4,
    dynamic_batching_available: bool = True,
    gpu_available: bool = False,
) -> None:
    """Fill in ``config`` from the model, in place, as Triton's onnxruntime backend does.

    - ``platform`` becomes ``onnxruntime_onnx`` when empty.
    - Inputs, outputs, ``max_batch_size`` and ``dynamic_batching`` by the kernel's rules
      (:func:`nereid.signature.complete_config`).
    - Instance groups: none given becomes one group of 2 CPU instances (one GPU instance when
      onnxruntime has the CUDA provider); a CPU group without a count gets 2.
    """
    if not config.platform:
        config.platform = "onnxruntime_onnx"
    kernel_signature.complete_config(
        config,
        signature,
        ONNX,
        default_max_batch_size=default_max_batch_size,
        dynamic_batching_available=dynamic_batching_available,
    )
    _complete_instance_groups(config, gpu_available)


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


def check_config(config: ModelConfig, signature: kernel_signature.Signature) -> None:
    """The kernel's check (:func:`nereid.signature.check_config`), with the inputs a sequence
    batcher provides counted as configured."""
    kernel_signature.check_config(config, signature, ONNX, provided_inputs=_sequence_inputs(config))


def _sequence_inputs(config: ModelConfig) -> set[str]:
    """Inputs a sequence batcher provides (control tensors, implicit state)."""
    if not config.HasField("sequence_batching"):
        return set()
    seq = config.sequence_batching
    return {c.name for c in seq.control_input} | {s.input_name for s in seq.state}
