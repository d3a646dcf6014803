"""The HTTP/REST wire format of inference: KServe v2 JSON tensors, Triton's binary tensor data
extension, raw binary requests, server-sent events and the generate extension.

Pure functions over bytes, dicts and numpy arrays (no aiohttp), so the hot path can be measured
and tested on its own. Decoding builds numpy arrays in one call per tensor (zero-copy views over
the body for binary data); only BYTES tensors are walked element by element.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from nereid.errors import InvalidArgumentError, UnavailableError
from nereid.shared_memory import SHM_DISABLED_MESSAGE
from nereid.types import (
    BF16_DTYPE,
    DataType,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    serialize_bytes,
)

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


_DATATYPES: dict[str, DataType] = {dt.value: dt for dt in DataType}
_NUMPY: dict[DataType, np.dtype] = {dt: dt.numpy_dtype for dt in DataType}
_INT_RANGES: dict[DataType, tuple[int, int]] = {
    dt: (int(np.iinfo(_NUMPY[dt]).min), int(np.iinfo(_NUMPY[dt]).max))
    for dt in DataType
    if _NUMPY[dt].kind in "iu"
}
# Datatypes orjson cannot serialize from numpy: sent as float32 values.
_AS_FLOAT32 = {DataType.FP16, DataType.BF16}
# Without ml_dtypes the kernel carries BF16 as raw 16-bit patterns (uint16).
_BF16_AS_BITS = np.dtype(np.uint16) == BF16_DTYPE


def _to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float values as bfloat16 bit patterns (round to nearest even)."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def _from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


_SCALARS = (str, int, bool, float)


def _default(obj: Any) -> Any:
    """orjson fallback for values that are neither JSON nor numpy: parameters set by backends."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, set | frozenset):
        return list(obj)
    return str(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=JSON_OPTIONS)


def loads(buffer: bytes | memoryview, what: str = "request JSON buffer") -> Any:
    """Parse a JSON document (INVALID_ARG with the parser's message when it is not one)."""
    try:
        return orjson.loads(buffer)
    except orjson.JSONDecodeError as exc:
        # Python's json (and so tritonclient) writes NaN and Infinity, which orjson refuses.
        try:
            return json.loads(bytes(buffer))
        except ValueError:
            pass
        raise InvalidArgumentError(f"failed to parse the {what}: {exc}") from None


# -- decoding ------------------------------------------------------------------------------------


def _shape(value: Any, name: str) -> list[int]:
    if type(value) is not list:
        raise InvalidArgumentError(f"Unable to parse 'shape' of input '{name}': expected an array")
    for dim in value:
        if type(dim) is not int or dim < 0:
            raise InvalidArgumentError(
                f"Unable to parse 'shape' of input '{name}': {value!r} is not an array of "
                "non-negative integers"
            )
    return value


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _flatten_strings(data: Any, out: list[bytes], name: str) -> None:
    for item in data:
        kind = type(item)
        if kind is str:
            out.append(item.encode())
        elif kind is list:
            _flatten_strings(item, out, name)
        else:
            raise InvalidArgumentError(
                f"Unable to parse 'data' of input '{name}': BYTES elements must be strings, "
                f"got {item!r}"
            )


def _flatten_numbers(data: Any, out: list[Any]) -> None:
    for item in data:
        if type(item) is list:
            _flatten_numbers(item, out)
        else:
            out.append(item)


def json_array(name: str, datatype: DataType, data: Any) -> np.ndarray:
    """The flat numpy array for a JSON ``data`` array (nested arrays are flattened)."""
    if type(data) is not list:
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': expected an array")
    if datatype is DataType.BYTES:
        items: list[bytes] = []
        _flatten_strings(data, items, name)
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array
    try:
        raw = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': {exc}") from None
    kind = raw.dtype.kind
    if datatype is DataType.BOOL:
        if kind != "b" and raw.size:
            raise InvalidArgumentError(
                f"Unable to parse 'data' of input '{name}': BOOL elements must be true or false"
            )
    elif datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        if kind not in "iu" and raw.size:
            # numpy widens mixed signed/unsigned 64-bit values to float64: check the Python
            # values themselves (a rare, slower path).
            items: list[Any] = []
            _flatten_numbers(data, items)
            if not all(type(v) is int and low <= v <= high for v in items):
                raise InvalidArgumentError(
                    f"Unable to parse 'data' of input '{name}': {datatype.value} elements must "
                    f"be integers in [{low}, {high}]"
                )
            return np.array(items, dtype=_NUMPY[datatype])
        if raw.size and (int(raw.min()) < low or int(raw.max()) > high):
            raise InvalidArgumentError(
                f"Unable to parse 'data' of input '{name}': value out of range for {datatype.value}"
            )
    elif kind not in "fiu" and raw.size:
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': {datatype.value} elements must be numbers"
        )
    if datatype is DataType.BF16 and _BF16_AS_BITS:
        return _to_bf16_bits(raw.reshape(-1))
    return raw.reshape(-1).astype(_NUMPY[datatype], copy=False)


