"""ModelInferRequest to :class:`InferenceRequest`, :class:`InferenceResponse` to
ModelInferResponse: the request path's codec, kept lean.

Raw input contents become numpy views over the request's bytes (no element loops); outputs
go out as ``raw_output_contents``. Typed ``contents`` and BYTES are the only per-element work.
Error messages follow Triton's gRPC frontend where it has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from nereid import (
    DataType,
    InferenceRequest,
    InferenceResponse,
    InvalidArgumentError,
    RequestedOutput,
    Tensor,
    UnavailableError,
)
from nereid.shared_memory import SHM_DISABLED_MESSAGE
from nereid.types import deserialize_bytes, serialize_bytes

from .protos import grpc_service_pb2 as pb

ModelInferRequest = pb.ModelInferRequest
ModelInferResponse = pb.ModelInferResponse
ModelStreamInferResponse = pb.ModelStreamInferResponse
_OutputTensor = pb.ModelInferResponse.InferOutputTensor


#: What :func:`parser` returns for a payload that is not a valid message; the handler answers
#: it with Triton's status (gRPC C++ answers INTERNAL ``Unable to parse request``), where
#: grpc.aio would turn the parse error into UNKNOWN naming a Python exception class.
UNPARSABLE: Any = object()
UNPARSABLE_MESSAGE = "Unable to parse request"


def parser(message_type: Any) -> Callable[[bytes], Any]:
    """The request deserializer for ``message_type``: the message, or :data:`UNPARSABLE`."""
    parse = message_type.FromString

    def deserialize(payload: bytes) -> Any:
        try:
            return parse(payload)
        except DecodeError:
            return UNPARSABLE

    return deserialize


EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
FINAL_RESPONSE_PARAMETER = "triton_final_response"
_RESERVED = (EMPTY_FINAL_PARAMETER,)

_DATATYPES: dict[str, DataType] = {t.value: t for t in DataType}
_FIXED: dict[DataType, tuple[np.dtype, int]] = {
    t: (t.numpy_dtype, t.itemsize) for t in DataType if t is not DataType.BYTES
}

# The typed ``contents`` field each datatype is sent in, and the datatype Triton names for a
# field in its error messages. FP16 and BF16 have no field of their own: Nereid accepts them in
# ``fp32_contents`` (Triton rejects typed contents for them).
_CONTENTS_FIELD: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP16: "fp32_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BF16: "fp32_contents",
    DataType.BYTES: "bytes_contents",
}
_FIELD_DATATYPE = {
    "bool_contents": (DataType.BOOL, np.dtype(np.bool_)),
    "int_contents": (DataType.INT32, np.dtype(np.int32)),
    "int64_contents": (DataType.INT64, np.dtype(np.int64)),
    "uint_contents": (DataType.UINT32, np.dtype(np.uint32)),
    "uint64_contents": (DataType.UINT64, np.dtype(np.uint64)),
    "fp32_contents": (DataType.FP32, np.dtype(np.float32)),
    "fp64_contents": (DataType.FP64, np.dtype(np.float64)),
    "bytes_contents": (DataType.BYTES, np.dtype(object)),
}


def parse_version(version: str) -> int:
    """A request's model version string as the kernel's int (-1: let the server choose)."""
    if not version:
        return -1
    try:
        return int(version)
    except ValueError:
        raise InvalidArgumentError(
            f"failed to get model version from specified version string '{version}', "
            "version should be an integral value > 0"
        ) from None


def _value(param: Any) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def _tensor_parameters(name: str, params: Any) -> dict[str, Any]:
    """An input's or requested output's parameters, shared-memory and classification checked
    as Triton does."""
    out: dict[str, Any] = {}
    kinds: dict[str, str | None] = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        kinds[key] = kind
        out[key] = None if kind is None else getattr(param, kind)
    region = "shared_memory_region" in out
    if region and kinds["shared_memory_region"] != "string_param":
        raise InvalidArgumentError(
            f"invalid value type for 'shared_memory_region' parameter for tensor '{name}', "
            "expected string_param."
        )
    for key in ("shared_memory_offset", "shared_memory_byte_size"):
        if key in out:
            if not region:
                raise InvalidArgumentError(
                    f"'{key}' can not be specified without 'shared_memory_region' parameter "
                    f"for tensor '{name}'"
                )
            if kinds[key] != "int64_param":
                raise InvalidArgumentError(
                    f"invalid value type for '{key}' parameter for tensor '{name}', "
                    "expected int64_param."
                )
    if region and "shared_memory_byte_size" not in out:
        raise InvalidArgumentError(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
            f"parameter for tensor '{name}'"
        )
    return out


def _typed_contents(
    name: str, model: str, datatype: DataType, shape: tuple[int, ...], contents: Any
) -> np.ndarray:
    """The array held in a tensor's typed ``contents`` (row-major, one field per datatype)."""
    expected = _CONTENTS_FIELD[datatype]
    values: Any = ()
    for descriptor, field_values in contents.ListFields():
        if descriptor.name != expected:
            wire_type = _FIELD_DATATYPE[descriptor.name][0]
            raise InvalidArgumentError(
                f"unexpected explicit tensor data for input tensor '{name}' for model "
                f"'{model}' of type '{wire_type.value}', expected datatype '{datatype.value}'"
            )
        values = field_values
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgumentError(
            f"unexpected number of elements {len(values)} in the contents of input '{name}', "
            f"expecting {count} for {datatype.value} shape {list(shape)}"
        )
    if datatype is DataType.BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        wire_dtype = _FIELD_DATATYPE[expected][1]
        array = np.fromiter(values, dtype=wire_dtype, count=count)
        if wire_dtype != datatype.numpy_dtype:
            array = array.astype(datatype.numpy_dtype)  # narrowing keeps the low bytes
    return array.reshape(shape)


