"""Shared helpers for the benchmark scripts in this folder, so that each script holds only what
it measures.

The scripts run as ``python benchmarks/<name>.py`` from the repository root; Python puts the
script's folder on ``sys.path``, so a script imports this module as ``import support``. It holds
what several scripts need alike: a free port, the ``nereid serve`` command line and waiting for
the server, a process's CPU time from ``/proc``, the identity model's FP32[1,16] requests over
HTTP and their check, ``wrk`` (options, pinned servers, alternating rounds), core pinning, and
keeping requests in flight in-process; for the backend benchmarks, served-versus-bare rounds
and their report.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nereid import Server

IDENTITY_CONFIG = """
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(repository: Path, options: list[str], profile: Path | None = None) -> list[str]:
    """``nereid serve`` on ``repository`` with ``options`` and info logging off; under cProfile,
    writing to ``profile``, when given."""
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "nereid.cli", "serve", "--model-repository", str(repository)]
    return [*command, *options, "--log-info", "false"]


def http_serve_command(repository: Path, plugins: str, port: int) -> list[str]:
    """``nereid serve`` with only ``plugins`` (nereid-http among them), HTTP on 127.0.0.1:port."""
    return serve_command(
        repository,
        ["--plugins", plugins, "--http-address", "127.0.0.1", "--http-port", str(port)],
    )


def wait_ready(
    port: int, process: subprocess.Popen, path: str = "/v2/health/ready", timeout: float = 60.0
) -> None:
    """Poll ``http://127.0.0.1:{port}{path}`` until it answers 200; exit if ``process`` ends or
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}{path}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} not ready after {timeout}s")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate ``process``; kill it if it has not exited after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def two_cores(no_pin: bool) -> tuple[int, int] | None:
    """Two cores to pin the server and the load generator to apart (with ``taskset``), or None
    when ``no_pin`` is set or the machine lacks them."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if no_pin or len(cores) < 2 or shutil.which("taskset") is None:
        return None
    return cores[0], cores[1]


def request_body(kind: str, values: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an HTTP inference request sending ``values`` (FP32) as ``INPUT0`` and
    asking for ``OUTPUT0``; ``kind`` is "json" or "binary" (the binary tensor extension)."""
    binary = kind == "binary"
    tensor = {"name": "INPUT0", "shape": list(values.shape), "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": values.nbytes}
    else:
        tensor["data"] = values.ravel().tolist()
    outputs = [{"name": "OUTPUT0", "parameters": {"binary_data": binary}}]
    header = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + values.tobytes(), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def check_response(url: str, body: bytes, headers: dict[str, str], expected: np.ndarray) -> None:
    """One request by hand: the server answers 200 with ``OUTPUT0`` equal to ``expected``."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        data = response.read()
        length = response.headers.get("Inference-Header-Content-Length")
    if length is None:
        out = json.loads(data)["outputs"][0]
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    else:
        got = np.frombuffer(data[int(length) :], dtype=np.float32).reshape(expected.shape)
    if not np.array_equal(got, expected):
        raise SystemExit(f"wrong answer from {url}: {got}")


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """A ``wrk`` script that POSTs ``body`` with ``headers``."""
    escaped = "".join(f"\\{b}" for b in body)  # decimal escapes keep every byte exact
    lines = ['wrk.method = "POST"', f'wrk.body = "{escaped}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def run_wrk(
    url: str, script: Path, duration: int, connections: int, cpu: str | None, pid: int
) -> tuple[float, int, float | None]:
    """Requests/s, non-2xx count, and server CPU microseconds per request of one ``wrk`` run
    (one thread, pinned to core ``cpu`` when given) against the server process ``pid``."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, duration)}s"]
    command += ["-s", str(script), url]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    cpu_before = cpu_seconds(pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu_after = cpu_seconds(pid)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    count = int(re.search(r"(\d+) requests in", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    if errors:
        print(f"    wrk: {errors.group(0)}", file=sys.stderr)
    per_request = None
    if cpu_before is not None and cpu_after is not None and count:
        per_request = (cpu_after - cpu_before) / count * 1e6
    return rate, int(bad.group(1)) if bad else 0, per_request


def add_wrk_options(parser: argparse.ArgumentParser, rounds: int, duration: int) -> None:
    """The options of a benchmark that measures servers with ``wrk``."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--duration", type=int, default=duration, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the servers and wrk to separate cores (they are pinned by default)",
    )


