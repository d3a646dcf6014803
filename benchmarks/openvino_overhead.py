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

The bare side is measured both ways each round, and the faster is the baseline: two threads
looping ``infer()``, and two threads each keeping ``NUM_INFER_REQUESTS`` requests started as the
backend's instances do (``--infer-requests``, default 2; 1 serves with synchronous requests).

Needs ``onnx`` (to build the model) and ``openvino``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import support
from nereid import Server
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


# -- bare: two threads, each looping infer on its own request of one compiled model ----------


def compile_bare(xml: Path, text: str) -> ov.CompiledModel:
    """The model compiled as the backend compiles it for this configuration (batch dimension
    dynamic, the same properties)."""
    plan = compile_plan(parse_pbtxt(text))
    core = ov.Core()
    model = core.read_model(str(xml))
    return core.compile_model(model, plan.device, plan.properties)


def bare_round(compiled: ov.CompiledModel, seconds: float, in_flight: int) -> support.Round:
    """Two threads on one row each. With ``in_flight`` 1 each loops ``infer()`` on an infer
    request of its own; with more, each keeps that many of its requests started, as the
    backend's instances do (wait for the oldest, copy its output, start it again)."""
    x = np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)
    feeds = {compiled.input(0): x}
    every: list[ov.InferRequest] = []

    def step() -> Callable[[], int]:
        requests = [compiled.create_infer_request() for _ in range(in_flight)]
        every.extend(requests)
        for request in requests:  # warm up
            request.infer(feeds, share_inputs=True)
        if in_flight == 1:

            def run_sync() -> int:
                requests[0].infer(feeds, share_inputs=True)
                return 1

            return run_sync
        running = collections.deque(requests)
        for request in requests:
            request.start_async(feeds, share_inputs=True)

        def run() -> int:
            request = running.popleft()
            request.wait()
            request.results  # noqa: B018 - the copy of the outputs the backend makes
            request.start_async(feeds, share_inputs=True)
            running.append(request)
            return 1

        return run

    result = support.Round(*support.loop_threads([step(), step()], seconds))
    for request in every:
        request.wait()
    return result


def faster_bare(compiled: ov.CompiledModel, seconds: float, in_flight: int) -> support.Round:
    """The baseline of a round: the faster of the two bare forms (both printed)."""
    forms = {n: bare_round(compiled, seconds, n) for n in sorted({1, in_flight})}
    if len(forms) > 1:
        print(
            f"    bare: infer() {forms[1].rate:,.0f} rows/s, {in_flight} requests started per "
            f"thread {forms[in_flight].rate:,.0f} rows/s"
        )
    return max(forms.values(), key=lambda form: form.rate)


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
            ("NUM_INFER_REQUESTS", args.infer_requests),
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
    row = {"X": np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)}
    server = Server(str(root), log_info=False)
    await server.start()
    try:
        pairs = await support.alternating_rounds(
            args.rounds,
            lambda: faster_bare(compiled, args.seconds, plan.infer_requests),
            lambda: support.served_round(server, "mlp", row, 8, args.seconds),
        )
        support.report("no batching, concurrency 8", 0.9, pairs)
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
    parser.add_argument(
        "--infer-requests", default="", help="NUM_INFER_REQUESTS per instance (default: 2)"
    )
    args = parser.parse_args()
    asyncio.run(main(args))
