"""Entry-point module: hook implementations only. Nothing heavy is imported here (not openvino,
not the backend module)."""

from __future__ import annotations

import nereid


@nereid.hookimpl
def register_backends(registry) -> None:
    # Only model.xml is claimed: model.onnx is claimed by the onnxruntime backend, and the kernel
    # picks a backend for a folder without config.pbtxt only when exactly one claims a file. An
    # ONNX file is served by OpenVINO when the configuration says backend: "openvino" (and
    # default_model_filename: "model.onnx").
    registry.add(
        "openvino",
        "nereid_openvino.backend:OpenVINOBackend",
        model_filenames=("model.xml",),
    )
