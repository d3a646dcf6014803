"""Entry-point module: hook implementations only. Nothing heavy is imported here (not
treelite, not the backend module)."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    # No model_filenames: as with Triton's FIL backend, a FIL model needs a config.pbtxt that
    # names its model_type (and "model.txt" is far too common a name to claim).
    registry.add("fil", "nereid_fil.backend:FilBackend")