def _bad_shape(name: str, shape: tuple[int, ...]) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"invalid shape {list(shape)} for input '{name}': dimensions must be >= 0"
    )


def decode_request(
    msg: Any,
    api: Any,
    allow_shm: bool,
    version: int,
    forwarded: Iterable[tuple[str, str]] = (),
) -> tuple[InferenceRequest, bool]:
    """The kernel request for a ModelInferRequest (its model ``version`` already parsed with
    :func:`parse_version`), and whether the client asked for an empty final response
    (``triton_enable_empty_final_response``)."""
    model = msg.model_name
    parameters: dict[str, Any] = {}
    sequence_id: int | str = 0
    sequence_start = sequence_end = empty_final = False
    priority = timeout = 0
    if msg.parameters:
        for key, param in msg.parameters.items():
            kind = param.WhichOneof("parameter_choice")
            if key == "sequence_id":
                if kind == "int64_param":
                    sequence_id = param.int64_param
                elif kind == "string_param":
                    sequence_id = param.string_param
                else:
                    raise InvalidArgumentError(
                        "invalid value type for 'sequence_id' parameter, expected "
                        "int64_param or string_param."
                    )
            elif key in ("sequence_start", "sequence_end"):
                if kind != "bool_param":
                    raise InvalidArgumentError(
                        f"invalid value type for '{key}' parameter, expected bool_param."
                    )
                if key == "sequence_start":
                    sequence_start = param.bool_param
                else:
                    sequence_end = param.bool_param
            elif key == "priority":
                if kind == "int64_param":
                    if param.int64_param < 0:
                        raise InvalidArgumentError(
                            "invalid value for 'priority', expected value >= 0."
                        )
                    priority = param.int64_param
                elif kind == "uint64_param":
                    priority = param.uint64_param
                else:
                    raise InvalidArgumentError(
                        "invalid value type for 'priority' parameter, expected int64_param "
                        "or uint64_param."
                    )
            elif key == "timeout":
                if kind != "int64_param":
                    raise InvalidArgumentError(
                        "invalid value type for 'timeout' parameter, expected int64_param."
                    )
                timeout = param.int64_param
            elif key.startswith("triton_"):
                if key not in _RESERVED:
                    raise InvalidArgumentError(
                        "parameter keys starting with 'triton_' are reserved for Triton usage. "
                        "Only the following keys starting with 'triton_' are allowed: "
                        + " ".join(_RESERVED)
                    )
                if kind != "bool_param":
                    raise InvalidArgumentError(
                        f"invalid value type for '{key}' parameter, expected bool_param."
                    )
                empty_final = param.bool_param
            elif kind is None:
                raise InvalidArgumentError(f"parameter '{key}' has no value")
            else:
                parameters[key] = getattr(param, kind)
    for key, value in forwarded:
        parameters[key] = value

    raw = msg.raw_input_contents
    raw_count = len(raw)
    raw_index = 0
    inputs: dict[str, Tensor] = {}
    for tensor in msg.inputs:
        name = tensor.name
        datatype = _DATATYPES.get(tensor.datatype)
        if datatype is None:
            raise InvalidArgumentError(
                f"invalid datatype '{tensor.datatype}' for input '{name}' of model '{model}'"
            )
        shape = tuple(tensor.shape)
        if shape and min(shape) < 0:
            raise _bad_shape(name, shape)
        if name in inputs:
            raise InvalidArgumentError(f"input '{name}' already exists in request")
        params = _tensor_parameters(name, tensor.parameters) if tensor.parameters else None
        if params and "shared_memory_region" in params:
            if not allow_shm:
                raise UnavailableError(SHM_DISABLED_MESSAGE)
            if tensor.HasField("contents"):
                raise InvalidArgumentError(
                    "unexpected 'content' provided when using shared memory for input tensor "
                    f"'{name}' for model '{model}'"
                )
            inputs[name] = api.system_shm.input_tensor(name, datatype, list(shape), params)
            continue
        if tensor.HasField("contents"):
            if raw_count:
                raise InvalidArgumentError(
                    "contents field must not be specified when using raw_input_contents for "
                    f"'{name}' for model '{model}'"
                )
            data = _typed_contents(name, model, datatype, shape, tensor.contents)
            inputs[name] = Tensor(name, data, datatype, params)
            continue
        if raw_index >= raw_count:
            raise InvalidArgumentError(
                f"unable to find data for input tensor '{name}' for model '{model}' in request."
            )
        buffer = raw[raw_index]
        raw_index += 1
        if datatype is DataType.BYTES:
            data = deserialize_bytes(buffer, math.prod(shape), name, model).reshape(shape)
        else:
            np_dtype, itemsize = _FIXED[datatype]
            expected = math.prod(shape) * itemsize
            if len(buffer) != expected:
                raise InvalidArgumentError(
                    f"unexpected size {len(buffer)} for input '{name}', expecting {expected} "
                    f"bytes for {datatype.value} shape {list(shape)}"
                )
            data = np.frombuffer(buffer, dtype=np_dtype).reshape(shape)
        inputs[name] = Tensor(name, data, datatype, params)
    if raw_index != raw_count:
        raise InvalidArgumentError(
            f"request for model '{model}' has {raw_count} raw_input_contents but "
            f"{raw_index} inputs that take raw contents; send one per input, in input order"
        )

    outputs: list[RequestedOutput] = []
    requested = msg.outputs
    for output in requested if requested else ():
        params = {}
        if output.parameters:
            params = _tensor_parameters(output.name, output.parameters)
            shm = "shared_memory_region" in params
            if "classification" in params:
                if output.parameters["classification"].WhichOneof("parameter_choice") != (
                    "int64_param"
                ):
                    raise InvalidArgumentError(
                        "invalid value type for 'classification' parameter, expected int64_param"
                    )
                if params["classification"] <= 0:
                    raise InvalidArgumentError(
                        "invalid value for 'classification' parameter, expected >= 1"
                    )
                if shm:
                    raise InvalidArgumentError(
                        "output can't set both 'shared_memory_region' and 'classification'"
                    )
            if shm:
                if not allow_shm:
                    raise UnavailableError(SHM_DISABLED_MESSAGE)
                # Fails now (as Triton does) for an unknown region or one too small.
                api.system_shm.check(
                    params["shared_memory_region"],
                    params.get("shared_memory_offset", 0),
                    params["shared_memory_byte_size"],
                )
        outputs.append(RequestedOutput(output.name, params))

    request = InferenceRequest(
        model,
        inputs,
        model_version=version,
        id=msg.id,
        requested_outputs=outputs,
        parameters=parameters,
        priority=priority,
        timeout_us=timeout,
        sequence_id=sequence_id,
        sequence_start=sequence_start,
        sequence_end=sequence_end,
    )
    return request, empty_final


