"""HTTP frontend overhead: ``nereid serve`` with the identity backend against a minimal aiohttp app.

Both servers answer the same inference request (one FP32[1,16] input, the same output back),
JSON and binary, under the same load from ``wrk`` (concurrency 16):

(a) a minimal aiohttp app (one route, no model, no queue) that decodes the request into numpy
    and encodes the response exactly as the wire format wants, with the same JSON library;
(b) ``nereid serve`` on a temporary repository holding an identity model, HTTP frontend only.

A and B are alternated over several rounds and the best of each is kept. The ratio (b)/(a) is
what the frontend plus the kernel's request path cost relative to the cheapest possible
aiohttp server. Each server is pinned to one core and wrk to another (``--no-pin`` to let
them float), so both servers get the same CPU. Beside requests/s the script prints the
servers' CPU time per request (all threads, from ``/proc``), which is far less sensitive to
other load on a shared machine. Run from the repository root::

    python benchmarks/http_overhead.py [--rounds 3] [--duration 5] [--connections 16]

Needs ``wrk`` (``apt-get install -y wrk``) and the nereid and nereid-http distributions.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import support
from nereid.testing import ModelRepositoryBuilder

MODEL = "identity"
SHAPE = [1, 16]

BASELINE_APP = textwrap.dedent(
    """
    import sys

    import numpy as np
    import orjson
    from aiohttp import web

    OPTIONS = orjson.OPT_SERIALIZE_NUMPY


    async def infer(request):
        body = await request.read()
        header_length = request.headers.get("Inference-Header-Content-Length")
        if header_length is None:
            doc = orjson.loads(body)
            item = doc["inputs"][0]
            array = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
            out = {
                "model_name": request.match_info["model"],
                "model_version": "1",
                "outputs": [
                    {"name": "OUTPUT0", "datatype": "FP32", "shape": array.shape,
                     "data": array.reshape(-1)}
                ],
            }
            return web.Response(
                body=orjson.dumps(out, option=OPTIONS),
                headers={"Content-Type": "application/json"},
            )
        length = int(header_length)
        view = memoryview(body)
        doc = orjson.loads(view[:length])
        item = doc["inputs"][0]
        array = np.frombuffer(view[length:], dtype=np.float32).reshape(item["shape"])
        out = {
            "model_name": request.match_info["model"],
            "model_version": "1",
            "outputs": [
                {"name": "OUTPUT0", "datatype": "FP32", "shape": array.shape,
                 "parameters": {"binary_data_size": array.nbytes}}
            ],
        }
        header = orjson.dumps(out, option=OPTIONS)
        return web.Response(
            body=b"".join([header, array]),
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )


    async def ready(request):
        return web.Response()


    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None, handle_signals=True)
    """
)

VALUES = (np.arange(16, dtype=np.float32) * 0.25).reshape(SHAPE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    support.add_wrk_options(parser, rounds=3, duration=5)
    args = parser.parse_args()
    # Server on one core, wrk on another, when the machine has them (same for A and B).
    server_cpu, wrk_cpu = support.wrk_cores(args.no_pin)

    work = Path(tempfile.mkdtemp(prefix="nereid-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        ModelRepositoryBuilder(work / "models").add(MODEL, support.IDENTITY_CONFIG)
        (work / "baseline.py").write_text(BASELINE_APP)

        def launch(command: list[str]) -> subprocess.Popen:
            processes.append(support.launch(command, server_cpu))
            return processes[-1]

        port_a, port_b = support.free_port(), support.free_port()
        proc_a = launch([sys.executable, str(work / "baseline.py"), str(port_a)])
        proc_b = launch(support.http_serve_command(work / "models", "nereid-http", port_b))
        support.wait_ready(port_a, proc_a)
        support.wait_ready(port_b, proc_b)

        servers = {
            "a": (f"http://127.0.0.1:{port_a}/v2/models/{MODEL}/infer", proc_a.pid),
            "b": (f"http://127.0.0.1:{port_b}/v2/models/{MODEL}/infer", proc_b.pid),
        }
        best: dict[str, dict[str, float]] = {}  # kind: server: figure
        cpu: dict[str, dict[str, float]] = {}
        for kind in ("json", "binary"):
            samples = support.wrk_rounds(servers, kind, VALUES, work, args, wrk_cpu)
            best[kind], cpu[kind] = support.best_of(samples)

        print()
        print(f"concurrency {args.connections}, best of {args.rounds} x {args.duration}s")
        print(f"{'body':8s}{'(a) aiohttp':>14s}{'(b) nereid':>14s}{'(b)/(a)':>10s}   req/s")
        for kind in ("json", "binary"):
            a, b = best[kind]["a"], best[kind]["b"]
            print(f"{kind:8s}{a:14.1f}{b:14.1f}{b / a:10.2f}")
        if all(len(figures) == 2 for figures in cpu.values()):
            # Server CPU per request (all threads) is robust to other load on the machine; its
            # inverse ratio is the throughput ratio of CPU-bound servers.
            print(
                f"{'body':8s}{'(a) aiohttp':>14s}{'(b) nereid':>14s}{'(a)/(b)':>10s}   CPU us/req"
            )
            for kind in ("json", "binary"):
                a, b = cpu[kind]["a"], cpu[kind]["b"]
                print(f"{kind:8s}{a:14.1f}{b:14.1f}{a / b:10.2f}")
        return 0
    finally:
        for process in processes:
            support.stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
