"""A model's inputs and outputs as OpenVINO reports them, and what the openvino backend adds to
the kernel's auto-complete and configuration check (:mod:`nereid.signature`): OpenVINO element
type names, a batch dimension fixed at ``max_batch_size``, and the refusal of batch outputs.

Everything here works on plain data and the ``ModelConfig`` proto, so it is tested without
OpenVINO; nothing imports openvino.
"""

from __future__ import annotations

from nereid import signature as kernel_signature
from nereid.config import ModelConfig
from nereid.signature import Signature, TensorInfo, config_shape, scalar_tensors
from nereid.types import DataType

__all__ = [
    "OPENVINO",
    "OV_TYPES",
    "Signature",
    "TensorInfo",
    "check_config",
    "complete_config",
    "config_shape",
    "scalar_tensors",
]

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


def _describe(ov_type: str) -> str:
    return f"{OV_TYPES[ov_type].config_name} (OpenVINO {ov_type})"


OPENVINO = kernel_signature.Framework(
    name="OpenVINO",
    backend="openvino",
    datatype_of=OV_TYPES.get,
    describe_type=_describe,
    batch_dimension_rule="its first dimension must be dynamic, but the model's shape is {shape}",
    unsupported_batch_fields=("batch_input", "batch_output"),
)


def complete_config(
    config: ModelConfig,
    signature: Signature,
    *,
    default_max_batch_size: int = 4,
    dynamic_batching_available: bool = True,
) -> None:
    """Fill in ``config`` from the model, in place, as Triton's openvino backend does: the
    kernel's rules (:func:`nereid.signature.complete_config`)."""
    kernel_signature.complete_config(
        config,
        signature,
        OPENVINO,
        default_max_batch_size=default_max_batch_size,
        dynamic_batching_available=dynamic_batching_available,
    )


def check_config(config: ModelConfig, signature: Signature, *, static_batch: bool = False) -> None:
    """The kernel's check (:func:`nereid.signature.check_config`). ``static_batch``: the model's
    batch dimension is ``max_batch_size`` (``SKIP_OV_DYNAMIC_BATCHSIZE``)."""
    kernel_signature.check_config(config, signature, OPENVINO, static_batch=static_batch)
