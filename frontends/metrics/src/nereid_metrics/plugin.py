"""The ``nereid`` entry point of nereid-metrics: the ``metrics`` frontend, its flags and its
request observers.

Imports nothing heavy: aiohttp and prometheus_client are imported by
:mod:`nereid_metrics.frontend` when the server creates the frontend, NVML when a GPU metric is
first collected.
"""

from __future__ import annotations

import argparse

import nereid
from nereid.options import str2bool


@nereid.hookimpl
def register_frontends(registry) -> None:
    registry.add("metrics", "nereid_metrics.frontend:create_frontend")


@nereid.hookimpl
def register_request_observers(server) -> list | None:
    """The observers behind the failure reasons, summaries and first-response histogram, when
    this server will start the ``metrics`` frontend (none otherwise: a server that exports no
    metrics pays nothing per request)."""
    from .settings import metrics_enabled, settings_from_options

    options = server.options
    if "metrics" not in server.frontend_names or not metrics_enabled(options):
        return None
    from .observers import MetricsObservers
    from .state import attach

    observers = MetricsObservers(settings_from_options(options), server.api.model)
    attach(options, server, observers)
    return observers.all()


def _bool_flag(group: argparse._ArgumentGroup, name: str, default: bool, help: str) -> None:
    group.add_argument(
        name, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help
    )


@nereid.hookimpl
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    _bool_flag(group, "--allow-metrics", True, "serve Prometheus metrics (default true)")
    _bool_flag(group, "--allow-gpu-metrics", True, "export GPU metrics through NVML (default true)")
    _bool_flag(group, "--allow-cpu-metrics", True, "export CPU and memory metrics (default true)")
    group.add_argument(
        "--metrics-address",
        default=None,
        metavar="ADDRESS",
        help="address the metrics server binds (default: --http-address when HTTP is served, "
        "else 0.0.0.0)",
    )
    group.add_argument(
        "--metrics-port", type=int, default=8002, help="metrics port (0: any free port)"
    )
    group.add_argument(
        "--metrics-interval-ms",
        type=float,
        default=2000.0,
        metavar="MS",
        help="interval between refreshes of the CPU and GPU metrics (default 2000)",
    )
    group.add_argument(
        "--metrics-config",
        action="append",
        default=[],
        metavar="<setting>=<value>",
        help="counter_latencies, summary_latencies, summary_quantiles=<q>:<error>,..., "
        "histogram_latencies (repeatable)",
    )
