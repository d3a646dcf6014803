"""Triton's ``triton_python_backend_utils`` object model, written for Nereid.

Model code does ``import triton_python_backend_utils as pb_utils``; that module is a thin alias
of this one. Nothing here knows where the model runs: requests answer through a
:class:`ResponseChannel` given by whoever hosts the model, and metrics and logs go through
:func:`nereid_python.runtime.current`. The same classes therefore serve a model running in the
server process and one running in a process of its own.
"""

from __future__ import annotations

import enum
import json
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from . import runtime

__all__ = [
    "TRITONSERVER_MEMORY_CPU",
    "TRITONSERVER_MEMORY_CPU_PINNED",
    "TRITONSERVER_MEMORY_GPU",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
    "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITON_STRING_TO_NUMPY",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceResponseSender",
    "LogLevel",
    "Logger",
    "Metric",
    "MetricFamily",
    "ModelConfig",
    "PreferredMemory",
    "Tensor",
    "TritonError",
    "TritonModelException",
    "deserialize_bytes_tensor",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "is_model_ready",
    "load_model",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "unload_model",
    "using_decoupled_model_transaction_policy",
]

# -- flags and constants (the values of Triton's C API enums) -----------------------------------

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2

# -- errors -------------------------------------------------------------------------------------


class TritonModelException(Exception):
    """Raised by the API on misuse, and by models to fail a call (``initialize`` fails the load;
    ``execute`` fails every request of the batch)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self._message = message

    def message(self) -> str:
        return self._message

    def __str__(self) -> str:
        return self._message


class TritonError(Exception):
    """An error for one response: ``InferenceResponse(error=TritonError(message, code))``.

    The code is one of the class constants (Triton's ``TRITONSERVER_Error_Code`` values);
    INTERNAL when not given. Raising a TritonError from ``execute`` (a Nereid extension) fails
    the batch with its code.
    """

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str = "", code: int = INTERNAL) -> None:
        super().__init__(message)
        if code not in _CODE_NAMES:
            raise TritonModelException(f"invalid TritonError code {code!r}")
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {_CODE_NAMES[self._code]})"


_CODE_NAMES = {
    TritonError.UNKNOWN: "UNKNOWN",
    TritonError.INTERNAL: "INTERNAL",
    TritonError.NOT_FOUND: "NOT_FOUND",
    TritonError.INVALID_ARG: "INVALID_ARG",
    TritonError.UNAVAILABLE: "UNAVAILABLE",
    TritonError.UNSUPPORTED: "UNSUPPORTED",
    TritonError.ALREADY_EXISTS: "ALREADY_EXISTS",
    TritonError.CANCELLED: "CANCELLED",
}


def error_code_name(code: int) -> str:
    """``"NOT_FOUND"`` for ``TritonError.NOT_FOUND``: the kernel's error kinds use these names."""
    return _CODE_NAMES.get(code, "INTERNAL")


# -- datatypes ----------------------------------------------------------------------------------

try:  # BF16 needs a numpy dtype; ml_dtypes provides one (tritonclient depends on it too).
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _bfloat16 = None

TRITON_STRING_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
if _bfloat16 is not None:
    TRITON_STRING_TO_NUMPY["TYPE_BF16"] = _bfloat16

# TRITONSERVER_DataType values, which are also the config's TYPE_* enum values.
_CODE_TO_NUMPY: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}
if _bfloat16 is not None:
    _CODE_TO_NUMPY[14] = _bfloat16
_NUMPY_TO_CODE: dict[np.dtype, int] = {
    np.dtype(t): code for code, t in _CODE_TO_NUMPY.items() if code != 13
}
BYTES = 13
CODE_NAMES = {
    1: "BOOL",
    2: "UINT8",
    3: "UINT16",
    4: "UINT32",
    5: "UINT64",
    6: "INT8",
    7: "INT16",
    8: "INT32",
    9: "INT64",
    10: "FP16",
    11: "FP32",
    12: "FP64",
    13: "BYTES",
    14: "BF16",
}
NAME_CODES = {name: code for code, name in CODE_NAMES.items()}


