"""Entry-point module: hook implementations only. Nothing heavy is imported here."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    registry.add("python", "nereid_python.backend:PythonBackend", model_filenames=("model.py",))
