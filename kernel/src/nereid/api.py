"""The InferenceService: the one facade every frontend and the in-process API use.

It resolves the model, validates the request against the configuration, shapes the responses,
records statistics and calls request observers, then hands the request to the model's
scheduler. Frontends are codecs around it; nothing here knows about a wire format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import ModelConfig
from .custom_metrics import CustomMetricsRegistry
from .errors import CancelledError, ErrorKind, NereidError
from .lifecycle.model import LoadedModel
from .observers import FailureReason
from .runtime.mailbox import LoopMailbox
from .runtime.validation import response_transform, validate_request
from .shared_memory import CudaSharedMemoryManager, SystemSharedMemoryManager
from .types import InferenceRequest, InferenceResponse, ResponseStream

if TYPE_CHECKING:
    from .server import Server

# Protocol extensions the kernel itself provides; frontends and plugins add theirs.
KERNEL_EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "statistics",
    "logging",
    "parameters",
)

_FAILURE_BY_KIND = {
    ErrorKind.CANCELLED: FailureReason.CANCELED,
    ErrorKind.UNAVAILABLE: FailureReason.REJECTED,
}


class InferenceService:
    def __init__(self, server: Server) -> None:
        self._server = server
        self.system_shm = SystemSharedMemoryManager(
            enabled=bool(getattr(server.options, "allow_client_shm", False))
        )
        self.cuda_shm = CudaSharedMemoryManager()
        self.custom_metrics = CustomMetricsRegistry()
        self.log_settings = server.log_settings
        # The request tracer a tracing plugin installs (None: no tracing). Frontends serve its
        # settings on the trace endpoints (``get_settings(model)``, ``update_settings(model,
        # changes)``) and attach what only they see to the requests they receive; see the
        # TRACE_* keys of nereid.observers.
        self.tracer: Any = None
        self._mailbox: LoopMailbox | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (called by the server as it starts, on the loop)."""
        self._mailbox = LoopMailbox.of(loop)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop, where :meth:`infer` must be called (None before start)."""
        return self._server.loop

    # -- server ----------------------------------------------------------------------------------

    def is_live(self) -> bool:
        return self._server.live

    def is_ready(self) -> bool:
        server = self._server
        if not server.ready:
            return False
        if server.options.strict_readiness:
            return server.repository.all_ready()
        return True

    def server_metadata(self) -> dict[str, Any]:
        from . import __version__

        return {
            "name": self._server.options.id,
            "version": __version__,
            "extensions": self.extensions(),
        }

    def scheduler_installed(self, name: str) -> bool:
        """Whether a scheduler of that name is registered (auto-complete asks before turning
        on ``dynamic_batching``)."""
        return name in self._server.plugins.registries["scheduler"]

    def add_extension(self, name: str) -> None:
        """Advertise a protocol extension in server metadata (frontends add theirs)."""
        self._server.extensions.add(name)

    def extensions(self) -> list[str]:
        extra = sorted(self._server.extensions - set(KERNEL_EXTENSIONS))
        return [*KERNEL_EXTENSIONS, *extra]

    # -- models ----------------------------------------------------------------------------------

    def model(self, name: str, version: int | str = -1) -> LoadedModel:
        """The ready model version a request for ``name``/``version`` goes to (errors as
        Triton words them)."""
        return self._server.repository.get(name, _version(version))

    def model_ready(self, name: str, version: int | str = -1) -> bool:
        """Whether the model version serves; an unparsable version is INVALID_ARG."""
        number = _version(version)
        try:
            model = self.model(name, number)
        except NereidError:
            return False
        return model.accepting and (model.model is None or model.model.is_ready())

    def model_metadata(self, name: str, version: int | str = -1) -> dict[str, Any]:
        model = self.model(name, version)
        config = model.config
        lead = [-1] if config.max_batch_size > 0 else []
        return {
            "name": model.name,
            "versions": [str(v) for v in self._server.repository.ready_versions(name)],
            "platform": config.platform or config.backend,
            "inputs": [
                {"name": s.name, "datatype": s.datatype.value, "shape": lead + list(s.dims)}
                for s in model.inputs.values()
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype.value, "shape": lead + list(s.dims)}
                for s in model.outputs.values()
            ],
        }

    def model_config(self, name: str, version: int | str = -1) -> ModelConfig:
        return self.model(name, version).config

    def model_statistics(self, name: str = "", version: int | str = -1) -> list[dict[str, Any]]:
        """Statistics of every ready model version, or of the one named."""
        repository = self._server.repository
        if name:
            if _version(version) == -1:
                self.model(name)  # raises when unknown
                models = [m for m in repository.loaded() if m.name == name]
            else:
                models = [self.model(name, version)]
        else:
            models = repository.loaded()
        return [m.statistics.as_dict() for m in models]

    # -- repository ------------------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return self._server.repository.index(ready_only)

    async def load_model(
        self, name: str, config: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        await self._server.repository.load_api(name, config, files)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self._server.repository.unload_api(name, unload_dependents)

    # -- inference -------------------------------------------------------------------------------

    def infer(self, request: InferenceRequest) -> ResponseStream:
        """Validate and enqueue a request; its responses arrive on the returned stream.

        Must be called on the server's event loop. Errors found before the request is queued
        (unknown model, invalid input, queue full) are raised here.
        """
        server = self._server
        observers = server.observers
        if request.cancelled or request.final_sent:
            raise CancelledError("Request was cancelled")
        model = self.model(request.model_name, request.model_version)
        request.arrival_ns = time.monotonic_ns()
        if observers.on_arrival:
            observers.notify(observers.on_arrival, request)
        stats = model.statistics
        try:
            if not model.accepting:
                raise NereidError.of(server.repository.unavailable_error(model.name, model.version))
            validate_request(model, request)
        except NereidError as exc:
            self._failed_before_queue(model, request, exc, FailureReason.OTHER)
            raise
        stream = ResponseStream(server.loop, self._mailbox)
        request.stream = stream
        if request.requested_outputs or model.reshaped_outputs:
            stream._transform = self._transform(model, request)
        stream.request = request
        stream.model = model
        stream._on_response = self._response_arrived
        stream._on_cancel = request.cancel
        model.request_started()
        stats.add_queued(1)
        request.queue_start_ns = time.monotonic_ns()
        try:
            model.scheduler.enqueue(request)
        except NereidError as exc:
            stats.add_queued(-1)
            model.request_finished()
            request.stream = None
            self._failed_before_queue(
                model, request, exc, _FAILURE_BY_KIND.get(exc.kind, FailureReason.OTHER)
            )
            raise
        if observers.on_queued:
            observers.notify(observers.on_queued, request)
        return stream

    def _failed_before_queue(
        self, model: LoadedModel, request: InferenceRequest, exc: NereidError, reason: FailureReason
    ) -> None:
        model.statistics.record_completion(request, True, time.monotonic_ns())
        observers = self._server.observers
        if observers.on_complete:
            observers.notify(observers.on_complete, request, reason)

    def _transform(
        self, model: LoadedModel, request: InferenceRequest
    ) -> Callable[[InferenceResponse], InferenceResponse] | None:
        shaping = response_transform(model, request)
        shm_outputs = {
            o.name: o.parameters
            for o in request.requested_outputs
            if "shared_memory_region" in o.parameters
        }
        if not shm_outputs:
            return shaping
        shm = self.system_shm

        def transform(response: InferenceResponse) -> InferenceResponse:
            if shaping is not None:
                response = shaping(response)
            response.outputs = [
                shm.write_output(t, shm_outputs[t.name]) if t.name in shm_outputs else t
                for t in response.outputs
            ]
            return response

        return transform

    def _response_arrived(self, stream: ResponseStream, response: InferenceResponse) -> None:
        """On the loop, for every response: statistics, observers, and the end of the
        request's accounting with its final response."""
        model, request = stream.model, stream.request
        stats = model.statistics
        observers = self._server.observers
        response.model_version = model.version_str
        if model.decoupled:
            elapsed = time.monotonic_ns() - request.queue_start_ns
            stats.record_response(stream.delivered, response, elapsed)
        if observers.on_response:
            observers.notify(observers.on_response, request, response)
        if not response.final:
            return
        if request.late_batch is not None:
            request.late_batch.answered()
        if request.compute_start_ns == 0:
            stats.add_queued(-1)  # answered (cancelled) without being executed
        model.request_finished()
        error = response.error
        stats.record_completion(request, error is not None, time.monotonic_ns())
        if observers.on_complete:
            reason = None
            if error is not None:
                reason = _FAILURE_BY_KIND.get(error.kind, FailureReason.BACKEND)
                if error.kind is ErrorKind.UNAVAILABLE and request.compute_start_ns:
                    reason = FailureReason.BACKEND
            observers.notify(observers.on_complete, request, reason)

    async def infer_async(self, request: InferenceRequest) -> InferenceResponse:
        """Infer and return the single response (its error raised)."""
        return await self.infer(request).single()

    def run_coroutine(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._server.loop).result()


def _version(version: int | str | None) -> int:
    if version is None or version == "":
        return -1
    try:
        return int(version)
    except ValueError:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"invalid model version '{version}'") from None