def wrk_cores(no_pin: bool) -> tuple[str | None, str | None]:
    """The cores for the servers and for ``wrk`` as ``taskset`` takes them (None: not pinned,
    see :func:`two_cores`); exits with status 2 when wrk is not installed."""
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        raise SystemExit(2)
    cores = two_cores(no_pin)
    return (str(cores[0]), str(cores[1])) if cores else (None, None)


def launch(command: list[str], cpu: str | None) -> subprocess.Popen:
    """A server process running ``command``, its output discarded, pinned to core ``cpu`` when
    given."""
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk_rounds(
    servers: Mapping[str, tuple[str, int]],
    kind: str,
    values: np.ndarray,
    work: Path,
    args: argparse.Namespace,
    cpu: str | None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, list[tuple[float, float | None]]]:
    """Each server's (requests/s, server CPU microseconds per request) of every round, ``wrk``
    (pinned to core ``cpu`` when given) sending the identity model ``kind`` requests of
    ``values`` (see :func:`request_body`). ``servers``: name to the model's infer URL
    and the server's pid. First each server's answer is checked and the server warmed up
    (``args.warmup`` seconds); then come ``args.rounds`` rounds of one run of ``args.duration``
    seconds per server, the order reversed every other round so that none always gets the
    quieter moment, each run printed (after its ``labels`` entry, when given). A non-2xx
    answer ends the benchmark."""
    body, headers = request_body(kind, values)
    script = work / f"{kind}.lua"
    script.write_text(lua_script(body, headers))
    for url, pid in servers.values():
        check_response(url, body, headers, values)
        run_wrk(url, script, args.warmup, args.connections, cpu, pid)
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in servers}
    names = list(servers)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            url, pid = servers[name]
            rate, bad, per_request = run_wrk(url, script, args.duration, args.connections, cpu, pid)
            if bad:
                raise SystemExit(f"{name}/{kind}: {bad} non-2xx responses")
            label = f" {labels[name]:16s}" if labels else ""
            shown = f"{per_request:7.1f} us CPU/req" if per_request is not None else ""
            print(
                f"  round {round_index + 1} {kind:6s} ({name}){label} {rate:10.1f} req/s  {shown}"
            )
            samples[name].append((rate, per_request))
    return samples


def best_of(
    samples: Mapping[str, list[tuple[float, float | None]]],
) -> tuple[dict[str, float], dict[str, float]]:
    """From :func:`wrk_rounds`' samples, each server's best requests/s, and its least CPU
    microseconds per request where it has any."""
    best = {name: max(rate for rate, _ in runs) for name, runs in samples.items()}
    cpu = {}
    for name, runs in samples.items():
        costs = [cost for _, cost in runs if cost is not None]
        if costs:
            cpu[name] = min(costs)
    return best, cpu


async def keep_in_flight(
    submit: Callable[[], Awaitable[object]], in_flight: int, seconds: float
) -> tuple[int, float]:
    """Await ``submit()`` back to back in ``in_flight`` coroutines until ``seconds`` have passed
    on the event loop's clock; returns the calls completed and the seconds they took."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while loop.time() < deadline:
            await submit()
            done += 1

    start = loop.time()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return done, loop.time() - start


def loop_threads(steps: list[Callable[[], int]], seconds: float) -> tuple[float, float]:
    """The bare side of a benchmark: each of ``steps`` run back to back on a thread of its own
    for ``seconds``, all started together. A step returns the units (rows) it did. Returns
    units per second and process CPU seconds per unit (all threads)."""
    counts = [0] * len(steps)
    start_line = threading.Barrier(len(steps) + 1)

    def loop(index: int) -> None:
        step = steps[index]
        start_line.wait()
        deadline = time.perf_counter() + seconds
        done = 0
        while time.perf_counter() < deadline:
            done += step()
        counts[index] = done

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(len(steps))]
    for worker in workers:
        worker.start()
    start_line.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    total = sum(counts)
    return total / elapsed, cpu / max(total, 1)


@dataclass
class Round:
    """One side (served or bare) of a round of a backend benchmark."""

    rate: float  # rows per second
    cpu_per_row: float  # process CPU seconds per row
    batch: float = 1.0  # mean rows per execution


async def served_round(
    server: Server, model: str, inputs: Mapping[str, np.ndarray], in_flight: int, seconds: float
) -> Round:
    """The served side: ``in_flight`` coroutines sending ``model`` the request of ``inputs``
    (arrays by input name, all with the same rows) through ``api.infer`` back to back for
    ``seconds``; the mean batch comes from the model's statistics."""
    from nereid import InferenceRequest, Tensor

    api = server.api
    rows = len(next(iter(inputs.values())))
    before = api.model_statistics(model)[0]

    async def submit() -> None:
        request = InferenceRequest(model, [Tensor(name, x) for name, x in inputs.items()])
        await api.infer(request).single()

    cpu = time.process_time()
    done, elapsed = await keep_in_flight(submit, in_flight, seconds)
    cpu = time.process_time() - cpu
    await asyncio.sleep(0.01)  # the last executions' statistics
    after = api.model_statistics(model)[0]
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    done *= rows
    return Round(done / elapsed, cpu / max(done, 1), inferences / max(executions, 1))


