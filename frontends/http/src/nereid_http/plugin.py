"""The ``nereid`` entry point of nereid-http: the ``http`` frontend and its flags.

Imports nothing heavy: aiohttp is imported by :mod:`nereid_http.frontend` when the server
creates the frontend.
"""

from __future__ import annotations

import argparse

import nereid
from nereid.options import str2bool

DEFAULT_MAX_INPUT_SIZE = 64 * 1024 * 1024


@nereid.hookimpl
def register_frontends(registry) -> None:
    registry.add("http", "nereid_http.frontend:create_frontend")


@nereid.hookimpl
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("http")
    group.add_argument(
        "--allow-http",
        type=str2bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="serve the HTTP/REST API (default true)",
    )
    group.add_argument("--http-port", type=int, default=8000, help="HTTP port (0: any free port)")
    group.add_argument("--http-address", default="0.0.0.0", help="address the HTTP server binds")
    group.add_argument(
        "--reuse-http-port",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="bind the HTTP port with SO_REUSEPORT",
    )
    group.add_argument(
        "--http-header-forward-pattern",
        default="",
        metavar="REGEX",
        help="forward request headers whose name matches this regular expression to the model "
        "as request parameters",
    )
    group.add_argument(
        "--http-thread-count",
        type=int,
        default=8,
        help="accepted for compatibility with tritonserver; the HTTP frontend runs on the "
        "server's event loop",
    )
    group.add_argument(
        "--http-restricted-api",
        action="append",
        default=[],
        metavar="<API>[,<API>...]:<KEY>=<VALUE>",
        help="restrict API groups (health, metadata, inference, shared-memory, model-config, "
        "model-repository, statistics, trace, logging) to requests carrying header KEY=VALUE "
        "(repeatable)",
    )
    group.add_argument(
        "--http-max-input-size",
        type=int,
        default=DEFAULT_MAX_INPUT_SIZE,
        metavar="BYTES",
        help="largest request body accepted, after decompression (default 64 MiB)",
    )
