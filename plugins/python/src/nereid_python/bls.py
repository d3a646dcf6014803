"""BLS (``pb_utils.InferenceRequest.exec`` / ``async_exec``) and the model-loading API
(``pb_utils.load_model``, ``unload_model``, ``is_model_ready``), on the server's side.

Either way a call ends in the kernel's API on the server's event loop:

- in the server process (``execution_mode: thread``) the model's thread builds the kernel
  request itself and starts it on the loop (:func:`thread_bls`);
- in a model process the request travels to the server on the events channel (its tensors
  pickled: see :mod:`nereid_python.protocol`), the server starts it the same way
  (:func:`start_call`) and sends each response back on the events channel.

A BLS call made while ``execute`` runs is tied to the batch's requests: cancelling one of them
(its client went away) cancels the call. The target's errors come back as the response's
error, never as exceptions, as in Triton.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Callable, Iterator
from typing import Any

from nereid.errors import NereidError
from nereid.observers import TRACE_PARENT_KEY
from nereid.types import InferenceRequest, InferenceResponse, Tensor

from . import pb_utils
from .bls_wire import drain, error_response, pb_response, request_wire

__all__ = ["error_response", "kernel_request", "model_control", "response_wire", "start_call"]

_FLAG_START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
_FLAG_END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


def _codes() -> tuple[dict, dict]:
    from .host import _CODE_OF, _DTYPE_OF

    return _CODE_OF, _DTYPE_OF


# -- requests ---------------------------------------------------------------------------------


def kernel_request(wire: tuple) -> InferenceRequest:
    """The kernel request for a BLS request in its plain form."""
    _, dtype_of = _codes()
    name, version, tensors, requested, request_id, correlation, flags, timeout, params = wire
    inputs = [Tensor(tname, array, dtype_of[code]) for tname, code, array in tensors]
    return InferenceRequest(
        name,
        inputs,
        model_version=version,
        id=request_id,
        requested_outputs=requested,
        parameters=json.loads(params) if params and params != "{}" else {},
        timeout_us=timeout,
        sequence_id=correlation,
        sequence_start=bool(flags & _FLAG_START),
        sequence_end=bool(flags & _FLAG_END),
    )


# -- responses --------------------------------------------------------------------------------


def _error_code(error: BaseException) -> int:
    kind = getattr(error, "kind", None)
    name = getattr(kind, "name", "INTERNAL")
    return getattr(pb_utils.TritonError, name, pb_utils.TritonError.INTERNAL)


def response_wire(response: InferenceResponse) -> tuple:
    """A kernel response as plain data (server -> model process)."""
    code_of, _ = _codes()
    params = json.dumps(response.parameters, default=str) if response.parameters else "{}"
    error = response.error
    if error is not None:
        message = getattr(error, "message", None) or str(error)
        return ((_error_code(error), message), params, ())
    tensors = [(t.name, code_of[t.datatype], t.data) for t in response.outputs]
    return (None, params, tensors)


# -- running a call on the server's loop --------------------------------------------------------


def _on_server_loop(api: Any) -> bool:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is api.loop


def start_call(
    api: Any,
    request: InferenceRequest,
    outer: list[InferenceRequest],
    on_response: Callable[[InferenceResponse], None],
) -> None:
    """Start ``request`` through ``api.infer`` on the server's loop (from any other thread);
    ``on_response(response)`` is called on the loop for each response, the last one final. It
    is cancelled with any of the ``outer`` requests."""

    async def start() -> None:
        for parent in outer:
            if parent.is_cancelled():
                on_response(InferenceResponse(error=_cancelled(), final=True))
                return
        if len(outer) == 1:  # traced as a child of the request it was made for
            request.context[TRACE_PARENT_KEY] = outer[0]
        try:
            stream = api.infer(request)
        except NereidError as exc:
            on_response(InferenceResponse(error=exc, final=True))
            return
        stream.consume(on_response)
        for parent in outer:
            parent.on_cancel(stream.cancel)

    if _on_server_loop(api):
        raise pb_utils.TritonModelException("BLS cannot be called on the server's event loop")
    api.run_coroutine(start())


def _cancelled() -> NereidError:
    from nereid.errors import CancelledError

    return CancelledError("Request was cancelled")


def thread_bls(
    api: Any, request: pb_utils.InferenceRequest, outer: list[pb_utils.InferenceRequest]
) -> Iterator[pb_utils.InferenceResponse]:
    """A BLS call from a model in the server process."""
    kernel = kernel_request(request_wire(request))
    parents = []
    for pb_request in outer:
        channel = getattr(pb_request._sender, "_channel", None)
        parent = getattr(channel, "request", None)
        if parent is not None:
            parents.append(parent)
    responses: queue.SimpleQueue = queue.SimpleQueue()
    start_call(api, kernel, parents, lambda r: responses.put((r.final, r)))
    return drain(responses, lambda r: pb_response(response_wire(r)))


def model_control(api: Any, operation: str, *args: Any) -> Any:
    """``load`` (name, config, files), ``unload`` (name, unload_dependents), ``ready`` (name,
    version) through the kernel; its errors raised as ``TritonModelException``."""
    if _on_server_loop(api):
        raise pb_utils.TritonModelException(
            "the model loading API cannot be called on the server's event loop"
        )

    async def run() -> Any:
        if operation == "load":
            name, config, files = args
            await api.load_model(name, config or None, files or None)
            return None
        if operation == "unload":
            await api.unload_model(*args)
            return None
        if operation == "ready":
            name, version = args
            return bool(api.model_ready(name, version if version != "" else -1))
        raise ValueError(f"unknown model-control operation {operation!r}")

    try:
        return api.run_coroutine(run())
    except NereidError as exc:
        raise pb_utils.TritonModelException(exc.message) from None
