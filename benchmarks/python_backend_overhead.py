"""Python backend overhead: a Python identity model against the built-in identity backend.

One ``nereid serve`` (HTTP frontend only) serves three models with the same configuration (one
FP32[1,16] input ``INPUT0`` returned as ``OUTPUT0``, one instance unless ``--instances N``, no
dynamic batching):

(a) ``identity``   -- ``backend: "identity"``, the kernel's built-in identity backend;
(b) ``py_process`` -- a Triton Python-backend ``model.py`` doing the same, in a process of its
    own (the default ``execution_mode``): inputs and outputs cross through shared memory;
(c) ``py_thread``  -- the same ``model.py`` with ``execution_mode: thread`` (in the server
    process, on the instance thread).

Each is loaded with ``wrk`` at concurrency 16 (binary tensor extension, or JSON with
``--body json``); the models are alternated over several rounds and the best of each is kept.
The ratios (b)/(a) and (c)/(a) are what the Python backend costs over a backend that does
nothing. Run from the repository root::

    python benchmarks/python_backend_overhead.py [--rounds 5] [--duration 3] [--connections 16]

Needs the nereid, nereid-http and nereid-python distributions; ``wrk`` when installed
(``apt-get install -y wrk``), else a slower load generator on aiohttp (the ratios stay
meaningful, the absolute figures are lower).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import support

SHAPE = [1, 16]
MODELS = ("identity", "py_process", "py_thread")

CONFIG = """
{backend}
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
{extra}
"""

MODEL_PY = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
            return responses
    """
)

LOADER = textwrap.dedent(
    """
    import asyncio, sys, time

    import aiohttp

    async def main(url, body, headers, connections, duration):
        count = 0
        bad = 0
        deadline = time.monotonic() + duration
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def worker():
                nonlocal count, bad
                while time.monotonic() < deadline:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            bad += 1
                        count += 1
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.monotonic() - started
        print(f"{count / elapsed} {bad}")

    url, body_file, headers, connections, duration = sys.argv[1:6]
    headers = dict(h.split(":", 1) for h in headers.split("|") if h)
    asyncio.run(main(url, open(body_file, "rb").read(), headers, int(connections), float(duration)))
    """
)


def model_config(name: str, instances: int = 1, batching: bool = False) -> str:
    extra = "dynamic_batching { }" if batching else ""
    if name == "identity":
        return CONFIG.format(backend='backend: "identity"', extra=extra, instances=instances)
    mode = "process" if name == "py_process" else "thread"
    extra += f'\nparameters {{ key: "execution_mode" value: {{ string_value: "{mode}" }} }}'
    return CONFIG.format(backend='backend: "python"', extra=extra, instances=instances)


VALUES = (np.arange(16, dtype=np.float32) * 0.25).reshape(SHAPE)


def process_tree_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (the model processes), all
    threads, from Linux ``/proc``; None elsewhere."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    try:
        while pending:
            current = pending.pop()
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        return None
    return total


def run_wrk(
    url: str, script: Path, duration: float, connections: int, pid: int
) -> tuple[float, int]:
    rate, bad, _ = support.run_wrk(url, script, round(duration), connections, None, pid)
    return rate, bad


