"""The Server: assembles the plugins, owns the repository manager and the event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from typing import Any

from .api import InferenceService
from .backend import Backend, BackendContext
from .clock import SYSTEM_CLOCK, Clock
from .config import backend_config_from_flags
from .errors import NereidError, UnavailableError
from .lifecycle.repository import RepositoryManager
from .logsettings import LogSettings
from .observers import ObserverSet
from .options import resolve_options
from .plugins import PluginSettings, PluginSystem, RegistryEntry
from .runtime import gc_tuning

log = logging.getLogger(__name__)


class Server:
    """A Nereid server. ``Server(model_repository=path, **options)``: options are the flags of
    ``nereid serve`` in keyword form (``http_port=0``).

    ``frontends`` names the network frontends to start (``["http", "grpc"]``). By default a
    server made from ``nereid serve`` options starts every installed frontend its flags allow,
    and one made from keywords starts none (in-process use needs no sockets).

    ``await server.start()`` loads the start-up models and starts the frontends on the running
    loop; ``await server.stop()`` drains and unloads. ``async with Server(...)`` does both.
    """

    def __init__(
        self,
        model_repository: str | list[str] | None = None,
        *,
        plugins: list[Any] = (),
        options: argparse.Namespace | None = None,
        clock: Clock = SYSTEM_CLOCK,
        frontends: list[str] | None = None,
        **overrides: Any,
    ) -> None:
        if model_repository is not None:
            overrides["model_repository"] = model_repository
        knobs = PluginSettings.from_env().merged(
            disable_autoload=overrides.get("disable_plugin_autoload", False)
            or bool(options and options.disable_plugin_autoload),
            allow=_flatten(overrides.get("plugin_allow", []))
            + _flatten(options.plugin_allow if options else []),
            block=_flatten(overrides.get("plugin_block", []))
            + _flatten(options.plugin_block if options else []),
        )
        self.plugins = PluginSystem(knobs)
        self.plugins.load_entry_points()
        for plugin in plugins:
            self.plugins.register(plugin)
        self.plugins.check_pending()
        self.plugins.collect_registrations()
        from_cli = options is not None
        if options is None:
            options = resolve_options(self.plugins, overrides)
        else:
            for key, value in overrides.items():
                setattr(options, key, value)
        self.options = options
        self.clock = clock
        self.log_settings = LogSettings()
        self.extensions: set[str] = set()
        self.backend_settings = backend_config_from_flags(options.backend_config)
        self.observers = ObserverSet()
        self.api = InferenceService(self)
        self.live = False
        self.ready = False
        self._gc_tuned = False
        self.startup_errors: list[NereidError] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.repository: RepositoryManager | None = None
        self.frontend_names = (
            frontends
            if frontends is not None
            else (self.plugins.registries["frontend"].names() if from_cli else [])
        )
        self.frontends: dict[str, Any] = {}
        self._backends: dict[str, Backend] = {}
        self._backends_lock = threading.Lock()

    # -- parts ---------------------------------------------------------------------------------

    def backend(self, entry: RegistryEntry) -> Backend:
        """The backend registered by ``entry``, made on first use (its framework loads now)."""
        with self._backends_lock:
            backend = self._backends.get(entry.name)
            if backend is None:
                settings = {
                    **self.backend_settings.get("", {}),
                    **self.backend_settings.get(entry.name, {}),
                }
                context = BackendContext(entry.name, settings, self.api, self.options)
                backend = self._backends[entry.name] = entry.load()(context)
            return backend

    def _stores(self) -> list[Any]:
        registry = self.plugins.registries["repository_store"]
        stores = []
        for location in self.options.model_repository:
            scheme = location.split("://", 1)[0] if "://" in location else "file"
            entry = registry.find(scheme)
            if entry is None:
                raise UnavailableError(
                    f"no repository store for '{scheme}://' is installed (repository '{location}')"
                )
            stores.append(entry.load()(location))
        return stores

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.api.attach(self.loop)
        self.log_settings.update(
            {
                "log_file": self.options.log_file,
                "log_info": self.options.log_info,
                "log_warning": self.options.log_warning,
                "log_error": self.options.log_error,
                "log_verbose_level": self.options.log_verbose,
                "log_format": self.options.log_format,
            }
        )
        for observers in self.plugins.hook.register_request_observers(server=self):
            for observer in observers or ():
                self.observers.add(observer)
        self.live = True
        self.repository = RepositoryManager(self, self._stores())
        await self.repository.start()
        if self.startup_errors and self.options.exit_on_error:
            await self.repository.stop(timeout=0)
            self.live = False
            raise self.startup_errors[0]
        try:
            await self._start_frontends()
        except BaseException:
            await self.stop(grace=0)  # a frontend that cannot start (port in use) stops it all
            raise
        self._gc_tuned = gc_tuning.raise_threshold(self.options.gc_threshold)
        self.ready = True
        self.plugins.hook.server_started(server=self)

    async def _start_frontends(self) -> None:
        registry = self.plugins.registries["frontend"]
        for name in self.frontend_names:
            frontend = registry.get(name).load()(self.options)
            if frontend is not None:
                await frontend.start(self.api)
                self.frontends[name] = frontend

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` seconds, default
        ``--exit-timeout-secs``), unload every model."""
        if not self.live:
            return
        grace = self.options.exit_timeout_secs if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        self.ready = False
        self.plugins.hook.server_stopping(server=self)
        for frontend in self.frontends.values():
            try:
                await frontend.stop(grace)
            except Exception:
                log.exception("stopping frontend %r failed", frontend)
        self.frontends = {}
        if self.repository is not None:
            # one --exit-timeout-secs for the whole stop, not one per stage
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await self.repository.stop(timeout=remaining)
        self.api.system_shm.unregister()
        if self._gc_tuned:
            gc_tuning.restore()
            self._gc_tuned = False
        self.live = False
        self.plugins.hook.server_stopped(server=self)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then stop gracefully (a signal during start-up stops
        the server as soon as it has started).

        As tritonserver does, the process then ends within ``--exit-timeout-secs`` (and
        :data:`UNLOAD_MARGIN_S` to unload) of the signal, with status 1 when it had to: model
        code stuck on a thread (an ``execute`` or ``initialize`` that never returns) cannot
        be interrupted, and the stop, or the interpreter's exit, would wait for it for good.
        """
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        deadline = self.options.exit_timeout_secs + UNLOAD_MARGIN_S

        def on_signal() -> None:
            if not stop_requested.is_set():
                stop_requested.set()
                timer = threading.Timer(deadline, _exit_now, (deadline,))
                timer.daemon = True  # a stop that ends in time does not wait for it
                timer.start()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await self.start()
        await stop_requested.wait()
        log.info(
            "signal received, stopping: waiting up to %ss for in-flight requests",
            self.options.exit_timeout_secs,
        )
        await self.stop()


#: Seconds past ``--exit-timeout-secs`` that a stopping server gets to unload its models.
UNLOAD_MARGIN_S = 5.0


def _exit_now(seconds: float) -> None:
    log.error(
        "exit timeout expired: still stopping %.1fs after the signal (model code that does "
        "not return); exiting without waiting for it",
        seconds,
    )
    logging.shutdown()
    os._exit(1)


def _flatten(values: Any) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]
