"""Entry-point module: hook implementations only. Nothing heavy is imported here (not
onnxruntime, not the backend module)."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    registry.add(
        "onnxruntime",
        "nereid_onnxruntime.backend:OnnxRuntimeBackend",
        aliases=("onnxruntime_onnx",),
        model_filenames=("model.onnx",),
    )