def run_aiohttp(
    loader: Path, url: str, body_file: Path, headers: dict[str, str], duration: float, conns: int
) -> tuple[float, int]:
    header_text = "|".join(f"{k}:{v}" for k, v in headers.items())
    output = subprocess.run(
        [sys.executable, str(loader), url, str(body_file), header_text, str(conns), str(duration)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(output[0]), int(output[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--body", choices=("binary", "json"), default="binary")
    parser.add_argument(
        "--instances", type=int, default=1, help="instance_group count of every model"
    )
    parser.add_argument(
        "--dynamic-batching",
        action="store_true",
        help="give every model dynamic_batching { } (needs nereid-dynamic-batcher)",
    )
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None

    work = Path(tempfile.mkdtemp(prefix="nereid-bench-"))
    server = None
    try:
        for name in MODELS:
            model_dir = work / "models" / name
            (model_dir / "1").mkdir(parents=True)
            (model_dir / "config.pbtxt").write_text(
                model_config(name, args.instances, args.dynamic_batching)
            )
            if name != "identity":
                (model_dir / "1" / "model.py").write_text(MODEL_PY)
        body, headers = support.request_body(args.body, VALUES)
        (work / "body.bin").write_bytes(body)
        (work / "request.lua").write_text(support.lua_script(body, headers))
        (work / "loader.py").write_text(LOADER)

        port = support.free_port()
        plugins = "nereid-http,nereid-python" + (
            ",nereid-dynamic-batcher" if args.dynamic_batching else ""
        )
        server = subprocess.Popen(
            support.http_serve_command(work / "models", plugins, port), stdout=subprocess.DEVNULL
        )
        support.wait_ready(port, server, timeout=120.0)

        def measure(name: str, duration: float) -> tuple[float, float | None]:
            """Requests/s, and server CPU microseconds per request (model processes
            included)."""
            url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
            cpu_before = process_tree_cpu(server.pid)
            started = time.monotonic()
            if use_wrk:
                rate, bad = run_wrk(
                    url, work / "request.lua", duration, args.connections, server.pid
                )
            else:
                rate, bad = run_aiohttp(
                    work / "loader.py", url, work / "body.bin", headers, duration, args.connections
                )
            elapsed = time.monotonic() - started
            cpu_after = process_tree_cpu(server.pid)
            if bad:
                raise SystemExit(f"{name}: {bad} non-2xx responses")
            per_request = None
            if cpu_before is not None and cpu_after is not None and rate:
                per_request = (cpu_after - cpu_before) / (rate * elapsed) * 1e6
            return rate, per_request

        for name in MODELS:
            support.check_response(
                f"http://127.0.0.1:{port}/v2/models/{name}/infer", body, headers, VALUES
            )
            measure(name, args.warmup)
        best = dict.fromkeys(MODELS, 0.0)
        cpu: dict[str, float] = {}
        for round_index in range(args.rounds):
            order = MODELS if round_index % 2 == 0 else MODELS[::-1]
            for name in order:
                rate, per_request = measure(name, args.duration)
                best[name] = max(best[name], rate)
                shown = ""
                if per_request is not None:
                    cpu[name] = min(cpu.get(name, float("inf")), per_request)
                    shown = f"  {per_request:7.1f} us CPU/req"
                print(f"  round {round_index + 1} {name:11s} {rate:10.1f} req/s{shown}", flush=True)

        tool = "wrk" if use_wrk else "aiohttp loader"
        print()
        print(
            f"HTTP, {args.body} body, concurrency {args.connections} ({tool}), "
            f"{args.instances} instance(s) per model"
            f"{', dynamic batching' if args.dynamic_batching else ''}, "
            f"best of {args.rounds} x {args.duration:g}s, "
            f"{os.cpu_count()} CPUs"
        )
        labels = {
            "identity": "identity backend",
            "py_process": "python, process mode",
            "py_thread": "python, in-process mode",
        }
        print(f"{'model':28s}{'req/s':>10s}{'/ identity':>12s}")
        for name in MODELS:
            print(f"{labels[name]:28s}{best[name]:10.1f}{best[name] / best['identity']:12.2f}")
        if len(cpu) == len(MODELS):
            # CPU per request (server and model processes, all threads) is robust to other
            # load on the machine; identity's divided by each is the throughput ratio of a
            # CPU-bound server.
            print(f"{'model':28s}{'CPU us/req':>10s}{'identity /':>12s}")
            for name in MODELS:
                print(f"{labels[name]:28s}{cpu[name]:10.1f}{cpu['identity'] / cpu[name]:12.2f}")
        return 0
    finally:
        if server is not None:
            support.stop(server, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
