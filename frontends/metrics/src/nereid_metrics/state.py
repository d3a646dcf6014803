"""What links one server's observers to its metrics frontend.

The observers are made by the ``register_request_observers(server)`` hook, before the frontends
start; the frontend factory only receives the server's options. The hook records, per options
object, the server and its observers; the factory looks them up with the same options object.
Weak references both ways: nothing here keeps a stopped server alive.
"""

from __future__ import annotations

import argparse
import weakref
from dataclasses import dataclass
from typing import Any

from .observers import MetricsObservers


@dataclass
class ServerMetrics:
    server: weakref.ReferenceType[Any]
    observers: MetricsObservers


_BY_OPTIONS: dict[int, tuple[weakref.ReferenceType[Any], ServerMetrics]] = {}


def attach(options: argparse.Namespace, server: Any, observers: MetricsObservers) -> None:
    key = id(options)
    _BY_OPTIONS[key] = (weakref.ref(options), ServerMetrics(weakref.ref(server), observers))
    weakref.finalize(options, _BY_OPTIONS.pop, key, None)


def lookup(options: argparse.Namespace) -> ServerMetrics | None:
    entry = _BY_OPTIONS.get(id(options))
    if entry is None or entry[0]() is not options:
        return None
    return entry[1]
