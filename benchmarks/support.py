"""Shared helpers for the benchmark scripts in this folder, so that each script holds only what
it measures.

The scripts run as ``python benchmarks/<name>.py`` from the repository root; Python puts the
script's folder on ``sys.path``, so a script imports this module as ``import support``. It holds
what several scripts need alike: a free port, the ``nereid serve`` command line and waiting for
the server, a process's CPU time from ``/proc``, the identity model's FP32[1,16] requests over
HTTP and their check, ``wrk``, core pinning, and keeping requests in flight in-process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

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
