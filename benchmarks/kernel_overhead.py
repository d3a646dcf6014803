"""Kernel overhead: in-process requests/s through the identity backend vs a bare hand-off loop.

Both sides run in this process, alternated over several rounds (best kept), with 64 requests in
flight, each carrying one FP32[16] input:

- bare: a worker thread pulls items from a ``queue.Queue`` and answers each through the event
  loop (``call_soon_threadsafe`` setting a future) — the least any thread-per-instance server
  must do;
- kernel: ``api.infer`` on an identity model (batch 1, one instance): validation, scheduling,
  the instance runner, statistics and the response stream.

Prints requests/s of each and kernel/bare (target: at least 0.4).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable

import numpy as np
import support
from nereid import InferenceRequest, Server, Tensor
from nereid.testing import ModelRepositoryBuilder

IN_FLIGHT = 64


async def requests_per_second(submit: Callable[[], Awaitable[None]], seconds: float) -> float:
    """Keep IN_FLIGHT requests going for ``seconds``; return completed requests per second."""
    done, elapsed = await support.keep_in_flight(submit, IN_FLIGHT, seconds)
    return done / elapsed


async def bare_round(seconds: float) -> float:
    loop = asyncio.get_running_loop()
    work: queue.Queue = queue.Queue()

    def worker() -> None:
        while (item := work.get()) is not None:
            future, data = item
            loop.call_soon_threadsafe(future.set_result, data)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    payload = np.ones(16, np.float32)

    async def submit() -> None:
        future = loop.create_future()
        work.put((future, payload))
        await future

    rate = await requests_per_second(submit, seconds)
    work.put(None)
    thread.join()
    return rate


async def kernel_round(server: Server, seconds: float) -> float:
    payload = np.ones((1, 16), np.float32)
    api = server.api

    async def submit() -> None:
        request = InferenceRequest("identity", [Tensor("INPUT0", payload)])
        await api.infer(request).single()

    return await requests_per_second(submit, seconds)


async def main(rounds: int, seconds: float) -> None:
    root = tempfile.mkdtemp()
    ModelRepositoryBuilder(root).identity("identity", dims="[ 16 ]")
    server = Server(root, log_info=False)
    await server.start()
    best_bare = best_kernel = 0.0
    try:
        for index in range(rounds):
            bare = await bare_round(seconds)
            kernel = await kernel_round(server, seconds)
            best_bare, best_kernel = max(best_bare, bare), max(best_kernel, kernel)
            print(f"round {index + 1}: bare {bare:,.0f} req/s, kernel {kernel:,.0f} req/s")
    finally:
        await server.stop()
    print(f"bare hand-off loop:   {best_bare:,.0f} req/s")
    print(f"kernel path:          {best_kernel:,.0f} req/s")
    print(f"kernel/bare ratio:    {best_kernel / best_bare:.2f}  (target >= 0.4)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    time.sleep(0)
    asyncio.run(main(args.rounds, args.seconds))
