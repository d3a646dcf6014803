"""The values that travel along the request path: datatypes, tensors, requests and responses.

Everything here is plain data plus the one channel a request answers through (its
:class:`ResponseStream`), so that a hand-off is always one way: the backend responds through the
request it was given and never calls back into a scheduler or a frontend.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CancelledError, InvalidArgumentError, NereidError
from .runtime.mailbox import LoopMailbox

try:  # BF16 needs a numpy dtype; ml_dtypes provides one (tritonclient depends on it too).
    from ml_dtypes import bfloat16 as _bfloat16

    BF16_DTYPE: np.dtype = np.dtype(_bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    # Without ml_dtypes a BF16 tensor is carried as its raw 16-bit patterns.
    BF16_DTYPE = np.dtype(np.uint16)


class DataType(enum.Enum):
    """Triton's tensor datatypes, named as on the wire (``"FP32"``)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BF16 = "BF16"
    BYTES = "BYTES"

    @classmethod
    def parse(cls, name: str) -> DataType:
        """The datatype for a wire name (``FP32``) or a config name (``TYPE_FP32``)."""
        key = name[5:] if name.startswith("TYPE_") else name
        if key == "STRING":
            key = "BYTES"
        try:
            return cls[key]
        except KeyError:
            raise InvalidArgumentError(f"invalid datatype '{name}'") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DataType:
        dtype = np.dtype(dtype)
        if dtype.kind in "OSU":
            return cls.BYTES
        try:
            return _FROM_NUMPY[dtype]
        except KeyError:
            raise InvalidArgumentError(f"no Triton datatype for numpy dtype {dtype}") from None

    @property
    def numpy_dtype(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element; 0 for BYTES, whose elements vary in size."""
        return 0 if self is DataType.BYTES else _TO_NUMPY[self].itemsize

    @property
    def config_name(self) -> str:
        """The name a model configuration uses (``TYPE_FP32``, ``TYPE_STRING``)."""
        return "TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.value}"


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype(np.float16),
    DataType.FP32: np.dtype(np.float32),
    DataType.FP64: np.dtype(np.float64),
    DataType.BF16: BF16_DTYPE,
    DataType.BYTES: np.dtype(object),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {
    dt: t for t, dt in _TO_NUMPY.items() if t not in (DataType.BYTES, DataType.BF16)
}
if np.dtype(np.uint16) != BF16_DTYPE:
    _FROM_NUMPY[BF16_DTYPE] = DataType.BF16

_LENGTH = struct.Struct("<I")


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES wire form: each element, in C order, as a 4-byte little-endian length
    followed by its bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(
    buffer: bytes | memoryview,
    count: int | None = None,
    name: str | None = None,
    model: str | None = None,
) -> np.ndarray:
    """The object array of bytes elements in a length-prefixed buffer.

    ``count`` is the element count the shape promises; a buffer that holds fewer or more
    elements, or whose last length runs past its end, is an INVALID_ARG error, worded as
    Triton words it for inference input ``name`` of ``model`` when those are given.
    """
    subject = "BYTES tensor" if name is None else f"inference input '{name}'"
    if model is not None:
        subject += f" for model '{model}'"
    view = memoryview(buffer).cast("B")
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if count is not None and len(items) == count:  # more data than the shape holds
            raise InvalidArgumentError(
                f"unexpected number of string elements {count + 1} for {subject}, expecting {count}"
            )
        if offset + 4 > end:
            raise InvalidArgumentError(
                f"incomplete string length indicator for {subject}, expecting 4 bytes but "
                f"only {end - offset} bytes available. Please make sure the string length "
                "indicator is in one buffer."
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidArgumentError(
                f"string element {len(items)} of {subject} claims {length} bytes, but only "
                f"{end - offset} bytes are left"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if count is not None and len(items) != count:
        raise InvalidArgumentError(
            f"expected {count} string elements for {subject}, got {len(items)}"
        )
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class Tensor:
    """A named tensor: a datatype, a shape and a numpy array holding the data.

    BYTES tensors hold an object array of ``bytes``. ``data`` is kept as given (often a
    zero-copy view over a request body), so a backend must not write into an input.
    """

    __slots__ = ("data", "datatype", "name", "parameters", "shape")

    def __init__(
        self,
        name: str,
        data: np.ndarray,
        datatype: DataType | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.data = data
        self.datatype = datatype if datatype is not None else DataType.from_numpy(data.dtype)
        self.shape: tuple[int, ...] = tuple(data.shape)
        self.parameters = parameters if parameters is not None else {}

    @classmethod
    def from_buffer(
        cls,
        name: str,
        datatype: DataType,
        shape: Sequence[int],
        buffer: bytes | memoryview,
        model: str | None = None,
    ) -> Tensor:
        """A tensor over raw wire bytes (zero-copy for fixed-size types); ``model``, where the
        caller knows it, goes into error messages."""
        count = element_count(shape)
        if datatype is DataType.BYTES:
            array = deserialize_bytes(buffer, count, name, model)
        else:
            expected = count * datatype.itemsize
            if len(buffer) != expected:
                raise InvalidArgumentError(
                    f"unexpected size {len(buffer)} for input '{name}', expecting {expected} "
                    f"bytes for {datatype.value} shape {list(shape)}"
                )
            array = np.frombuffer(buffer, dtype=datatype.numpy_dtype)
        return cls(name, array.reshape(shape), datatype)

    def to_bytes(self) -> bytes:
        """The raw wire bytes of the data (length-prefixed for BYTES)."""
        if self.datatype is DataType.BYTES:
            return serialize_bytes(self.data)
        return np.ascontiguousarray(self.data).tobytes()

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.datatype.value}, {list(self.shape)})"


@dataclass
class RequestedOutput:
    """An output the client asked for, with its parameters (classification, shared memory)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


class InferenceResponse:
    """One response of a request: outputs or an error, and whether it is the final one.

    A decoupled model may end a request with a final flag and no response; that arrives as a
    response with ``final=True`` and ``empty=True``.
    """

    __slots__ = (
        "empty",
        "error",
        "final",
        "id",
        "model_name",
        "model_version",
        "outputs",
        "parameters",
    )

    def __init__(
        self,
        outputs: Sequence[Tensor] = (),
        *,
        error: NereidError | None = None,
        parameters: dict[str, Any] | None = None,
        final: bool = True,
        empty: bool = False,
    ) -> None:
        self.outputs = list(outputs)
        self.error = error
        self.parameters = parameters if parameters is not None else {}
        self.final = final
        self.empty = empty
        self.model_name = ""
        self.model_version = ""
        self.id = ""

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def as_numpy(self, name: str) -> np.ndarray:
        return self.output(name).data

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"outputs={self.outputs}"
        return f"InferenceResponse({state}, final={self.final})"


class ResponseStream:
    """The async iterator a request's responses arrive on, ending after the final one.

    Backends push from any thread; the push is handed to the stream's event loop. A frontend
    iterates it, or awaits :meth:`single` for a model that answers once. Responses that carry an
    error are yielded like any other; :meth:`single` raises them.
    """

    __slots__ = (
        "_closed",
        "_consumer",
        "_items",
        "_loop",
        "_mailbox",
        "_on_cancel",
        "_on_response",
        "_transform",
        "_waiter",
        "delivered",
        "model",
        "request",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, mailbox: LoopMailbox | None = None
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._mailbox = mailbox or LoopMailbox.of(self._loop)
        self._items: collections.deque[InferenceResponse] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._closed = False
        self._transform: Callable[[InferenceResponse], InferenceResponse] | None = None
        self._on_cancel: Callable[[], None] | None = None
        self._on_response: Callable[[ResponseStream, InferenceResponse], None] | None = None
        self._consumer: Callable[[InferenceResponse], None] | None = None
        self.request: InferenceRequest | None = None
        self.model: Any = None
        self.delivered = 0

    def push(self, response: InferenceResponse) -> None:
        """Deliver a response; safe from any thread."""
        self._mailbox.call(self._deliver, response)

    def _deliver(self, response: InferenceResponse) -> None:
        if self._closed:
            return
        if self._transform is not None and response.error is None:
            try:
                response = self._transform(response)
            except NereidError as exc:
                response = InferenceResponse(error=exc, final=response.final)
        if response.final:
            self._closed = True
        if self._on_response is not None:
            self._on_response(self, response)
        self.delivered += 1
        consumer = self._consumer
        if response.final:
            # The request and the stream point at each other (and a consumer often at both):
            # unlinked here, they are freed by reference counting, not by the cyclic GC, whose
            # collections a cycle per request would otherwise set off.
            self.request = self._transform = self._on_cancel = self._consumer = None
        if consumer is not None:
            consumer(response)
            return
        self._items.append(response)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def consume(self, callback: Callable[[InferenceResponse], None]) -> None:
        """Take the responses by callback instead of iterating the stream: ``callback(response)``
        runs on the event loop for each response as it is delivered (any delivered already, at
        once), and the stream keeps none. For code on the loop that reacts to other models'
        answers, such as an ensemble's steps, without a task per request. Call it on the loop;
        do not iterate the stream afterwards."""
        self._consumer = callback
        items = self._items
        while items:
            callback(items.popleft())

    def cancel(self) -> None:
        """The consumer has gone: cancel the request behind the stream."""
        if self._on_cancel is not None and not self._closed:
            self._on_cancel()

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> InferenceResponse:
        items = self._items
        while not items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                self._waiter = None
        return items.popleft()

    async def single(self) -> InferenceResponse:
        """The one final response of a non-decoupled request; its error is raised."""
        response = await self.__anext__()
        if response.error is not None:
            raise response.error
        return response

    async def collect(self) -> list[InferenceResponse]:
        """Every response until the final one (errors included, not raised)."""
        return [response async for response in self]


_request_ids = itertools.count(1)
# One lock for every request's final-response check: held for a few instructions, and no
# per-request lock to allocate.
_RESPOND_LOCK = threading.Lock()


class InferenceRequest:
    """A request for one model: inputs, what to return, scheduling hints and its response channel.

    ``respond`` may be called from any thread, any number of times for a decoupled model, and
    exactly once with ``final=True``. Timestamps (``time.monotonic_ns``) are filled in along the
    path for statistics and tracing.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_callbacks",
        "_cancelled",
        "_final_sent",
        "arrival_ns",
        "batch_size",
        "compute_end_ns",
        "compute_input_end_ns",
        "compute_output_start_ns",
        "compute_start_ns",
        "context",
        "flags",
        "id",
        "inputs",
        "late_batch",
        "model_name",
        "model_version",
        "parameters",
        "priority",
        "queue_start_ns",
        "requested_outputs",
        "response_count",
        "sequence_end",
        "sequence_id",
        "sequence_start",
        "serial",
        "stream",
        "timeout_us",
    )

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, Tensor] | Iterable[Tensor] = (),
        *,
        model_version: int = -1,
        id: str = "",
        requested_outputs: Sequence[RequestedOutput | str] = (),
        parameters: dict[str, Any] | None = None,
        priority: int = 0,
        timeout_us: int = 0,
        sequence_id: int | str = 0,
        sequence_start: bool = False,
        sequence_end: bool = False,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        # A list (the usual case) is told from a Mapping without the slower ABC check.
        if type(inputs) is not list and isinstance(inputs, Mapping):
            self.inputs: dict[str, Tensor] = dict(inputs)
        else:
            self.inputs = {tensor.name: tensor for tensor in inputs}
        self.requested_outputs = [
            out if isinstance(out, RequestedOutput) else RequestedOutput(out)
            for out in requested_outputs
        ]
        self.parameters = parameters if parameters is not None else {}
        self.priority = priority
        self.timeout_us = timeout_us
        self.sequence_id = sequence_id
        self.sequence_start = sequence_start
        self.sequence_end = sequence_end
        self.flags = 0
        self.serial = next(_request_ids)
        self.batch_size = 1
        self.stream: ResponseStream | None = None
        self.context: dict[str, Any] = {}
        self.response_count = 0
        self._final_sent = False
        self._cancelled = False
        self._cancel_callbacks: list[Callable[[], None]] | None = None
        self.arrival_ns = self.queue_start_ns = self.compute_start_ns = 0
        self.compute_input_end_ns = self.compute_output_start_ns = self.compute_end_ns = 0
        # Set by the runner for an instance that answers after execute returns (see runner).
        self.late_batch: Any = None

    # -- answering -------------------------------------------------------------------------

    @property
    def final_sent(self) -> bool:
        return self._final_sent

    def respond(self, response: InferenceResponse | None = None, *, final: bool = True) -> None:
        """Send a response (or, with ``None`` and ``final=True``, only the final flag).

        After the final response a further one is an error, except on a cancelled request,
        whose client already has its CANCELLED answer: what a model still sends is dropped."""
        with _RESPOND_LOCK:
            if self._final_sent:
                if self._cancelled:
                    return
                raise InvalidArgumentError(
                    "Unable to send response. Response sender has been closed."
                )
            if final:
                self._final_sent = True
                self._cancel_callbacks = None  # they may point back at the request
        if response is None:
            if not final:
                return
            response = InferenceResponse(final=True, empty=True)
        else:
            response.final = final
        response.model_name = self.model_name
        response.id = self.id
        self.response_count += 1
        if self.stream is not None:
            self.stream.push(response)

    def fail(self, error: BaseException) -> None:
        """End the request with an error, unless it has already been answered."""
        if self._final_sent:
            return
        try:
            self.respond(InferenceResponse(error=NereidError.of(error)), final=True)
        except InvalidArgumentError:
            pass  # answered meanwhile by another thread

    # -- cancellation ----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Mark the request cancelled. One that has not started executing is answered
        CANCELLED now (a scheduler skips answered requests); one executing stops when its
        model next checks ``is_cancelled``."""
        if self._cancelled or self._final_sent:
            return
        self._cancelled = True
        for callback in self._cancel_callbacks or ():
            callback()
        if not self.compute_start_ns:
            self.fail_cancelled()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        if self._cancel_callbacks is None:
            self._cancel_callbacks = []
        self._cancel_callbacks.append(callback)

    def fail_cancelled(self) -> None:
        self.fail(CancelledError("Request was cancelled"))

    # -- helpers ---------------------------------------------------------------------------

    def input(self, name: str) -> Tensor:
        return self.inputs[name]

    def requested_output_names(self) -> list[str]:
        return [out.name for out in self.requested_outputs]

    def __repr__(self) -> str:
        return f"InferenceRequest({self.model_name!r}, id={self.id!r}, inputs={list(self.inputs)})"


def now_ns() -> int:
    return time.monotonic_ns()