def triton_string_to_numpy(triton_type_string: str) -> Any:
    """``"TYPE_FP32"`` -> ``np.float32`` (``TYPE_STRING`` -> ``np.object_``)."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int) -> Any:
    """A Triton datatype code (``pb_utils.Tensor.triton_dtype()``) -> numpy type; ``None`` when
    unknown."""
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    """A numpy dtype or type -> Triton datatype code; ``None`` when there is none."""
    try:
        dtype = np.dtype(data_type)
    except TypeError:
        return None
    if dtype.kind in "OS":
        return BYTES
    return _NUMPY_TO_CODE.get(dtype)


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes:
    """A BYTES tensor in Triton's wire form: each element, in C order, as a 4-byte little-endian
    length and its bytes (``str`` elements are UTF-8 encoded)."""
    array = np.asarray(input_tensor)
    if array.size == 0:
        return b""
    if array.dtype != np.object_ and array.dtype.type not in (np.bytes_, np.str_):
        raise TritonModelException("cannot serialize bytes tensor: invalid datatype")
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: Any) -> np.ndarray:
    """The 1-D object array of ``bytes`` elements in a length-prefixed buffer."""
    if isinstance(encoded_tensor, np.ndarray):
        encoded_tensor = (
            encoded_tensor.item()
            if encoded_tensor.dtype == np.object_
            else encoded_tensor.tobytes()
        )
    view = memoryview(encoded_tensor).cast("B")
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        items.append(bytes(view[offset : offset + length]))
        offset += length
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


# -- tensors ------------------------------------------------------------------------------------

_DLPACK_CPU = 1


class _Capsule:
    """Lets ``np.from_dlpack`` take a bare DLPack capsule (assumed to be on the CPU)."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, **_: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_DLPACK_CPU, 0)


class Tensor:
    """A named tensor over a numpy array: ``pb_utils.Tensor("OUTPUT0", array)``.

    BYTES tensors hold object arrays of ``bytes`` (``str`` elements are accepted and encoded as
    UTF-8 on the way out). Input tensors share memory with the request: do not write into them.
    """

    __slots__ = ("_array", "_dtype", "_name")

    def __init__(self, name: str, numpy_array: Any, triton_dtype: int | None = None) -> None:
        array = numpy_array if isinstance(numpy_array, np.ndarray) else np.asarray(numpy_array)
        kind = array.dtype.kind
        if kind == "V":
            raise TritonModelException(
                "Tensor dtype used for numpy_array is not support by Python backend. "
                "Please use np.object_ instead."
            )
        if kind in "US":
            converted = np.empty(array.shape, dtype=np.object_)
            converted.reshape(-1)[:] = [
                s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in array.reshape(-1)
            ]
            array = converted
        if triton_dtype is None:
            triton_dtype = numpy_to_triton_type(array.dtype)
            if triton_dtype is None:
                raise TritonModelException(f"no Triton datatype for numpy dtype {array.dtype}")
        elif triton_dtype != BYTES:
            wanted = triton_to_numpy_type(triton_dtype)
            if wanted is None:
                raise TritonModelException(f"invalid Triton datatype {triton_dtype!r}")
            if array.dtype != np.dtype(wanted):
                array = array.view(wanted)
        self._name = name
        self._array = array
        self._dtype = triton_dtype

    @classmethod
    def _wrap(cls, name: str, array: np.ndarray, triton_dtype: int) -> Tensor:
        """An input tensor over the request's own array (no checks, no copy)."""
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._array = array
        tensor._dtype = triton_dtype
        return tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        """A DLPack capsule over the data (zero-copy; a read-only input is copied first)."""
        return self.__dlpack__()

    def __dlpack__(self, **kwargs: Any) -> Any:
        if self._dtype == BYTES:
            raise TritonModelException("DLPack does not support the BYTES datatype")
        array = self._array
        if not array.flags.writeable:
            array = array.copy()
        return array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_DLPACK_CPU, 0)

    @staticmethod
    def from_dlpack(name: str, dlpack_object: Any) -> Tensor:
        """A tensor from a DLPack capsule or an object with ``__dlpack__`` (CPU memory only in
        this release)."""
        source = dlpack_object
        if not hasattr(source, "__dlpack__"):
            source = _Capsule(source)
        elif hasattr(source, "__dlpack_device__"):
            device_type = source.__dlpack_device__()[0]
            if device_type not in (_DLPACK_CPU, 3):  # CPU, CUDA host (pinned) memory
                raise TritonModelException(
                    "Tensor.from_dlpack: only CPU tensors are supported when the model runs in "
                    "the server process"
                )
        try:
            array = np.from_dlpack(source)
        except (BufferError, RuntimeError, TypeError) as exc:
            raise TritonModelException(f"Tensor.from_dlpack failed: {exc}") from None
        if not array.flags.c_contiguous:
            raise TritonModelException(
                "DLPack tensor is not contiguous. Only C-contiguous tensors are supported."
            )
        return Tensor(name, array)

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, {CODE_NAMES.get(self._dtype)}, {list(self._array.shape)})"