def json_tensor(name: str, datatype: DataType, shape: list[int], data: Any) -> Tensor:
    array = json_array(name, datatype, data)
    if array.size != _count(shape):
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': shape {shape} needs {_count(shape)} "
            f"elements but 'data' holds {array.size}"
        )
    return Tensor(name, array.reshape(shape), datatype)


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a non-negative integer")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise InvalidArgumentError(f"Unable to parse '{what}': expected a boolean")
    return value


def _check_shm_params(params: dict[str, Any], name: str, shm: Any, output: bool) -> None:
    """The shared-memory parameters of an input or output are well formed and name a
    registered region large enough (checked before the request is queued)."""
    if shm is None:
        raise UnavailableError(SHM_DISABLED_MESSAGE)
    region = params.get("shared_memory_region")
    if type(region) is not str:
        raise InvalidArgumentError("Unable to parse 'shared_memory_region': expected a string")
    if "shared_memory_byte_size" not in params:
        raise InvalidArgumentError(
            f"{'output' if output else 'input'} '{name}' names shared memory region '{region}' "
            "but no 'shared_memory_byte_size'"
        )
    size = _uint(params["shared_memory_byte_size"], "shared_memory_byte_size")
    offset = _uint(params.get("shared_memory_offset", 0), "shared_memory_offset")
    shm.check(region, offset, size)


