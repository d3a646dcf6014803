"""The ``sequence`` scheduler: Triton's sequence batcher on Nereid's pull-based scheduler contract.

Sequences
    A request names its sequence by a correlation id (``sequence_id``: a non-zero integer or a
    non-empty string; ``5`` and ``"5"`` are different sequences) and flags the sequence's first
    and last requests (``sequence_start``, ``sequence_end``). A START request for an unknown id
    begins a sequence; every later request of it joins that sequence's queue, in arrival order;
    the END request stops the id's tracking at once (a new START with the same id begins a new
    sequence, queued behind the old one if they land in the same slot). A request that is not a
    START for an unknown id, or one after the END, fails INVALID_ARG with Triton's message.

Slots
    Each instance (a *lane*) has slots: ``max_batch_size`` of them (1 when it is 0) with the
    ``direct`` strategy, ``oldest.max_candidate_sequences`` (default the same) with ``oldest``. A
    new sequence takes the free slot with the lowest index, across instances (so sequences
    spread over instances first), or waits in the *backlog* with its requests. A slot is freed
    when its sequence's END request is handed out (direct) or has executed (oldest), when the
    sequence has been idle ``max_sequence_idle_microseconds`` (default 1 s, as Triton), or when
    it is cancelled; the oldest backlogged sequence takes it at once.

Batches, ``direct``
    A free instance's batch has one row per slot, from slot 0 up to the highest slot with a
    request ready, in slot order: the next request of each slot's sequence, and for a slot with
    none (or whose request cannot be batched with the first, because a variable-size input's
    shape differs) a *filler*: a request of zeros shaped like the first real one, with READY
    false, that nobody waits for (its responses go nowhere). So row ``i`` is always slot ``i``,
    for models that keep per-slot state. With ``max_queue_delay_microseconds`` and
    ``minimum_slot_utilization`` both set, the batch waits until that fraction of the slots is
    ready or its oldest request has waited the delay.

Batches, ``oldest``
    Each slot's sequence has at most one request executing; its next request becomes *ready*
    when that one is done. A free instance batches its ready requests oldest first (one per
    sequence), up to ``max_batch_size``, as the dynamic batcher would: a ``preferred_batch_size``
    reached goes at once, otherwise the batch waits ``max_queue_delay_microseconds`` for more.

Controls and state
    Before a request is handed out its inputs get the control tensors
    (:mod:`.controls`) and, for a model with implicit state, the sequence's state, whose next
    value is taken off the responses (:mod:`.state`).

Pulling
    Free instances pull (``next_batch`` on the event loop, ``poll_batch`` from the instance's
    own thread right after a batch). An instance's previous batch is complete whenever it
    asks, which is when an ``oldest`` sequence's next request becomes ready (``batch_done``
    notes it too, for whichever comes first). One ``threading.Lock`` guards all state.
    ``context.clock`` times every delay and the idle timeout.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from nereid.config.loading import ConfigError
from nereid.errors import CancelledError, InvalidArgumentError, UnavailableError
from nereid.runtime.mailbox import LoopMailbox
from nereid.scheduler import SchedulerContext, batch_key_function
from nereid.types import DataType, InferenceRequest, RequestedOutput, Tensor

from .controls import ControlSpec
from .state import StateCatcher, StateSet

log = logging.getLogger("nereid.sequence")

IDLE_DEFAULT_US = 1_000_000  # Triton's default max_sequence_idle_microseconds
FILLER = "nereid.sequence.filler"  # request.context key marking a filler request
_EXPIRED_MEMORY = 4096  # ids remembered after an idle timeout, for a clearer error
_LANE = "nereid.sequence.lane"  # InstanceHandle.state key


class _Sequence:
    """One sequence: its slot (``lane``/``slot``, or none while in the backlog), its queued
    requests with their enqueue times, and its implicit state."""

    __slots__ = (
        "cancelled",
        "corrid",
        "corrid_tensor",
        "inflight",
        "lane",
        "last_ns",
        "queue",
        "ready_ns",
        "slot",
        "state",
    )

    def __init__(self, corrid: int | str, now: int) -> None:
        self.corrid = corrid
        self.corrid_tensor: Tensor | None = None
        self.queue: collections.deque[tuple[InferenceRequest, int]] = collections.deque()
        self.lane: _Lane | None = None
        self.slot = -1
        self.inflight = False
        self.cancelled = False
        self.last_ns = now
        self.ready_ns = now
        self.state: dict[str, Tensor] | None = None


class _Lane:
    """One instance: its slots, its ready sequences (oldest), the batch it is executing."""

    __slots__ = (
        "alarm",
        "alarm_at",
        "current",
        "executing",
        "handle",
        "index",
        "ready",
        "retired",
        "slots",
        "waiter",
    )

    def __init__(self, handle: Any, index: int, slots: int) -> None:
        self.handle = handle
        self.index = index
        self.slots: list[_Sequence | None] = [None] * slots
        self.ready: collections.deque[_Sequence] = collections.deque()
        self.current: list[InferenceRequest] | None = None
        # (sequence, ended) of every real request of the batch being executed
        self.executing: list[tuple[_Sequence, bool]] = []
        self.waiter: asyncio.Future | None = None
        self.alarm: asyncio.Task | None = None
        self.alarm_at = 0
        self.retired = False


class _Effects:
    """What a locked section leaves to do once the lock is released."""

    __slots__ = ("fail", "fillers", "wake")

    def __init__(self) -> None:
        self.fail: list[tuple[InferenceRequest, Exception]] = []
        self.wake: list[_Lane] = []
        self.fillers = 0


class SequenceBatcher:
    """See the module docstring."""

    uses_instances = True

    def __init__(self, context: SchedulerContext) -> None:
        self.context = context
        config = context.config
        batching = config.sequence_batching
        self._model = context.model_name
        self._clock = context.clock
        if batching.iterative_sequence:
            raise ConfigError(
                f"model '{self._model}': sequence_batching.iterative_sequence is not supported "
                "by nereid-sequence-batcher"
            )
        self._max_batch = max(1, config.max_batch_size)
        self._oldest = batching.WhichOneof("strategy_choice") == "oldest"
        self._preferred: tuple[int, ...] = ()
        self._utilization = 0.0
        if self._oldest:
            oldest = batching.oldest
            if oldest.max_candidate_sequences < 0:
                raise ConfigError(
                    f"model '{self._model}': sequence_batching.oldest.max_candidate_sequences "
                    f"must be >= 0, got {oldest.max_candidate_sequences}"
                )
            self._slot_count = oldest.max_candidate_sequences or self._max_batch
            self._delay_ns = oldest.max_queue_delay_microseconds * 1000
            for size in oldest.preferred_batch_size:
                if not 1 <= size <= self._max_batch:
                    raise ConfigError(
                        f"model '{self._model}': sequence_batching.oldest.preferred_batch_size "
                        f"{size} must be between 1 and max_batch_size {self._max_batch}"
                    )
            self._preferred = tuple(sorted(set(oldest.preferred_batch_size), reverse=True))
        else:
            direct = batching.direct
            self._slot_count = self._max_batch
            self._delay_ns = direct.max_queue_delay_microseconds * 1000
            self._utilization = direct.minimum_slot_utilization
            if not 0.0 <= self._utilization <= 1.0:
                raise ConfigError(
                    f"model '{self._model}': sequence_batching.direct.minimum_slot_utilization "
                    f"must be between 0 and 1, got {self._utilization}"
                )
        self._idle_ns = (batching.max_sequence_idle_microseconds or IDLE_DEFAULT_US) * 1000
        self.controls = ControlSpec(config)
        model = context.model
        path = getattr(model, "path", None)
        self.states = StateSet(config, Path(path).parent if path is not None else None)
        self._empty_corrid = self.controls.empty_corrid()
        self._key = batch_key_function(config)
        self._lock = threading.Lock()
        self._active: dict[int | str, _Sequence] = {}
        self._backlog: collections.deque[_Sequence] = collections.deque()
        self._free: list[tuple[int, int, _Lane]] = []  # (slot, lane index, lane): a heap
        self._lanes: list[_Lane] = []
        self._lane_numbers = itertools.count()
        self._expired: collections.OrderedDict[int | str, None] = collections.OrderedDict()
        self._deadlines: list[tuple[int, int, _Sequence]] = []
        self._order = itertools.count()
        self._reaper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox: LoopMailbox | None = None
        self._stopped = False
        self._zeros: dict[tuple[str, tuple[int, ...], Any], Tensor] = {}
        self._missing_warned = False
        self.missing_state_outputs = 0  # responses that should have carried a state and did not
        for handle in context.instances:
            self._add_lane(handle)

    # -- lanes and slots (lock held) -----------------------------------------------------------

    def _add_lane(self, handle: Any) -> _Lane:
        lane = _Lane(handle, next(self._lane_numbers), self._slot_count)
        handle.state[_LANE] = lane
        self._lanes.append(lane)
        for slot in range(self._slot_count):
            heapq.heappush(self._free, (slot, lane.index, lane))
        return lane

    def _take_free_slot(self) -> tuple[_Lane, int] | None:
        free = self._free
        while free:
            slot, _, lane = heapq.heappop(free)
            if not lane.retired:
                return lane, slot
        return None

    def _assign(self, seq: _Sequence, lane: _Lane, slot: int, now: int) -> None:
        seq.lane, seq.slot = lane, slot
        lane.slots[slot] = seq
        if self._oldest and seq.queue and not seq.inflight:
            seq.ready_ns = now
            lane.ready.append(seq)

    def _place(self, seq: _Sequence, now: int) -> None:
        """A new sequence: a free slot, or the backlog."""
        free = self._take_free_slot()
        if free is None:
            self._backlog.append(seq)
        else:
            self._assign(seq, free[0], free[1], now)

    def _release(self, seq: _Sequence, now: int, fx: _Effects) -> None:
        """The sequence leaves its slot (or the backlog); the oldest backlogged sequence that
        still has requests takes the slot."""
        lane, slot = seq.lane, seq.slot
        if lane is None:
            try:
                self._backlog.remove(seq)
            except ValueError:
                pass
            return
        seq.lane, seq.slot = None, -1
        if lane.slots[slot] is not seq:
            return
        lane.slots[slot] = None
        if lane.retired:
            return
        backlog = self._backlog
        while backlog:
            waiting = backlog.popleft()
            if waiting.cancelled or not waiting.queue:
                continue
            self._assign(waiting, lane, slot, now)
            fx.wake.append(lane)
            return
        heapq.heappush(self._free, (slot, lane.index, lane))

    def _cancel(self, seq: _Sequence, now: int, fx: _Effects) -> None:
        """A request of the sequence was cancelled: the whole sequence is (Triton): its queued
        requests fail CANCELLED, its id is forgotten and its slot freed."""
        seq.cancelled = True
        error = CancelledError("Request was cancelled")
        for request, _ in seq.queue:
            fx.fail.append((request, error))
        seq.queue.clear()
        if self._active.get(seq.corrid) is seq:
            del self._active[seq.corrid]
        if not seq.inflight:
            self._release(seq, now, fx)

    # -- enqueue (event loop) ------------------------------------------------------------------

    def enqueue(self, request: InferenceRequest) -> None:
        model = self._model
        if self._stopped:
            raise UnavailableError(f"model '{model}' is not accepting requests")
        if request.batch_size > 1:
            raise InvalidArgumentError(
                f"inference request to model '{model}' must specify batch-size 1 due to "
                "requirements of sequence batcher"
            )
        corrid = request.sequence_id
        if not corrid:
            raise InvalidArgumentError(
                f"inference request to model '{model}' must specify a non-zero or non-empty "
                "correlation ID"
            )
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._mailbox = LoopMailbox.of(self._loop)
        now = self._clock.now_ns()
        new = False
        with self._lock:
            seq = self._active.get(corrid)
            if seq is None:
                if not request.sequence_start:
                    raise InvalidArgumentError(self._not_started(corrid))
                self.controls.check_corrid(model, corrid)
                seq = self._active[corrid] = _Sequence(corrid, now)
                self._expired.pop(corrid, None)
                self._place(seq, now)
                new = True
            elif request.sequence_start:
                log.warning(
                    "sequence %s for model '%s' has a conflict. The previous sequence did not "
                    "end before this sequence start. Previous sequence will be terminated early.",
                    corrid,
                    model,
                )
            queue = seq.queue
            queue.append((request, now))
            seq.last_ns = now
            if request.sequence_end:
                del self._active[corrid]
            lane = seq.lane
            if lane is not None and self._oldest and len(queue) == 1 and not seq.inflight:
                seq.ready_ns = now
                lane.ready.append(seq)
            if new:
                heapq.heappush(self._deadlines, (now + self._idle_ns, next(self._order), seq))
        if new and self._reaper is None:
            self._reaper = self._loop.create_task(self._reap())
        if lane is not None:
            self._wake(lane)

    def _not_started(self, corrid: int | str) -> str:
        message = (
            f"inference request for sequence {corrid} to model '{self._model}' must specify the "
            "START flag on the first request of the sequence"
        )
        if corrid in self._expired:
            message += (
                f" (sequence {corrid} was released after being idle for more than "
                f"{self._idle_ns // 1000} microseconds, max_sequence_idle_microseconds)"
            )
        return message

    # -- batch formation (lock held; event loop or an instance thread) -------------------------

    def _complete(self, lane: _Lane, now: int, fx: _Effects) -> None:
        """The lane's previous batch has executed: its sequences may go on."""
        executing = lane.executing
        if not executing:
            lane.current = None
            return
        lane.executing = []
        lane.current = None
        oldest = self._oldest
        for seq, ended in executing:
            seq.inflight = False
            if now > seq.last_ns:
                seq.last_ns = now
            if seq.cancelled:
                self._release(seq, now, fx)
                continue
            if oldest and ended:
                self._release(seq, now, fx)
                continue
            home = seq.lane
            if home is None or not seq.queue:
                continue
            if oldest:
                seq.ready_ns = now
                home.ready.append(seq)
            if home is not lane:
                fx.wake.append(home)

    def _head(self, seq: _Sequence, now: int, fx: _Effects) -> InferenceRequest | None:
        """The sequence's next request if it can go now (a cancelled one cancels it all)."""
        if seq.inflight or seq.cancelled or not seq.queue:
            return None
        request = seq.queue[0][0]
        if request.final_sent:  # answered already: cancelled while queued
            self._cancel(seq, now, fx)
            return None
        return request

    def _form(self, lane: _Lane, now: int, fx: _Effects) -> tuple[list | None, int]:
        if self._oldest:
            return self._form_oldest(lane, now, fx)
        return self._form_direct(lane, now, fx)

    def _form_direct(self, lane: _Lane, now: int, fx: _Effects) -> tuple[list | None, int]:
        heads: list[tuple[int, _Sequence, InferenceRequest]] = []
        first_ns = now
        for slot, seq in enumerate(lane.slots):
            if seq is None:
                continue
            request = self._head(seq, now, fx)
            if request is None:
                continue
            heads.append((slot, seq, request))
            enqueued = seq.queue[0][1]
            if enqueued < first_ns:
                first_ns = enqueued
        if not heads:
            return None, 0
        delay = self._delay_ns
        if (
            delay
            and self._utilization
            and not self._stopped
            and len(heads) / self._max_batch < self._utilization
            and now - first_ns < delay
        ):
            return None, first_ns + delay
        key = self._key
        if key is not None:
            wanted = key(heads[0][2])
            heads = [head for head in heads if key(head[2]) == wanted]
        rows: list[InferenceRequest | None] = [None] * (heads[-1][0] + 1)
        executing = lane.executing
        prepare = self._prepare
        for slot, seq, request in heads:
            seq.queue.popleft()
            prepare(request, seq)
            seq.inflight = True
            rows[slot] = request
            ended = request.sequence_end
            executing.append((seq, ended))
            if ended:
                self._release(seq, now, fx)
        if len(heads) < len(rows):
            template = heads[0][2]
            for slot, row in enumerate(rows):
                if row is None:
                    rows[slot] = self._filler(template)
                    fx.fillers += 1
        lane.current = rows
        return rows, 0

    def _form_oldest(self, lane: _Lane, now: int, fx: _Effects) -> tuple[list | None, int]:
        ready = lane.ready
        candidates: list[tuple[_Sequence, InferenceRequest]] = []
        while ready:
            seq = ready.popleft()
            if seq.lane is not lane:
                continue
            request = self._head(seq, now, fx)
            if request is not None:
                candidates.append((seq, request))
        if not candidates:
            return None, 0
        max_batch = self._max_batch
        fits = min(len(candidates), max_batch)
        key = self._key
        if key is not None:
            wanted = key(candidates[0][1])
            for index in range(1, fits):
                if key(candidates[index][1]) != wanted:
                    fits = index
                    break
        count = fits
        delay = self._delay_ns
        best = next((size for size in self._preferred if size <= fits), 0)
        if delay and not self._stopped:
            expired = now - candidates[0][0].ready_ns >= delay
            largest = self._preferred[0] if self._preferred else max_batch
            if best and not expired:
                count = best
            elif not (expired or fits >= largest or fits < len(candidates)):
                ready.extend(seq for seq, _ in candidates)
                return None, candidates[0][0].ready_ns + delay
        elif best:
            count = best
        batch: list[InferenceRequest] = []
        executing = lane.executing
        prepare = self._prepare
        for seq, request in candidates[:count]:
            seq.queue.popleft()
            prepare(request, seq)
            seq.inflight = True
            batch.append(request)
            executing.append((seq, request.sequence_end))
        ready.extend(seq for seq, _ in candidates[count:])
        lane.current = batch
        return batch, 0

    def _prepare(self, request: InferenceRequest, seq: _Sequence) -> None:
        """Add the control tensors and the implicit state to a request about to execute."""
        inputs = request.inputs
        for name, tensor in self.controls.for_request(request.sequence_start, request.sequence_end):
            inputs[name] = tensor
        controls = self.controls
        if controls.corrid_type is not None:
            tensor = seq.corrid_tensor
            if tensor is None:
                tensor = seq.corrid_tensor = controls.corrid(seq.corrid)
            inputs[controls.corrid_name] = tensor
        states = self.states
        if states:
            if request.sequence_start or seq.state is None:
                seq.state = states.initial
            inputs.update(seq.state)
            stream = request.stream
            if stream is not None:
                requested = request.requested_outputs
                if requested:
                    asked = {out.name for out in requested}
                    strip = frozenset(name for name in states.by_output if name not in asked)
                    request.requested_outputs = requested + [
                        out for out in states.extra_outputs if out.name not in asked
                    ]
                else:
                    strip = states.hidden
                request.stream = StateCatcher(self, seq, stream, strip)

    def _filler(self, template: InferenceRequest) -> InferenceRequest:
        """A request for an empty slot: zeros shaped like ``template``, READY false."""
        control_names = self.controls.names
        inputs: dict[str, Tensor] = {}
        zeros = self._zeros
        for name, tensor in template.inputs.items():
            if name in control_names:
                continue
            key = (name, tensor.shape, tensor.datatype)
            zero = zeros.get(key)
            if zero is None:
                if tensor.datatype is DataType.BYTES:
                    array = np.empty(tensor.shape, dtype=object)
                    array.fill(b"")
                else:
                    array = np.zeros(tensor.shape, dtype=tensor.data.dtype)
                array.flags.writeable = False
                zero = zeros[key] = Tensor(name, array, tensor.datatype)
            inputs[name] = zero
        for name, tensor in self.controls.not_ready:
            inputs[name] = tensor
        if self._empty_corrid is not None:
            inputs[self._empty_corrid.name] = self._empty_corrid
        filler = InferenceRequest(
            template.model_name,
            inputs,
            model_version=template.model_version,
            requested_outputs=[RequestedOutput(o.name) for o in template.requested_outputs],
        )
        filler.context[FILLER] = True
        filler.queue_start_ns = time.monotonic_ns()
        return filler

    # -- pulling -------------------------------------------------------------------------------

    def _lane_of(self, instance: Any) -> _Lane:
        lane = instance.state.get(_LANE)
        if lane is None:
            with self._lock:
                lane = instance.state.get(_LANE) or self._add_lane(instance)
        return lane

    async def next_batch(self, instance: Any) -> list[InferenceRequest] | None:
        lane = self._lane_of(instance)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._mailbox = LoopMailbox.of(loop)
        while True:
            fx = _Effects()
            with self._lock:
                now = self._clock.now_ns()
                self._complete(lane, now, fx)
                if instance.retired or lane.retired:
                    batch, when = None, 0
                else:
                    batch, when = self._form(lane, now, fx)
                idle = batch is None and not any(seq and seq.queue for seq in lane.slots)
            if fx.fail or fx.wake or fx.fillers:
                self._settle(fx, on_loop=True)
            if batch is not None:
                return batch
            if instance.retired or lane.retired or (self._stopped and idle):
                return None
            if lane in fx.wake:  # a backlogged sequence took a slot freed meanwhile
                continue
            lane.waiter = waiter = loop.create_future()
            if when:
                self._arm(lane, when)
            try:
                await waiter
            finally:
                lane.waiter = None

    def poll_batch(self, instance: Any) -> list[InferenceRequest] | None:
        """From the instance's thread, right after it executed its batch: the next batch if one
        can go now, without waiting."""
        lane = instance.state.get(_LANE)
        if lane is None or lane.retired:
            return None
        fx = _Effects()
        with self._lock:
            now = self._clock.now_ns()
            self._complete(lane, now, fx)
            batch, _ = self._form(lane, now, fx)
        if fx.fail or fx.wake or fx.fillers:
            self._settle(fx, on_loop=False)
        return batch

    def batch_done(self, instance: Any, batch: list[InferenceRequest]) -> None:
        lane = instance.state.get(_LANE)
        if lane is None:
            return
        fx = _Effects()
        with self._lock:
            if lane.current is batch:
                self._complete(lane, self._clock.now_ns(), fx)
                fx.wake.append(lane)
        self._settle(fx, on_loop=True)

    def _settle(self, fx: _Effects, on_loop: bool) -> None:
        """Do what a locked section left: fail requests, wake lanes, count fillers."""
        for request, error in fx.fail:
            request.fail(error)
        if fx.fillers:
            # Fillers are counted as started by the runner; count them queued too, so that the
            # model's pending-request count stays right.
            if on_loop:
                self.context.statistics.add_queued(fx.fillers)
            elif self._mailbox is not None:
                self._mailbox.post(self.context.statistics.add_queued, fx.fillers)
        if fx.wake:
            if on_loop:
                for lane in fx.wake:
                    self._wake(lane)
            elif self._mailbox is not None:
                for lane in fx.wake:
                    self._mailbox.post(self._wake, lane)

    def _wake(self, lane: _Lane) -> None:
        waiter = lane.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self, lane: _Lane, when: int) -> None:
        """Wake the lane at clock time ``when`` (one timer per lane)."""
        alarm = lane.alarm
        if alarm is not None and not alarm.done():
            if lane.alarm_at == when:
                return
            alarm.cancel()
        lane.alarm_at = when
        lane.alarm = asyncio.get_running_loop().create_task(self._ring(lane, when))

    async def _ring(self, lane: _Lane, when: int) -> None:
        await self._clock.sleep_until(when)
        self._wake(lane)

    # -- idle sequences (event loop) -----------------------------------------------------------

    async def _reap(self) -> None:
        """Release sequences idle for ``max_sequence_idle_microseconds``: no request queued or
        executing, and none arrived or finished for that long."""
        clock, idle = self._clock, self._idle_ns
        deadlines = self._deadlines
        try:
            while True:
                with self._lock:
                    if not deadlines or self._stopped:
                        return
                    when = deadlines[0][0]
                await clock.sleep_until(when)
                fx = _Effects()
                with self._lock:
                    now = clock.now_ns()
                    while deadlines and deadlines[0][0] <= now:
                        _, _, seq = heapq.heappop(deadlines)
                        if self._active.get(seq.corrid) is not seq:
                            continue  # ended or cancelled: no longer watched
                        if seq.queue or seq.inflight:
                            again = now + idle
                        elif now - seq.last_ns < idle:
                            again = seq.last_ns + idle
                        else:
                            self._expire(seq, now, fx)
                            continue
                        heapq.heappush(deadlines, (again, next(self._order), seq))
                self._settle(fx, on_loop=True)
        finally:
            self._reaper = None

    def _expire(self, seq: _Sequence, now: int, fx: _Effects) -> None:
        log.info(
            "model '%s': sequence %s idle for more than %d us, released",
            self._model,
            seq.corrid,
            self._idle_ns // 1000,
        )
        del self._active[seq.corrid]
        expired = self._expired
        expired[seq.corrid] = None
        if len(expired) > _EXPIRED_MEMORY:
            expired.popitem(last=False)
        self._release(seq, now, fx)

    # -- state -----------------------------------------------------------------------------------

    def state_missing(self, seq: _Sequence) -> None:
        """A response ended without the state outputs (from the thread that responded)."""
        self.missing_state_outputs += 1
        if not self._missing_warned:
            self._missing_warned = True
            names = ", ".join(f"'{name}'" for name in self.states.by_output)
            log.warning(
                "model '%s': a response of sequence %s carries no state output (%s); the state "
                "is left as it was. Does the backend produce implicit state outputs?",
                self._model,
                seq.corrid,
                names,
            )

    # -- instances, stop -----------------------------------------------------------------------

    def instances_changed(self, instances: list[Any]) -> None:
        fx = _Effects()
        with self._lock:
            now = self._clock.now_ns()
            wanted = set(instances)
            for handle in instances:
                if _LANE not in handle.state:
                    self._add_lane(handle)
            moved: list[_Sequence] = []
            for lane in self._lanes:
                if lane.retired or (lane.handle in wanted and not lane.handle.retired):
                    continue
                lane.retired = True
                fx.wake.append(lane)
                for slot, seq in enumerate(lane.slots):
                    if seq is not None:
                        lane.slots[slot] = None
                        seq.lane, seq.slot = None, -1
                        moved.append(seq)
                lane.ready.clear()
            self._lanes = [lane for lane in self._lanes if not lane.retired]
            # The retired instances' sequences (and their state) go first in the backlog.
            self._backlog.extendleft(reversed(moved))
            while self._backlog:
                free = self._take_free_slot()
                if free is None:
                    break
                seq = self._backlog.popleft()
                if seq.cancelled or not (seq.queue or self._active.get(seq.corrid) is seq):
                    heapq.heappush(self._free, (free[1], free[0].index, free[0]))
                    continue
                self._assign(seq, free[0], free[1], now)
            fx.wake.extend(self._lanes)
        self._settle(fx, on_loop=True)

    async def stop(self, drain: bool) -> None:
        self._stopped = True
        failed: list[InferenceRequest] = []
        with self._lock:
            sequences = [seq for lane in self._lanes for seq in lane.slots if seq is not None]
            backlog = list(self._backlog)
            self._backlog.clear()
            for seq in backlog if drain else sequences + backlog:
                failed.extend(request for request, _ in seq.queue)
                seq.queue.clear()
            lanes = list(self._lanes)
        error = UnavailableError("model is unloading")
        for request in failed:
            request.fail(error)
        for lane in lanes:
            if lane.alarm is not None:
                lane.alarm.cancel()
            self._wake(lane)
        if self._reaper is not None:
            self._reaper.cancel()

    # -- introspection (tests, metrics) ----------------------------------------------------------

    def sequences(self) -> dict[str, Any]:
        """Where the sequences are: ``{"slots": {instance: [corrid or None, ...]},
        "backlog": [corrid, ...], "active": [corrid, ...]}``."""
        with self._lock:
            return {
                "slots": {
                    lane.handle.name: [seq.corrid if seq else None for seq in lane.slots]
                    for lane in self._lanes
                },
                "backlog": [seq.corrid for seq in self._backlog],
                "active": list(self._active),
            }