# -- requests and responses ---------------------------------------------------------------------


class ResponseChannel(Protocol):
    """Where a request's responses go; provided by the host (not part of Triton's API)."""

    def send(self, response: InferenceResponse | None, final: bool) -> None: ...
    def is_cancelled(self) -> bool: ...


def _parameters_json(parameters: Any) -> str:
    if parameters is None:
        return "{}"
    if isinstance(parameters, str):
        return parameters
    if not isinstance(parameters, dict):
        raise TritonModelException("parameters must be a dict of str to bool, int or str")
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, bool | int | str):
            raise TritonModelException(
                f"invalid parameter '{key}': keys must be str and values bool, int or str"
            )
    return json.dumps(parameters)


class PreferredMemory:
    """Where BLS outputs should be placed (accepted for compatibility)."""

    def __init__(
        self, preferred_memory_type: int = TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0
    ) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceResponse:
    """Output tensors, or an error, for one request."""

    __slots__ = ("_error", "_outputs", "_parameters")

    def __init__(
        self,
        output_tensors: Sequence[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, list | tuple):
            raise TritonModelException('"output_tensors" must be a list.')
        for tensor in output_tensors:
            if not isinstance(tensor, Tensor):
                raise TritonModelException(
                    f"output_tensors must hold pb_utils.Tensor objects, found {type(tensor)}"
                )
        if error is not None and not isinstance(error, TritonError):
            error = TritonError(str(error))
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = _parameters_json(parameters)

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


_SENDER_CLOSED = "Unable to send response. Response sender has been closed."


class InferenceResponseSender:
    """Sends the responses of one request: ``request.get_response_sender()``.

    A decoupled model sends any number of responses, then ``TRITONSERVER_RESPONSE_COMPLETE_FINAL``
    (with a last response or alone). A non-decoupled model may use it to send its one response.
    """

    __slots__ = ("_channel", "_closed", "_count", "_decoupled", "_lock", "_pending")

    def __init__(self, channel: ResponseChannel, decoupled: bool) -> None:
        self._channel = channel
        self._decoupled = decoupled
        self._closed = False
        self._count = 0
        self._pending: InferenceResponse | None = None
        self._lock = threading.Lock()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(
                f"Expected an 'InferenceResponse' object, found type '{type(response)}'."
            )
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        with self._lock:
            if not self._decoupled:
                if response is not None and self._count > 0:
                    raise TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send more than one "
                        "response."
                    )
                if response is None and final and self._count == 0:
                    raise TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send complete final "
                        "before sending a response."
                    )
            if self._closed:
                raise TritonModelException(_SENDER_CLOSED)
            if response is None and not final:
                raise TritonModelException(
                    "Inference Response object must be provided when the response flags is set "
                    "to zero."
                )
            self._count += 1
            if not self._decoupled:
                if not final:
                    self._pending = response  # sent as the one final response later
                    return
                if response is None:
                    response, self._pending = self._pending, None
            if final:
                self._closed = True
            self._channel.send(response, final)

    def is_cancelled(self) -> bool:
        return self._channel.is_cancelled()

    # -- for the runner --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _finish(self) -> bool:
        """After a non-decoupled ``execute``: send a response held back without the final flag.
        Returns whether the request is answered."""
        with self._lock:
            if not self._closed and self._pending is not None:
                response, self._pending = self._pending, None
                self._closed = True
                self._channel.send(response, True)
            return self._closed

    def _fail(self, error: TritonError) -> None:
        """End the request with ``error`` unless it is closed already."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = None
        self._channel.send(InferenceResponse(error=error), True)


class InferenceRequest:
    """A request: the ones ``execute`` receives, or (part 3) one a model makes for BLS."""

    def __init__(
        self,
        request_id: str = "",
        correlation_id: int | str = 0,
        inputs: Iterable[Tensor] = (),
        requested_output_names: Iterable[str] = (),
        model_name: str = "",
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: PreferredMemory | None = None,
        trace: Any = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._inputs = list(inputs)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._requested_output_names = list(requested_output_names)
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._preferred_memory = preferred_memory or PreferredMemory()
        self._parameters = _parameters_json(parameters)
        self._sender: InferenceResponseSender | None = None

    @classmethod
    def _incoming(
        cls,
        inputs: list[Tensor],
        request_id: str,
        correlation_id: int | str,
        requested_output_names: list[str],
        flags: int,
        timeout: int,
        parameters: str,
        model_name: str,
        model_version: int,
        sender: InferenceResponseSender,
    ) -> InferenceRequest:
        """A request received by the model (built by the host; no checks)."""
        request = cls.__new__(cls)
        request._inputs = inputs
        request._request_id = request_id
        request._correlation_id = correlation_id
        request._requested_output_names = requested_output_names
        request._model_name = model_name
        request._model_version = model_version
        request._flags = flags
        request._timeout = timeout
        request._preferred_memory = None
        request._parameters = parameters
        request._sender = sender
        return request

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        """The request's timeout in microseconds (0: none)."""
        return self._timeout

    def parameters(self) -> str:
        """The request's parameters as a JSON object string (``json.loads`` it)."""
        return self._parameters

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def get_response_sender(self) -> InferenceResponseSender:
        if self._sender is None:
            raise TritonModelException(
                "Unable to get a response sender: the request was not received by this model"
            )
        return self._sender

    def is_cancelled(self) -> bool:
        return self._sender is not None and self._sender.is_cancelled()

    def set_release_flags(self, flags: int) -> None:
        if flags == TRITONSERVER_REQUEST_RELEASE_ALL:
            return
        raise TritonModelException(
            "request rescheduling (TRITONSERVER_REQUEST_RELEASE_RESCHEDULE) is not yet supported "
            "by Nereid's Python backend"
        )

    def exec(self, decoupled: bool = False) -> Any:
        """Run this request on another model (BLS) and wait: its ``InferenceResponse`` (an error
        of the target comes back as the response's error), or with ``decoupled=True`` an
        iterator of its responses, the last one possibly empty."""
        try:
            responses = runtime.current().bls(self, runtime.outer_requests.get())
        except TritonModelException as exc:
            responses = iter([InferenceResponse(error=TritonError(exc.message()))])
        if decoupled:
            from .bls_wire import ResponseIterator

            return ResponseIterator(responses)
        answers = [r for r in responses if r.has_error() or r.output_tensors()]
        errors = [r for r in answers if r.has_error()]
        if errors:
            return errors[0]
        if len(answers) != 1:
            return InferenceResponse(
                error=TritonError(
                    f"BLS request to model '{self._model_name}' received {len(answers)} "
                    "responses: use exec(decoupled=True) for a decoupled model"
                )
            )
        return answers[0]

    async def async_exec(self, decoupled: bool = False) -> Any:
        """``exec`` for ``async def execute``: awaits without blocking the model's loop."""
        import asyncio

        return await asyncio.to_thread(self.exec, decoupled)


