"""The plugin is found through its entry point, stays cheap to import, and provides
``triton_python_backend_utils`` as a top-level module."""

from __future__ import annotations

import subprocess
import sys


def test_discovered_through_entry_point():
    from nereid.plugins import PluginSystem

    system = PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("python")
    assert entry.distribution == "nereid-python"
    assert entry.target == "nereid_python.backend:PythonBackend"
    assert entry.model_filenames == ("model.py",)


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_python.plugin\n"
        "heavy = [m for m in ('nereid_python.backend', 'nereid_python.pb_utils', "
        "'nereid.server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pb_utils_top_level_module():
    code = (
        "import triton_python_backend_utils as pb_utils\n"
        "import nereid_python.pb_utils as impl\n"
        "assert pb_utils.InferenceResponse is impl.InferenceResponse\n"
        "assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1\n"
        "import sys; assert 'nereid.server' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_process_starts_without_the_kernel():
    """The model process imports neither the server's kernel nor asyncio (start-up time)."""
    code = (
        "import sys, nereid_python.worker\n"
        "loaded = [m for m in sys.modules if m == 'nereid' or m.startswith('nereid.')]\n"
        "assert not loaded, loaded\n"
        "assert 'asyncio' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
