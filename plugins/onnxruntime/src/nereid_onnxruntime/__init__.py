"""Nereid's ONNX Runtime backend: serves ``model.onnx`` files as Triton's onnxruntime backend.

Modules:

- :mod:`nereid_onnxruntime.plugin` -- the entry point (registers ``onnxruntime``, alias
  ``onnxruntime_onnx``, claiming ``model.onnx``); imports nothing heavy.
- :mod:`nereid_onnxruntime.datatypes` -- ONNX element types and Triton datatypes, and the
  conversions of BYTES (ONNX strings) and BF16 tensors.
- :mod:`nereid_onnxruntime.signature` -- the model's inputs and outputs, auto-complete of the
  configuration from them, and the check of a configuration against them.
- :mod:`nereid_onnxruntime.options` -- pure functions from the configuration and an instance
  to session options and execution providers (CPU, CUDA, TensorRT, OpenVINO).
- :mod:`nereid_onnxruntime.settings` -- ``--backend-config=onnxruntime,...`` settings.
- :mod:`nereid_onnxruntime.backend` -- the kernel's Backend / Model / ModelInstance contract;
  the only module that imports onnxruntime.
"""

__version__ = "0.1.0"
