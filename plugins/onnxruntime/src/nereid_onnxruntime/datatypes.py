"""ONNX element types and Triton datatypes, and the conversions onnxruntime's Python API needs.

- BYTES travels in the kernel as object arrays of ``bytes``; ONNX string tensors are fed to and
  returned by onnxruntime as arrays of ``str``. The text must be UTF-8 (onnxruntime's Python
  binding encodes each ``str`` as UTF-8), so bytes that are not UTF-8 are refused, naming the
  tensor.
- BF16 has no numpy type in onnxruntime's Python API: the backend hands it over as an
  ``OrtValue`` over the 16-bit patterns (``uint16``) and reads it back the same way.

Nothing here imports onnxruntime.
"""

from __future__ import annotations

import numpy as np
from nereid.errors import InvalidArgumentError
from nereid.types import BF16_DTYPE, DataType

# onnxruntime's NodeArg.type strings, by Triton datatype.
ONNX_TYPES: dict[DataType, str] = {
    DataType.BOOL: "tensor(bool)",
    DataType.UINT8: "tensor(uint8)",
    DataType.UINT16: "tensor(uint16)",
    DataType.UINT32: "tensor(uint32)",
    DataType.UINT64: "tensor(uint64)",
    DataType.INT8: "tensor(int8)",
    DataType.INT16: "tensor(int16)",
    DataType.INT32: "tensor(int32)",
    DataType.INT64: "tensor(int64)",
    DataType.FP16: "tensor(float16)",
    DataType.FP32: "tensor(float)",
    DataType.FP64: "tensor(double)",
    DataType.BF16: "tensor(bfloat16)",
    DataType.BYTES: "tensor(string)",
}
_FROM_ONNX = {onnx: dt for dt, onnx in ONNX_TYPES.items()}

# onnx.TensorProto.DataType values (for OrtValue.ortvalue_from_numpy_with_onnx_type).
ONNX_BFLOAT16 = 16


def datatype_of(onnx_type: str) -> DataType | None:
    """The Triton datatype of an onnxruntime type string (``tensor(float)``), ``None`` when
    Triton has none (sequences, maps, float8, int4, ...)."""
    return _FROM_ONNX.get(onnx_type)


def onnx_type_name(onnx_type: str) -> str:
    """``tensor(float)`` as Triton's ``TYPE_FP32`` (or the ONNX name when there is none)."""
    datatype = datatype_of(onnx_type)
    return datatype.config_name if datatype is not None else onnx_type


def strings_in(array: np.ndarray, name: str) -> np.ndarray:
    """A BYTES input (object array of bytes, or of str, or a numpy unicode array) as the object
    array of ``str`` onnxruntime takes."""
    if array.dtype.kind == "U":
        return array.astype(object)
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0], dtype=object)
    try:
        for index, item in enumerate(flat):
            out[index] = item.decode() if isinstance(item, bytes | bytearray) else str(item)
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"input '{name}': element {index} is not UTF-8 text ({exc.reason}); ONNX string "
            "tensors carry UTF-8 text"
        ) from None
    return out.reshape(array.shape)


def strings_out(array: np.ndarray) -> np.ndarray:
    """An ONNX string output (array of str) as the kernel's object array of bytes."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0], dtype=object)
    for index, item in enumerate(flat):
        out[index] = item.encode() if isinstance(item, str) else bytes(item)
    return out.reshape(array.shape)


def bf16_bits(array: np.ndarray) -> np.ndarray:
    """A BF16 array (ml_dtypes bfloat16, or its uint16 patterns) as contiguous uint16."""
    return np.ascontiguousarray(array).view(np.uint16)


def bf16_from_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 patterns as the kernel's BF16 dtype (ml_dtypes bfloat16 when installed)."""
    return bits.view(BF16_DTYPE)
