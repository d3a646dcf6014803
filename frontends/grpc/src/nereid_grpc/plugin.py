"""The ``nereid`` entry point of the gRPC frontend: its registration and its flags.

Kept cheap to import: argparse and the kernel's hook marker only, never grpc.
"""

from __future__ import annotations

import argparse

from nereid import hookimpl
from nereid.options import str2bool

#: Triton's ``--grpc-infer-response-compression-level`` values.
COMPRESSION_LEVELS = ("none", "low", "medium", "high")


@hookimpl
def register_frontends(registry) -> None:
    registry.add("grpc", "nereid_grpc.frontend:create_frontend")


def _flag(group: argparse._ArgumentGroup, name: str, default: bool, help: str) -> None:
    """A tritonserver boolean flag: ``--name=true|false``, or bare ``--name`` for true."""
    group.add_argument(
        name, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help
    )


@hookimpl
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("grpc")
    _flag(group, "--allow-grpc", True, "serve Triton's gRPC protocol (default true)")
    group.add_argument("--grpc-port", type=int, default=8001, help="port (0 picks a free one)")
    group.add_argument("--grpc-address", default="0.0.0.0", help="address to bind")
    _flag(group, "--reuse-grpc-port", False, "allow several servers to bind the same port")
    group.add_argument(
        "--grpc-header-forward-pattern",
        default="",
        metavar="REGEX",
        help="request headers whose names match are added to the request parameters",
    )
    group.add_argument(
        "--grpc-infer-allocation-pool-size",
        type=int,
        default=8,
        help="accepted for tritonserver compatibility (no effect)",
    )
    group.add_argument(
        "--grpc-infer-thread-count",
        type=int,
        default=2,
        help="accepted for tritonserver compatibility (no effect: one event loop serves)",
    )
    group.add_argument(
        "--grpc-infer-response-compression-level",
        choices=COMPRESSION_LEVELS,
        default="none",
        help="compression of inference responses",
    )
    group.add_argument(
        "--grpc-restricted-protocol",
        action="append",
        default=[],
        metavar="<protocols>:<key>=<value>",
        help="require header 'triton-grpc-protocol-<key>: <value>' for these protocol groups "
        "(health, metadata, inference, shared-memory, model-config, model-repository, "
        "statistics, trace, logging); repeatable",
    )
    ssl = parser.add_argument_group("grpc ssl")
    _flag(ssl, "--grpc-use-ssl", False, "serve over TLS")
    _flag(ssl, "--grpc-use-ssl-mutual", False, "serve over TLS and require client certificates")
    ssl.add_argument("--grpc-server-cert", default="", help="server certificate (PEM file)")
    ssl.add_argument("--grpc-server-key", default="", help="server private key (PEM file)")
    ssl.add_argument("--grpc-root-cert", default="", help="root certificate (PEM file)")
    keepalive = parser.add_argument_group("grpc keepalive")
    keepalive.add_argument("--grpc-keepalive-time", type=int, default=7200000, metavar="MS")
    keepalive.add_argument("--grpc-keepalive-timeout", type=int, default=20000, metavar="MS")
    _flag(keepalive, "--grpc-keepalive-permit-without-calls", False, "")
    keepalive.add_argument("--grpc-http2-max-pings-without-data", type=int, default=2)
    keepalive.add_argument(
        "--grpc-http2-min-recv-ping-interval-without-data", type=int, default=300000, metavar="MS"
    )
    keepalive.add_argument("--grpc-http2-max-ping-strikes", type=int, default=2)
    keepalive.add_argument("--grpc-max-connection-age", type=int, default=0, metavar="MS")
    keepalive.add_argument("--grpc-max-connection-age-grace", type=int, default=0, metavar="MS")
