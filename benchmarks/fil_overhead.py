"""FIL backend overhead: served throughput vs a bare ``treelite.gtil.predict`` loop.

The model is an XGBoost regressor (``--trees`` trees of depth ``--depth`` over 32 features,
trained here on random data with xgboost-cpu) saved as ``xgboost.json`` in a temporary
repository and served by the ``fil`` backend with ``dynamic_batching`` (``max_batch_size``
256, ``max_queue_delay_microseconds`` 100) and ``--instances`` CPU instances, each predicting
with ``cpu_nthread`` = ``--threads``.

Served: the kernel ``Server`` and ``api.infer`` (validation, dynamic batcher, instance threads,
gather/scatter, FIL post-processing, statistics, response streams) with 16 requests in flight,
each carrying 16 rows. Bare: ``--instances`` threads each looping ``treelite.gtil.predict`` with
the same ``nthread`` on batches of the batch size the server achieved. Target: served rows/s
over bare rows/s >= 0.85.

Served and bare rounds alternate (``--rounds``, ``--seconds`` each) and the best of each is
kept (the machine may be shared and noisy); the median of the rounds' own ratios is printed too.
Needs xgboost (``pip install xgboost-cpu``) and the ``nereid-dynamic-batcher`` scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np
import support
import treelite
import treelite.gtil
from nereid import Server

FEATURES = 32
ROWS_PER_REQUEST = 16
IN_FLIGHT = 16
MODELS = {"forest": 0}  # name: preferred_batch_size (0: none)


def build_model(path: Path, trees: int, depth: int) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, FEATURES)).astype(np.float32)
    y = x[:, 0] * 2 + np.sin(x[:, 1] * 3) + x[:, 2] * x[:, 3] + rng.standard_normal(20_000) * 0.1
    model = xgb.XGBRegressor(n_estimators=trees, max_depth=depth, n_jobs=os.cpu_count())
    model.fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.get_booster().save_model(str(path))


def config(threads: int, instances: int, preferred: int = 0) -> str:
    extra = f"preferred_batch_size: [ {preferred} ]" if preferred else ""
    return f"""
    backend: "fil"
    max_batch_size: 256
    input [ {{ name: "input__0" data_type: TYPE_FP32 dims: [ {FEATURES} ] }} ]
    output [ {{ name: "output__0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
    instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
    dynamic_batching {{ max_queue_delay_microseconds: 100 {extra} }}
    parameters [
      {{ key: "model_type" value: {{ string_value: "xgboost_json" }} }},
      {{ key: "output_class" value: {{ string_value: "false" }} }},
      {{ key: "cpu_nthread" value: {{ string_value: "{threads}" }} }}
    ]
    """


def bare_round(
    model_file: Path, threads: int, instances: int, rows: int, seconds: float
) -> support.Round:
    """``instances`` threads looping ``treelite.gtil.predict`` on ``rows``-row batches."""
    tl_model = treelite.frontend.load_xgboost_model(str(model_file), format_choice="json")
    x = np.random.default_rng(1).standard_normal((rows, FEATURES)).astype(np.float32)
    treelite.gtil.predict(tl_model, x, nthread=threads)  # warm up

    def step() -> int:
        treelite.gtil.predict(tl_model, x, nthread=threads)
        return rows

    return support.Round(*support.loop_threads([step] * instances, seconds), rows)


async def served_round(server: Server, model: str, seconds: float) -> support.Round:
    """``IN_FLIGHT`` requests of ``ROWS_PER_REQUEST`` rows in flight."""
    x = np.random.default_rng(1).standard_normal((ROWS_PER_REQUEST, FEATURES)).astype(np.float32)
    return await support.served_round(server, model, {"input__0": x}, IN_FLIGHT, seconds)


async def main(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="nereid-fil-bench-"))
    model_file = root / "forest" / "1" / "xgboost.json"
    build_model(model_file, args.trees, args.depth)
    for name, preferred in MODELS.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        if name != "forest":
            os.link(model_file, root / name / "1" / "xgboost.json")
        (root / name / "config.pbtxt").write_text(config(args.threads, args.instances, preferred))
    print(
        f"XGBoost regressor, {args.trees} trees of depth {args.depth}, {FEATURES} features; "
        f"{IN_FLIGHT} requests of {ROWS_PER_REQUEST} rows in flight, max batch 256; "
        f"instances {args.instances}, threads {args.threads}, cores "
        f"{len(os.sched_getaffinity(0))}, treelite {treelite.__version__}"
    )
    server = Server(str(root), log_info=False)
    await server.start()
    try:
        for model in MODELS:
            await measure(server, model, model_file, args)
    finally:
        await server.stop()


async def measure(server: Server, model: str, model_file: Path, args) -> None:
    await served_round(server, model, 0.5)  # warm up
    pairs = await support.batched_rounds(
        args.rounds,
        lambda: served_round(server, model, args.seconds),
        lambda rows: bare_round(model_file, args.threads, args.instances, rows, args.seconds),
    )
    support.report(model, 0.85, pairs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="cpu_nthread / gtil nthread")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args))
