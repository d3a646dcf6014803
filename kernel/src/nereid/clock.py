"""Time as schedulers see it, so tests can drive batching delays and timeouts by hand."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Monotonic time and sleeping on the running event loop."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        delay = (deadline_ns - self.now_ns()) / 1e9
        await asyncio.sleep(max(delay, 0.0))


SYSTEM_CLOCK = Clock()
