"""``preserve_ordering``: responses leave in the order their requests left the queue.

Without the backend's help: when a request is dispatched, its response channel
(``request.stream``) is swapped for a :class:`_Slot` of a per-model :class:`Sequencer`. A
response pushed into a slot is held until every earlier slot has seen its final response.

Responses come from any thread (instance threads, a decoupled model's own threads, the event
loop), and an instance thread's hand-offs to the loop may be held back until its batch ends (the
kernel's mailbox ``hold``). So released responses do not go to their streams from the thread that
released them: they join one FIFO, and every release posts a flush to the loop; whichever flush
runs first delivers everything released so far, in order.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from nereid.runtime.mailbox import LoopMailbox
from nereid.types import InferenceRequest, InferenceResponse


class _Slot:
    """Stands in for a request's stream while the request is ahead of or behind others."""

    __slots__ = ("done", "held", "sequencer", "stream")

    def __init__(self, sequencer: Sequencer, stream: Any) -> None:
        self.sequencer = sequencer
        self.stream = stream
        self.held: list[InferenceResponse] = []
        self.done = False

    def push(self, response: InferenceResponse) -> None:
        self.sequencer._push(self, response)

    def __getattr__(self, name: str) -> Any:  # anything else a caller asks of the stream
        return getattr(self.stream, name)


class Sequencer:
    """Holds responses so that they leave in admission order (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: collections.deque[_Slot] = collections.deque()
        self._outbox: collections.deque[tuple[Any, InferenceResponse]] = collections.deque()
        self.mailbox: LoopMailbox | None = None  # the event loop's, set by the scheduler
        self._flushing = False  # only ever touched on the loop thread

    def admit(self, request: InferenceRequest) -> None:
        """Give ``request`` the next place in line (call in dispatch order)."""
        stream = request.stream
        if stream is None:
            return
        slot = _Slot(self, stream)
        with self._lock:
            self._slots.append(slot)
        request.stream = slot

    def _push(self, slot: _Slot, response: InferenceResponse) -> None:
        with self._lock:
            if slot.done:
                return
            if response.final:
                slot.done = True
            slots = self._slots
            if not slots or slots[0] is not slot:
                slot.held.append(response)
                return
            outbox = self._outbox
            outbox.append((slot.stream, response))
            if slot.done:
                slots.popleft()
                while slots:  # release what the following requests have been holding
                    head = slots[0]
                    outbox.extend((head.stream, held) for held in head.held)
                    head.held.clear()
                    if not head.done:
                        break
                    slots.popleft()
        self.mailbox.call(self._flush)

    def _flush(self) -> None:
        """On the loop: deliver every released response, in release order."""
        if self._flushing:  # called from a delivery below: the loop there picks it up
            return
        self._flushing = True
        try:
            while True:
                with self._lock:
                    if not self._outbox:
                        return
                    items, self._outbox = self._outbox, collections.deque()
                for stream, response in items:
                    stream.push(response)  # on the loop thread: delivered now
        finally:
            self._flushing = False

    def __len__(self) -> int:
        return len(self._slots)
