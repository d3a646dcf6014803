"""The ``dynamic`` scheduler: Triton's dynamic batcher on Nereid's pull-based scheduler contract.

Queues
    One queue per priority level (a single one without ``priority_levels``), each with its queue
    policy, and behind each a "delayed" queue for requests whose timeout expired under the DELAY
    action. The batch order is: level 1's queue, level 1's delayed queue, level 2's queue, ...

Batch formation (``_plan``, Triton's ``GetDynamicBatch``)
    Walk that order from the front, adding requests while the batch stays within
    ``max_batch_size`` rows and each request's inputs can be batched with the first one's (same
    non-batch shape for every variable-shape input that is not ``allow_ragged_batch``, same
    inputs present, same shape-tensor values). The walk stops at the first request that does
    not fit: order is never broken to fill a batch. On the way it notes the largest prefix whose
    rows are a preferred batch size, or, failing that, the prefix that fits under the largest
    preferred size. Then:

    - such a prefix was noted and the oldest request has not waited the delay: send it;
    - the batch is full, cannot grow (the next request does not fit), has reached the largest
      preferred size, or the delay is 0, or the oldest request in it has waited
      ``max_queue_delay_microseconds``: send it all;
    - else wait until that delay expires, or until a new request may complete the batch.

Fair share (Nereid's default, beyond Triton; ``nereid.dynamic_batching.fair_share: "false"``
    gives Triton's rule above)
    A batch is also full once it holds the pulling instance's fair share of the work in hand:
    the queued rows plus the rows executing (see ``_share``), divided by the instance count
    (rounded down, at least 1; and it takes at most that rounded up). So a lone request goes at
    once; under a closed load of N requests and K instances, each instance takes N/K as soon
    as they are back, instead of one instance taking all N while the others idle, or every
    batch waiting out the delay.

Pulling
    Free instances pull. One of them at a time, the *leader*, waits on the event loop for a batch
    to be ready (``context.clock`` for every wait); the others wait their turn behind it. An
    instance that has just executed a batch also asks from its own thread (``poll_batch``) and
    takes a batch that is ready now without a trip through the loop. All queue state is guarded
    by one ``threading.Lock``.

Queue policies
    ``max_queue_size`` rejects at ``enqueue`` (UNAVAILABLE "Exceeds maximum queue size"); a
    request's timeout (``default_timeout_microseconds``, or the request's ``timeout_us`` when
    ``allow_timeout_override`` and it is shorter, as Triton) is watched by a timer task: REJECT
    fails it UNAVAILABLE "Request timeout expired", DELAY moves it to its level's delayed queue.
    A request cancelled while queued leaves the queue at once and fails CANCELLED.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any

from nereid.config.loading import ConfigError, boolean_word
from nereid.errors import CancelledError, UnavailableError
from nereid.runtime.mailbox import LoopMailbox
from nereid.scheduler import SchedulerContext, batch_key_function
from nereid.types import InferenceRequest

from . import FAIR_SHARE_PARAMETER
from .ordering import Sequencer
from .ragged import BATCH_CONTEXT_KEY, BatchSpec

_REJECT, _DELAY = 0, 1  # ModelQueuePolicy.TimeoutAction


class _Entry:
    """A queued request: its rows, batching key, level, enqueue time and timeout deadline.
    ``where`` is the deque it is in, ``None`` once it has left the queue. Calling it is the
    request's cancel callback."""

    __slots__ = ("deadline", "enqueued", "key", "level", "request", "rows", "scheduler", "where")

    def __init__(
        self,
        scheduler: DynamicBatcher,
        request: InferenceRequest,
        rows: int,
        key: Any,
        level: _Level,
        now: int,
    ) -> None:
        self.scheduler = scheduler
        self.request = request
        self.rows = rows
        self.key = key
        self.level = level
        self.enqueued = now
        self.deadline = 0
        self.where: collections.deque | None = level.queue

    def __call__(self) -> None:
        self.scheduler._cancelled(self)


class _Level:
    """One priority level: its queue, its delayed queue and its queue policy."""

    __slots__ = ("allow_override", "delayed", "max_size", "queue", "timeout_action", "timeout_ns")

    def __init__(self, policy: Any) -> None:
        self.queue: collections.deque[_Entry] = collections.deque()
        self.delayed: collections.deque[_Entry] = collections.deque()
        self.max_size = policy.max_queue_size
        self.timeout_ns = policy.default_timeout_microseconds * 1000
        self.allow_override = policy.allow_timeout_override
        self.timeout_action = policy.timeout_action

    def size(self) -> int:
        return len(self.queue) + len(self.delayed)


