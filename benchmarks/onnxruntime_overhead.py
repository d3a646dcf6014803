"""ONNX Runtime backend overhead: served throughput vs bare ``session.run`` loops.

The model is a 512-2048-2048-512 FP32 MLP (MatMul + Add + Relu, random weights, ~25 MB), built
with ``onnx.helper`` into a temporary repository. Every session, served or bare, has the same
intra-op thread count (``--threads``, default 1) and the same other options.

1. No batching, one row per request, concurrency 8: the kernel ``Server`` with two instances
   and ``api.infer`` (validation, default scheduler, instance threads, gather/scatter,
   statistics, response streams), against two threads each looping ``session.run`` on a
   session of its own. Target: served / bare >= 0.9.
2. Dynamic batching (max_batch_size 32, ``max_queue_delay_microseconds`` 1000), one row per
   request, concurrency 32, two instances: rows/s served, against two bare threads looping
   ``session.run`` on batches of the batch size the server achieved. Target: >= 0.85.

Served and bare rounds alternate (``--rounds``, ``--seconds`` each) and the best of each is
kept: the machine may be shared and noisy. Two checks on a lucky best are printed too: the
median of the rounds' own ratios (each round's two sides run back to back), and bare CPU time
per row over served CPU time per row, which moves little with the load of the machine (CPU time
counts only while a thread runs) and is what the throughput ratio tends to when both sides have
the cores to themselves.

Part 2 runs three times: as asked, with the batcher's default rule (fair share: each free
instance takes its share of the work in hand, about 16 rows each here); with
``preferred_batch_size: [ 16 ]`` added; and with Triton's batch formation rule
(``nereid.dynamic_batching.fair_share: false``), under which 32 clients and two instances
settle into full batches of 32 that the instances take in turns (one core computes at a time).

Needs ``onnx`` (to build the model) and, for part 2, the ``nereid-dynamic-batcher``
scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import support
from nereid import Server

try:
    from nereid_dynamic_batcher import TRITON_RULE
except ImportError:  # part 2 is skipped without the batcher
    TRITON_RULE = ""

SIZES = (512, 2048, 2048, 512)


def build_model(path: Path) -> None:
    support.save_mlp_onnx(path, SIZES)


# The dynamic-batching variants (see the docstring): what each adds inside ``dynamic_batching``
# and after it.
DYNAMIC_VARIANTS = {
    "mlp_dynamic": ("", ""),
    "mlp_dynamic_preferred16": ("preferred_batch_size: [ 16 ]", ""),
    "mlp_dynamic_triton_rule": ("", TRITON_RULE),
}


def config(threads: int, variant: str | None = None) -> str:
    text = f"""
    backend: "onnxruntime"
    max_batch_size: 32
    input [ {{ name: "X" data_type: TYPE_FP32 dims: [ {SIZES[0]} ] }} ]
    output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ {SIZES[-1]} ] }} ]
    instance_group [ {{ kind: KIND_CPU count: 2 }} ]
    parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}
    """
    if variant is not None:
        inside, after = DYNAMIC_VARIANTS[variant]
        text += f"dynamic_batching {{ max_queue_delay_microseconds: 1000 {inside} }}\n{after}"
    return text


# -- bare: two threads, each looping session.run on its own session ----------------------------


def bare_round(model: Path, threads: int, rows: int, seconds: float) -> support.Round:
    """Two threads looping ``session.run`` on batches of ``rows``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    sessions = [
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(2)
    ]
    x = np.random.default_rng(1).standard_normal((rows, SIZES[0])).astype(np.float32)
    for session in sessions:  # warm up
        session.run(["Y"], {"X": x})

    def step(session: ort.InferenceSession) -> Callable[[], int]:
        def run() -> int:
            session.run(["Y"], {"X": x})
            return rows

        return run

    rate, cpu_per_row = support.loop_threads([step(s) for s in sessions], seconds)
    return support.Round(rate, cpu_per_row, rows)


# -- served: api.infer with N one-row requests in flight ---------------------------------------

ROW = {"X": np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)}


async def no_batching(server: Server, model_file: Path, args) -> None:
    pairs = await support.alternating_rounds(
        args.rounds,
        lambda: bare_round(model_file, args.threads, 1, args.seconds),
        lambda: support.served_round(server, "mlp", ROW, 8, args.seconds),
    )
    support.report("no batching, concurrency 8", 0.9, pairs)


async def dynamic_batching(server: Server, model: str, model_file: Path, args) -> None:
    pairs = await support.batched_rounds(
        args.rounds,
        lambda: support.served_round(server, model, ROW, 32, args.seconds),
        lambda rows: bare_round(model_file, args.threads, rows, args.seconds),
    )
    support.report(f"{model}, concurrency 32", 0.85, pairs)


async def main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="nereid-ort-bench-"))
    model_file = root / "mlp" / "1" / "model.onnx"
    build_model(model_file)
    models = {"mlp": config(args.threads)}
    have_dynamic = importlib.util.find_spec("nereid_dynamic_batcher") is not None
    if have_dynamic:
        models.update({name: config(args.threads, name) for name in DYNAMIC_VARIANTS})
    for name, text in models.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        if name != "mlp":
            os.link(model_file, root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(text)
    print(
        f"model {'-'.join(map(str, SIZES))} FP32 MLP, intra-op threads {args.threads}, "
        f"cores {len(os.sched_getaffinity(0))}, onnxruntime {ort.__version__}"
    )
    server = Server(str(root), log_info=False)
    await server.start()
    try:
        await no_batching(server, model_file, args)
        if not have_dynamic:
            print("dynamic batching: skipped, nereid-dynamic-batcher is not installed")
            return
        for name in DYNAMIC_VARIANTS:
            await dynamic_batching(server, name, model_file, args)
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    args = parser.parse_args()
    asyncio.run(main(args))
