"""The kernel's built-in plugin: the default scheduler, the local store, the test backends."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..plugins import ScopedRegistry


@hookimpl
def register_backends(registry: ScopedRegistry) -> None:
    registry.add("identity", "nereid.builtin.test_backends:IdentityBackend")
    registry.add("repeat", "nereid.builtin.test_backends:RepeatBackend")
    registry.add("square", "nereid.builtin.test_backends:SquareBackend")


@hookimpl
def register_schedulers(registry: ScopedRegistry) -> None:
    registry.add("default", "nereid.builtin.default_scheduler:DefaultScheduler")


@hookimpl
def register_repository_stores(registry: ScopedRegistry) -> None:
    registry.add("file", "nereid.lifecycle.store:LocalStore")
