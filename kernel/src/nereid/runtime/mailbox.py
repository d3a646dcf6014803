"""One wake-up of the event loop for many hand-offs from worker threads.

``loop.call_soon_threadsafe`` writes to the loop's wake-up pipe on every call. Under load,
instance threads hand the loop a response, then a batch completion, many times per
millisecond; the mailbox queues those calls and wakes the loop only when it goes from empty
to non-empty, so a busy loop drains many hand-offs per wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = (
    weakref.WeakKeyDictionary()
)
_registry_lock = threading.Lock()
_held = threading.local()


class LoopMailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self._items: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopMailbox:
        """The mailbox of ``loop``; the first call must come from the loop's own thread."""
        mailbox = _mailboxes.get(loop)
        if mailbox is None:
            with _registry_lock:
                mailbox = _mailboxes.get(loop)
                if mailbox is None:
                    mailbox = _mailboxes[loop] = cls(loop, threading.get_ident())
        return mailbox

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now when already on the loop's thread, else soon."""
        if threading.get_ident() == self.loop_thread:
            fn(*args)
        else:
            self.post(fn, *args)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` for the loop (from any thread)."""
        if getattr(_held, "owner", None) is self:
            _held.items.append((fn, args))
            return
        self._items.append((fn, args))
        self._wake()

    def hold(self) -> list[tuple[Callable[..., Any], tuple]]:
        """Keep this thread's posts back until :meth:`release`, which hands them to the loop
        in one go, so the loop runs them in one pass (a batch's responses with its statistics).
        Calls may be added to the returned list meanwhile."""
        held: list[tuple[Callable[..., Any], tuple]] = []
        _held.owner, _held.items = self, held
        return held

    def release(self) -> None:
        held = _held.items
        _held.owner = _held.items = None
        if held:
            self._items.extend(held)
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is left to answer
            pass

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": "exception in a mailbox call", "exception": exc}
                )
