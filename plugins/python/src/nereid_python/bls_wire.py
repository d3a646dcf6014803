"""BLS requests and responses as plain data, and the iterator of a call's responses: the part
of BLS a model process needs (it does not import the kernel; :mod:`nereid_python.bls` is the
server's side)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

from . import pb_utils


def request_wire(request: pb_utils.InferenceRequest) -> tuple:
    """A BLS request as plain data (model process -> server)."""
    if not request.model_name():
        raise pb_utils.TritonModelException("a BLS request needs a model_name")
    tensors = [(t.name(), t.triton_dtype(), t.as_numpy()) for t in request.inputs()]
    return (
        request.model_name(),
        int(request.model_version()),
        tensors,
        list(request.requested_output_names()),
        request.request_id(),
        request.correlation_id(),
        int(request.flags()),
        int(request.timeout()),
        request.parameters(),
    )


def pb_response(wire: tuple) -> pb_utils.InferenceResponse:
    error, params, tensors = wire
    if error is not None:
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(error[1], error[0]), parameters=params
        )
    outputs = [pb_utils.Tensor._wrap(name, array, code) for name, code, array in tensors]
    return pb_utils.InferenceResponse(outputs, parameters=params)


def error_response(message: str, code: int = pb_utils.TritonError.INTERNAL) -> tuple:
    return ((code, message), "{}", ())


class ResponseIterator:
    """The responses of a BLS call (``exec(decoupled=True)``), the last one final (and, for a
    decoupled target, possibly empty, as in Triton). Iterable with ``for`` and ``async for``."""

    def __init__(self, source: Iterator[pb_utils.InferenceResponse]) -> None:
        self._source = source

    def __iter__(self) -> ResponseIterator:
        return self

    def __next__(self) -> pb_utils.InferenceResponse:
        return next(self._source)

    def __aiter__(self) -> ResponseIterator:
        return self

    async def __anext__(self) -> pb_utils.InferenceResponse:
        import asyncio

        try:
            return await asyncio.to_thread(next, self._source)
        except StopIteration:
            raise StopAsyncIteration from None


def drain(source: queue.SimpleQueue, convert: Callable[[Any], tuple]) -> Iterator:
    """Responses from a queue fed with ``(final, item)`` until the final one."""
    while True:
        final, item = source.get()
        yield convert(item)
        if final:
            return
