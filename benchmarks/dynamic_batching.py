"""Dynamic batching: a numpy MLP served in-process with and without the dynamic batcher.

The model is a 512-2048-2048-512 FP32 MLP (ReLU between layers, weights from a seeded RNG)
defined here as a backend; numpy's BLAS releases the GIL and is held to one thread per
instance. Two instances, ``max_batch_size`` 32, served through the kernel API (``Server`` +
``api.infer``) by coroutines keeping a fixed number of requests in flight:

- batched: ``dynamic_batching { max_queue_delay_microseconds: 1000 }``;
- plain: the same model without ``dynamic_batching`` (the default scheduler, one request per
  execution);
- bare: two threads running the MLP back to back, no server: at the batched run's mean batch
  size (rounded), as the target is worded; and on the very batch sizes the batcher formed, in
  the same mix. The two differ where BLAS does: a batch of 15 rows runs about 30% slower than
  one of 16, so a mean of 14.8 made of batches of 16 and 8 compares flatteringly with 15.

Rounds alternate the runs (best of each kept), since the machine is shared and noisy. Prints:

- the mean batch size the batcher formed at concurrency 32;
- batched throughput / bare loop throughput at that batch size (target >= 0.85), and the same
  against the bare loop of the same batches;
- batched throughput / plain throughput at concurrency 32 (target >= 3), and beside it the same
  ratio for bare loops (the batched run's batches / batch 1): what batching can give this model
  on this machine, which a server adds overhead to;
- p50 latency at concurrency 1, batched / plain (target <= 1.3).

Each round also shows how busy the instances were: the time in ``execute``, timed on their own
threads, over the time from their first execution to their last.

The batcher runs with its default rule, fair share (see docs/dynamic_batching.md).
``--triton-rule`` also serves a third model with ``nereid.dynamic_batching.fair_share: false``
(Triton's rule: one free instance takes everything queued, and a batch that is not full waits
for the delay) and prints its figures beside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per instance: set before numpy loads

import nereid  # noqa: E402  (numpy is imported from here on)
import numpy as np  # noqa: E402
import support  # noqa: E402
from nereid import InferenceRequest, Server, Tensor  # noqa: E402
from nereid.backend import Backend, Model, ModelInstance  # noqa: E402
from nereid.runtime.batching import gather_inputs, scatter_outputs  # noqa: E402
from nereid.testing import ModelRepositoryBuilder  # noqa: E402
from nereid_dynamic_batcher import TRITON_RULE  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # the environment variables above do the same
    threadpool_limits = None

LAYERS = (512, 2048, 2048, 512)
MAX_BATCH = 32
INSTANCES = 2


class MLP:
    """The model itself: three dense layers, ReLU between them."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = [
            (rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a)).astype(np.float32)
            for a, b in itertools.pairwise(LAYERS)
        ]
        self.biases = [np.zeros(b, np.float32) for b in LAYERS[1:]]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ weight
            x += bias
            if index < last:
                np.maximum(x, 0, out=x)
        return x


class MLPInstance(ModelInstance):
    def __init__(self, mlp: MLP) -> None:
        self.mlp = mlp

    def execute(self, requests):
        start = time.perf_counter()
        x = gather_inputs(requests)["INPUT"]
        scatter_outputs(requests, {"OUTPUT": self.mlp(x)})
        EXECUTIONS.record(start, time.perf_counter(), len(x))


class MLPModel(Model):
    def __init__(self, mlp: MLP) -> None:
        self.mlp = mlp

    def create_instance(self, spec):
        return MLPInstance(self.mlp)


class MLPBackend(Backend):
    def __init__(self, context) -> None:
        self.context = context
        self.mlp = MLP()

    def create_model(self, config, path):
        return MLPModel(self.mlp)


class BenchmarkPlugin:
    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("bench_mlp", MLPBackend)


def config(batching: str) -> str:
    return f"""
    backend: "bench_mlp"
    max_batch_size: {MAX_BATCH}
    input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ {LAYERS[0]} ] }} ]
    output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ {LAYERS[-1]} ] }} ]
    instance_group [ {{ kind: KIND_CPU count: {INSTANCES} }} ]
    {batching}
    """


BATCHED = "dynamic_batching { max_queue_delay_microseconds: 1000 }"
TRITON_RULE = f"{BATCHED}\n{TRITON_RULE}"


