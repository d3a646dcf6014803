"""Nereid's OpenVINO backend: serves OpenVINO IR (``model.xml`` + ``model.bin``) and ONNX files
through OpenVINO, as Triton's openvino backend.

Modules:

- :mod:`nereid_openvino.plugin` -- the entry point (registers ``openvino``, claiming
  ``model.xml``); imports nothing heavy.
- :mod:`nereid_openvino.signature` -- the model's inputs and outputs as plain data, auto-complete
  of the configuration from them, and the check of a configuration against them.
- :mod:`nereid_openvino.options` -- pure functions from the configuration to the device, the
  compile properties (hint, streams, threads, precision) and the reshape rules.
- :mod:`nereid_openvino.backend` -- the kernel's Backend / Model / ModelInstance contract; the
  only module that imports openvino.
"""

__version__ = "0.1.0"
