"""Fixtures for the python backend's tests: model sources live in python_backend_models.py.

Every test that starts a server through ``start_server`` runs twice: with models in processes
of their own (the default) and in the server process (``execution-mode=thread``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

MODES = ("process", "thread")


@pytest.fixture(params=MODES)
def execution_mode(request) -> str:
    return request.param


@pytest.fixture
def start_server(start_server, execution_mode):
    """The kernel's ``start_server`` with ``--backend-config=python,execution-mode=<mode>``
    (a test's own backend settings come after, so they win)."""

    async def start(repository=None, **options):
        flags = list(options.pop("backend_config", ()))
        options["backend_config"] = [f"python,execution-mode={execution_mode}", *flags]
        return await start_server(repository, **options)

    return start