def _model_control(operation: str, *args: Any) -> Any:
    return runtime.current().model_control(operation, *args)


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    """Load (or reload) a model, with an optional configuration (JSON) and files
    (``{"file:1/model.py": bytes}``): the server must run in explicit model-control mode."""
    if files is not None and not isinstance(files, dict):
        raise TritonModelException("files must be a dict of str to bytes")
    _model_control("load", model_name, config or "", dict(files or {}))


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    _model_control("unload", model_name, bool(unload_dependents))


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return bool(_model_control("ready", model_name, str(model_version)))


# -- lookups ------------------------------------------------------------------------------------


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for properties in model_config.get("input", ()):
        if properties["name"] == name:
            return properties
    return None


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for properties in model_config.get("output", ()):
        if properties["name"] == name:
            return properties
    return None


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


# -- auto-complete --------------------------------------------------------------------------------


class ModelConfig:
    """The configuration ``auto_complete_config`` receives and returns.

    ``as_dict()`` is the configuration as Triton's JSON (proto field names); the setters check the
    model's wishes against what the configuration file already says, with Triton's messages.
    """

    def __init__(self, model_config: dict[str, Any] | str) -> None:
        self._model_config = (
            json.loads(model_config) if isinstance(model_config, str) else model_config
        )
        self._model_config.setdefault("name", "")
        self._model_config.setdefault("max_batch_size", 0)
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])

    def _name(self) -> str:
        return self._model_config["name"]

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = self._model_config.get("max_batch_size", 0)
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._name()}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but "
                    f"auto-complete-config function for model '{self._name()}' tries to set "
                    "scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def _add_tensor(self, kind: str, tensor: dict[str, Any], valid: tuple[str, ...]) -> None:
        name = self._name()
        label = tensor.get("name", "")
        for key in tensor:
            if key not in valid:
                allowed = ", ".join(f"'{v}'" for v in valid[:-1]) + f" and '{valid[-1]}'"
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model '{name}' "
                    f"contains property other than {allowed}."
                )
        for required in ("name", "data_type", "dims"):
            if required not in tensor:
                where = f"{kind} '{label}'" if required != "name" else kind
                raise ValueError(
                    f"{where} in auto-complete-config function for model '{name}' is missing "
                    f"'{required}' property."
                )
        for existing in self._model_config.setdefault(kind, []):
            if existing.get("name") != tensor["name"]:
                continue
            have_type = existing.get("data_type", "TYPE_INVALID")
            if have_type != "TYPE_INVALID" and have_type != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{name}', configuration expects datatype {have_type} "
                    f"for {kind} '{tensor['name']}', model provides {tensor['data_type']}"
                )
            if existing.get("dims") and list(existing["dims"]) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{name}', tensor '{tensor['name']}': the model expects dims "
                    f"{list(tensor['dims'])} but the model configuration specifies dims "
                    f"{list(existing['dims'])}"
                )
            if (
                "optional" in tensor
                and "optional" in existing
                and bool(existing["optional"]) != bool(tensor["optional"])
            ):
                raise ValueError(
                    f"model '{name}', tensor '{tensor['name']}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional "
                    f"{existing['optional']}"
                )
            existing["data_type"] = tensor["data_type"]
            existing["dims"] = list(tensor["dims"])
            if "optional" in tensor:
                existing["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(dict(tensor, dims=list(tensor["dims"])))

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for model "
                    f"'{self._name()}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        wanted = bool(transaction_policy_dict.get("decoupled", False))
        if "decoupled" in policy and bool(policy["decoupled"]) != wanted:
            raise ValueError(
                "trying to change decoupled property in auto-complete-config for model "
                f"'{self._name()}', which is already set to {policy['decoupled']}."
            )
        policy["decoupled"] = wanted


# -- logging --------------------------------------------------------------------------------------


class LogLevel(enum.IntEnum):
    """Logger levels; their values are Python logging levels (VERBOSE is DEBUG)."""

    INFO = 20
    WARNING = 30
    ERROR = 40
    VERBOSE = 10


class Logger:
    """``pb_utils.Logger.log_info("...")``: messages go to the server log (Python logging,
    logger ``nereid.python``) with the model file and line that logged them. Verbose messages
    appear when the server's verbose level is above 0."""

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: int = LogLevel.INFO) -> None:
        runtime.current().log(int(level), str(message), stacklevel=2)

    @staticmethod
    def log_info(message: str) -> None:
        runtime.current().log(LogLevel.INFO, str(message), stacklevel=2)

    @staticmethod
    def log_warn(message: str) -> None:
        runtime.current().log(LogLevel.WARNING, str(message), stacklevel=2)

    @staticmethod
    def log_error(message: str) -> None:
        runtime.current().log(LogLevel.ERROR, str(message), stacklevel=2)

    @staticmethod
    def log_verbose(message: str) -> None:
        runtime.current().log(LogLevel.VERBOSE, str(message), stacklevel=2)


