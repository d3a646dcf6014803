"""The plugin registers the ``ensemble`` scheduler lazily: its entry-point module imports
neither the scheduler module nor anything heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata


def test_entry_point_registers_the_ensemble_scheduler_lazily():
    (entry_point,) = [
        ep for ep in metadata.entry_points(group="nereid") if ep.dist.name == "nereid-ensemble"
    ]
    assert entry_point.name == "ensemble" and entry_point.value == "nereid_ensemble.plugin"
    code = """
import sys
import nereid_ensemble.plugin as plugin
from nereid.plugins import PluginSettings, PluginSystem
system = PluginSystem(PluginSettings())
system.register(plugin, name="ensemble")
system.collect_registrations()
entry = system.registries["scheduler"].get("ensemble")
print(entry.target)
assert "nereid_ensemble.scheduler" not in sys.modules
assert "nereid_ensemble.graph" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nereid_ensemble.scheduler:EnsembleScheduler"


def test_nereid_plugins_lists_it():
    out = subprocess.run(
        [sys.executable, "-m", "nereid.cli", "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    plugins = {p["name"]: p for p in json.loads(out)}
    ensemble = plugins["ensemble"]
    assert ensemble["distribution"] == "nereid-ensemble"
    assert [s["name"] for s in ensemble["registered"]["scheduler"]] == ["ensemble"]
