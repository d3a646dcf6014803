"""Metrics overhead: HTTP inference throughput with the metrics plugin enabled and blocked.

Two ``nereid serve`` processes on the same repository (one identity model, one FP32[1,16]
input, binary tensors), both with the HTTP frontend:

(a) blocked: ``--block-plugin metrics`` (the plugin is not loaded at all: no observer, no
    frontend), the baseline;
(b) enabled: the metrics plugin with its defaults, ``/metrics`` scraped once a second by this
    script during every measurement of (b);
(c) optionally (``--summaries``) enabled with ``--metrics-config summary_latencies=true``
    (quantile summaries, which observe every request), also scraped once a second.

The same load from ``wrk`` (concurrency 16) is run against each in turn, alternating the order
over many short rounds. Printed: the best round of each, and the median over rounds of each
variant's figure relative to (a)'s in the same round ("paired"), which cancels much of a shared
machine's drift. Beside requests/s, the servers' CPU time per request (all threads, from
``/proc``), which depends less on what else the machine runs. Each server is pinned to one
core and wrk (with the scraper) to another.
Last, the cost of one scrape: the server's CPU time per ``GET /metrics`` on an idle server with
``--scrape-models`` models, which is time the event loop spends away from requests.

Run from the repository root::

    python benchmarks/metrics_overhead.py [--rounds 10] [--duration 3] [--summaries]

Needs ``wrk`` (``apt-get install -y wrk``), nereid, nereid-http and nereid-metrics.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from statistics import median

import numpy as np
import support

MODEL = "identity"
SHAPE = [1, 16]
MODEL_CONFIG = support.IDENTITY_CONFIG
VALUES = (np.arange(16, dtype=np.float32) * 0.25).reshape(SHAPE)


def binary_request() -> tuple[bytes, dict[str, str]]:
    return support.request_body("binary", VALUES)


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read()


class Scraper(threading.Thread):
    """``GET /metrics`` once a second until stopped (as a Prometheus server would, faster)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.count = 0

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            scrape(self.port)
            self.count += 1


