"""Instance runners: one per model instance, pulling batches from the scheduler.

A runner is an asyncio task that awaits ``scheduler.next_batch`` and hands the batch to the
instance's own thread, so frameworks that release the GIL run instances in parallel and the event
loop never blocks on model code. The thread answers through the loop's mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backend import InstanceSpec, ModelInstance
from ..errors import InternalError, NereidError
from ..observers import ObserverSet
from ..types import InferenceRequest
from .mailbox import LoopMailbox

if TYPE_CHECKING:
    from ..scheduler import Scheduler
    from .statistics import ModelStatistics

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InstanceHandle:
    """What a scheduler knows of an instance: its spec, and room for the scheduler's state.

    ``retired`` is set when an instance-count update removes the instance: the scheduler then
    answers its ``next_batch`` with ``None``.
    """

    spec: InstanceSpec
    instance: ModelInstance
    state: dict[str, Any] = field(default_factory=dict)
    retired: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


class InstanceRunner:
    def __init__(
        self,
        handle: InstanceHandle,
        scheduler: Scheduler,
        statistics: ModelStatistics,
        observers: ObserverSet,
        decoupled: bool,
    ) -> None:
        self.handle = handle
        self.scheduler = scheduler
        self.statistics = statistics
        self.observers = observers
        self.decoupled = decoupled
        self.task: asyncio.Task | None = None
        self._started = statistics.start_counter()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._thread_main, name=f"nereid-{handle.name}", daemon=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox: LoopMailbox | None = None
        # An instance that may answer a batch after its execute returns (see ModelInstance).
        self._flush: Callable[[], None] | None = getattr(handle.instance, "flush", None)

    def start(self) -> None:
        """Start the instance thread and the pull loop (on the event loop)."""
        self.start_thread()
        self.task = self._loop.create_task(self._run(), name=self.handle.name)

    def start_thread(self) -> None:
        """Start the instance thread if it is not running yet (on the event loop). Raises
        RuntimeError when the process can start no more threads; :meth:`stop` still finalizes
        the instance then."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._mailbox = LoopMailbox.of(self._loop)
            try:
                self._thread.start()
            except BaseException:  # no thread (the process is out of them): as before
                self._loop = self._mailbox = None
                raise

    def _thread_main(self) -> None:
        """The instance thread: run each job handed over, answer its future via the mailbox."""
        post = self._mailbox.post
        while True:
            job = self._inbox.get()
            if job is None:
                return
            fn, arg, future = job
            try:
                result = fn(arg)
            except BaseException as exc:
                post(_settle, future, None, exc)
            else:
                post(_settle, future, result, None)

    def _on_thread(self, fn: Callable[[Any], Any], arg: Any) -> asyncio.Future:
        self.start_thread()
        future = self._loop.create_future()
        self._inbox.put((fn, arg, future))
        return future

    async def _run(self) -> None:
        while True:
            batch = await self.scheduler.next_batch(self.handle)
            if batch is None:
                break
            await self._on_thread(self._drain, batch)

    def _drain(self, batch: list[InferenceRequest]) -> None:
        """On the instance thread: execute ``batch``, then, while the scheduler has a batch
        ready (its optional ``poll_batch``), take it here without a trip through the event loop.
        The instance still pulls only when free; it just does not wait for the loop to pull."""
        poll = getattr(self.scheduler, "poll_batch", None)
        handle, observers, started = self.handle, self.observers, self._started
        mailbox = self._mailbox
        post = mailbox.post
        while True:
            live = [request for request in batch if not request.final_sent]
            if live:
                started.value += len(live)
                if observers.on_execution_start:
                    post(observers.notify, observers.on_execution_start, handle.name, live)
                if self.decoupled:  # responses stream out as the model sends them
                    start_ns, end_ns = self._execute(live)
                    post(self._finished, batch, live, start_ns, end_ns)
                else:  # the batch's responses reach the loop together with its statistics
                    held = mailbox.hold()
                    try:
                        if self._flush is None:
                            start_ns, end_ns = self._execute(live)
                            held.insert(0, (self._finished, (batch, live, start_ns, end_ns)))
                        else:  # its statistics wait for its answers
                            late = LateBatch(self, live)
                            for request in live:
                                request.late_batch = late
                            self._execute(live)
                            held.insert(0, (self.scheduler.batch_done, (handle, batch)))
                    finally:
                        mailbox.release()
            else:
                post(self.scheduler.batch_done, handle, batch)
            if poll is None or handle.retired:
                break
            batch = poll(handle)
            if batch is None:
                break
        self._answer_held()  # going idle

    def _answer_held(self) -> None:
        """Have an instance that answers late (``flush``) answer what it still holds."""
        if self._flush is not None:
            try:
                self._flush()
            except Exception:
                log.exception("model instance %s failed to flush", self.handle.name)

    def _finished(
        self, batch: list[InferenceRequest], live: list[InferenceRequest], start: int, end: int
    ) -> None:
        """On the loop: statistics, observers and the scheduler's completion notice."""
        self._executed(live, start, end)
        self.scheduler.batch_done(self.handle, batch)

    def _executed(self, live: list[InferenceRequest], start: int, end: int) -> None:
        """On the loop: an executed batch's statistics and observers."""
        self.statistics.record_batch(live, start, end)
        observers = self.observers
        if observers.on_execution_end:
            observers.notify(observers.on_execution_end, self.handle.name, live)

    async def run_batch(self, batch: list[InferenceRequest]) -> tuple[int, int]:
        """Execute a batch on this instance's thread and have it answered (warmup: outside the
        pull loop); returns its start and end times."""
        return await self._on_thread(self._execute_answered, batch)

    def _execute_answered(self, batch: list[InferenceRequest]) -> tuple[int, int]:
        times = self._execute(batch)
        self._answer_held()
        return times

    def _execute(self, batch: list[InferenceRequest]) -> tuple[int, int]:
        """On the instance thread: run the batch; whatever goes wrong fails only this batch."""
        start = time.monotonic_ns()
        for request in batch:
            request.compute_start_ns = start
        try:
            self.handle.instance.execute(batch)
        except Exception as exc:
            error = NereidError.of(exc)
            if not isinstance(exc, NereidError):
                log.exception("model instance %s failed executing a batch", self.handle.name)
            for request in batch:
                request.fail(error)
        else:
            if not self.decoupled and self._flush is None:
                for request in batch:
                    if not request.final_sent:
                        request.fail(
                            InternalError(
                                f"model instance '{self.handle.name}' returned without "
                                "sending a response for a request"
                            )
                        )
        end = time.monotonic_ns()
        for request in batch:
            request.compute_end_ns = end
        return start, end

    async def stop(self) -> None:
        """Wait for the pull loop to end (the scheduler returned ``None``), then finalize."""
        if self.task is not None:
            await asyncio.shield(self.task)
        finalize = self.handle.instance.finalize
        try:
            if self._loop is None:  # its thread never started (or could not be)
                await asyncio.to_thread(finalize)
            else:
                await self._on_thread(lambda _: finalize(), None)
        except Exception:
            log.exception("finalizing instance %s failed", self.handle.name)
        self._inbox.put(None)


class LateBatch:
    """A batch of an instance that answers after ``execute`` returns. Its statistics and
    observers wait for its last answer: the loop calls :meth:`answered` for each final
    response, before the response reaches its client, so its compute time covers the run."""

    __slots__ = ("live", "runner", "unanswered")

    def __init__(self, runner: InstanceRunner, live: list[InferenceRequest]) -> None:
        self.runner = runner
        self.live = live
        self.unanswered = len(live)

    def answered(self) -> None:
        self.unanswered -= 1
        if self.unanswered:
            return
        live = self.live
        end = time.monotonic_ns()
        for request in live:
            request.compute_end_ns = end
            request.late_batch = None  # no cycle keeps the requests' tensors alive
        self.runner._executed(live, live[0].compute_start_ns, end)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
