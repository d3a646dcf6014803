"""Every hook a Nereid plugin can implement.

Hooks assemble the server; they never run per request. Registration hooks are called once per
plugin while the server is assembled, with a registry scoped to the plugin's distribution, so a
duplicate name can name both distributions. Lifecycle hooks are called at coarse events. Work on
the request path is done by the objects the registration hooks hand over (backends, schedulers,
frontends, stores, request observers), called directly by the kernel.

Implement a hook with ``@nereid.hookimpl`` on a function of the module your ``nereid`` entry
point names. Keep that module cheap to import: no framework import at module level.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .errors import NereidError
    from .plugins import Registry
    from .server import Server

PROJECT = "nereid"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration ------------------------------------------------------------------------------


@hookspec
def register_backends(registry: Registry) -> None:
    """Register backends by name.

    ``registry.add(name, "module:attr", aliases=("platform_name",), model_filenames=("model.x",))``.
    The target is imported when the first model naming the backend loads; it is called once with
    a :class:`nereid.backend.BackendContext` and returns the backend object, whose
    ``create_model(config, path)`` makes a :class:`nereid.backend.Model`. ``aliases`` are the
    ``platform:`` values that select the backend; ``model_filenames`` are the default model file
    names the backend claims, used to pick a backend for a model folder without ``config.pbtxt``.
    """


@hookspec
def register_schedulers(registry: Registry) -> None:
    """Register schedulers by name (``default``, ``dynamic``, ``sequence``, ``ensemble``).

    ``registry.add(name, "module:attr")``. The target is called with a
    :class:`nereid.scheduler.SchedulerContext` for each loaded model version whose configuration
    selects it, and returns an object with the :class:`nereid.scheduler.Scheduler` interface.
    """


@hookspec
def register_frontends(registry: Registry) -> None:
    """Register network frontends by name (``http``, ``grpc``, ``metrics``).

    ``registry.add(name, "module:attr")``. At start-up the target is called with the server's
    options (an ``argparse.Namespace`` holding every flag) and returns a frontend object with
    ``async start(api)`` and ``async stop(grace)``, or ``None`` when its flags disable it.
    """


@hookspec
def register_repository_stores(registry: Registry) -> None:
    """Register model repository stores by URL scheme (``file`` for local paths, ``s3``, ...).

    ``registry.add(scheme, "module:attr")``. The target is called with the repository location
    string and returns a :class:`nereid.lifecycle.store.RepositoryStore`: list the model folders,
    fetch one to local disk, and report a change signature for polling.
    """


@hookspec
def register_request_observers(server: Server) -> list[Any] | None:
    """Return request observers to attach (objects with any of the
    :class:`nereid.observers.RequestObserver` methods).

    Called once at start-up. The kernel calls each observer directly at fixed points of every
    request (arrival, queued, execution start/end, each response, completion); this hook itself
    never runs per request.
    """


@hookspec
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """Add command-line flags for ``nereid serve`` (and ``Server`` keyword options).

    Use an argument group named after the plugin. Flags of a plugin that is not installed do not
    exist, and an unknown flag is an error, as with tritonserver.
    """


# -- lifecycle events ----------------------------------------------------------------------------


@hookspec
def server_started(server: Server) -> None:
    """The server has loaded its start-up models and its frontends are listening."""


@hookspec
def server_stopping(server: Server) -> None:
    """The server has stopped accepting requests and is about to drain and unload."""


@hookspec
def server_stopped(server: Server) -> None:
    """The server has drained its in-flight requests, unloaded its models and closed its
    frontends: flush and release what a plugin holds for the server (trace files, exporters)."""


@hookspec
def model_loading(model_name: str, version: int, config: Any) -> None:
    """A model version starts loading its instances, with its configuration after
    auto-complete and validation."""


@hookspec
def model_ready(model_name: str, version: int, config: Any) -> None:
    """A model version is loaded, warmed up and serving (requests reach it from now on)."""


@hookspec
def model_load_failed(model_name: str, version: int, error: NereidError) -> None:
    """A model version failed to load; ``error`` says why. Other models keep serving.
    ``version`` is -1 when the model failed before any version was tried (an invalid
    configuration, a missing step model)."""


@hookspec
def model_unloaded(model_name: str, version: int) -> None:
    """A model version finished its in-flight requests and was unloaded."""
