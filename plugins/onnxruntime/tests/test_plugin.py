"""The plugin is found through its entry point and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys


def test_discovered_through_entry_point():
    from nereid.plugins import PluginSystem

    system = PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("onnxruntime")
    assert entry.distribution == "nereid-onnxruntime"
    assert entry.target == "nereid_onnxruntime.backend:OnnxRuntimeBackend"
    assert entry.model_filenames == ("model.onnx",)
    assert system.registries["backend"].find("onnxruntime_onnx") is entry


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_onnxruntime, nereid_onnxruntime.plugin\n"
        "heavy = [m for m in ('onnxruntime', 'onnx', 'nereid_onnxruntime.backend', "
        "'nereid.server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pure_modules_do_not_import_onnxruntime():
    code = (
        "import sys\n"
        "import nereid_onnxruntime.options, nereid_onnxruntime.signature\n"
        "import nereid_onnxruntime.datatypes, nereid_onnxruntime.settings\n"
        "assert 'onnxruntime' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