class DynamicBatcher:
    """See the module docstring."""

    uses_instances = True

    def __init__(self, context: SchedulerContext) -> None:
        self.context = context
        config = context.config
        batching = config.dynamic_batching
        self._clock = context.clock
        self._max_batch = max(1, config.max_batch_size)
        self._preferred = frozenset(s for s in batching.preferred_batch_size if s > 0)
        self._limit = max(self._preferred) if self._preferred else self._max_batch
        self._delay_ns = batching.max_queue_delay_microseconds * 1000
        self._key = batch_key_function(config)
        self._levels, self._level_of = self._make_levels(context.model_name, batching)
        self._single = self._levels[0] if len(self._levels) == 1 else None
        # Wake the leader on every enqueue only when a new request can change the decision
        # before the batch is full or the delay expires.
        self._eager = bool(self._preferred) or self._key is not None or len(self._levels) > 1
        self._sequencer = Sequencer() if batching.preserve_ordering else None
        self._spec = BatchSpec.from_config(config)
        fair_share = config.parameters.get(FAIR_SHARE_PARAMETER)
        self._fair_share = fair_share is None or boolean_word(fair_share.string_value) is not False
        # With fair share: each instance's batch not yet done, and the rows in all of them.
        self._executing: dict[Any, tuple[list[InferenceRequest], int]] = {}
        self._executing_rows = 0
        self._instances = max(1, len(context.instances))
        self._lock = threading.Lock()
        self._count = 0  # entries queued, all levels
        self._rows = 0
        self._deadlines: list[tuple[int, int, _Entry]] = []
        self._order = itertools.count()
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox: LoopMailbox | None = None
        self._leader: Any = None
        self._wake: asyncio.Future | None = None
        # Idle instances waiting behind the leader, woken one at a time to lead in turn.
        self._followers: collections.deque[asyncio.Future] = collections.deque()
        self._timer: asyncio.Task | None = None
        self._timer_at = 0
        self._reaper: asyncio.Task | None = None
        self._reaper_at = 0

    @staticmethod
    def _make_levels(model: str, batching: Any) -> tuple[list[_Level], Callable[[int], _Level]]:
        levels_count = batching.priority_levels
        if levels_count == 0:
            level = _Level(batching.default_queue_policy)
            return [level], lambda priority: level
        default = batching.default_priority_level
        if not 1 <= default <= levels_count:
            raise ConfigError(
                f"model '{model}': dynamic_batching.default_priority_level must be in range "
                f"[1, {levels_count}], got {default}"
            )
        for key in batching.priority_queue_policy:
            if not 1 <= key <= levels_count:
                raise ConfigError(
                    f"model '{model}': dynamic_batching.priority_queue_policy has level {key}, "
                    f"outside [1, {levels_count}]"
                )
        levels = [
            _Level(batching.priority_queue_policy.get(number, batching.default_queue_policy))
            for number in range(1, levels_count + 1)
        ]
        default_level = levels[default - 1]

        def level_of(priority: int) -> _Level:
            # 0 (unset) and values beyond the last level take the default level, as Triton.
            if 1 <= priority <= levels_count:
                return levels[priority - 1]
            return default_level

        return levels, level_of

    # -- enqueue (event loop) ------------------------------------------------------------------

    def enqueue(self, request: InferenceRequest) -> None:
        if self._stopped:
            raise UnavailableError(f"model '{self.context.model_name}' is not accepting requests")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._mailbox = LoopMailbox.of(self._loop)
            if self._sequencer is not None:
                self._sequencer.mailbox = self._mailbox
        now = self._clock.now_ns()
        level = self._single or self._level_of(request.priority)
        rows = request.batch_size or 1
        key = self._key
        entry = _Entry(self, request, rows, key(request) if key else None, level, now)
        timeout = level.timeout_ns
        if level.allow_override and request.timeout_us:
            override = request.timeout_us * 1000
            if override < timeout:  # Triton: a request may shorten, never lengthen, the timeout
                timeout = override
        with self._lock:
            if level.max_size and level.size() >= level.max_size:
                raise UnavailableError(
                    f"[request id: {request.id or '<id_unknown>'}] Exceeds maximum queue size"
                )
            level.queue.append(entry)
            self._count += 1
            self._rows += rows
            if timeout:
                entry.deadline = now + timeout
                heapq.heappush(self._deadlines, (entry.deadline, next(self._order), entry))
            wake = (
                self._eager
                or self._count == 1
                or self._rows >= self._limit
                or (
                    self._fair_share and self._leader is not None and self._rows >= self._share()[0]
                )
            )
        request.on_cancel(entry)
        if request.cancelled:  # cancelled before it reached the queue
            entry()
            return
        if timeout and (self._reaper is None or entry.deadline < self._reaper_at):
            self._start_reaper(entry.deadline)
        if wake:
            self._poke()

    def _cancelled(self, entry: _Entry) -> None:
        """A request was cancelled (any thread): if it is still queued it leaves the queue and
        fails CANCELLED; once dispatched, the model decides (``request.is_cancelled()``)."""
        with self._lock:
            if not self._remove(entry):
                return
        entry.request.fail(CancelledError("Request was cancelled"))
        self._poke_threadsafe()

    def _remove(self, entry: _Entry) -> bool:
        """Take a still-queued entry out of its queue (lock held)."""
        queue = entry.where
        if queue is None:
            return False
        if queue[0] is entry:
            queue.popleft()
        else:
            queue.remove(entry)
        entry.where = None
        self._count -= 1
        self._rows -= entry.rows
        return True

    # -- batch formation (lock held; event loop or an instance thread) -------------------------

    def _share(self) -> tuple[int, int]:
        """An instance's fair share of the work in hand, split evenly: the rows that make its
        batch full enough to go (rounded down, at least 1), and the most it takes (rounded up).
        The work in hand is the queued rows and those handed out whose ``batch_done`` has not
        come: batches executing, and one whose instance asks again from its own thread before
        the loop has its end (its responses are on their way; under a closed load the requests
        they answer come back, and a share that left them out would be half a batch)."""
        work = self._rows + self._executing_rows
        return max(1, work // self._instances), -(-work // self._instances)

    def _plan(self, now: int) -> tuple[int, int]:
        """What to send now: ``(entries, 0)``, the first ``entries`` queue entries in batch
        order; or ``(0, when)``: nothing is ready before clock time ``when`` (0: not before a
        new request)."""
        if self._count == 0:
            return 0, 0
        max_rows = self._max_batch
        enough = self._limit
        if self._fair_share:
            enough_share, most_share = self._share()
            max_rows = min(max_rows, most_share)
            enough = min(enough, enough_share)
        most_preferred = min(self._limit, max_rows)
        preferred = self._preferred
        check = self._key is not None
        count = rows = best = 0
        key = None
        oldest = now
        blocked = False  # the next request cannot join: the batch cannot grow
        for level in self._levels:
            for queue in (level.queue, level.delayed):
                for entry in queue:
                    if count:
                        if rows + entry.rows > max_rows or (check and entry.key != key):
                            blocked = True
                            break
                        if not best and rows + entry.rows > most_preferred:
                            best = count  # what fits under the largest preferred size
                    else:
                        key = entry.key
                    count += 1
                    rows += entry.rows
                    if entry.enqueued < oldest:
                        oldest = entry.enqueued
                    if rows in preferred:
                        best = count
                    if rows >= max_rows:
                        blocked = True
                        break
                if blocked:
                    break
            if blocked:
                break
        delay = self._delay_ns
        if delay == 0:
            expired = wait = False  # send now: a preferred prefix if one was reached, else all
        else:
            expired = self._stopped or now - oldest >= delay
            wait = not expired and not blocked and rows < enough
        if best and not expired:
            return best, 0
        if wait:
            return 0, oldest + delay
        return count, 0

    def _pop(self, count: int, instance: Any) -> list[InferenceRequest] | None:
        """Take the first ``count`` entries out of the queues and hand their requests out as a
        batch: tagged for ragged batching, in line for ordering."""
        batch = []
        rows = 0
        for level in self._levels:
            for queue in (level.queue, level.delayed):
                while count and queue:
                    entry = queue.popleft()
                    entry.where = None
                    count -= 1
                    rows += entry.rows
                    self._count -= 1
                    request = entry.request
                    if not request.final_sent:
                        batch.append(request)
                if not count:
                    break
            if not count:
                break
        self._rows -= rows
        if not batch:
            return None
        if self._fair_share:
            done = self._executing.get(instance)  # its batch_done may still be on its way
            self._executing_rows += rows - (done[1] if done else 0)
            self._executing[instance] = (batch, rows)
        sequencer = self._sequencer
        spec = self._spec
        if sequencer is not None or spec is not None:
            for request in batch:
                if sequencer is not None:
                    sequencer.admit(request)
                if spec is not None:
                    request.context[BATCH_CONTEXT_KEY] = spec
        return batch

    def _take(self, now: int, instance: Any) -> tuple[list[InferenceRequest] | None, int]:
        """The batch for ``instance`` to execute now, or ``(None, when)`` (see ``_plan``)."""
        count, when = self._plan(now)
        return (self._pop(count, instance) if count else None), when

    # -- pulling -------------------------------------------------------------------------------

    async def next_batch(self, instance: Any) -> list[InferenceRequest] | None:
        while True:
            if instance.retired:
                return None
            if self._leader is None:
                break
            if self._stopped and self._count == 0:
                return None
            follower = asyncio.get_running_loop().create_future()
            self._followers.append(follower)
            await follower
        self._leader = instance
        try:
            return await self._lead(instance)
        finally:
            self._leader = None
            self._promote()

    async def _lead(self, instance: Any) -> list[InferenceRequest] | None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        while True:
            if instance.retired:
                return None
            with self._lock:
                batch, when = self._take(clock.now_ns(), instance)
            if batch is not None:
                return batch
            if self._stopped and self._count == 0:
                return None
            self._wake = wake = loop.create_future()
            if when:
                self._arm(when)
            try:
                await wake
            finally:
                self._wake = None

    def poll_batch(self, instance: Any) -> list[InferenceRequest] | None:
        """From an instance's thread: a batch if one is ready now (full, preferred, delay
        expired, or delay 0), else ``None``; never waits."""
        if self._count == 0:
            return None
        with self._lock:
            batch, _ = self._take(self._clock.now_ns(), instance)
        return batch

    def batch_done(self, instance: Any, batch: list[InferenceRequest]) -> None:
        if not self._fair_share:
            return
        with self._lock:
            own = self._executing.get(instance)
            if own is None or own[0] is not batch:
                return  # the instance has taken its next batch already
            del self._executing[instance]
            self._executing_rows -= own[1]
            waiting = self._count > 0
        if waiting:  # the leader's share shrank: its batch may be full now
            self._poke()

    def instances_changed(self, instances: list[Any]) -> None:
        self._instances = max(1, len(instances))  # the share divides by it
        self._poke()
        self._wake_followers()

    # -- wake-ups (event loop) -----------------------------------------------------------------

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _poke_threadsafe(self) -> None:
        if self._mailbox is not None:
            self._mailbox.call(self._poke)

    def _promote(self) -> None:
        followers = self._followers
        while followers:
            follower = followers.popleft()
            if not follower.done():
                follower.set_result(None)
                return

    def _wake_followers(self) -> None:
        followers, self._followers = self._followers, collections.deque()
        for follower in followers:
            if not follower.done():
                follower.set_result(None)

    def _arm(self, when: int) -> None:
        """Wake the leader at clock time ``when`` (one timer; kept when already set for then)."""
        timer = self._timer
        if timer is not None and not timer.done():
            if self._timer_at == when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().create_task(self._alarm(when))

    async def _alarm(self, when: int) -> None:
        await self._clock.sleep_until(when)
        self._poke()

    # -- timeouts (event loop) -----------------------------------------------------------------

    def _start_reaper(self, when: int) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        self._reaper_at = when
        self._reaper = asyncio.get_running_loop().create_task(self._reap(when))

    async def _reap(self, when: int) -> None:
        """Sleep until the earliest timeout, apply the queue policy to every request whose
        timeout has expired, and go on while any request has one."""
        clock = self._clock
        while True:
            await clock.sleep_until(when)
            rejected: list[InferenceRequest] = []
            moved = False
            with self._lock:
                now = clock.now_ns()
                deadlines = self._deadlines
                while deadlines and deadlines[0][0] <= now:
                    _, _, entry = heapq.heappop(deadlines)
                    level = entry.level
                    if entry.where is not level.queue:
                        continue  # gone, or already delayed
                    if level.timeout_action == _DELAY:
                        self._remove(entry)
                        level.delayed.append(entry)
                        entry.where = level.delayed
                        self._count += 1
                        self._rows += entry.rows
                        moved = True
                    else:
                        self._remove(entry)
                        rejected.append(entry.request)
                when = deadlines[0][0] if deadlines else 0
                self._reaper_at = when
            error = UnavailableError("Request timeout expired")
            for request in rejected:
                request.fail(error)
            if rejected or moved:
                self._poke()
            if not when:
                self._reaper = None
                return

    # -- stop ----------------------------------------------------------------------------------

    async def stop(self, drain: bool) -> None:
        self._stopped = True
        failed: list[InferenceRequest] = []
        if not drain:
            with self._lock:
                for level in self._levels:
                    for queue in (level.queue, level.delayed):
                        for entry in queue:
                            entry.where = None
                            failed.append(entry.request)
                        queue.clear()
                self._count = self._rows = 0
        error = UnavailableError("model is unloading")
        for request in failed:
            request.fail(error)
        for task in (self._timer, self._reaper):
            if task is not None:
                task.cancel()
        self._reaper = None
        self._poke()
        self._wake_followers()

    # -- introspection (tests, metrics) --------------------------------------------------------

    def queued(self) -> int:
        """Requests waiting in the queues now."""
        return self._count