def scrape_cost(root: Path, models: int, server_cpu: str | None, summaries: bool) -> str:
    """Server CPU per scrape of an idle server holding ``models`` models, each inferred once."""
    repo = root / f"scrape-{models}"
    for index in range(models):
        model_dir = repo / f"identity_{index}"
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(MODEL_CONFIG)
    http_port, metrics_port = support.free_port(), support.free_port()
    command = serve_command(repo, http_port, metrics_port)
    if summaries:
        command += ["--metrics-config", "summary_latencies=true"]
    if server_cpu is not None:
        command = ["taskset", "-c", server_cpu, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        support.wait_ready(http_port, process, timeout=120)
        body, headers = binary_request()
        for index in range(models):
            url = f"http://127.0.0.1:{http_port}/v2/models/identity_{index}/infer"
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            urllib.request.urlopen(request, timeout=10).read()
        size = len(scrape(metrics_port))
        for _ in range(5):
            scrape(metrics_port)
        count = 50
        before = support.cpu_seconds(process.pid)
        start = time.perf_counter()
        for _ in range(count):
            scrape(metrics_port)
        wall = (time.perf_counter() - start) / count * 1e3
        after = support.cpu_seconds(process.pid)
        cpu = (after - before) / count * 1e3 if before is not None and after is not None else 0
        kind = "with summaries" if summaries else "defaults"
        return (
            f"{models:4d} models ({kind}): {size / 1024:6.1f} KiB, "
            f"{cpu:6.2f} ms server CPU per scrape, {wall:6.2f} ms round trip"
        )
    finally:
        process.terminate()
        process.wait(timeout=15)


def serve_command(repo: Path, http_port: int, metrics_port: int | None) -> list[str]:
    options = ["--plugins", "nereid-http,nereid-metrics"]
    options += ["--http-address", "127.0.0.1", "--http-port", str(http_port)]
    if metrics_port is None:
        options += ["--block-plugin", "metrics"]
    else:
        options += ["--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)]
    return support.serve_command(repo, options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--summaries", action="store_true", help="also measure (c)")
    parser.add_argument(
        "--scrape-models",
        type=int,
        nargs="*",
        default=[1, 100],
        help="model counts for the scrape cost (none: skip it)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to separate cores")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    cores = support.two_cores(args.no_pin)
    server_cpu = str(cores[0]) if cores else None
    client_cpu = str(cores[1]) if cores else None
    if client_cpu is not None:
        os.sched_setaffinity(0, {int(client_cpu)})  # the scraper thread runs beside wrk

    work = Path(tempfile.mkdtemp(prefix="nereid-metrics-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        model_dir = work / "models" / MODEL
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(MODEL_CONFIG)

        variants: dict[str, tuple[int, int | None, subprocess.Popen]] = {}
        plan = {"a": (None, []), "b": (support.free_port(), [])}
        if args.summaries:
            plan["c"] = (support.free_port(), ["--metrics-config", "summary_latencies=true"])
        for name, (metrics_port, extra) in plan.items():
            http_port = support.free_port()
            command = serve_command(work / "models", http_port, metrics_port) + extra
            if server_cpu is not None:
                command = ["taskset", "-c", server_cpu, *command]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            processes.append(process)
            variants[name] = (http_port, metrics_port, process)
        for http_port, metrics_port, process in variants.values():
            support.wait_ready(http_port, process)
            if metrics_port is not None:
                assert b"nv_inference_count" in scrape(metrics_port)

        body, headers = binary_request()
        script = work / "binary.lua"
        script.write_text(support.lua_script(body, headers))
        urls = {
            n: f"http://127.0.0.1:{p}/v2/models/{MODEL}/infer" for n, (p, _, _) in variants.items()
        }
        for name, (_, _, process) in variants.items():
            support.run_wrk(
                urls[name], script, args.warmup, args.connections, client_cpu, process.pid
            )

        rates: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                _, metrics_port, process = variants[name]
                scraper = Scraper(metrics_port) if metrics_port is not None else None
                if scraper is not None:
                    scraper.start()
                rate, bad, per_request = support.run_wrk(
                    urls[name], script, args.duration, args.connections, client_cpu, process.pid
                )
                if scraper is not None:
                    scraper.stopped.set()
                    scraper.join()
                if bad:
                    raise SystemExit(f"{name}: {bad} non-2xx responses")
                scraped = f"  {scraper.count} scrapes" if scraper is not None else ""
                shown = f"{per_request:7.1f} us CPU/req" if per_request is not None else ""
                print(f"  round {round_index + 1} ({name}) {rate:10.1f} req/s  {shown}{scraped}")
                rates[name].append(rate)
                if per_request is not None:
                    cpus[name].append(per_request)

        labels = {"a": "blocked", "b": "enabled", "c": "summaries"}
        print()
        print(
            f"concurrency {args.connections}, {args.rounds} rounds x {args.duration}s, "
            "binary tensors; a round runs every variant back to back"
        )
        print(
            f"{'':14s}{'best req/s':>11s}{'vs (a)':>8s}{'paired':>8s}"
            f"{'min CPU us/req':>16s}{'vs (a)':>8s}{'paired':>8s}"
        )
        for name in names:
            # paired: the median over rounds of this variant's figure over (a)'s in that round,
            # which cancels the machine's slow drifts better than best-of does
            rate_pairs = median([r / a for r, a in zip(rates[name], rates["a"], strict=True)])
            line = (
                f"({name}) {labels[name]:9s}{max(rates[name]):11.1f}"
                f"{max(rates[name]) / max(rates['a']):8.3f}{rate_pairs:8.3f}"
            )
            if cpus[name] and len(cpus["a"]) == len(cpus[name]):
                cpu_pairs = median([c / a for c, a in zip(cpus[name], cpus["a"], strict=True)])
                line += (
                    f"{min(cpus[name]):16.1f}{min(cpus[name]) / min(cpus['a']):8.3f}"
                    f"{cpu_pairs:8.3f}"
                )
            print(line)

        for _, _, process in variants.values():
            process.terminate()
        if args.scrape_models:
            print()
            print("scrape cost (idle server, each model inferred once):")
            for models in args.scrape_models:
                print("  " + scrape_cost(work, models, server_cpu, summaries=False))
                if args.summaries:
                    print("  " + scrape_cost(work, models, server_cpu, summaries=True))
        return 0
    finally:
        for process in processes:
            support.stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
