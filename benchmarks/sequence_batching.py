"""Sequence batching: 32 interleaved sequences through an ONNX model, sequence batcher against
the dynamic batcher.

The model is Triton's ``simple_sequence`` as its client examples expect it, built with
``onnx.helper``: INT32 ``INPUT``, ``START``, ``READY`` (each ``[N, 1]``), ``OUTPUT = (INPUT +
START) * READY``. One ONNX file is served twice, in-process through the kernel API (``Server``
+ ``api.infer``), one instance, one intra-op thread, ``max_batch_size`` 4:

- sequence: ``sequence_batching { direct { } }`` with START and READY as control inputs: 4 slots,
  so 4 sequences run at a time and the others wait in the backlog. Requests carry
  ``sequence_id`` and the START/END flags; the scheduler fills in START and READY.
- dynamic: the same file with ``dynamic_batching { }``, START and READY listed as inputs that the
  client sends (READY 1, START 1 on a sequence's first request); no sequence ids.

Each of the 32 sequences (``--sequences``) is a client coroutine sending ``--length`` (256) requests
in order; ``--window`` of them in flight at a time (1: each request waits for the previous
response, as Triton's sync examples do; more: the stream examples' pipelining). Every response
is checked. Throughput is requests per second over the whole run; rounds alternate the two
servers (``--rounds``, best of each kept, since the machine is shared and noisy), and the
median of the rounds' own ratios is printed as a check on a lucky best.

Target: sequence / dynamic >= 0.7 at the defaults. Requests per CPU second of the process (best
of rounds, both sides) are compared too: on a shared machine the CPU time a request costs moves
much less than wall-clock throughput. Also printed: the same with the ``oldest``
strategy (``max_candidate_sequences`` 32: every sequence a candidate, batches of 4 oldest
first), and with ``--window`` 2 for both strategies, for the picture.

Needs ``onnx``, ``onnxruntime``, ``nereid-onnxruntime``, ``nereid-sequence-batcher`` and
``nereid-dynamic-batcher``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from nereid import InferenceRequest, Server, Tensor
from nereid.testing import ModelRepositoryBuilder

MAX_BATCH = 4

COMMON = """
backend: "onnxruntime"
max_batch_size: 4
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
"""
SEQUENCE_CONFIG = (
    COMMON
    + """
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  %s
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
"""
)
DYNAMIC_CONFIG = (
    COMMON
    + """
