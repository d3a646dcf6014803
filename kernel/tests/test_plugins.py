"""Plugin discovery from real entry points, registries, knobs, and the lazy-import rule."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import nereid
import pytest
from nereid.errors import AlreadyExistsError
from nereid.plugins import PluginSettings, PluginSystem


def system(settings: PluginSettings | None = None, *plugins) -> PluginSystem:
    plugin_system = PluginSystem(settings or PluginSettings())
    plugin_system.load_entry_points()
    for plugin in plugins:
        plugin_system.register(plugin, name=type(plugin).__name__, distribution="tests")
    plugin_system.collect_registrations()
    return plugin_system


def test_builtin_and_example_discovered_from_entry_points():
    plugin_system = system()
    backends = plugin_system.registries["backend"]
    assert backends.get("identity").distribution == "nereid"
    assert backends.get("scale").distribution == "nereid-example-backend"
    assert plugin_system.registries["scheduler"].get("default").plugin == "builtin"
    assert plugin_system.registries["repository_store"].get("file").distribution == "nereid"


class _Duplicate:
    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("scale", "x:y")


class _AliasClash:
    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("other", "x:y", aliases=("identity",))


@pytest.mark.parametrize("plugin", [_Duplicate(), _AliasClash()])
def test_duplicate_name_names_both_distributions(plugin):
    with pytest.raises(AlreadyExistsError) as info:
        system(None, plugin)
    message = info.value.message
    assert "'tests'" in message
    assert "nereid-example-backend" in message or "distribution 'nereid'" in message


def test_block_by_name_and_allow_by_distribution():
    blocked = system(PluginSettings(block=["example-backend"]))
    assert "scale" not in blocked.registries["backend"]
    allowed = system(PluginSettings(allow=["nereid-http"]))
    assert "scale" not in allowed.registries["backend"]
    assert "identity" in allowed.registries["backend"]  # the kernel's own always load
    allowed = system(PluginSettings(allow=["nereid_example_backend"]))
    assert "scale" in allowed.registries["backend"]


def test_disable_autoload_keeps_only_kernel_and_explicit(monkeypatch):
    monkeypatch.setenv("NEREID_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("NEREID_BLOCK_PLUGINS", "")
    plugin_system = system(PluginSettings.from_env())
    assert set(plugin_system.plugins) == {"builtin"}


def test_env_knobs_parsed(monkeypatch):
    monkeypatch.setenv("NEREID_PLUGINS", "a, b")
    monkeypatch.setenv("NEREID_BLOCK_PLUGINS", "c")
    settings = PluginSettings.from_env()
    assert settings.allow == ["a", "b"] and settings.block == ["c"] and settings.autoload


async def test_server_block_knob(start_server, model_repository):
    model_repository.add("bare", None, versions={1: {"model.scale": b""}})
    server = await start_server(plugin_block=["example-backend"], exit_on_error=False)
    assert not server.api.model_ready("bare")


class _Typo:
    @nereid.hookimpl
    def register_backend(self, registry):  # missing "s": matches no hook
        pass


def test_check_pending_catches_unknown_hook():
    plugin_system = PluginSystem(PluginSettings())
    plugin_system.register(_Typo(), name="typo")
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError, match="register_backend"):
        plugin_system.check_pending()


def test_nereid_plugins_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "nereid.cli", "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    plugins = {p["name"]: p for p in json.loads(out)}
    example = plugins["example-backend"]
    assert example["distribution"] == "nereid-example-backend"
    assert example["version"] == metadata.version("nereid-example-backend")
    assert example["registered"]["backend"][0]["name"] == "scale"
    assert example["registered"]["backend"][0]["model_filenames"] == ["model.scale"]
    builtin = plugins["builtin"]
    assert {b["name"] for b in builtin["registered"]["backend"]} == {"identity", "repeat", "square"}
    text = subprocess.run(
        [sys.executable, "-m", "nereid.cli", "plugins", "--block-plugin", "example-backend"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "builtin  (nereid" in text and "example-backend" not in text


HEAVY = (
    "torch",
    "onnxruntime",
    "openvino",
    "treelite",
    "xgboost",
    "lightgbm",
    "aiohttp",
    "grpc",
    "prometheus_client",
    "opentelemetry",
    "tritonclient",
    "cupy",
)


@pytest.mark.parametrize(
    "entry_point",
    sorted(metadata.entry_points(group="nereid"), key=lambda ep: ep.name),
    ids=lambda ep: ep.name,
)
def test_entry_point_module_imports_nothing_heavy(entry_point):
    """Every installed plugin's entry-point module loads without a framework or server library,
    and without importing the targets it registers."""
    code = f"""
import sys
import {entry_point.value.split(":")[0]} as plugin
from nereid.plugins import PluginSystem, PluginSettings
system = PluginSystem(PluginSettings())
system.register(plugin, name="p")
system.collect_registrations()
heavy = [m for m in {HEAVY!r} if m in sys.modules]
targets = [e.target.split(':')[0] for r in system.registries.values() for e in r
           if isinstance(e.target, str)]
loaded = [t for t in targets if t in sys.modules and t != plugin.__name__]
print(heavy, loaded)
assert not heavy and not loaded, (heavy, loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
