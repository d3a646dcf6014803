"""The plugin is found through its entry point and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys


def test_discovered_through_entry_point():
    from nereid.plugins import PluginSystem

    system = PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("openvino")
    assert entry.distribution == "nereid-openvino"
    assert entry.target == "nereid_openvino.backend:OpenVINOBackend"
    # Only model.xml: model.onnx belongs to the onnxruntime backend for config-less folders.
    assert entry.model_filenames == ("model.xml",)


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_openvino, nereid_openvino.plugin\n"
        "import nereid_openvino.options, nereid_openvino.signature\n"
        "heavy = [m for m in ('openvino', 'onnx', 'nereid_openvino.backend', 'nereid.server') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