def decode_parameters(params: Any, request_params: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Split a request's ``parameters`` into scheduling fields (sequence, priority, timeout),
    custom parameters for the backend, and the ``binary_data_output`` default it returns."""
    if type(params) is not dict:
        raise InvalidArgumentError("Unable to parse 'parameters': expected an object")
    binary_output = False
    for key, value in params.items():
        if key == "sequence_id":
            if (type(value) is int and value >= 0) or type(value) is str:
                fields["sequence_id"] = value
            else:
                raise InvalidArgumentError(
                    "Unable to parse 'sequence_id': expected an unsigned integer or a string"
                )
        elif key == "sequence_start":
            fields["sequence_start"] = _bool(value, key)
        elif key == "sequence_end":
            fields["sequence_end"] = _bool(value, key)
        elif key == "priority":
            fields["priority"] = _uint(value, key)
        elif key == "timeout":
            fields["timeout_us"] = _uint(value, key)
        elif key == "binary_data_output":
            binary_output = _bool(value, key)
        elif key.startswith("triton_"):
            raise InvalidArgumentError(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should "
                "not be specified."
            )
        elif isinstance(value, _SCALARS):
            request_params[key] = value
        else:
            raise InvalidArgumentError(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', "
                "or 'string'."
            )
    return binary_output


def _content_error(has_data: bool, has_binary: bool, has_shm: bool) -> InvalidArgumentError:
    message = (
        "Input must set only one of the following fields: 'data', 'binary_data_size' in "
        "'parameters', 'shared_memory_region' in 'parameters'. But"
    )
    if not (has_data or has_binary or has_shm):
        message += " no field is set"
    else:
        message += " set" + "".join(
            f" '{field}'"
            for field, present in (
                ("data", has_data),
                ("binary_data_size", has_binary),
                ("shared_memory_region", has_shm),
            )
            if present
        )
    return InvalidArgumentError(message)


def decode_inputs(
    inputs: Any, binary: memoryview | None, model_name: str, shm: Any
) -> dict[str, Tensor]:
    if type(inputs) is not list:
        raise InvalidArgumentError("Unable to parse 'inputs': expected an array")
    tensors: dict[str, Tensor] = {}
    offset = 0
    for item in inputs:
        if type(item) is not dict:
            raise InvalidArgumentError("Unable to parse 'inputs': expected an array of objects")
        name = item.get("name")
        if type(name) is not str:
            raise InvalidArgumentError("Unable to parse 'name' of an input: expected a string")
        datatype = _DATATYPES.get(item.get("datatype"))  # type: ignore[arg-type]
        if datatype is None:
            raise InvalidArgumentError(
                f"invalid datatype {item.get('datatype')!r} for input '{name}'"
            )
        shape = _shape(item.get("shape"), name)
        params = item.get("parameters")
        data = item.get("data")
        size = region = None
        if params:
            if type(params) is not dict:
                raise InvalidArgumentError(f"Unable to parse 'parameters' of input '{name}'")
            size = params.get("binary_data_size")
            region = params.get("shared_memory_region")
        if (data is not None) + (size is not None) + (region is not None) != 1:
            raise _content_error(data is not None, size is not None, region is not None)
        if size is not None:
            size = _uint(size, "binary_data_size")
            if binary is None:
                raise InvalidArgumentError(
                    "must specify valid 'Inference-Header-Content-Length' in request header and "
                    "'binary_data_size' when passing inputs in binary data format"
                )
            end = offset + size
            if end > len(binary):
                raise InvalidArgumentError(
                    f"unexpected size for input '{name}', expecting {end - len(binary)} "
                    f"additional bytes for model '{model_name}'"
                )
            tensor = Tensor.from_buffer(name, datatype, shape, binary[offset:end], model_name)
            offset = end
        elif region is not None:
            _check_shm_params(params, name, shm, output=False)
            tensor = shm.input_tensor(name, datatype, shape, params)
        else:
            tensor = json_tensor(name, datatype, shape, data)
        if params:
            tensor.parameters = params
        if name in tensors:
            raise InvalidArgumentError(f"input '{name}' already exists in request")
        tensors[name] = tensor
    if binary is not None and offset != len(binary):
        raise InvalidArgumentError(f"unexpected additional input data for model '{model_name}'")
    return tensors


def decode_outputs(
    outputs: Any, binary_outputs: dict[str, bool], shm: Any
) -> list[RequestedOutput]:
    if type(outputs) is not list:
        raise InvalidArgumentError("Unable to parse 'outputs': expected an array")
    requested = []
    for item in outputs:
        if type(item) is not dict:
            raise InvalidArgumentError("Unable to parse 'outputs': expected an array of objects")
        name = item.get("name")
        if type(name) is not str:
            raise InvalidArgumentError("Unable to parse 'name' of an output: expected a string")
        params = item.get("parameters")
        if params is None:
            params = {}
        elif type(params) is not dict:
            raise InvalidArgumentError(f"Unable to parse 'parameters' of output '{name}'")
        classes = params.get("classification")
        if classes is not None:
            _uint(classes, "classification")
        binary = params.get("binary_data")
        if binary is not None:
            _bool(binary, "binary_data")
        if "shared_memory_region" in params:
            if classes is not None:
                raise InvalidArgumentError(
                    "Output can't set both 'shared_memory_region' and 'classification'"
                )
            if binary:
                raise InvalidArgumentError(
                    "Output can't set both 'shared_memory_region' and 'binary_data'"
                )
            _check_shm_params(params, name, shm, output=True)
        elif binary is not None:
            binary_outputs[name] = binary
        requested.append(RequestedOutput(name, params))
    return requested


def decode_infer_request(
    doc: Any,
    binary: memoryview | None,
    model_name: str,
    version: int,
    shm: Any,
) -> tuple[InferenceRequest, dict[str, bool], bool]:
    """An inference request from its JSON header and the binary data after it.

    Returns the request, the per-output ``binary_data`` choices and the default for outputs
    the client did not name (``binary_data_output``).
    """
    if type(doc) is not dict:
        raise InvalidArgumentError("failed to parse the request JSON buffer: expected an object")
    fields: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    binary_default = False
    params = doc.get("parameters")
    if params is not None:
        binary_default = decode_parameters(params, parameters, fields)
    request_id = doc.get("id", "")
    if type(request_id) is not str:
        raise InvalidArgumentError("Unable to parse 'id': expected a string")
    inputs = decode_inputs(doc.get("inputs"), binary, model_name, shm)
    binary_outputs: dict[str, bool] = {}
    outputs = doc.get("outputs")
    requested = decode_outputs(outputs, binary_outputs, shm) if outputs is not None else ()
    request = InferenceRequest(
        model_name,
        inputs,
        model_version=version,
        id=request_id,
        requested_outputs=requested,
        parameters=parameters,
        **fields,
    )
    return request, binary_outputs, binary_default


def decode_raw_request(body: bytes | memoryview, model: Any, version: int) -> InferenceRequest:
    """A raw binary request (``Inference-Header-Content-Length: 0``): the whole body is the data
    of the model's only input, whose datatype and shape come from the configuration."""
    specs = list(model.inputs.values())
    if len(specs) != 1:
        raise InvalidArgumentError(
            f"Raw request must only have 1 input (found 1) to be deduced but got {len(specs)} "
            f"inputs in '{model.name}' model configuration"
        )
    spec = specs[0]
    shape = [1] if model.max_batch_size > 0 else []
    dynamic = -1
    fixed = 1
    for dim in spec.dims:
        if dim < 0:
            if dynamic >= 0:
                raise InvalidArgumentError(
                    f"The shape of the raw input '{spec.name}' can not be deduced because there "
                    "are more than one variable-sized dimension"
                )
            dynamic = len(shape)
        else:
            fixed *= dim
        shape.append(dim)
    if spec.datatype is DataType.BYTES:
        if fixed != 1:
            raise InvalidArgumentError(
                f"The shape of the raw input '{spec.name}' can not be deduced: a raw BYTES "
                "input holds one element"
            )
        shape = [1 if d < 0 else d for d in shape]
        array = np.empty(1, dtype=object)
        array[0] = bytes(body)
        tensor = Tensor(spec.name, array.reshape(shape), DataType.BYTES)
    else:
        itemsize = spec.datatype.itemsize
        if dynamic >= 0:
            unit = fixed * itemsize
            if unit == 0 or len(body) % unit:
                raise InvalidArgumentError(
                    f"The shape of the raw input '{spec.name}' can not be deduced: "
                    f"{len(body)} bytes is not a multiple of {unit} bytes"
                )
            shape[dynamic] = len(body) // unit
        tensor = Tensor.from_buffer(spec.name, spec.datatype, shape, body)
    return InferenceRequest(model.name, [tensor], model_version=version)


# -- encoding ------------------------------------------------------------------------------------


def json_data(tensor: Tensor) -> Any:
    """The flat JSON ``data`` of an output (a numpy array orjson writes directly)."""
    datatype = tensor.datatype
    data = tensor.data
    if datatype is DataType.BYTES:
        try:
            return [
                item.decode() if isinstance(item, bytes) else str(item)
                for item in np.asarray(data, dtype=object).reshape(-1)
            ]
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"output '{tensor.name}' holds bytes that are not valid UTF-8 and cannot be "
                "written as JSON; request it with the 'binary_data' parameter"
            ) from None
    if not isinstance(data, np.ndarray):
        data = np.asarray(data)
    if datatype is DataType.BF16 and _BF16_AS_BITS:
        return _from_bf16_bits(data.reshape(-1))
    if datatype in _AS_FLOAT32:
        return data.reshape(-1).astype(np.float32)
    array = data.reshape(-1)
    expected = _NUMPY[datatype]
    if array.dtype != expected:
        array = array.astype(expected)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array