input [
  { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "START" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "READY" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { }
"""
)
STRATEGIES = {
    "direct": "direct { }",
    "oldest": "oldest { max_candidate_sequences: 32 }",
}


def simple_sequence_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    def io(name: str):
        return helper.make_tensor_value_info(name, TensorProto.INT32, ["N", 1])

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT", "START"], ["sum"]),
            helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"]),
        ],
        "simple_sequence",
        [io("INPUT"), io("START"), io("READY")],
        [io("OUTPUT")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_repository(root: Path) -> None:
    repository = ModelRepositoryBuilder(root)
    onnx_file = simple_sequence_onnx()
    for strategy, text in STRATEGIES.items():
        repository.add(
            f"seq_{strategy}", SEQUENCE_CONFIG % text, versions={1: {"model.onnx": onnx_file}}
        )
    repository.add("dynamic", DYNAMIC_CONFIG, versions={1: {"model.onnx": onnx_file}})


_ONE = np.ones((1, 1), np.int32)
_ZERO = np.zeros((1, 1), np.int32)


def _values(sequence: int, length: int) -> list[np.ndarray]:
    return [np.full((1, 1), sequence * 1000 + step, np.int32) for step in range(length)]


async def run(
    server: Server, model: str, sequences: int, length: int, window: int
) -> tuple[float, float]:
    """Requests per second of ``sequences`` clients, each sending ``length`` requests with up
    to ``window`` in flight (every response checked), and requests per CPU second of the
    process (all its threads)."""
    api = server.api
    use_sequences = model != "dynamic"
    base = int(time.monotonic_ns() % 1_000_000) * 1000  # fresh correlation ids every round

    async def client(index: int) -> None:
        values = _values(index, length)
        pending: list[tuple[asyncio.Future, int]] = []

        def send(step: int) -> None:
            x = values[step]
            start = step == 0
            if use_sequences:
                request = InferenceRequest(
                    model,
                    [Tensor("INPUT", x)],
                    sequence_id=base + index + 1,
                    sequence_start=start,
                    sequence_end=step == length - 1,
                )
            else:
                request = InferenceRequest(
                    model,
                    [
                        Tensor("INPUT", x),
                        Tensor("START", _ONE if start else _ZERO),
                        Tensor("READY", _ONE),
                    ],
                )
            expected = int(x[0, 0]) + (1 if start else 0)
            pending.append((asyncio.ensure_future(api.infer(request).single()), expected))

        step = 0
        while step < length or pending:
            while step < length and len(pending) < window:
                send(step)
                step += 1
            future, expected = pending.pop(0)
            response = await future
            got = int(response.as_numpy("OUTPUT")[0, 0])
            assert got == expected, (model, index, got, expected)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(sequences)))
    count = sequences * length
    return count / (time.perf_counter() - began), count / (time.process_time() - cpu)


def batch_size(server: Server, model: str) -> float:
    stats = server.api.model_statistics(model)[0]
    return stats["inference_count"] / max(stats["execution_count"], 1)


async def compare(server: Server, strategy: str, args, window: int) -> dict[str, float]:
    model = f"seq_{strategy}"
    best = {"seq": 0.0, "dyn": 0.0, "seq_cpu": 0.0, "dyn_cpu": 0.0}
    ratios = []
    for index in range(args.rounds):
        if index % 2 == 0:
            seq, seq_cpu = await run(server, model, args.sequences, args.length, window)
            dyn, dyn_cpu = await run(server, "dynamic", args.sequences, args.length, window)
        else:
            dyn, dyn_cpu = await run(server, "dynamic", args.sequences, args.length, window)
            seq, seq_cpu = await run(server, model, args.sequences, args.length, window)
        for key, value in (("seq", seq), ("dyn", dyn), ("seq_cpu", seq_cpu), ("dyn_cpu", dyn_cpu)):
            best[key] = max(best[key], value)
        ratios.append(seq / dyn)
        if args.verbose:
            print(
                f"    round {index + 1}: sequence {seq:,.0f} req/s ({seq_cpu:,.0f} per CPU s), "
                f"dynamic {dyn:,.0f} req/s ({dyn_cpu:,.0f} per CPU s)"
            )
    best["median"] = statistics.median(ratios)
    return best


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        build_repository(root)
        server = Server(str(root), log_info=False)
        await server.start()
        try:
            for model in ("seq_direct", "seq_oldest", "dynamic"):  # warm up
                await run(server, model, args.sequences, 4, 1)
            cases = [("direct", args.window), ("oldest", args.window)]
            if args.window == 1:
                cases += [("direct", 2), ("oldest", 2)]
            for number, (strategy, window) in enumerate(cases):
                best = await compare(server, strategy, args, window)
                target = "  (target >= 0.7)" if number == 0 else ""
                print(
                    f"{strategy:6} window {window}: sequence {best['seq']:,.0f} req/s / dynamic "
                    f"{best['dyn']:,.0f} req/s = {best['seq'] / best['dyn']:.3f}{target}; median "
                    f"of the rounds' ratios {best['median']:.3f}; per CPU second "
                    f"{best['seq_cpu'] / best['dyn_cpu']:.3f}"
                )
            print(
                f"mean batch size: direct {batch_size(server, 'seq_direct'):.2f}, oldest "
                f"{batch_size(server, 'seq_oldest'):.2f}, dynamic "
                f"{batch_size(server, 'dynamic'):.2f} (max_batch_size {MAX_BATCH})"
            )
        finally:
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=256, help="requests per sequence")
    parser.add_argument("--window", type=int, default=1, help="requests in flight per sequence")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--verbose", action="store_true")
    asyncio.run(main(parser.parse_args()))
