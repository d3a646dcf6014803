"""OpenVINO backend overhead: served throughput vs bare ``InferRequest.infer`` loops.

The model is a 512-2048-2048-512 FP32 MLP (MatMul + Add + Relu, random weights, ~25 MB), built
with ``onnx.helper`` and converted to OpenVINO IR (``model.xml`` + ``model.bin``, FP32 weights)
into a temporary repository.

No batching, one row per request, concurrency 8: the kernel ``Server`` with two instances and
``api.infer`` (validation, default scheduler, instance threads, gather/scatter, statistics,
response streams), against two threads each looping ``InferRequest.infer`` on an infer request
of its own, both on one compiled model compiled with the same properties the backend uses
(``nereid_openvino.options.compile_plan`` of the same configuration: by default one stream per
instance and the available cores as inference threads, f32 precision). Target: served / bare
>= 0.9.

Served and bare rounds alternate (``--rounds``, ``--seconds`` each) and the best of each is kept:
the machine may be shared and noisy. Two checks on a lucky best are printed too: the median of
the rounds' own ratios, and bare CPU time per row over served CPU time per row.

``--async-check`` also times the bare loop with ``start_async()`` + ``wait()`` instead of
``infer()``: the backend uses ``infer()`` because an instance has one batch at a time, and an
asynchronous request would have nothing to overlap with.

Needs ``onnx`` (to build the model) and ``openvino``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import support
from nereid import InferenceRequest, Server, Tensor
from nereid.config import parse_pbtxt
from nereid_openvino.options import compile_plan

SIZES = (512, 2048, 2048, 512)


def build_model(folder: Path) -> Path:
    """``folder/model.xml`` (+ ``model.bin``) converted from an ONNX MLP made with onnx.helper."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder.parent / "mlp.onnx"
    support.save_mlp_onnx(onnx_path, SIZES)
    xml = folder / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    onnx_path.unlink()
    return xml


def config(extra: str) -> str:
    return f"""
    name: "mlp"
    backend: "openvino"
    max_batch_size: 32
    input [ {{ name: "X" data_type: TYPE_FP32 dims: [ {SIZES[0]} ] }} ]
    output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ {SIZES[-1]} ] }} ]
    instance_group [ {{ kind: KIND_CPU count: 2 }} ]
    {extra}
    """


@dataclass
class Round:
    rate: float  # rows per second
    cpu_per_row: float  # process CPU seconds per row


# -- bare: two threads, each looping infer on its own request of one compiled model ----------


def compile_bare(xml: Path, text: str) -> ov.CompiledModel:
    """The model compiled as the backend compiles it for this configuration (batch dimension
    dynamic, the same properties)."""
    plan = compile_plan(parse_pbtxt(text))
    core = ov.Core()
    model = core.read_model(str(xml))
    return core.compile_model(model, plan.device, plan.properties)


def bare_round(compiled: ov.CompiledModel, seconds: float, use_async: bool = False) -> Round:
    requests = [compiled.create_infer_request() for _ in range(2)]
    x = np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)
    port = compiled.input(0)
    for request in requests:  # warm up
        request.infer({port: x}, share_inputs=True)

    def step(request: ov.InferRequest) -> Callable[[], int]:
        def run() -> int:
            if use_async:
                request.start_async({port: x}, share_inputs=True)
                request.wait()
                request.get_output_tensor(0).data.copy()
            else:
                request.infer({port: x}, share_inputs=True)
            return 1

        return run

    return Round(*support.loop_threads([step(r) for r in requests], seconds))


# -- served: api.infer with 8 requests in flight ------------------------------------------------


async def served_round(server: Server, seconds: float) -> Round:
    api = server.api
    x = np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)

    async def submit() -> None:
        await api.infer(InferenceRequest("mlp", [Tensor("X", x)])).single()

    cpu = time.process_time()
    done, elapsed = await support.keep_in_flight(submit, 8, seconds)
    cpu = time.process_time() - cpu
    return Round(done / elapsed, cpu / max(done, 1))


def report(pairs: list[tuple[Round, Round]]) -> None:
    best_served = max(served.rate for served, _ in pairs)
    best_bare = max(bare.rate for _, bare in pairs)
    ratios = [served.rate / bare.rate for served, bare in pairs]
    cpu = [bare.cpu_per_row / served.cpu_per_row for served, bare in pairs]
    bare_us = statistics.median(bare.cpu_per_row for _, bare in pairs) * 1e6
    served_us = statistics.median(served.cpu_per_row for served, _ in pairs) * 1e6
    print(
        f"no batching, concurrency 8: served {best_served:,.0f} rows/s / bare {best_bare:,.0f} "
        f"rows/s = {best_served / best_bare:.3f}  (target >= 0.9)\n"
        f"    median of the rounds' ratios {statistics.median(ratios):.3f}; CPU per row, bare / "
        f"served: {statistics.median(cpu):.3f} ({bare_us:.0f} vs {served_us:.0f} us)"
    )


async def main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="nereid-ov-bench-"))
    xml = build_model(root / "mlp" / "1")
    extra = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in (
            ("PERFORMANCE_HINT", args.hint),
            ("NUM_STREAMS", args.streams),
            ("INFERENCE_NUM_THREADS", args.threads),
            ("ENABLE_CPU_PINNING", args.pinning),
        )
        if value
    )
    text = config(extra)
    (root / "mlp" / "config.pbtxt").write_text(text)
    plan = compile_plan(parse_pbtxt(text))
    print(
        f"model {'-'.join(map(str, SIZES))} FP32 MLP (IR), openvino {ov.__version__}, "
        f"cores {len(os.sched_getaffinity(0))}, compiled with {plan.properties}"
    )
    compiled = compile_bare(xml, text)
    if args.async_check:
        sync, asyn = [], []
        for index in range(args.rounds):  # interleaved, alternating which goes first
            for use_async in (False, True) if index % 2 == 0 else (True, False):
                rate = bare_round(compiled, args.seconds, use_async=use_async).rate
                (asyn if use_async else sync).append(rate)
        ratios = [a / s for a, s in zip(asyn, sync, strict=True)]
        print(
            f"bare loops, infer(): best {max(sync):,.0f} rows/s, median "
            f"{statistics.median(sync):,.0f}; start_async()+wait(): best {max(asyn):,.0f}, "
            f"median {statistics.median(asyn):,.0f}; median of the rounds' async / sync "
            f"{statistics.median(ratios):.3f}"
        )
    server = Server(str(root), log_info=False)
    await server.start()
    try:
        pairs = []
        for index in range(args.rounds):
            if index % 2 == 0:  # alternate which side goes first
                bare = await asyncio.to_thread(bare_round, compiled, args.seconds)
                served = await served_round(server, args.seconds)
            else:
                served = await served_round(server, args.seconds)
                bare = await asyncio.to_thread(bare_round, compiled, args.seconds)
            pairs.append((served, bare))
            print(
                f"  round {index + 1}: served {served.rate:,.0f} rows/s, bare {bare.rate:,.0f} "
                f"rows/s: {served.rate / bare.rate:.2f}"
            )
        report(pairs)
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--hint", default="", help="PERFORMANCE_HINT (default: none)")
    parser.add_argument("--streams", default="", help="NUM_STREAMS (default: one per instance)")
    parser.add_argument("--threads", default="", help="INFERENCE_NUM_THREADS (default: cores)")
    parser.add_argument("--pinning", default="", help="ENABLE_CPU_PINNING YES/NO (default: OV's)")
    parser.add_argument("--async-check", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args))
