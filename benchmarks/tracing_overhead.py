"""Tracing overhead: HTTP requests/s of ``nereid serve`` with tracing at rate 1000 against OFF.

The same identity model (one FP32[1,16] input, binary tensors by default) is served by
``nereid serve`` subprocesses, HTTP only, that differ in their trace flags:

(a) no trace flag: nereid-tracing installs no observer (the baseline);
(b) ``--trace-config level=OFF`` with a file: the observer is called for every request and
    samples none;
(c) ``rate=1000 level=TIMESTAMPS`` to a Triton trace file: one request in a thousand traced;
(d) the same in OpenTelemetry mode, exporting to a small OTLP/HTTP sink in this process
    (``--no-otel`` leaves it out; needs ``nereid-tracing[opentelemetry]``).

The servers are alternated over several rounds under the same ``wrk`` load (concurrency 16),
each pinned to one core and wrk to another (``--no-pin`` to let them float). The script prints
the best and the median requests/s of each server, its CPU time per request (all threads, from
``/proc``; less sensitive to other load than requests/s), and the median over rounds of its
ratio to (a) and to (b) within a round: the servers of a round run back to back and share most
of a busy machine's background load. Last, the tracer's own cost for a request it does not
sample, measured in-process. Run from the repository root::

    python benchmarks/tracing_overhead.py [--rounds 8] [--duration 3] [--kind binary|json]

Needs ``wrk`` (``apt-get install -y wrk``), nereid, nereid-http and nereid-tracing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import support
from nereid.testing import ModelRepositoryBuilder

MODEL = "identity"
VALUES = (np.arange(16, dtype=np.float32) * 0.25).reshape([1, 16])


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and drops every export (counting the bytes)."""

    received = 0

    def do_POST(self) -> None:
        _Sink.received += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _flags(*entries: str) -> list[str]:
    return [arg for entry in entries for arg in ("--trace-config", entry)]


def _observer_cost_ns(rate: int, count: int = 200_000) -> float:
    """ns per request of the tracer's two observer points (through the kernel's ObserverSet,
    as the request path calls them) for requests at a rate-``rate`` setting, minus the same
    loop with no observer. Requests are made beforehand, so only the calls are timed."""
    import asyncio
    import types

    from nereid.observers import ObserverSet
    from nereid.types import InferenceRequest
    from nereid_tracing.config import TIMESTAMPS, TraceConfig
    from nereid_tracing.tracer import Tracer

    loop = asyncio.new_event_loop()
    server = types.SimpleNamespace(loop=loop, observers=ObserverSet(), api=None)
    config = TraceConfig(level=TIMESTAMPS, rate=rate, file=str(Path(tempfile.mkdtemp()) / "t"))
    tracer = Tracer(server, config)

    def run(observers: ObserverSet) -> float:
        requests = [InferenceRequest(MODEL) for _ in range(count)]
        arrival, complete, notify = observers.on_arrival, observers.on_complete, observers.notify
        start = time.perf_counter_ns()
        for request in requests:
            if arrival:
                notify(arrival, request)
            if complete:
                notify(complete, request, None)
        return (time.perf_counter_ns() - start) / count

    try:
        return min(run(ObserverSet([tracer])) for _ in range(3)) - min(
            run(ObserverSet()) for _ in range(3)
        )
    finally:
        tracer.close()
        loop.close()


