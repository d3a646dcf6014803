"""The services that ``pb_utils`` objects reach outside the model for: custom metrics and logs.

``pb_utils.MetricFamily`` or ``pb_utils.Logger`` are called from model code with no handle on the
server, so whoever hosts the model makes a :class:`Services` and activates it around every call
into the model (``initialize``, ``execute``, ``finalize``). In-process, the services talk to the
kernel's registries directly; a model process (:mod:`nereid_python.worker`) installs services
that forward to the server instead. Code running outside an activated call (a thread the model
started) gets the services activated most recently in this process.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any, Protocol

LOGGER_NAME = "nereid.python"


class MetricHandle(Protocol):
    """One labelled series (the kernel's :class:`nereid.custom_metrics.Metric` is one)."""

    def increment(self, value: float) -> None: ...
    def set(self, value: float) -> None: ...
    def observe(self, value: float) -> None: ...
    def get(self) -> float: ...


class FamilyHandle(Protocol):
    """A metric family (the kernel's :class:`nereid.custom_metrics.MetricFamily` is one)."""

    kind: str

    def metric(self, labels: dict[str, str] | None, buckets: Any) -> MetricHandle: ...


class Services:
    """What model code reaches through ``pb_utils``. The base class logs through Python logging
    and has no metrics registry."""

    def metric_family(self, name: str, description: str, kind: str) -> FamilyHandle:
        from .pb_utils import TritonModelException

        raise TritonModelException(
            "custom metrics are not available here: no model is being served"
        )

    def release_metric(self, family: FamilyHandle, metric: MetricHandle) -> None:
        """The model dropped a series (``del metric``); nothing to do by default."""

    def log(self, level: int, message: str, stacklevel: int = 1) -> None:
        logging.getLogger(LOGGER_NAME).log(level, message, stacklevel=stacklevel + 1)

    # -- BLS and the model-loading API (nereid_python.bls) ----------------------------------------

    def bls(self, request: Any, outer: list[Any]) -> Any:
        """Run a BLS request (a ``pb_utils.InferenceRequest``): an iterator of its
        ``pb_utils.InferenceResponse``, the last one final. ``outer`` are the requests of the
        batch being executed: cancelling one of them cancels the call."""
        from .pb_utils import TritonModelException

        raise TritonModelException("BLS is not available here: no model is being served")

    def model_control(self, operation: str, *args: Any) -> Any:
        """``load``, ``unload`` or ``ready`` through the server's model repository."""
        from .pb_utils import TritonModelException

        raise TritonModelException(
            "the model loading API is not available here: no model is being served"
        )


class RegistryServices(Services):
    """Services over the kernel's custom-metrics registry (``api.custom_metrics``).

    The series a model creates are removed from the registry when the model is unloaded
    (:meth:`close`), as Triton drops a model's metrics when its stub process ends.
    """

    def __init__(self, registry: Any, owner: str = "", api: Any = None) -> None:
        self.registry = registry
        self.owner = owner
        self.api = api
        self._created: list[tuple[Any, Any]] = []
        self._families: list[Any] = []
        self._lock = threading.Lock()

    def metric_family(self, name: str, description: str, kind: str) -> FamilyHandle:
        family = self.registry.family(name, description, kind)
        with self._lock:
            if not any(f is family for f in self._families):
                self._families.append(family)
        return _TrackedFamily(self, family)

    def release_metric(self, family: FamilyHandle, metric: MetricHandle) -> None:
        family = getattr(family, "_family", family)
        family.remove(metric)

    def bls(self, request: Any, outer: list[Any]) -> Any:
        from .bls import thread_bls

        return thread_bls(self.api, request, outer)

    def model_control(self, operation: str, *args: Any) -> Any:
        from .bls import model_control

        return model_control(self.api, operation, *args)

    def _track(self, family: Any, metric: Any) -> None:
        with self._lock:
            self._created.append((family, metric))

    def close(self) -> None:
        """Remove every series this model created, and families left empty by that."""
        with self._lock:
            created, self._created = self._created, []
            families, self._families = self._families, []
        for family, metric in created:
            family.remove(metric)
        for family in families:
            if not family.metrics and self.registry.families.get(family.name) is family:
                self.registry.remove(family.name)


class _TrackedFamily:
    __slots__ = ("_family", "_services", "kind")

    def __init__(self, services: RegistryServices, family: Any) -> None:
        self._services = services
        self._family = family
        self.kind = family.kind

    def metric(self, labels: dict[str, str] | None, buckets: Any) -> MetricHandle:
        metric = self._family.metric(labels, buckets)
        self._services._track(self._family, metric)
        return metric


# The requests of the batch whose ``execute`` is running (BLS calls made in it are cancelled
# with them).
outer_requests: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "nereid_python_outer_requests", default=()
)

_current: contextvars.ContextVar[Services | None] = contextvars.ContextVar(
    "nereid_python_services", default=None
)
_fallback: Services = Services()
_fallback_lock = threading.Lock()


def current() -> Services:
    """The services of the model being called, or the last ones activated in this process."""
    services = _current.get()
    return services if services is not None else _fallback


class active:  # lower case: used like a function, ``with runtime.active(services):``
    """Make ``services`` the current ones for the duration (one call into model code).

    A class rather than a generator context manager: it runs around every ``execute``."""

    __slots__ = ("_services", "_token")

    def __init__(self, services: Services) -> None:
        self._services = services

    def __enter__(self) -> None:
        global _fallback
        services = self._services
        if _fallback is not services:
            with _fallback_lock:
                _fallback = services
        self._token = _current.set(services)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def forget(services: Services) -> None:
    """A host is going away: stop handing its services to threads without a context."""
    global _fallback
    with _fallback_lock:
        if _fallback is services:
            _fallback = Services()
