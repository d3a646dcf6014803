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


FIRST_CALLS_AT_ONCE = """
import sys, threading
import numpy as np
import nereid_openvino.backend
import openvino as ov

start = threading.Barrier(8)

def first_call():
    start.wait()
    ov.Type.f32.to_dtype()
    ov.Tensor(np.zeros((2,), np.float32), shared_memory=True)

threads = [threading.Thread(target=first_call, daemon=True) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(10)
sys.exit(any(thread.is_alive() for thread in threads))
"""


def test_first_calls_from_many_threads_do_not_deadlock():
    """Importing the backend sets up openvino's numpy conversions, so instance threads that make
    their first calls at once cannot deadlock in them. Without it about half of these fresh
    processes hang; twelve of them all finishing would be chance below one in a thousand."""
    runs = [subprocess.Popen([sys.executable, "-c", FIRST_CALLS_AT_ONCE]) for _ in range(12)]
    hung = 0
    for run in runs:
        try:
            hung += run.wait(timeout=60) != 0
        except subprocess.TimeoutExpired:
            run.kill()
            hung += 1
    assert hung == 0, f"{hung} of {len(runs)} processes deadlocked on their first openvino calls"
