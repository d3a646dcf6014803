"""The plugin is found through its entry point and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys


def test_discovered_through_entry_point():
    from nereid.plugins import PluginSystem

    system = PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("fil")
    assert entry.distribution == "nereid-fil"
    assert entry.target == "nereid_fil.backend:FilBackend"


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_fil, nereid_fil.plugin, nereid_fil.params\n"
        "heavy = [m for m in ('treelite', 'nereid_fil.backend', 'nereid_fil.predictor', "
        "'nereid.server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
