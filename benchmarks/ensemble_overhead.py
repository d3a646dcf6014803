"""Ensemble overhead: a 3-step chain of identity models against one identity model, over HTTP.

One ``nereid serve`` (HTTP frontend and the ensemble scheduler) holds:

(a) ``single``: an identity model (FP32[16], max_batch_size 8, one instance);
(b) ``chain3``: an ensemble whose three steps are identity models like it (``step1`` ->
    ``step2`` -> ``step3``, each with its own instance).

Alternating (a) and (b) over several rounds, it measures:

- latency: the median (p50) round trip with one request in flight, from an aiohttp client in
  this process (which, like tritonclient, does not ask for compressed responses), the two
  models taking turns request by request, so that a slow moment of a shared machine falls on
  both alike (the p50 is over every round);
- throughput: requests/s with 16 requests in flight, from ``wrk`` (one thread), a load
  generator that is not the bottleneck: a Python client on one core cannot keep up with the
  single model (it tops out near 10,000 requests/s, where the server does 14,000);
- the server's CPU time per request under that load (all threads; robust to other load on the
  machine);
- the mean time a request spends inside the server with one in flight (statistics extension).

It prints each round, then the p50s and the best throughputs, and the ratios (b)/(a) for
latency (target <= 1.5) and throughput (target >= 0.5). The server is pinned to one core, and
the clients to the other, when the machine has two. Run from the repository root::

    python benchmarks/ensemble_overhead.py [--rounds 5] [--duration 3] [--connections 16]

Needs ``wrk`` (``apt-get install -y wrk``), the nereid, nereid-http and nereid-ensemble
distributions, and aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import support
from nereid.testing import ModelRepositoryBuilder

CHAIN = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
ensemble_scheduling {
  step [
    { model_name: "step1" model_version: -1
      input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "t1" } },
    { model_name: "step2" model_version: -1
      input_map { key: "INPUT0" value: "t1" } output_map { key: "OUTPUT0" value: "t2" } },
    { model_name: "step3" model_version: -1
      input_map { key: "INPUT0" value: "t2" } output_map { key: "OUTPUT0" value: "OUTPUT0" } }
  ]
}
"""

MODELS = {"single": "a", "chain3": "b"}
VALUES = (np.arange(16, dtype=np.float32) * 0.5).reshape(1, 16)


def success_stats(port: int, model: str) -> tuple[int, int]:
    """The model's successful requests so far and their total in-server time (arrival to final
    response, statistics extension), to tell the pipeline's own time from the HTTP round trip."""
    url = f"http://127.0.0.1:{port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.loads(response.read())["model_stats"][0]["inference_stats"]["success"]
    return stats["count"], stats["ns"]


async def round_trips(
    session, urls: dict[str, str], body, headers, seconds: float
) -> dict[str, list[float]]:
    """Round-trip times (seconds) by model with one request in flight, the models taking turns
    request by request, so that both see the same moments of a noisy machine."""
    times: dict[str, list[float]] = {model: [] for model in urls}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for model, url in urls.items():
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{url}: HTTP {response.status}")
            times[model].append(time.perf_counter() - start)
    return times


async def latency_rounds(args: argparse.Namespace, port: int) -> tuple[dict, dict]:
    """Each model's round trips over every round (the models in turn), and its least mean
    in-server time of a round; each round printed."""
    import aiohttp

    body, headers = support.request_body("binary", VALUES)
    urls = {m: f"http://127.0.0.1:{port}/v2/models/{m}/infer" for m in MODELS}
    trips: dict[str, list[float]] = {model: [] for model in MODELS}
    best_inside: dict[str, float] = {}
    async with aiohttp.ClientSession(skip_auto_headers=["Accept-Encoding"]) as session:
        for round_index in range(args.rounds):
            before = {model: success_stats(port, model) for model in MODELS}
            times = await round_trips(session, urls, body, headers, args.duration)
            for model in MODELS:
                trips[model] += times[model]
                count, ns = (
                    a - b for a, b in zip(success_stats(port, model), before[model], strict=True)
                )
                inside = ns / max(1, count) / 1e3
                best_inside[model] = min(best_inside.get(model, float("inf")), inside)
                print(
                    f"  round {round_index + 1} ({MODELS[model]}) {model:7s} p50 "
                    f"{statistics.median(times[model]) * 1e6:7.1f} us (in server {inside:6.1f} us)",
                    flush=True,
                )
    return trips, best_inside


def bench(args: argparse.Namespace, port: int, pid: int, wrk_cpu: str | None, work: Path) -> int:
    servers = {m: (f"http://127.0.0.1:{port}/v2/models/{m}/infer", pid) for m in MODELS}
    # wrk_rounds checks each model's answer and warms both up first.
    samples = support.wrk_rounds(servers, "binary", VALUES, work, args, wrk_cpu)
    best_rate, best_cpu = support.best_of(samples)
    trips, best_inside = asyncio.run(latency_rounds(args, port))
    best_p50 = {model: statistics.median(trips[model]) * 1e6 for model in MODELS}
    print()
    print(
        f"{args.rounds} rounds x {args.duration}s: best throughput and CPU; p50 of every round "
        "trip, the models in turn"
    )
    print(f"{'':28s}{'(a) single':>12s}{'(b) chain3':>12s}{'(b)/(a)':>10s}{'target':>10s}")
    a, b = best_p50["single"], best_p50["chain3"]
    print(f"{'p50 latency, c1 (us)':28s}{a:12.1f}{b:12.1f}{b / a:10.2f}{'<= 1.5':>10s}")
    a, b = best_rate["single"], best_rate["chain3"]
    label = f"throughput, c{args.connections} (req/s)"
    print(f"{label:28s}{a:12.1f}{b:12.1f}{b / a:10.2f}{'>= 0.5':>10s}")
    if len(best_cpu) == 2:
        a, b = best_cpu["single"], best_cpu["chain3"]
        print(f"{'server CPU per request (us)':28s}{a:12.1f}{b:12.1f}{b / a:10.2f}")
    if len(best_inside) == 2:
        a, b = best_inside["single"], best_inside["chain3"]
        print(f"{'in-server time, c1 (us)':28s}{a:12.1f}{b:12.1f}{b / a:10.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    support.add_wrk_options(parser, rounds=5, duration=3)
    args = parser.parse_args()

    server_cpu, wrk_cpu = support.wrk_cores(args.no_pin)
    if wrk_cpu is not None:
        os.sched_setaffinity(0, {int(wrk_cpu)})  # the latency client beside wrk
    work = Path(tempfile.mkdtemp(prefix="nereid-ensemble-bench-"))
    process = None
    try:
        repository = ModelRepositoryBuilder(work / "models")
        for name in ("single", "step1", "step2", "step3"):
            repository.add(name, support.IDENTITY_CONFIG)
        repository.add("chain3", CHAIN)
        port = support.free_port()
        command = support.http_serve_command(repository.root, "nereid-http,nereid-ensemble", port)
        process = support.launch(command, server_cpu)
        support.wait_ready(port, process, "/v2/models/chain3/ready")
        return bench(args, port, process.pid, wrk_cpu, work)
    finally:
        if process is not None:
            support.stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
