"""The ``default`` scheduler: no batching; each request goes to the next free instance, in order."""

from __future__ import annotations

import asyncio
import collections

from ..errors import UnavailableError
from ..runtime.runner import InstanceHandle
from ..scheduler import SchedulerContext
from ..types import InferenceRequest


class FifoQueue:
    """A FIFO of requests that free instances wait on; cancelled requests are skipped."""

    def __init__(self) -> None:
        self.items: collections.deque[InferenceRequest] = collections.deque()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.stopped = False

    def put(self, request: InferenceRequest) -> None:
        self.items.append(request)
        self.wake_one()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def pop_live(self) -> InferenceRequest | None:
        """The oldest request still waiting for an answer (cancelled ones were answered)."""
        items = self.items
        while items:
            request = items.popleft()
            if not request.final_sent:
                return request
        return None

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class DefaultScheduler:
    uses_instances = True

    def __init__(self, context: SchedulerContext) -> None:
        self.context = context
        self.queue = FifoQueue()

    def enqueue(self, request: InferenceRequest) -> None:
        if self.queue.stopped:
            raise UnavailableError(f"model '{self.context.model_name}' is not accepting requests")
        self.queue.put(request)

    async def next_batch(self, instance: InstanceHandle) -> list[InferenceRequest] | None:
        queue = self.queue
        while True:
            if instance.retired:
                queue.wake_one()  # hand any wake-up it may have taken to a live instance
                return None
            request = queue.pop_live()
            if request is not None:
                return [request]
            if queue.stopped:
                return None
            await queue.wait()

    def poll_batch(self, instance: InstanceHandle) -> list[InferenceRequest] | None:
        """From the instance's thread: the next request if one is queued now."""
        request = self.queue.pop_live()
        return [request] if request is not None else None

    def batch_done(self, instance: InstanceHandle, batch: list[InferenceRequest]) -> None:
        pass

    def instances_changed(self, instances: list[InstanceHandle]) -> None:
        self.queue.wake_all()

    async def stop(self, drain: bool) -> None:
        self.queue.stopped = True
        if not drain:
            while (request := self.queue.pop_live()) is not None:
                request.fail(UnavailableError("model is unloading"))
        self.queue.wake_all()