def binary_data(tensor: Tensor) -> tuple[Any, int]:
    """The raw bytes of an output for the binary tensor extension, and their size."""
    if tensor.datatype is DataType.BYTES:
        raw = serialize_bytes(np.asarray(tensor.data, dtype=object))
        return raw, len(raw)
    data = tensor.data
    expected = _NUMPY[tensor.datatype]
    if not isinstance(data, np.ndarray) or data.dtype != expected:
        data = np.asarray(data, dtype=expected)
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    return data, data.nbytes


def encode_infer_response(
    response: InferenceResponse,
    binary_outputs: dict[str, bool],
    binary_default: bool,
) -> tuple[bytes, int | None]:
    """The HTTP body of a response, and the ``Inference-Header-Content-Length`` to send with it
    (``None`` when there is no binary data)."""
    outputs = []
    buffers: list[Any] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.value,
            "shape": tensor.shape,
        }
        params = tensor.parameters
        if params and "shared_memory_region" in params:
            entry["parameters"] = params
        elif binary_outputs.get(tensor.name, binary_default):
            raw, size = binary_data(tensor)
            entry["parameters"] = (
                {**params, "binary_data_size": size} if params else {"binary_data_size": size}
            )
            if size:
                buffers.append(raw)
        else:
            if params:
                entry["parameters"] = params
            entry["data"] = json_data(tensor)
        outputs.append(entry)
    doc: dict[str, Any] = {}
    if response.id:
        doc["id"] = response.id
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = dumps(doc)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def sse_event(doc_bytes: bytes) -> bytes:
    return b"data: " + doc_bytes + b"\n\n"