def _requests_served(infer_url: str) -> int:
    """Successful inferences of the model, from its statistics."""
    url = infer_url.rsplit("/", 1)[0] + "/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.loads(response.read())["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def _traces_in(path: Path) -> int:
    """Traces written to a Triton trace file (entries naming a model)."""
    if not path.exists():
        return 0
    return sum(1 for entry in json.loads(path.read_text() or "[]") if "model_name" in entry)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    support.add_wrk_options(parser, rounds=8, duration=3)
    parser.add_argument("--kind", choices=("binary", "json"), default="binary")
    parser.add_argument("--rate", type=int, default=1000, help="trace one request in RATE")
    parser.add_argument("--no-otel", action="store_true", help="leave out (d) opentelemetry")
    args = parser.parse_args()
    server_cpu, wrk_cpu = support.wrk_cores(args.no_pin)

    work = Path(tempfile.mkdtemp(prefix="nereid-bench-"))
    processes: list[subprocess.Popen] = []
    sink = None
    try:
        ModelRepositoryBuilder(work / "models").add(MODEL, support.IDENTITY_CONFIG)
        trace_file = work / "trace.json"
        variants: dict[str, list[str]] = {
            "a": [],
            "b": _flags(f"triton,file={work / 'off.json'}", "level=OFF"),
            "c": _flags(f"triton,file={trace_file}", f"rate={args.rate}", "level=TIMESTAMPS"),
        }
        if not args.no_otel:
            sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
            threading.Thread(target=sink.serve_forever, daemon=True).start()
            variants["d"] = _flags(
                "mode=opentelemetry",
                f"opentelemetry,url=127.0.0.1:{sink.server_address[1]}",
                f"rate={args.rate}",
                "level=TIMESTAMPS",
            )
        labels = {
            "a": "no tracing",
            "b": "level=OFF",
            "c": f"triton 1/{args.rate}",
            "d": f"otel 1/{args.rate}",
        }

        servers: dict[str, tuple[str, int]] = {}
        for name, flags in variants.items():
            port = support.free_port()
            command = support.http_serve_command(
                work / "models", "nereid-http,nereid-tracing", port
            )
            process = support.launch([*command, *flags], server_cpu)
            processes.append(process)
            support.wait_ready(port, process)
            servers[name] = (f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", process.pid)

        samples = support.wrk_rounds(servers, args.kind, VALUES, work, args, wrk_cpu, labels)
        best, cpu = support.best_of(samples)
        names = list(servers)

        print()
        print(
            f"{args.kind} bodies, concurrency {args.connections}, best of {args.rounds} x "
            f"{args.duration}s"
        )

        # Per-round ratios: the servers of one round run back to back, so they share most of the
        # background load of a busy machine; the median over rounds is the robust figure.
        def median_ratio(name: str, base: str, field: int) -> float | None:
            pairs = zip(samples[name], samples[base], strict=True)
            values = [
                (mine[field] / theirs[field]) if field == 0 else (theirs[field] / mine[field])
                for mine, theirs in pairs
                if mine[field] and theirs[field]
            ]
            return statistics.median(values) if values else None

        print(
            f"{'server':22s}{'best req/s':>11s}{'median':>9s}{'CPU us/req':>12s}"
            f"{'req/s vs (a)':>14s}{'vs (b)':>8s}{'CPU vs (a)':>12s}{'vs (b)':>8s}"
        )
        for name in names:
            rates = [r for r, _ in samples[name]]
            line = f"({name}) {labels[name]:18s}{best[name]:11.1f}{statistics.median(rates):9.1f}"
            line += f"{cpu[name]:12.1f}" if name in cpu else f"{'':12s}"
            for field in (0, 1):
                for base in ("a", "b"):
                    value = median_ratio(name, base, field)
                    width = 14 if (field, base) == (0, "a") else 12 if base == "a" else 8
                    line += f"{value:{width}.3f}" if value is not None else " " * width
            print(line)
        print(
            "ratios are medians over rounds of the ratio within a round; CPU ratios are base/this "
            "(below 1: more CPU per request)"
        )
        loss_rate = median_ratio("c", "b", 0)
        loss_cpu = median_ratio("c", "b", 1)
        print(
            f"(c) triton 1/{args.rate} against (b) OFF: requests/s {(loss_rate - 1) * 100:+.1f}%"
            + (f", CPU per request {(1 / loss_cpu - 1) * 100:+.1f}%" if loss_cpu else "")
        )
        if "a" in cpu:
            observer_ns = _observer_cost_ns(args.rate)
            print(
                f"the tracer's own cost per request not sampled (in-process, rate {args.rate}): "
                f"{observer_ns:.0f} ns, {observer_ns / (cpu['a'] * 1e3) * 100:.2f}% of (a)'s "
                "CPU per request"
            )
        served = _requests_served(servers["c"][0])
        for process in processes:
            support.stop(process)
        # the stopped servers have flushed: check that tracing did trace
        traced = _traces_in(trace_file)
        print(f"(c) wrote {traced} traces for {served} requests ({served // args.rate} expected)")
        if sink is not None:
            print(f"(d) exported {_Sink.received} bytes of OTLP spans")
        return 0
    finally:
        for process in processes:
            support.stop(process)
        if sink is not None:
            sink.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
