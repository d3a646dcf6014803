"""Drives one ``TritonPythonModel`` instance: ``initialize``, ``execute``, ``is_model_ready``,
``finalize``, with Triton's rules for what ``execute`` returns.

The runner works on :mod:`pb_utils` objects only; it knows nothing of the kernel or of where it
runs. An in-process host calls it on the instance thread; a model process
(:mod:`nereid_python.worker`) runs the same runner on its main thread. ``asyncio`` is imported
only when a model's ``execute`` is a coroutine (it costs a model process's start-up otherwise).
"""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import pb_utils, runtime
from .pb_utils import InferenceRequest, InferenceResponse, TritonError

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

log = logging.getLogger("nereid.python")


def _is_coroutine(value: Any) -> bool:
    return isinstance(value, types.CoroutineType)


class AutoCompleteError(Exception):
    """``auto_complete_config`` failed or returned something else than a ModelConfig."""


def auto_complete(
    model_class: type, data: dict[str, Any], name: str, services: runtime.Services
) -> dict[str, Any] | None:
    """Run the model class's static ``auto_complete_config`` on the configuration as Triton's
    JSON; the completed JSON, or None when the class has no such method."""
    method = getattr(model_class, "auto_complete_config", None)
    if method is None:
        return None
    if not data.get("name"):
        data["name"] = name
    wrapped = pb_utils.ModelConfig(data)
    try:
        with runtime.active(services):
            result = method(wrapped)
    except Exception as exc:
        raise AutoCompleteError(
            f"auto_complete_config of model '{name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    if result is None:
        result = wrapped
    if not isinstance(result, pb_utils.ModelConfig):
        raise AutoCompleteError(
            f"auto_complete_config of model '{name}' must return a pb_utils.ModelConfig, "
            f"not {type(result).__name__}"
        )
    return dict(result.as_dict())


class _BatchError(Exception):
    """A rule of Triton's was broken by what ``execute`` did; fails the open requests."""


class ModelRunner:
    """One model instance.

    ``name`` is the instance name used in messages (Triton words execute errors as
    ``Failed to process the request(s) for model '<instance>', message: ...``).
    """

    def __init__(
        self,
        model_class: type,
        args: dict[str, str],
        *,
        decoupled: bool,
        name: str,
        services: runtime.Services,
    ) -> None:
        self.model_class = model_class
        self.args = args
        self.decoupled = decoupled
        self.name = name
        self.services = services
        self.model: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._background: set[concurrent.futures.Future] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def initialize(self) -> None:
        """Make the model object and call its ``initialize(args)``; an exception fails the
        load with the exception's type and message."""
        with runtime.active(self.services):
            self.model = self.model_class()
            if not callable(getattr(self.model, "execute", None)):
                raise pb_utils.TritonModelException(
                    f"Python model '{self.name}' does not implement `execute` method."
                )
            initialize = getattr(self.model, "initialize", None)
            if initialize is not None:
                result = initialize(dict(self.args))
                if _is_coroutine(result):
                    self._run(result)

    def is_ready(self) -> bool:
        """The model's ``is_model_ready()`` (Triton) or ``is_ready()``; ready when it has
        neither; not ready when it raises."""
        check = getattr(self.model, "is_model_ready", None) or getattr(self.model, "is_ready", None)
        if check is None:
            return self.model is not None
        try:
            with runtime.active(self.services):
                return bool(check())
        except Exception:
            log.exception("is_model_ready of model instance '%s' raised", self.name)
            return False

    def abandon(self) -> None:
        """``initialize`` failed: release what was made without calling ``finalize``."""
        self._stop_loop()
        runtime.forget(self.services)

    def finalize(self) -> None:
        """Call the model's ``finalize()`` (errors are logged), then stop the async loop."""
        try:
            finalize = getattr(self.model, "finalize", None)
            if finalize is not None:
                with runtime.active(self.services):
                    result = finalize()
                if _is_coroutine(result):
                    self._run(result)
        except Exception:
            log.exception("finalize of model instance '%s' failed", self.name)
        finally:
            self._stop_loop()
            runtime.forget(self.services)

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, requests: list[InferenceRequest]) -> None:
        """Run ``execute`` on a batch and see every request answered (or, for a decoupled model,
        left to the model). Whatever goes wrong fails the batch's open requests."""
        try:
            with runtime.active(self.services):
                token = runtime.outer_requests.set(requests)
                try:
                    result = self.model.execute(requests)
                finally:
                    runtime.outer_requests.reset(token)
            if _is_coroutine(result):
                if self.decoupled:
                    # Triton: a decoupled async execute runs in the background, so the next
                    # batch can start while this one waits.
                    self._start_background(result, requests)
                    return
                result = self._run(result, requests)
            self._take_returned(requests, result)
        except Exception as exc:
            self._fail(requests, exc)

    def _take_returned(self, requests: list[InferenceRequest], result: Any) -> None:
        if self.decoupled:
            if result is not None:
                raise _BatchError(
                    f"Python model '{self.name}' is using the decoupled mode and the execute "
                    "function must return None."
                )
            return
        if result is None:
            unanswered = [r for r in requests if not r._sender._finish()]
            if unanswered:
                self._fail(
                    unanswered,
                    _BatchError("Expected a list in the execute return, found type 'NoneType'."),
                )
            return
        if not isinstance(result, list | tuple):
            raise _BatchError(
                f"Expected a list in the execute return, found type '{type(result)}'."
            )
        if len(result) != len(requests):
            raise _BatchError(
                "Number of InferenceResponse objects do not match the number of "
                f"InferenceRequest objects. InferenceRequest(s) size is:{len(requests)}, and "
                f"InferenceResponse(s) size is:{len(result)}"
            )
        for response in result:
            if response is not None and not isinstance(response, InferenceResponse):
                raise _BatchError(
                    "Expected an 'InferenceResponse' object in the execute function return list, "
                    f"found type '{type(response)}'."
                )
        unanswered = []
        for request, response in zip(requests, result, strict=True):
            sender = request._sender
            if response is None:
                if not sender._finish():
                    unanswered.append(request)
            else:
                sender.send(response, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if unanswered:
            self._fail(
                unanswered,
                _BatchError(
                    "Expected an 'InferenceResponse' object in the execute function return list, "
                    "found type '<class 'NoneType'>'."
                ),
            )

    def _fail(self, requests: list[InferenceRequest], exc: BaseException) -> None:
        if isinstance(exc, _BatchError):
            detail = str(exc)
            log.error("model instance '%s': %s", self.name, detail)
        else:
            detail = f"{type(exc).__name__}: {exc}"
            log.error("model instance '%s' failed executing a batch", self.name, exc_info=exc)
        code = exc.code() if isinstance(exc, TritonError) else TritonError.INTERNAL
        error = TritonError(
            f"Failed to process the request(s) for model '{self.name}', message: {detail}", code
        )
        for request in requests:
            request._sender._fail(error)

    # -- async execute ---------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The instance's own event loop (on a thread of its own), made on first use."""
        import asyncio

        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"nereid-python-{self.name}-async", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    async def _in_context(self, coroutine: Coroutine, requests: list | None = None) -> Any:
        with runtime.active(self.services):
            if requests is not None:
                runtime.outer_requests.set(requests)
            return await coroutine

    def _run(self, coroutine: Coroutine, requests: list | None = None) -> Any:
        import asyncio

        loop = self._event_loop()
        return asyncio.run_coroutine_threadsafe(
            self._in_context(coroutine, requests), loop
        ).result()

    def _start_background(self, coroutine: Coroutine, requests: list[InferenceRequest]) -> None:
        import asyncio

        future = asyncio.run_coroutine_threadsafe(
            self._in_context(coroutine, requests), self._event_loop()
        )
        self._background.add(future)

        def done(future: concurrent.futures.Future) -> None:
            self._background.discard(future)
            if future.cancelled():
                self._fail(requests, _BatchError("the async execute was cancelled"))
                return
            exc = future.exception()
            if exc is not None:
                # Triton only logs this; the requests' senders are closed here so that the
                # clients get the error instead of waiting forever.
                self._fail(requests, exc)

        future.add_done_callback(done)

    def _stop_loop(self) -> None:
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
