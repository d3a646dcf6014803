"""gRPC frontend overhead: ``nereid serve`` (identity backend) against a minimal grpc.aio server.

Both servers answer the same ModelInfer request (one FP32[1,16] input in
``raw_input_contents``, the same tensor back in ``raw_output_contents``) under the same load:

(a) a minimal ``grpc.aio`` servicer (one generic handler, no model, no queue) that decodes the
    request into numpy with the same generated messages and returns the same response;
(b) ``nereid serve`` on a temporary repository holding an identity model, gRPC frontend only.

The load generator is ``h2load`` (Debian's ``nghttp2-client``) sending one prepared gRPC
frame (5-byte prefix + serialized ModelInferRequest) with ``content-type: application/grpc``
and ``te: trailers``; it is written in C and is not the bottleneck. h2load cannot see
``grpc-status``, so the frame is checked once with tritonclient, and after every run the
server's success count (ModelStatistics, which the baseline answers too) must have grown by
exactly the number of requests h2load completed.

A and B alternate over several rounds at each concurrency; the best throughput of each is
kept and (b)/(a) is printed. ``--profile`` then runs (b) once more under cProfile and prints
where the event-loop thread spends its time. Run from the repository root::

    python benchmarks/grpc_overhead.py [--rounds 3] [--requests 20000] [--concurrency 16 64]
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import support
from nereid.testing import ModelRepositoryBuilder

MODEL = "identity"
SHAPE = [1, 16]
PATH = "/inference.GRPCInferenceService/ModelInfer"

BASELINE_SERVER = textwrap.dedent(
    """
    import asyncio
    import sys

    import grpc
    import numpy as np

    from nereid_grpc.protos import grpc_service_pb2 as pb

    DTYPES = {"FP32": np.float32}
    count = 0


    async def model_infer(request, context):
        global count
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        raw = request.raw_input_contents
        for index, tensor in enumerate(request.inputs):
            shape = tuple(tensor.shape)
            array = np.frombuffer(raw[index], dtype=DTYPES[tensor.datatype]).reshape(shape)
            response.outputs.add(name="OUTPUT0", datatype=tensor.datatype, shape=array.shape)
            response.raw_output_contents.append(array.tobytes())
        count += 1
        return response


    async def model_statistics(request, context):
        response = pb.ModelStatisticsResponse()
        stats = response.model_stats.add(name="identity", version="1")
        stats.inference_stats.success.count = count
        return response


    async def main(port):
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
            ]
        )
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                model_infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            ),
            "ModelStatistics": grpc.unary_unary_rpc_method_handler(
                model_statistics,
                request_deserializer=pb.ModelStatisticsRequest.FromString,
                response_serializer=pb.ModelStatisticsResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("baseline ready", flush=True)
        await server.wait_for_termination()


    asyncio.run(main(int(sys.argv[1])))
    """
)


def request_frame() -> tuple[bytes, np.ndarray]:
    """The gRPC frame h2load sends: 5-byte prefix + serialized ModelInferRequest."""
    from nereid_grpc.protos import grpc_service_pb2 as pb

    data = np.arange(16, dtype=np.float32).reshape(SHAPE)
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=SHAPE)
    request.raw_input_contents.append(data.tobytes())
    body = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body, data


class Server:
    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name, self.command, self.port, self.log = name, command, port, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT)
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + 60
        with grpcclient.InferenceServerClient(self.url) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
                try:
                    client.get_inference_statistics(MODEL, client_timeout=1)
                    return self
                except Exception:
                    time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def successes(self) -> int:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.url) as client:
            stats = client.get_inference_statistics(MODEL).model_stats
            return sum(s.inference_stats.success.count for s in stats)

    def check(self, data: np.ndarray) -> None:
        """The request h2load sends, sent once with tritonclient: the answer must be right."""
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(self.url) as client:
            tensor = grpcclient.InferInput("INPUT0", SHAPE, "FP32")
            tensor.set_data_from_numpy(data)
            result = client.infer(MODEL, [tensor])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def h2load(server: Server, frame: Path, requests: int, concurrency: int) -> dict[str, float]:
    connections = min(concurrency, 4)
    streams = max(1, concurrency // connections)
    command = [
        "h2load",
        "-n",
        str(requests),
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://{server.url}{PATH}",
    ]
    before = server.successes()
    cpu_before = support.cpu_seconds(server.process.pid)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = support.cpu_seconds(server.process.pid) - cpu_before
    after = server.successes()
    finished = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not finished or not done:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    succeeded = int(done.group(2))
    if after - before != succeeded:
        raise RuntimeError(
            f"{server.name}: h2load completed {succeeded} requests but the server counted "
            f"{after - before} successes:\n{out}"
        )
    return {
        "rps": float(finished.group(1)),
        "requests": succeeded,
        "cpu_us": 1e6 * cpu / max(succeeded, 1),
    }


def nereid_command(repo: Path, port: int, profile: Path | None = None) -> list[str]:
    options = ["--grpc-port", str(port), "--grpc-address", "127.0.0.1"]
    if any(ep.name == "http" for ep in metadata.entry_points(group="nereid")):
        options += ["--allow-http", "false"]
    if any(ep.name == "metrics" for ep in metadata.entry_points(group="nereid")):
        options += ["--allow-metrics", "false"]
    return support.serve_command(repo, options, profile)


def profile_nereid(repo: Path, frame: Path, work: Path, requests: int, concurrency: int) -> None:
    """Run (b) under cProfile (event-loop thread only) and print the top functions."""
    profile = work / "nereid.prof"
    port = support.free_port()
    server = Server(
        "nereid (profiled)", nereid_command(repo, port, profile), port, work / "profile.log"
    )
    server.start()
    try:
        h2load(server, frame, requests, concurrency)
    finally:
        server.stop()
    stats = pstats.Stats(str(profile))
    total = stats.total_tt
    print(f"\nprofile of nereid serve's main thread, {requests} requests at c={concurrency}")
    print(f"(cProfile slows everything; shares matter, not times). total {total:.2f}s")
    shares: dict[str, float] = {}
    for (filename, _, name), (_, _, own, _, _) in stats.stats.items():
        shares[_category(filename, name)] = shares.get(_category(filename, name), 0.0) + own
    print("\nown time by part:")
    for part, own in sorted(shares.items(), key=lambda item: item[1], reverse=True):
        print(f"  {100 * own / total:5.1f}%  {part}")
    print("\ntop functions:")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:25]
    print(f"{'own %':>6} {'cum %':>6} {'calls':>9}  function")
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        where = filename
        for marker in ("site-packages/", "src/", "python3.11/"):
            if marker in where:
                where = where.split(marker, 1)[1]
                break
        print(
            f"{100 * own / total:6.1f} {100 * cumulative / total:6.1f} {calls:9d}  "
            f"{name} ({where}:{line})"
        )


def _category(filename: str, name: str) -> str:
    if "select.epoll" in name:
        return "idle: event loop waiting (epoll), e.g. for the model instance's thread"
    if "_contextvars.Context" in name:
        return "grpc.aio Cython callbacks run by the loop (C, invisible to cProfile)"
    if "nereid_grpc" in filename:
        return "gRPC frontend (nereid_grpc, Python)"
    if "/nereid/" in filename:
        return "kernel request path (nereid, Python)"
    if "asyncio" in filename or "selectors" in filename:
        return "asyncio event loop (Python)"
    if "concurrent/futures" in filename or "threading" in filename or "queue" in name.lower():
        return "thread hand-off to the instance (executor, queue)"
    if "grpc" in filename:
        return "grpc.aio Python layer"
    if filename == "~":
        return "other C calls (protobuf, numpy, sockets)"
    return "other Python (start-up, imports, logging)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--profile", action="store_true", help="profile (b) after the runs")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load not found: apt-get install -y nghttp2-client", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="nereid-grpc-bench-") as tmp:
        work = Path(tmp)
        frame_bytes, data = request_frame()
        frame = work / "frame.bin"
        frame.write_bytes(frame_bytes)
        repo = work / "models"
        ModelRepositoryBuilder(repo).add(MODEL, support.IDENTITY_CONFIG)
        baseline_py = work / "baseline_server.py"
        baseline_py.write_text(BASELINE_SERVER)

        port_a, port_b = support.free_port(), support.free_port()
        servers = [
            Server(
                "a: grpc.aio minimal",
                [sys.executable, str(baseline_py), str(port_a)],
                port_a,
                work / "a.log",
            ),
            Server("b: nereid serve", nereid_command(repo, port_b), port_b, work / "b.log"),
        ]
        best: dict[tuple[str, int], float] = {}
        cpu: dict[tuple[str, int], float] = {}
        try:
            for server in servers:
                server.start()
                server.check(data)
                # The frame itself, once: exactly one more success.
                h2load(server, frame, 1, 1)
            for concurrency in args.concurrency:
                for server in servers:  # warm up
                    h2load(server, frame, min(2000, args.requests), concurrency)
                for round_index in range(args.rounds):
                    for server in servers:
                        result = h2load(server, frame, args.requests, concurrency)
                        key = (server.name, concurrency)
                        best[key] = max(best.get(key, 0.0), result["rps"])
                        cpu[key] = min(cpu.get(key, float("inf")), result["cpu_us"])
                        print(
                            f"c={concurrency:<3} round {round_index + 1}  {server.name:<22} "
                            f"{result['rps']:9.0f} req/s  {result['cpu_us']:6.0f} us CPU/request"
                            f"  ({result['requests']} requests)",
                            flush=True,
                        )
        finally:
            for server in servers:
                server.stop()

        print(
            f"\n{'concurrency':>11}  {'(a) req/s':>10}  {'(b) req/s':>10}  {'(b)/(a)':>8}"
            f"  {'(a) CPU us':>10}  {'(b) CPU us':>10}  {'CPU (a)/(b)':>11}"
        )
        for concurrency in args.concurrency:
            a = best[(servers[0].name, concurrency)]
            b = best[(servers[1].name, concurrency)]
            cpu_a = cpu[(servers[0].name, concurrency)]
            cpu_b = cpu[(servers[1].name, concurrency)]
            print(
                f"{concurrency:>11}  {a:10.0f}  {b:10.0f}  {b / a:8.2f}"
                f"  {cpu_a:10.0f}  {cpu_b:10.0f}  {cpu_a / cpu_b:11.2f}"
            )
        print(
            f"(best of {args.rounds} rounds; {os.cpu_count()} CPUs; target (b)/(a) >= 0.7; "
            "CPU us: the server process's CPU time per request, all threads, least of the rounds, "
            "which other load on the machine disturbs less than throughput)"
        )

        if args.profile:
            profile_nereid(repo, frame, work, args.requests, args.concurrency[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