class Executions:
    """What the instances executed, timed on their own threads: batch sizes, and the fraction
    of the time each instance was executing (observers hear of an execution later, on the
    event loop, so they cannot tell)."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, float, float, int]] = []  # thread, start, end, rows

    def clear(self) -> None:
        self.runs = []

    def record(self, start: float, end: float, rows: int) -> None:
        self.runs.append((threading.get_ident(), start, end, rows))  # list.append is atomic

    def sizes(self) -> list[int]:
        return [rows for _, _, _, rows in self.runs]

    def busy(self) -> float:
        """The mean, over the instances, of the time executing over the time from the first
        execution's start to the last one's end."""
        by_thread: dict[int, list[tuple[float, float]]] = {}
        for thread, start, end, _ in self.runs:
            by_thread.setdefault(thread, []).append((start, end))
        fractions = [
            sum(end - start for start, end in runs)
            / max(max(end for _, end in runs) - min(start for start, _ in runs), 1e-9)
            for runs in by_thread.values()
        ]
        return statistics.mean(fractions) if fractions else 0.0


EXECUTIONS = Executions()


async def serve(server: Server, model: str, concurrency: int, seconds: float) -> dict:
    """Keep ``concurrency`` requests in flight for ``seconds``: rows/s, p50 latency (s), the
    mean batch size the model executed, the batch sizes and how busy the instances were."""
    api = server.api
    sample = np.random.default_rng(1).standard_normal((1, LAYERS[0]), dtype=np.float32)
    latencies: list[float] = []
    before = api.model_statistics(model)[0]

    async def submit() -> None:
        start = time.perf_counter()
        await api.infer(InferenceRequest(model, [Tensor("INPUT", sample)])).single()
        latencies.append(time.perf_counter() - start)

    EXECUTIONS.clear()
    _, elapsed = await support.keep_in_flight(submit, concurrency, seconds)
    await asyncio.sleep(0.01)  # statistics are recorded just after the responses
    after = api.model_statistics(model)[0]
    count = after["execution_count"] - before["execution_count"]
    rows = after["inference_count"] - before["inference_count"]
    return {
        "throughput": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "batch": rows / max(count, 1),
        "sizes": EXECUTIONS.sizes(),
        "busy": EXECUTIONS.busy(),
    }


def bare(mlp: MLP, sizes: list[int], seconds: float, threads: int = INSTANCES) -> float:
    """Rows/s of ``threads`` threads running the MLP back to back on batches of ``sizes``
    rows, in turn (each thread from its own place in the list)."""
    x = np.random.default_rng(2).standard_normal((max(sizes), LAYERS[0]), dtype=np.float32)

    def step(index: int) -> Callable[[], int]:
        turns = itertools.islice(itertools.cycle(sizes), index * len(sizes) // threads, None)

        def run() -> int:
            rows = next(turns)
            mlp(x[:rows])
            return rows

        return run

    return support.loop_threads([step(i) for i in range(threads)], seconds)[0]


async def main(rounds: int, seconds: float, concurrency: int, triton_rule: bool) -> None:
    root = tempfile.mkdtemp()
    repository = ModelRepositoryBuilder(root)
    repository.add("batched", config(BATCHED))
    repository.add("plain", config(""))
    variants = ["batched"]
    if triton_rule:
        repository.add("triton", config(TRITON_RULE))
        variants.append("triton")
    server = Server(root, plugins=[BenchmarkPlugin()], log_info=False)
    await server.start()
    mlp = MLP()
    # Best of the rounds: highest throughput (and the batch size it ran at), lowest p50, and the
    # highest bare-loop rates seen: at each mean batch size, and on each model's batches.
    served: dict[str, tuple[float, float]] = {}
    p50: dict[str, float] = {}
    bare_rates: dict[int, float] = {}
    bare_same: dict[str, float] = {}
    try:
        for model in [*variants, "plain"]:  # warm up every model and BLAS
            await serve(server, model, concurrency, 0.5)
        for index in range(rounds):
            line = [f"round {index + 1}:"]
            for model in [*variants, "plain"]:
                high = await serve(server, model, concurrency, seconds)
                if model not in served or high["throughput"] > served[model][0]:
                    served[model] = (high["throughput"], high["batch"])
                line.append(f"{model} c{concurrency} {high['throughput']:,.0f}/s")
                if model != "plain":
                    batch = max(1, round(high["batch"]))
                    rate = await asyncio.to_thread(bare, mlp, [batch], seconds)
                    bare_rates[batch] = max(rate, bare_rates.get(batch, 0.0))
                    same = await asyncio.to_thread(bare, mlp, high["sizes"], seconds)
                    bare_same[model] = max(same, bare_same.get(model, 0.0))
                    line.append(
                        f"(batch {high['batch']:.1f}, instances busy {high['busy']:.0%}; "
                        f"bare {rate:,.0f}/s, on its batches {same:,.0f}/s)"
                    )
                else:
                    rate = await asyncio.to_thread(bare, mlp, [1], seconds)
                    bare_rates[1] = max(rate, bare_rates.get(1, 0.0))
                    line.append(f"(instances busy {high['busy']:.0%}; bare {rate:,.0f}/s)")
            for model in [*variants, "plain"]:
                low = await serve(server, model, 1, seconds / 2)
                p50[model] = min(low["p50"], p50.get(model, float("inf")))
                line.append(f"{model} c1 p50 {low['p50'] * 1e3:.2f} ms")
            print(" ".join(line), flush=True)
    finally:
        await server.stop()

    print()
    plain_rate = served["plain"][0]
    for model in variants:
        label = "" if model == "batched" else "  [Triton's rule]"
        rate, batch = served[model]
        reference = bare_rates[max(1, round(batch))]
        print(f"mean batch size at concurrency {concurrency}:         {batch:.1f}{label}")
        print(
            f"served / bare loop at that batch size:       {rate / reference:.2f}  "
            f"(target >= 0.85)  [{rate:,.0f} vs {reference:,.0f} rows/s]{label}"
        )
        same = bare_same[model]
        print(
            f"served / bare loop of the same batches:      {rate / same:.2f}  "
            f"[{rate:,.0f} vs {same:,.0f} rows/s]{label}"
        )
        print(
            f"batched / unbatched throughput:              {rate / plain_rate:.2f}  "
            f"(target >= 3)  [{rate:,.0f} vs {plain_rate:,.0f} req/s]{label}"
        )
        print(
            f"  the same, bare loops (batches / batch 1):  {same / bare_rates[1]:.2f}  "
            f"[{same:,.0f} vs {bare_rates[1]:,.0f} rows/s: what batching gives this model on "
            f"this machine]{label}"
        )
        print(
            f"p50 at concurrency 1, batched / unbatched:   {p50[model] / p50['plain']:.2f}  "
            f"(target <= 1.3)  [{p50[model] * 1e3:.2f} vs {p50['plain'] * 1e3:.2f} ms]{label}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--triton-rule", action="store_true", help="also Triton's batch rule")
    args = parser.parse_args()
    limits = threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()
    with limits:
        asyncio.run(main(args.rounds, args.seconds, args.concurrency, args.triton_rule))
