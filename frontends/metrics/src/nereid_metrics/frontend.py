"""The metrics frontend: ``GET /metrics`` in Prometheus text format, on aiohttp, in the server's
event loop.

Why the event loop and not prometheus_client's server thread: a scrape's work is Python either
way, so in a thread it holds the GIL just as long and takes it from the loop in 5 ms slices
(the interpreter's switch interval) at unpredictable points, while reading structures that the
loop mutates (the model list, the observers' summaries) would need locks on the request path.
On the loop a scrape is one short, atomic step between requests, with no lock anywhere; it costs
well under a millisecond per model (``benchmarks/metrics_overhead.py`` measures it). NVML calls,
which block for milliseconds, run on a worker thread every ``--metrics-interval-ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from aiohttp import web
from nereid.errors import UnavailableError
from prometheus_client import CollectorRegistry

from .collector import ServerCollector
from .exposition import CONTENT_TYPE, generate_text
from .settings import MetricsSettings, metrics_enabled, settings_from_options
from .state import lookup
from .system import CpuReading, CpuSampler, GpuReading, GpuSampler

log = logging.getLogger("nereid.metrics")


def create_frontend(options: argparse.Namespace) -> MetricsFrontend | None:
    """The ``metrics`` frontend for the server's options, or ``None`` with
    ``--allow-metrics=false``."""
    if not metrics_enabled(options):
        return None
    return MetricsFrontend(options)


def default_address(options: argparse.Namespace) -> str:
    """``--metrics-address``, else ``--http-address`` when HTTP is served, else 0.0.0.0 (as
    tritonserver chooses)."""
    if options.metrics_address:
        return options.metrics_address
    if getattr(options, "allow_http", False) and getattr(options, "http_address", None):
        return options.http_address
    return "0.0.0.0"


class MetricsFrontend:
    """The aiohttp server behind ``--metrics-port``. ``port`` is the bound port once started;
    ``registry`` is this frontend's own :class:`prometheus_client.CollectorRegistry`, where a
    plugin may register collectors of its own."""

    def __init__(self, options: argparse.Namespace, nvml: Any = None) -> None:
        self.options = options
        self.settings: MetricsSettings = settings_from_options(options)
        self.host = default_address(options)
        self.port: int = options.metrics_port
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector: ServerCollector | None = None
        self.cpu_reading: CpuReading | None = None
        self.gpu_readings: list[GpuReading] = []
        self._linked = lookup(options)
        self._nvml = nvml
        self._cpu: CpuSampler | None = None
        self._gpu: GpuSampler | None = None
        self._refresher: asyncio.Task | None = None
        self._runner: web.ServerRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, api: Any) -> None:
        linked = self._linked
        if linked is None:
            log.warning(
                "the metrics frontend was not created by a server that registered its "
                "observers: no per-model metrics"
            )
        observers = linked.observers if linked is not None else None
        server_ref = linked.server if linked is not None else None

        def models() -> list[Any]:
            server = server_ref() if server_ref is not None else None
            repository = getattr(server, "repository", None)
            return repository.loaded() if repository is not None else []

        self.collector = ServerCollector(
            models,
            observers,
            getattr(api, "custom_metrics", None),
            lambda: (self.cpu_reading, self.gpu_readings),
        )
        self.registry.register(self.collector)
        if self.settings.cpu:
            self._cpu = CpuSampler()
            self.cpu_reading = self._cpu.read()
        if self.settings.gpu:
            gpu = GpuSampler(self._nvml)
            if await asyncio.to_thread(gpu.open):
                self._gpu = gpu
                self.gpu_readings = await asyncio.to_thread(gpu.read)
        if self._cpu is not None or self._gpu is not None:
            self._refresher = asyncio.create_task(self._refresh_forever())

        server = web.Server(self._handle, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await self._stop_refresh()
            raise UnavailableError(
                f"Socket '{self.host}:{self.port}' already in use ({exc.strerror or exc})"
            ) from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("Started Metrics Service at %s:%d", self.host, self.port)

    async def stop(self, grace: float) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner._shutdown_timeout = min(grace, 5.0)
            await runner.cleanup()
        await self._stop_refresh()
        if self.collector is not None:
            self.registry.unregister(self.collector)
            self.collector = None

    async def _stop_refresh(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        gpu, self._gpu = self._gpu, None
        if gpu is not None:
            await asyncio.to_thread(gpu.close)

    # -- the per-interval readings ---------------------------------------------------------------

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing the CPU and GPU metrics failed")

    async def refresh(self) -> None:
        """Take the CPU and GPU readings now (the background task does so every interval)."""
        if self._cpu is not None:
            self.cpu_reading = self._cpu.read()
        if self._gpu is not None:
            self.gpu_readings = await asyncio.to_thread(self._gpu.read)

    # -- serving ---------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition a scrape returns."""
        return generate_text(self.registry)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/metrics":
            return web.Response(status=404, text="Not Found")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": "GET"})
        try:
            body = self.render()
        except Exception:
            log.exception("collecting metrics failed")
            return web.Response(status=500, text="collecting metrics failed")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