def set_parameter(param: Any, value: Any) -> None:
    """Store a Python value in an InferParameter."""
    if isinstance(value, bool | np.bool_):
        param.bool_param = bool(value)
    elif isinstance(value, int | np.integer):
        value = int(value)
        if value > 2**63 - 1:
            param.uint64_param = value
        else:
            param.int64_param = value
    elif isinstance(value, float | np.floating):
        param.double_param = float(value)
    elif isinstance(value, bytes):
        param.string_param = value.decode("utf-8", "replace")
    else:
        param.string_param = str(value)


def _output_bytes(tensor: Tensor) -> bytes:
    if tensor.parameters and "shared_memory_region" in tensor.parameters:
        return b""  # written to the client's region by the kernel
    data = tensor.data
    if tensor.datatype is DataType.BYTES:
        return serialize_bytes(data)
    return data.tobytes()  # C order, as the protocol wants


def fill_response(msg: Any, response: InferenceResponse) -> None:
    """Fill a ModelInferResponse from a kernel response (which carries no error)."""
    msg.model_name = response.model_name
    msg.model_version = response.model_version
    msg.id = response.id
    outputs = response.outputs
    if outputs:
        msg.outputs.extend(
            [_OutputTensor(name=t.name, datatype=t.datatype.value, shape=t.shape) for t in outputs]
        )
        msg.raw_output_contents.extend([_output_bytes(t) for t in outputs])
    if response.parameters:
        target = msg.parameters
        for key, value in response.parameters.items():
            set_parameter(target[key], value)


def encode_response(response: InferenceResponse) -> Any:
    msg = ModelInferResponse()
    fill_response(msg, response)
    return msg
