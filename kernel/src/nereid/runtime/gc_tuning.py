"""The cyclic garbage collector's first-generation threshold, raised while a server runs.

Requests in flight are many short-lived containers: requests, tensors, streams, futures, and
the frontend's own objects. Python's default threshold (700 more allocations than
deallocations) is crossed by a few dozen requests in flight, not by garbage; each collection
then promotes them, and every so often a full collection walks every object in the process.
A 3-step ensemble behind the HTTP frontend at 16 connections paid about 15 us per request for
it, collecting nothing. Requests free themselves by reference counting (they leave no cycles,
which the test suites check), so the collector is only needed for what model code leaves.

Servers share the process-wide setting: the first to start raises it, the last to stop puts
back what it was.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_servers = 0
_saved: tuple[int, int, int] | None = None


def raise_threshold(threshold: int) -> bool:
    """Raise the first generation's threshold to ``threshold`` (0: leave it) for a starting
    server; returns whether that server must call :func:`restore` when it stops."""
    global _servers, _saved
    if threshold <= 0:
        return False
    with _lock:
        if _servers == 0:
            _saved = gc.get_threshold()
            if _saved[0]:  # 0: collection was turned off; a higher setting is kept too
                gc.set_threshold(max(threshold, _saved[0]), _saved[1], _saved[2])
        _servers += 1
    return True


def restore() -> None:
    """A server that raised the threshold stopped: the last one puts the setting back."""
    global _servers
    with _lock:
        _servers -= 1
        if _servers == 0 and _saved is not None:
            gc.set_threshold(*_saved)
