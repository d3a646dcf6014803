"""Instance hosts: where one model instance's ``TritonPythonModel`` lives.

The kernel sees an :class:`InstanceHost` as the model instance (``execute`` on the instance
thread, ``finalize``). :class:`ThreadHost` runs the model in the server process: it turns the
kernel's requests into :mod:`pb_utils` requests whose responses go straight back through the
kernel request's ``respond``, and hands them to a :class:`~nereid_python.runner.ModelRunner`.

The other host, :class:`~nereid_python.process.ProcessHost`, implements the same methods for a
model in a process of its own: it ships the requests' inputs and metadata to a child process
that runs the same ``ModelRunner`` on ``pb_utils`` objects, and turns the responses the child
sends back into ``request.respond`` calls.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nereid.backend import ModelInstance
from nereid.errors import InvalidArgumentError, NereidError, error_of_kind
from nereid.runtime.batching import mark_compute_input_end
from nereid.types import DataType, InferenceRequest, InferenceResponse, Tensor

from . import pb_utils, runtime
from .runner import ModelRunner

_FLAG_START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
_FLAG_END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
_CODE_OF = {
    dtype: pb_utils.NAME_CODES[dtype.value]
    for dtype in DataType
    if dtype.value in pb_utils.NAME_CODES
}
_DTYPE_OF = {code: dtype for dtype, code in _CODE_OF.items()}


class InstanceHost(ModelInstance):
    """One model instance as the kernel sees it, wherever the model runs."""

    def start(self) -> None:
        """Load the model and call its ``initialize``; raises to fail the load."""
        raise NotImplementedError

    def execute(self, requests: list[InferenceRequest]) -> None:
        raise NotImplementedError

    def is_ready(self) -> bool:
        return True

    def finalize(self) -> None:
        """Call the model's ``finalize`` and release the instance."""


class ThreadHost(InstanceHost):
    """Runs the model in the server process, ``execute`` on the kernel's instance thread."""

    def __init__(
        self,
        model_class: type,
        args: dict[str, str],
        *,
        decoupled: bool,
        services: runtime.Services,
    ) -> None:
        self.decoupled = decoupled
        self.finalized = False
        self.runner = ModelRunner(
            model_class,
            args,
            decoupled=decoupled,
            name=args["model_instance_name"],
            services=services,
        )

    def start(self) -> None:
        self.runner.initialize()

    def execute(self, requests: list[InferenceRequest]) -> None:
        decoupled = self.decoupled
        batch = [to_pb_request(request, decoupled) for request in requests]
        mark_compute_input_end(requests)
        self.runner.execute(batch)

    def is_ready(self) -> bool:
        return self.runner.is_ready()

    def finalize(self) -> None:
        self.finalized = True
        self.runner.finalize()


class KernelChannel:
    """A pb_utils request's response channel straight to the kernel request."""

    __slots__ = ("request",)

    def __init__(self, request: InferenceRequest) -> None:
        self.request = request

    def send(self, response: pb_utils.InferenceResponse | None, final: bool) -> None:
        request = self.request
        if request.final_sent and request.is_cancelled():
            return  # cancelled and already answered: the client is gone, drop it
        if request.compute_output_start_ns == 0:
            request.compute_output_start_ns = time.monotonic_ns()
        try:
            request.respond(None if response is None else to_kernel_response(response), final=final)
        except InvalidArgumentError as exc:  # the kernel request was ended meanwhile
            raise pb_utils.TritonModelException(exc.message) from None

    def is_cancelled(self) -> bool:
        return self.request.is_cancelled()


def to_pb_request(request: InferenceRequest, decoupled: bool) -> pb_utils.InferenceRequest:
    """A kernel request as the model sees it (inputs are not copied)."""
    inputs = [
        pb_utils.Tensor._wrap(name, tensor.data, _CODE_OF[tensor.datatype])
        for name, tensor in request.inputs.items()
    ]
    flags = request.flags
    if request.sequence_start:
        flags |= _FLAG_START
    if request.sequence_end:
        flags |= _FLAG_END
    parameters = json.dumps(request.parameters, default=str) if request.parameters else "{}"
    return pb_utils.InferenceRequest._incoming(
        inputs,
        request.id,
        request.sequence_id,
        request.requested_output_names(),
        flags,
        request.timeout_us,
        parameters,
        request.model_name,
        request.model_version,
        pb_utils.InferenceResponseSender(KernelChannel(request), decoupled),
    )


def to_kernel_response(response: pb_utils.InferenceResponse) -> InferenceResponse:
    """A pb_utils response as the kernel's: outputs, or an error of the matching kind."""
    error = response.error()
    parameters = response.parameters()
    params: dict[str, Any] = json.loads(parameters) if parameters != "{}" else {}
    if error is not None:
        return InferenceResponse(error=kernel_error(error), parameters=params)
    outputs = [
        Tensor(tensor.name(), tensor.as_numpy(), _DTYPE_OF[tensor.triton_dtype()])
        for tensor in response.output_tensors()
    ]
    return InferenceResponse(outputs, parameters=params)


def kernel_error(error: pb_utils.TritonError) -> NereidError:
    """The kernel error of the same kind (``NotFoundError`` for ``TritonError.NOT_FOUND``)."""
    return error_of_kind(pb_utils.error_code_name(error.code()), error.message())
