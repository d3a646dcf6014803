"""The plugin is found through its entry point and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys


def test_discovered_through_entry_point():
    from nereid.plugins import PluginSystem

    system = PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("pytorch")
    assert entry.distribution == "nereid-pytorch"
    assert entry.target == "nereid_pytorch.backend:PyTorchBackend"
    assert entry.model_filenames == ("model.pt", "model.pt2")
    assert system.registries["backend"].find("pytorch_libtorch") is entry


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_pytorch, nereid_pytorch.plugin\n"
        "import nereid_pytorch.options, nereid_pytorch.naming\n"
        "heavy = [m for m in ('torch', 'nereid_pytorch.backend', 'nereid.server') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
