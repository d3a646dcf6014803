"""The ``nereid`` entry point of nereid-tracing: the trace flags and the tracer's life.

Cheap to import: the tracer is built when the server starts with a trace flag given.
"""

from __future__ import annotations

import argparse
import weakref
from typing import Any

import nereid

from .config import trace_config_entry, tracing_requested

# server -> its tracer (a server has at most one)
_tracers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@nereid.hookimpl
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracing")
    group.add_argument(
        "--trace-config",
        dest="trace_config",
        action="append",
        default=[],
        type=trace_config_entry,
        metavar="[<mode>,]<setting>=<value>",
        help="a trace setting (repeatable): rate=N, level=OFF|TIMESTAMPS|TENSORS, count=N, "
        "mode=triton|opentelemetry; triton,file=PATH, triton,log-frequency=N; "
        "opentelemetry,url=URL, opentelemetry,resource=KEY=VALUE, "
        "opentelemetry,bsp_max_queue_size=N, opentelemetry,bsp_schedule_delay=MS, "
        "opentelemetry,bsp_max_export_batch_size=N. Any trace flag turns tracing on",
    )
    group.add_argument("--trace-file", default=None, help=argparse.SUPPRESS)
    group.add_argument("--trace-level", action="append", default=[], help=argparse.SUPPRESS)
    group.add_argument("--trace-rate", default=None, help=argparse.SUPPRESS)
    group.add_argument("--trace-count", default=None, help=argparse.SUPPRESS)
    group.add_argument("--trace-log-frequency", default=None, help=argparse.SUPPRESS)


@nereid.hookimpl
def register_request_observers(server: Any) -> list[Any] | None:
    if not tracing_requested(server.options):
        return None
    from .config import parse_options
    from .tracer import Tracer

    tracer = Tracer(server, parse_options(server.options))
    _tracers[server] = tracer
    server.api.tracer = tracer
    server.api.add_extension("trace")
    return [tracer]


@nereid.hookimpl
def server_stopped(server: Any) -> None:
    tracer = _tracers.pop(server, None)
    if tracer is not None:
        tracer.close()
