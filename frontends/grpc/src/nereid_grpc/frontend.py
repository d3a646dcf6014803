"""The gRPC frontend object: a ``grpc.aio`` server on the Nereid server's event loop."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import grpc
from nereid import UnavailableError

from .service import GrpcService
from .settings import GrpcSettings

log = logging.getLogger("nereid.grpc")


def create_frontend(options: argparse.Namespace) -> GrpcFrontend | None:
    """The frontend for these server options, or ``None`` with ``--allow-grpc=false``."""
    if not options.allow_grpc:
        return None
    return GrpcFrontend(GrpcSettings.from_options(options))


class GrpcFrontend:
    """Serves Triton's GRPCInferenceService and ``grpc.health.v1.Health/Check``.

    ``port`` is the bound port once started (the ephemeral one for ``--grpc-port 0``).
    """

    def __init__(self, settings: GrpcSettings) -> None:
        self.settings = settings
        self.port: int | None = None
        self.service: GrpcService | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self, api: Any) -> None:
        settings = self.settings
        server = grpc.aio.server(options=settings.channel_options)
        self.service = GrpcService(api, settings)
        server.add_generic_rpc_handlers(self.service.generic_handlers())
        address = settings.bind_address
        try:
            if settings.use_ssl:
                credentials = grpc.ssl_server_credentials(
                    [(settings.server_key, settings.server_cert)],
                    root_certificates=settings.root_cert,
                    require_client_auth=settings.ssl_mutual,
                )
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            await server.stop(None)
            raise UnavailableError(f"Socket '{address}' already in use")
        await server.start()
        self._server = server
        self.port = port
        scheme = "TLS" if settings.use_ssl else "insecure"
        log.info(
            "Started GRPCInferenceService at %s:%d (%s)",
            settings.address,
            port,
            scheme,
        )

    async def stop(self, grace: float | None) -> None:
        """Stop accepting calls; calls in flight get ``grace`` seconds, then are cancelled
        (which cancels their requests)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    def __repr__(self) -> str:
        return f"GrpcFrontend({self.settings.address}:{self.port})"
