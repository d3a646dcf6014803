"""PyTorch backend overhead: served throughput vs a bare loop of the same TorchScript module.

The model is a 512-2048-2048-512 FP32 MLP (Linear + ReLU, seeded random weights, ~25 MB),
traced with ``torch.jit.trace`` and saved into a temporary repository as ``model.pt``.

No batching, one row per request, concurrency 8: the kernel ``Server`` with two KIND_CPU
instances and ``api.infer`` (validation, default scheduler, instance threads, gather/scatter,
statistics, response streams), against two threads each looping the module (its own
``torch.jit.load``) under ``torch.inference_mode()``. torch's intra-op thread count is
process-wide; both sides run with ``--threads`` (default 1, set through the model's
``INTRA_OP_THREAD_COUNT`` when served). Target: served / bare >= 0.9.

Served and bare rounds alternate (``--rounds``, ``--seconds`` each) and the best of each is
kept: the machine may be shared and noisy. Two checks on a lucky best are printed too: the
median of the rounds' own ratios, and bare CPU time per row over served CPU time per row, which
moves little with the load of the machine.

Needs torch and the ``nereid-pytorch`` plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import support
import torch
from nereid import Server

SIZES = (512, 2048, 2048, 512)


def build_model(path: Path) -> None:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for a, b in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    module = torch.nn.Sequential(*layers[:-1]).eval()
    traced = torch.jit.trace(module, torch.zeros(1, SIZES[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))


def config(threads: int) -> str:
    return f"""
    backend: "pytorch"
    max_batch_size: 32
    input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ {SIZES[0]} ] }} ]
    output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ {SIZES[-1]} ] }} ]
    instance_group [ {{ kind: KIND_CPU count: 2 }} ]
    parameters {{ key: "INTRA_OP_THREAD_COUNT" value: {{ string_value: "{threads}" }} }}
    """


def bare_round(model: Path, threads: int, seconds: float) -> support.Round:
    """Two threads looping the module on one row each."""
    torch.set_num_threads(threads)
    modules = [torch.jit.load(str(model), map_location="cpu").eval() for _ in range(2)]
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, SIZES[0])).astype("f4"))
    with torch.inference_mode():
        for module in modules:  # warm up (the profiling executor optimizes after a few runs)
            for _ in range(3):
                module(x)

    def step(module: torch.jit.ScriptModule) -> Callable[[], int]:
        def run() -> int:
            with torch.inference_mode():  # as the backend runs each execution
                module(x).numpy()
            return 1

        return run

    return support.Round(*support.loop_threads([step(m) for m in modules], seconds))


async def main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="nereid-torch-bench-"))
    model_file = root / "mlp" / "1" / "model.pt"
    build_model(model_file)
    (root / "mlp" / "config.pbtxt").write_text(config(args.threads))
    print(
        f"model {'-'.join(map(str, SIZES))} FP32 MLP (TorchScript), torch threads "
        f"{args.threads}, cores {len(os.sched_getaffinity(0))}, torch {torch.__version__}"
    )
    row = {"INPUT__0": np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)}
    server = Server(str(root), log_info=False)
    await server.start()
    try:
        await support.served_round(server, "mlp", row, 8, 0.5)  # warm up both instances
        pairs = await support.alternating_rounds(
            args.rounds,
            lambda: bare_round(model_file, args.threads, args.seconds),
            lambda: support.served_round(server, "mlp", row, 8, args.seconds),
        )
    finally:
        await server.stop()
    support.report("no batching, concurrency 8, two instances", 0.9, pairs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    asyncio.run(main(parser.parse_args()))