# -- custom metrics -------------------------------------------------------------------------------

_KIND_NAMES = {0: "counter", 1: "gauge", 2: "histogram"}


class Metric:
    """One labelled series of a :class:`MetricFamily`: ``family.Metric(labels={...})``."""

    __slots__ = ("__weakref__", "_family", "_handle", "_kind")

    def __init__(self, family: MetricFamily, labels: dict[str, str] | None = None, buckets=None):
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("labels must be a dict of str to str")
        if family._kind == MetricFamily.HISTOGRAM:
            if buckets is None:
                raise TritonModelException("a histogram metric needs 'buckets'")
        elif buckets is not None:
            raise TritonModelException("only histogram metrics take 'buckets'")
        self._family = family
        self._kind = family._kind
        self._handle = _call(family._handle.metric, dict(labels or {}), buckets)

    def increment(self, value: float) -> None:
        _call(self._handle.increment, value)

    def set(self, value: float) -> None:
        _call(self._handle.set, value)

    def observe(self, value: float) -> None:
        _call(self._handle.observe, value)

    def value(self) -> float:
        if self._kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("Failed to get metric value: not supported for histograms")
        return _call(self._handle.get)


class MetricFamily:
    """A custom metric family on the server's registry (``/metrics`` shows it).

    ``MetricFamily(name, description, kind)`` with kind ``MetricFamily.COUNTER``, ``GAUGE`` or
    ``HISTOGRAM``; families of the same name share their series.
    """

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in _KIND_NAMES:
            raise TritonModelException(
                f"invalid metric kind {kind!r}: use MetricFamily.COUNTER, GAUGE or HISTOGRAM"
            )
        self._name = name
        self._description = description
        self._kind = kind
        self._handle = _call(runtime.current().metric_family, name, description, _KIND_NAMES[kind])

    def Metric(self, labels: dict[str, str] | None = None, buckets=None) -> Metric:
        return Metric(self, labels, buckets)


def _call(function: Any, *args: Any) -> Any:
    """Call into the metrics registry, turning its errors into TritonModelException."""
    try:
        return function(*args)
    except TritonModelException:
        raise
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise TritonModelException(message) from None
