"""Entry-point module: hook implementations only. Nothing heavy is imported here."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    registry.add(
        "scale",
        "nereid_example_backend.backend:ScaleBackend",
        model_filenames=("model.scale",),
    )