async def alternating_rounds(
    rounds: int, bare: Callable[[], Round], served: Callable[[], Awaitable[Round]]
) -> list[tuple[Round, Round]]:
    """(served, bare) of ``rounds`` rounds, each printed: the two sides back to back (the bare
    one on a thread), which goes first alternating so that neither always gets the quieter
    moment."""
    pairs = []
    for index in range(rounds):
        if index % 2 == 0:
            bare_side = await asyncio.to_thread(bare)
            served_side = await served()
        else:
            served_side = await served()
            bare_side = await asyncio.to_thread(bare)
        pairs.append((served_side, bare_side))
        _print_round(index, served_side, bare_side)
    return pairs


async def batched_rounds(
    rounds: int, served: Callable[[], Awaitable[Round]], bare: Callable[[int], Round]
) -> list[tuple[Round, Round]]:
    """(served, bare) of ``rounds`` rounds, each printed: the served side, then ``bare(rows)``
    on a thread, on batches of the size the server achieved."""
    pairs = []
    for index in range(rounds):
        served_side = await served()
        bare_side = await asyncio.to_thread(bare, max(1, round(served_side.batch)))
        pairs.append((served_side, bare_side))
        _print_round(index, served_side, bare_side)
    return pairs


def _print_round(index: int, served: Round, bare: Round) -> None:
    print(
        f"  round {index + 1}: served {served.rate:,.0f} rows/s (batch {served.batch:.1f}), "
        f"bare {bare.rate:,.0f} rows/s (batch {bare.batch:.0f}): {served.rate / bare.rate:.2f}"
    )


def report(label: str, target: float, pairs: list[tuple[Round, Round]]) -> None:
    """Best served over best bare (the figure asked for), and two checks on it: the median of
    the rounds' own ratios, and bare CPU per row over served CPU per row (steady under load,
    since CPU time counts only while a thread runs)."""
    best_served = max(pairs, key=lambda pair: pair[0].rate)[0]
    best_bare = max(pairs, key=lambda pair: pair[1].rate)[1]
    ratios = [served.rate / bare.rate for served, bare in pairs]
    cpu = [bare.cpu_per_row / served.cpu_per_row for served, bare in pairs]
    bare_us = statistics.median(bare.cpu_per_row for _, bare in pairs) * 1e6
    served_us = statistics.median(served.cpu_per_row for served, _ in pairs) * 1e6
    print(
        f"{label}: served {best_served.rate:,.0f} rows/s (batch {best_served.batch:.1f}) / bare "
        f"{best_bare.rate:,.0f} rows/s = {best_served.rate / best_bare.rate:.3f}  "
        f"(target >= {target})\n"
        f"    median of the rounds' ratios {statistics.median(ratios):.3f}; CPU per row, bare / "
        f"served: {statistics.median(cpu):.3f} ({bare_us:.0f} vs {served_us:.0f} us)"
    )


def save_mlp_onnx(path: Path, sizes: tuple[int, ...]) -> None:
    """An ONNX MLP (MatMul + Add + Relu layers between ``sizes``, seeded weights) made with
    onnx.helper, saved at ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "X"
    layers = list(itertools.pairwise(sizes))
    for index, (a, b) in enumerate(layers):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.1).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"W{index}"),
            numpy_helper.from_array(bias, f"B{index}"),
        ]
        nodes.append(helper.make_node("MatMul", [current, f"W{index}"], [f"mm{index}"]))
        out = "Y" if index == len(layers) - 1 else f"add{index}"
        nodes.append(helper.make_node("Add", [f"mm{index}", f"B{index}"], [out]))
        if out != "Y":
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"]))
            current = f"relu{index}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
