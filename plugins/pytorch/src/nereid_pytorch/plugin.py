"""Entry-point module: hook implementations only. Nothing heavy is imported here (not torch,
not the backend module)."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    registry.add(
        "pytorch",
        "nereid_pytorch.backend:PyTorchBackend",
        aliases=("pytorch_libtorch",),
        model_filenames=("model.pt", "model.pt2"),
    )
