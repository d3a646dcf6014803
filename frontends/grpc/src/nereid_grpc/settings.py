"""The gRPC frontend's settings, read and checked from the server options (no grpc import)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from nereid import InvalidArgumentError

#: Triton's protocol groups for ``--grpc-restricted-protocol``, and the RPCs in each.
PROTOCOL_GROUPS: dict[str, tuple[str, ...]] = {
    "health": ("ServerLive", "ServerReady", "ModelReady", "Check"),
    "metadata": ("ServerMetadata", "ModelMetadata"),
    "inference": ("ModelInfer", "ModelStreamInfer"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "model-config": ("ModelConfig",),
    "model-repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "trace": ("TraceSetting",),
    "logging": ("LogSettings",),
}

#: ``--grpc-infer-response-compression-level`` as gRPC core's compression levels. gRPC core
#: picks the algorithm from what the client accepts (low: gzip; medium, high: deflate).
COMPRESSION_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}

#: The header prefix Triton puts before a restricted protocol's key.
RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"


@dataclass(frozen=True)
class Restriction:
    """The header (name, value) a restricted RPC requires."""

    header: str
    value: str


def parse_restricted_protocols(specs: list[str]) -> dict[str, Restriction]:
    """``<protocol>[,<protocol>...]:<key>=<value>`` flags into a restriction per RPC name."""
    by_group: dict[str, Restriction] = {}
    for spec in specs:
        groups, sep, rest = spec.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or not groups.strip() or not key.strip():
            raise InvalidArgumentError(
                f"invalid --grpc-restricted-protocol '{spec}', expected "
                "'<protocol>[,<protocol>...]:<key>=<value>'"
            )
        restriction = Restriction(RESTRICTED_HEADER_PREFIX + key.strip().lower(), value)
        for group in (g.strip() for g in groups.split(",")):
            if group not in PROTOCOL_GROUPS:
                raise InvalidArgumentError(
                    f"unknown restricted protocol '{group}' in --grpc-restricted-protocol "
                    f"'{spec}', expected one of {', '.join(PROTOCOL_GROUPS)}"
                )
            if group in by_group:
                raise InvalidArgumentError(
                    f"protocol '{group}' is given in more than one --grpc-restricted-protocol"
                )
            by_group[group] = restriction
    return {
        rpc: restriction
        for group, restriction in by_group.items()
        for rpc in PROTOCOL_GROUPS[group]
    }


def _read(path: str, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {what} '{path}': {exc.strerror}") from None


@dataclass
class GrpcSettings:
    address: str = "0.0.0.0"
    port: int = 8001
    reuse_port: bool = False
    allow_client_shm: bool = False
    header_forward: re.Pattern[str] | None = None
    compression_level: str = "none"
    restricted: dict[str, Restriction] = field(default_factory=dict)
    use_ssl: bool = False
    ssl_mutual: bool = False
    server_cert: bytes | None = None
    server_key: bytes | None = None
    root_cert: bytes | None = None
    channel_options: list[tuple[str, int]] = field(default_factory=list)

    @property
    def bind_address(self) -> str:
        host = self.address
        if host.startswith("unix:"):
            return f"{host}:{self.port}"  # as tritonserver does, the port is appended
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> GrpcSettings:
        pattern = options.grpc_header_forward_pattern
        try:
            header_forward = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise InvalidArgumentError(
                f"invalid --grpc-header-forward-pattern '{pattern}': {exc}"
            ) from None
        use_ssl = bool(options.grpc_use_ssl or options.grpc_use_ssl_mutual)
        settings = cls(
            address=options.grpc_address,
            port=int(options.grpc_port),
            reuse_port=bool(options.reuse_grpc_port),
            allow_client_shm=bool(getattr(options, "allow_client_shm", False)),
            header_forward=header_forward,
            compression_level=options.grpc_infer_response_compression_level,
            restricted=parse_restricted_protocols(list(options.grpc_restricted_protocol or [])),
            use_ssl=use_ssl,
            ssl_mutual=bool(options.grpc_use_ssl_mutual),
        )
        if use_ssl:
            settings.server_cert = _read(options.grpc_server_cert, "--grpc-server-cert")
            settings.server_key = _read(options.grpc_server_key, "--grpc-server-key")
            settings.root_cert = _read(options.grpc_root_cert, "--grpc-root-cert")
            if settings.server_cert is None or settings.server_key is None:
                raise InvalidArgumentError(
                    "--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key"
                )
            if settings.ssl_mutual and settings.root_cert is None:
                raise InvalidArgumentError("--grpc-use-ssl-mutual needs --grpc-root-cert")
        unlimited = 2**31 - 1  # Triton's MAX_GRPC_MESSAGE_SIZE (INT32_MAX)
        settings.channel_options = [
            ("grpc.max_send_message_length", unlimited),
            ("grpc.max_receive_message_length", unlimited),
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            ("grpc.keepalive_time_ms", int(options.grpc_keepalive_time)),
            ("grpc.keepalive_timeout_ms", int(options.grpc_keepalive_timeout)),
            (
                "grpc.keepalive_permit_without_calls",
                1 if options.grpc_keepalive_permit_without_calls else 0,
            ),
            ("grpc.http2.max_pings_without_data", int(options.grpc_http2_max_pings_without_data)),
            (
                "grpc.http2.min_recv_ping_interval_without_data_ms",
                int(options.grpc_http2_min_recv_ping_interval_without_data),
            ),
            ("grpc.http2.max_ping_strikes", int(options.grpc_http2_max_ping_strikes)),
        ]
        level = COMPRESSION_LEVELS[settings.compression_level]
        if level:
            # A server-wide default: grpc.aio applies no per-call compression to unary calls.
            settings.channel_options.append(("grpc.default_compression_level", level))
        if options.grpc_max_connection_age:
            settings.channel_options.append(
                ("grpc.max_connection_age_ms", int(options.grpc_max_connection_age))
            )
        if options.grpc_max_connection_age_grace:
            settings.channel_options.append(
                ("grpc.max_connection_age_grace_ms", int(options.grpc_max_connection_age_grace))
            )
        return settings