def encode_sse_response(response: InferenceResponse) -> bytes:
    """One server-sent event: the response as an infer response JSON (every output as JSON)."""
    if response.error is not None:
        return sse_event(dumps({"error": response.error.message}))
    body, _ = encode_infer_response(response, {}, False)
    return sse_event(body)


# -- generate extension --------------------------------------------------------------------------


def _generate_shape(name: str, dims: list[int], count: int) -> list[int]:
    """Triton's mapping of ``count`` values onto an input's shape: fixed dimensions must divide
    the count, the innermost variable dimension takes what remains, other variable ones 1."""
    shape = list(dims)
    remaining = count
    for dim in reversed(shape):
        if dim != -1:
            if dim == 0 or remaining % dim:
                raise InvalidArgumentError(
                    f"The schema can not convert input '{name}' to tensor with proper shape"
                )
            remaining //= dim
    for index in range(len(shape) - 1, -1, -1):
        if shape[index] == -1:
            shape[index] = remaining
            remaining = 1
    if remaining != 1:
        raise InvalidArgumentError(
            f"The schema can not convert input '{name}' to tensor with proper shape"
        )
    return shape


def _generate_value(key: str, value: Any, model: Any, tensors: dict, params: dict) -> None:
    spec = model.inputs.get(key)
    if spec is None:
        if not isinstance(value, _SCALARS):
            raise InvalidArgumentError(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', "
                "or 'string'."
            )
        params[key] = value
        return
    values = value if type(value) is list else [value]
    dims = ([-1] if model.max_batch_size > 0 else []) + list(spec.dims)
    shape = _generate_shape(key, dims, len(values))
    tensors[key] = json_tensor(key, spec.datatype, shape, values)


def decode_generate_request(doc: Any, model: Any, version: int) -> InferenceRequest:
    """A generate request: top-level keys (and those of ``parameters``) that name an input
    become that input's tensor; the others become request parameters."""
    if type(doc) is not dict:
        raise InvalidArgumentError("failed to parse the request JSON buffer: expected an object")
    tensors: dict[str, Tensor] = {}
    params: dict[str, Any] = {}
    request_id = ""
    for key, value in doc.items():
        if key == "parameters":
            if key in model.inputs:
                raise InvalidArgumentError(
                    "Keyword 'parameters' for nested schema also given as input tensor name"
                )
            if type(value) is not dict:
                raise InvalidArgumentError("Expected JSON object for keyword: 'parameters'")
            for inner_key, inner_value in value.items():
                _generate_value(inner_key, inner_value, model, tensors, params)
        elif key == "id" and key not in model.inputs:
            if type(value) is not str:
                raise InvalidArgumentError("Unable to parse 'id': expected a string")
            request_id = value
        else:
            _generate_value(key, value, model, tensors, params)
    return InferenceRequest(
        model.name, tensors, model_version=version, id=request_id, parameters=params
    )


def encode_generate_response(response: InferenceResponse) -> bytes:
    """A generate response: model name and version, each output as a JSON value (a scalar for
    one element), response parameters as top-level keys."""
    doc: dict[str, Any] = {}
    if response.id:
        doc["id"] = response.id
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    for key, value in response.parameters.items():
        doc[key] = value
    for tensor in response.outputs:
        data = json_data(tensor)
        doc[tensor.name] = data[0] if len(data) == 1 else data
    return dumps(doc)


__all__ = [
    "SHM_DISABLED_MESSAGE",
    "decode_generate_request",
    "decode_infer_request",
    "decode_raw_request",
    "dumps",
    "encode_generate_response",
    "encode_infer_response",
    "encode_sse_response",
    "loads",
    "sse_event",
]
