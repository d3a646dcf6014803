"""ModelStreamInfer: many requests on one bidirectional stream, answered as Triton does.

Requests are read and issued as they arrive and run concurrently. A decoupled model's
responses are written as the model produces them; a non-decoupled model's single response is
written in the order its request arrived (Triton keeps those in request order). Every response
carries the ``triton_final_response`` parameter; a decoupled model's bare final flag becomes an
empty response only when the request set ``triton_enable_empty_final_response``. Errors are
``error_message`` responses, or, when the client opened the stream with the
``triton_grpc_error: true`` header, a gRPC status that ends the stream. Closing or cancelling
the stream cancels the requests still running.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

import grpc
from nereid import InternalError, NereidError

from . import codec
from .status import status_code

if TYPE_CHECKING:
    from nereid import InferenceResponse, ResponseStream

    from .service import GrpcService

GRPC_ERROR_HEADER = "triton_grpc_error"

_StreamResponse = codec.ModelStreamInferResponse
_FINAL = codec.FINAL_RESPONSE_PARAMETER


class StreamSession:
    """One ModelStreamInfer call: reads requests, issues them, writes responses in one place
    (gRPC allows one write at a time)."""

    def __init__(self, service: GrpcService, context: Any) -> None:
        self.service = service
        self.api = service.api
        self.context = context
        self.loop = asyncio.get_running_loop()
        metadata = context.invocation_metadata() or ()
        self.grpc_errors = any(
            key == GRPC_ERROR_HEADER and str(value).lower() == "true" for key, value in metadata
        )
        self.forwarded = service._forwarded(context) if service.header_forward else ()
        self.out: collections.deque[Any] = collections.deque()
        # One slot per non-decoupled request, in arrival order: [message or None].
        self.ordered: collections.deque[list[Any]] = collections.deque()
        self.streams: set[ResponseStream] = set()
        self.tasks: set[asyncio.Task] = set()
        self.reading = True
        self.failure: tuple[Any, str] | None = None
        self._waiter: asyncio.Future | None = None

    # -- the writer ---------------------------------------------------------------------------

    async def run(self, requests: Any) -> None:
        reader = self.loop.create_task(self._read(requests))
        context, out = self.context, self.out
        try:
            while True:
                while out and self.failure is None:
                    await context.write(out.popleft())
                if self.failure is not None:
                    code, message = self.failure
                    await context.abort(code, message)
                if not self.reading and not self.tasks and not self.ordered and not out:
                    break
                self._waiter = self.loop.create_future()
                await self._waiter
                self._waiter = None
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()
        finally:
            self._close(reader)

    def _close(self, reader: asyncio.Task) -> None:
        """The call is over (done, failed or cancelled): cancel whatever still runs."""
        reader.cancel()
        for stream in list(self.streams):
            stream.cancel()
        for task in list(self.tasks):
            task.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _emit(self, message: Any) -> None:
        self.out.append(message)
        self._wake()

    def _deliver(self, message: Any, slot: list[Any] | None) -> None:
        if slot is None:
            self._emit(message)
            return
        slot[0] = message
        ordered = self.ordered
        while ordered and ordered[0][0] is not None:
            self.out.append(ordered.popleft()[0])
        self._wake()

    def _fail(self, error: NereidError) -> None:
        """``triton_grpc_error`` mode: end the stream with this error's status."""
        if self.failure is None:
            self.failure = (status_code(error), error.message)
        self._wake()

    # -- the reader ---------------------------------------------------------------------------

    async def _read(self, requests: Any) -> None:
        try:
            async for message in requests:
                if self.failure is not None:
                    break
                if message is codec.UNPARSABLE:  # ends the stream, as a failed read would
                    self.failure = (grpc.StatusCode.INTERNAL, codec.UNPARSABLE_MESSAGE)
                    break
                self._submit(message)
        finally:
            self.reading = False
            self._wake()

    def _submit(self, message: Any) -> None:
        api = self.api
        service = self.service
        slot: list[Any] | None = None
        decoupled = False
        error: NereidError | None = None
        try:
            version = codec.parse_version(message.model_version)
            decoupled = api.model(message.model_name, version).decoupled
        except NereidError as exc:
            error = exc
        if not decoupled:
            slot = [None]
            self.ordered.append(slot)
        if error is None:
            try:
                request, empty_final = codec.decode_request(
                    message, api, service.allow_shm, version, self.forwarded
                )
                stream = api.infer(request)
            except NereidError as exc:
                error = exc
            except Exception as exc:
                error = InternalError(str(exc) or type(exc).__name__)
        if error is not None:
            self._issue_error(message.id, error, slot)
            return
        self.streams.add(stream)
        task = self.loop.create_task(self._consume(stream, slot, empty_final))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self._wake()

    def _issue_error(self, request_id: str, error: NereidError, slot: list[Any] | None) -> None:
        """A request that failed before it was queued."""
        if self.grpc_errors:
            self._fail(error)
            return
        message = _StreamResponse(error_message=error.message)
        message.infer_response.id = request_id
        self._deliver(message, slot)

    # -- one request's responses --------------------------------------------------------------

    async def _consume(
        self, stream: ResponseStream, slot: list[Any] | None, empty_final: bool
    ) -> None:
        # A non-decoupled request answers exactly once, even with a bare final flag.
        empty_final = empty_final or slot is not None
        try:
            async for response in stream:
                message = self._encode(response, empty_final)
                if message is not None:
                    self._deliver(message, slot)
        finally:
            self.streams.discard(stream)
            if slot is not None and slot[0] is None and self.failure is None:
                # A non-decoupled request must answer once; keep the order moving.
                message = _StreamResponse(error_message="request ended without a response")
                self._deliver(message, slot)

    def _encode(self, response: InferenceResponse, empty_final: bool) -> Any:
        error = response.error
        if error is not None:
            if self.grpc_errors:
                self._fail(error)
                return None
            message = _StreamResponse(error_message=error.message)
            _identify(message.infer_response, response)
        elif response.empty:
            if not empty_final:
                return None
            message = _StreamResponse()
            _identify(message.infer_response, response)
        else:
            message = _StreamResponse()
            try:
                codec.fill_response(message.infer_response, response)
            except NereidError as exc:
                if self.grpc_errors:
                    self._fail(exc)
                    return None
                message = _StreamResponse(error_message=exc.message)
                _identify(message.infer_response, response)
        message.infer_response.parameters[_FINAL].bool_param = response.final
        return message


def _identify(target: Any, response: InferenceResponse) -> None:
    target.id = response.id
    target.model_name = response.model_name
    target.model_version = response.model_version
