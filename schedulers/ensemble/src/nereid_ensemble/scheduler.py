"""The ``ensemble`` scheduler: runs each request through the steps of its pipeline.

An ensemble has no instances (``uses_instances = False``). For each request the scheduler keeps
the ensemble's named tensors and sends a request to a step model, through the InferenceService,
as soon as every tensor the step reads exists; independent steps therefore run in parallel. A
step's response adds the tensors of its ``output_map``; the ensemble answers once its outputs
exist. Everything runs on the event loop; no locks.

Decoupled steps: every response of a decoupled step is one more *iteration* of the tensors it
writes, and the steps after it run once per iteration. Tensors are keyed by their iteration (a
tuple: ``()`` for the request's own tensors, one more index per decoupled step on the way), so
the inputs a step pairs up always come from the same response (the graph's load-time check
guarantees they can). An ensemble with a decoupled step is decoupled itself: it answers once
per iteration of its outputs, then sends the final flag.

Failure and cancellation: the first error of a step (or the client's cancellation) cancels the
step requests still running and drops those not yet sent; the ensemble answers, with that
step's error (its kind kept, the ensemble and step named in the message), once no step request
is left running.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from nereid import (
    CancelledError,
    InferenceRequest,
    InferenceResponse,
    InternalError,
    NereidError,
    ResponseStream,
    Tensor,
    UnavailableError,
)
from nereid.observers import TRACE_PARENT_KEY

from .graph import EnsembleGraph, Plan, Step, build_graph

if TYPE_CHECKING:
    from nereid.scheduler import SchedulerContext

log = logging.getLogger(__name__)

# How step responses reach a run: by callback from the step's stream (``ResponseStream.consume``,
# no task, no future per response), or, with a kernel that lacks it, by a task iterating the
# stream (one task per request for a chain: a task goes on with a step its response started).
CALLBACKS = hasattr(ResponseStream, "consume")

# request.context key under which an ensemble request leaves the compute durations of its steps
# (input, infer, output ns): an ensemble used as a step of another reports them upwards.
COMPUTE_KEY = "nereid_ensemble.compute"


class EnsembleScheduler:
    """Triton's ensemble scheduler (see the module docstring)."""

    uses_instances = False

    def __init__(self, context: SchedulerContext) -> None:
        config = context.config
        self.name = context.model_name
        self.api = context.api
        self.statistics = context.statistics
        graph = build_graph(config)
        api = context.api
        graph.bind(lambda step: api.model_config(step.model_name, step.model_version))
        self.graph: EnsembleGraph = graph
        # Triton sets the ensemble's decoupled flag from its steps, whatever the config says.
        if config.model_transaction_policy.decoupled != graph.decoupled:
            log.info(
                "ensemble '%s' is %sdecoupled (from its steps)",
                self.name,
                "" if graph.decoupled else "not ",
            )
        config.model_transaction_policy.decoupled = graph.decoupled
        if context.model is not None:
            context.model.decoupled = graph.decoupled
        self.decoupled = graph.decoupled
        self.batching = graph.batching
        limit = config.ensemble_scheduling.max_inflight_requests
        self.limiters = [_Limiter(limit) for _ in graph.steps] if limit > 0 else None
        self.default_plan = graph.plan()
        self.runs: set[_Run] = set()
        self.tasks: set[asyncio.Task] = set()
        self.stopped = False
        self._drained: asyncio.Future | None = None
        self._started = context.statistics.start_counter()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    # -- the scheduler contract ---------------------------------------------------------------

    def enqueue(self, request: InferenceRequest) -> None:
        if self.stopped:
            raise UnavailableError(f"model '{self.name}' is not accepting requests")
        requested = request.requested_outputs
        plan = self.graph.plan(o.name for o in requested) if requested else self.default_plan
        run = _Run(self, request, plan)
        # The ensemble request "executes" from here on; its steps have their own queues.
        request.compute_start_ns = time.monotonic_ns()
        self._started.value += 1
        request.on_cancel(run.cancel_from_any_thread)
        self.runs.add(run)
        run.start()

    async def next_batch(self, instance: Any) -> None:
        return None

    def batch_done(self, instance: Any, batch: list[InferenceRequest]) -> None:
        pass

    def instances_changed(self, instances: list[Any]) -> None:
        pass

    async def stop(self, drain: bool) -> None:
        """Stop accepting. With ``drain`` wait for the requests under way; otherwise answer
        them UNAVAILABLE now and cancel their step requests."""
        self.stopped = True
        if not drain:
            for run in list(self.runs):
                run.abort(UnavailableError(f"model '{self.name}' is unloading"))
        if self.runs:
            self._drained = self._loop.create_future()
            await self._drained

    # -- helpers for runs ---------------------------------------------------------------------

    def spawn(self, call: _Call) -> None:
        task = self._loop.create_task(call.run.pump(call))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def run_finished(self, run: _Run) -> None:
        runs = self.runs
        runs.discard(run)
        if not runs and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class _Limiter:
    """``max_inflight_requests`` for one step, shared by every request of the ensemble:
    launches beyond the limit wait in order until a step request of this step finishes."""

    __slots__ = ("count", "limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.waiting: collections.deque[_Ticket] = collections.deque()

    def acquire(self, ticket: _Ticket) -> None:
        if self.count < self.limit:
            self.count += 1
            ticket.grant()
        else:
            self.waiting.append(ticket)

    def release(self) -> None:
        self.count -= 1
        while self.waiting and self.count < self.limit:
            ticket = self.waiting.popleft()
            if ticket.cancelled:
                continue
            self.count += 1
            ticket.grant()


class _Ticket:
    """A step request waiting for its step's limiter."""

    __slots__ = ("cancelled", "key", "request", "run", "step")

    def __init__(self, run: _Run, step: Step, key: tuple, request: InferenceRequest) -> None:
        self.run, self.step, self.key, self.request = run, step, key, request
        self.cancelled = False

    def grant(self) -> None:
        self.run.queued.remove(self)
        self.run.send(self.step, self.key, self.request, limited=True)


class _Call:
    """A step request sent to its model, and the iteration it belongs to."""

    __slots__ = ("count", "key", "limited", "request", "run", "step", "stream")

    def __init__(self, run: _Run, step: Step, key: tuple, request, stream, limited: bool) -> None:
        self.run, self.step, self.key = run, step, key
        self.request, self.stream, self.limited = request, stream, limited
        self.count = 0  # responses with outputs so far (the iteration index of a decoupled step)

    def deliver(self, response: InferenceResponse) -> None:
        """A response of the step, by callback from its stream (on the loop)."""
        run = self.run
        outer = run.in_handler
        run.in_handler = True
        try:
            run.on_response(self, response)
        except Exception as exc:
            run.broken(exc)
        finally:
            run.in_handler = outer
        if not outer:
            run.after_handler(None)


class _Run:
    """One ensemble request on its way through the pipeline."""

    __slots__ = (
        "calls",
        "compute",
        "done",
        "error",
        "final_sent",
        "in_handler",
        "inflight",
        "launched",
        "pending",
        "plan",
        "queued",
        "request",
        "sched",
        "unpumped",
        "values",
    )

    def __init__(self, sched: EnsembleScheduler, request: InferenceRequest, plan: Plan) -> None:
        self.sched = sched
        self.request = request
        self.plan = plan
        # tensor -> iteration key -> [Tensor or None, batch size (0: unbatched), reads left]
        self.values: dict[str, dict[tuple, list]] = {}
        self.launched: set[tuple[int, tuple]] = set()
        self.inflight = 0  # step requests sent or waiting for a limiter, not yet finished
        self.calls: set[_Call] = set()
        self.queued: list[_Ticket] = []
        self.unpumped: list[_Call] = []
        self.in_handler = False
        self.error: NereidError | None = None
        self.done = False  # the ensemble request has its final answer
        self.final_sent = False
        self.pending: InferenceResponse | None = None
        self.compute = [0, 0, 0]  # the steps' compute input, infer, output ns

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        request = self.request
        batch = request.batch_size if self.sched.batching else 0
        refs = self.plan.refs
        updated = []
        for name in self.plan.inputs:
            # None: an optional input the request left out (the steps get it left out too).
            self.values[name] = {(): [request.inputs.get(name), batch, refs[name]]}
            updated.append((name, ()))
        self.in_handler = True
        try:
            self.advance(updated)
        except Exception as exc:
            self.broken(exc)
        finally:
            self.in_handler = False
        self.after_handler(None)

    # -- the data flow ----------------------------------------------------------------------------

    def advance(self, updated: list[tuple[str, tuple]]) -> list[tuple]:
        """Launch the steps that ``updated`` tensors make ready; return the iteration keys at
        which an ensemble output was written."""
        plan = self.plan
        values = self.values
        launched = self.launched
        output_keys = []
        for name, key in updated:
            for step in plan.consumers.get(name, ()):
                if len(step.tensors) == 1:  # each tensor is written once per key: no check
                    self.launch(step, key)
                    continue
                mark = (step.index, key)
                if mark in launched:
                    continue
                for tensor in step.tensors:
                    held = values.get(tensor)
                    if held is None or key not in held:
                        break
                else:
                    launched.add(mark)
                    self.launch(step, key)
            if name in plan.wanted_set and key not in output_keys:
                output_keys.append(key)
        return output_keys

    def launch(self, step: Step, key: tuple) -> None:
        if self.error is not None:
            return
        parent = self.request
        values = self.values
        inputs = []
        for name, tensor_name in step.inputs:
            held = values[tensor_name]
            slot = held[key]
            tensor = slot[0]
            if tensor is not None:
                data = tensor.data
                if step.batching != (slot[1] != 0):
                    data = _adapt(data, slot[1], step.batching, step.input_dims[name])
                inputs.append(Tensor(name, data, tensor.datatype))
            slot[2] -= 1
            if slot[2] == 0:
                del held[key]
        request = InferenceRequest(
            step.model_name,
            inputs,
            model_version=step.model_version,
            id=parent.id,
            requested_outputs=step.requested_outputs,
            parameters=dict(parent.parameters) if parent.parameters else None,
            priority=parent.priority,
            timeout_us=parent.timeout_us,
            sequence_id=parent.sequence_id,
            sequence_start=parent.sequence_start,
            sequence_end=parent.sequence_end,
        )
        request.context[TRACE_PARENT_KEY] = parent  # the step is traced as the request's child
        self.inflight += 1
        limiters = self.sched.limiters
        if limiters is None:
            self.send(step, key, request, limited=False)
        else:
            ticket = _Ticket(self, step, key, request)
            self.queued.append(ticket)
            limiters[step.index].acquire(ticket)

    def send(self, step: Step, key: tuple, request: InferenceRequest, limited: bool) -> None:
        try:
            stream = self.sched.api.infer(request)
        except NereidError as exc:
            self.inflight -= 1
            if limited:
                self.sched.limiters[step.index].release()
            self.fail(step, exc)
            if not self.in_handler:
                self.after_handler(None)
            return
        call = _Call(self, step, key, request, stream, limited)
        self.calls.add(call)
        if CALLBACKS:
            stream.consume(call.deliver)  # may deliver at once (a step that answered already)
        elif self.in_handler:
            self.unpumped.append(call)  # the handler's pump adopts it or spawns a task for it
        else:
            self.sched.spawn(call)  # launched from elsewhere (another request freed a limiter)

    def broken(self, exc: Exception) -> None:
        """A bug in the handling of a response must not leave the request unanswered."""
        log.exception("ensemble '%s' failed handling a step's response", self.sched.name)
        self.fail(None, InternalError(f"in ensemble '{self.sched.name}', {exc}"))

    async def pump(self, call: _Call | None) -> None:
        """Feed a step's responses to the run; when the step is done, go on with a step it
        launched (a chain runs in one task)."""
        while call is not None:
            async for response in call.stream:
                self.in_handler = True
                try:
                    self.on_response(call, response)
                except Exception as exc:
                    self.broken(exc)
                finally:
                    self.in_handler = False
                if not response.final:
                    self.after_handler(None)
            call = self.after_handler(call)

    def after_handler(self, finished: _Call | None) -> _Call | None:
        """Start pumping the calls launched by a handler (returning one for the pump that just
        finished ``finished`` to adopt) and finish the run when nothing is left in flight."""
        unpumped = self.unpumped
        adopt = None
        if unpumped:
            if finished is not None:
                adopt = unpumped.pop(0)
            for call in unpumped:
                self.sched.spawn(call)
            unpumped.clear()
        if self.inflight == 0 and not self.done:
            self.finish()
        return adopt

    def on_response(self, call: _Call, response: InferenceResponse) -> None:
        step = call.step
        output_keys: list[tuple] = []
        if response.error is not None:
            self.fail(step, response.error)
        elif not response.empty and self.error is None and not self.done:
            key = call.key
            if step.decoupled:
                key = (*key, call.count)
            call.count += 1
            refs = self.plan.refs
            values = self.values
            batch = call.request.batch_size if step.batching else 0
            updated = []
            outputs = response.outputs
            for name, tensor_name in step.outputs:
                count = refs.get(tensor_name)
                if count is None:
                    continue  # not needed for the outputs this request asked for
                tensor = None
                for candidate in outputs:
                    if candidate.name == name:
                        tensor = candidate
                        break
                held = values.get(tensor_name)
                if held is None:
                    held = values[tensor_name] = {}
                held[key] = [tensor, batch, count]
                updated.append((tensor_name, key))
            output_keys = self.advance(updated)
        if response.final:
            self.inflight -= 1
            self.calls.discard(call)
            if call.limited:
                self.sched.limiters[step.index].release()
            cin, cinfer, cout = _durations(call.request)
            compute = self.compute
            compute[0] += cin
            compute[1] += cinfer
            compute[2] += cout
        last = len(output_keys) - 1
        for index, key in enumerate(output_keys):
            self.respond_outputs(key, index == last)

    def respond_outputs(self, key: tuple, may_be_final: bool = True) -> None:
        """Answer with the ensemble outputs of iteration ``key`` once all of them exist."""
        if self.error is not None or self.done:
            return
        values = self.values
        plan = self.plan
        slots = []
        for name in plan.wanted:
            held = values.get(name)
            slot = held.get(key) if held is not None else None
            if slot is None:
                return
            slots.append((name, held, slot))
        sched = self.sched
        outputs = []
        for name, held, slot in slots:
            tensor = slot[0]
            if tensor is not None:  # a step may leave an output out (Triton omits it too)
                data = tensor.data
                if sched.batching != (slot[1] != 0):
                    data = _adapt(data, slot[1], sched.batching, sched.graph.output_dims[name])
                if data is tensor.data and tensor.name == name:
                    outputs.append(tensor)
                else:
                    outputs.append(Tensor(name, data, tensor.datatype))
            slot[2] -= 1
            if slot[2] == 0:
                del held[key]
        response = InferenceResponse(outputs)
        if not sched.decoupled:
            self.pending = response  # the one response, sent when no step is left running
            return
        if self.inflight == 0 and may_be_final:
            self.record_success()
            self.final_sent = True
            self.request.respond(response, final=True)
        else:
            self.request.respond(response, final=False)

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """No step request is left: answer the ensemble request (if not answered yet)."""
        self.done = True
        self.sched.run_finished(self)
        request = self.request
        if self.error is not None:
            request.fail(self.error)
            return
        if self.final_sent:
            return
        if self.sched.decoupled:
            self.record_success()
            request.respond(None, final=True)
        elif self.pending is not None:
            self.record_success()
            request.respond(self.pending, final=True)
        else:
            request.fail(
                InternalError(
                    f"in ensemble '{self.sched.name}', unexpected deadlock: at least one output "
                    "is not set while no more ensemble steps can be made"
                )
            )

    def record_success(self) -> None:
        """Triton's statistics for a successful ensemble request: one execution of its batch
        size, whose compute durations are the sums of its steps' (the queue time is the
        ensemble's own, from arrival to the first step)."""
        request = self.request
        cin, cinfer, cout = self.compute
        request.context[COMPUTE_KEY] = (cin, cinfer, cout)
        end = time.monotonic_ns()
        start = end - (cin + cinfer + cout)
        timing = _Timing(
            request.batch_size,
            start - (request.compute_start_ns - request.queue_start_ns),
            start + cin,
            start + cin + cinfer,
        )
        self.sched.statistics.record_batch([timing], start, end)  # type: ignore[list-item]

    def fail(self, step: Step | None, error: NereidError) -> None:
        """The first failure wins: cancel the step requests running, drop those waiting."""
        if self.error is not None or self.done:
            return
        if step is not None:
            error = NereidError(
                f"in ensemble '{self.sched.name}', {step.label} failed: {error.message}",
                error.kind,
            )
        self.error = error
        outer = self.in_handler
        self.in_handler = True  # cancelled steps may answer at once: the caller finishes up
        try:
            for call in list(self.calls):
                call.request.cancel()
            for ticket in self.queued:
                ticket.cancelled = True
                self.inflight -= 1
            self.queued.clear()
        finally:
            self.in_handler = outer

    def cancel(self) -> None:
        """The client cancelled the ensemble request."""
        if self.error is None and not self.done:
            self.fail(None, CancelledError("Request was cancelled"))
            if not self.in_handler:
                self.after_handler(None)

    def cancel_from_any_thread(self) -> None:
        sched = self.sched
        if threading.get_ident() == sched._loop_thread:
            self.cancel()
        else:
            sched._loop.call_soon_threadsafe(self.cancel)

    def abort(self, error: NereidError) -> None:
        """Answer now (the model is unloading); step requests are cancelled and wind down."""
        self.fail(None, error)
        if not self.done:
            self.finish()


class _Timing:
    """What ModelStatistics.record_batch reads of a request, for the ensemble's execution."""

    __slots__ = ("batch_size", "compute_input_end_ns", "compute_output_start_ns", "queue_start_ns")

    def __init__(self, batch_size: int, queue_start: int, input_end: int, output_start: int):
        self.batch_size = batch_size
        self.queue_start_ns = queue_start
        self.compute_input_end_ns = input_end
        self.compute_output_start_ns = output_start


def _durations(request: InferenceRequest) -> tuple[int, int, int]:
    """A finished step request's compute input, infer and output ns."""
    nested = request.context.get(COMPUTE_KEY)
    if nested is not None:
        return nested
    start = request.compute_start_ns
    if not start:
        return 0, 0, 0
    end = request.compute_end_ns or time.monotonic_ns()
    input_end = request.compute_input_end_ns or start
    output_start = request.compute_output_start_ns or end
    return (
        max(0, input_end - start),
        max(0, output_start - input_end),
        max(0, end - output_start),
    )


def _adapt(data: np.ndarray, batch: int, batching: bool, dims: tuple[int, ...]) -> np.ndarray:
    """A tensor passed between a batching and a non-batching side, as Triton does it: to a
    batching model, a tensor that has the model's item shape gets a batch dimension of 1; to a
    non-batching model, a batch of one that does not fit the model's shape loses its batch
    dimension. Anything else passes as it is."""
    if batching:
        if _fits(data.shape, dims):
            return data.reshape((1, *data.shape))
        return data
    if batch == 1 and not _fits(data.shape, dims):
        return data.reshape(data.shape[1:])
    return data


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(
        d == -1 or d == s for s, d in zip(shape, dims, strict=True)
    )
