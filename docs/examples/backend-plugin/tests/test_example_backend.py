"""The example plugin is found through its real entry point and serves models."""

import subprocess
import sys

import numpy as np
from nereid.testing import make_request


def test_discovered_through_entry_point():
    import nereid.plugins

    system = nereid.plugins.PluginSystem()
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["backend"].get("scale")
    assert entry.distribution == "nereid-example-backend"
    assert entry.plugin == "example-backend"


async def test_serves_model_with_config(start_server, model_repository):
    model_repository.add(
        "doubler",
        """
        backend: "scale"
        max_batch_size: 4
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
        parameters { key: "factor" value: { string_value: "2" } }
        """,
    )
    server = await start_server()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = await server.api.infer(make_request("doubler", {"X": x})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x * 2)


async def test_auto_selected_by_model_file_without_config(start_server, model_repository):
    model_repository.add("bare", None, versions={1: {"model.scale": b""}})
    server = await start_server()
    config = server.api.model_config("bare")
    assert config.backend == "scale"
    assert [i.name for i in config.input] == ["INPUT0"]
    x = np.array([1.5, -2.0], dtype=np.float32)
    response = await server.api.infer(make_request("bare", {"INPUT0": x})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x)


def test_plugin_module_is_cheap_to_import():
    code = (
        "import sys, nereid_example_backend.plugin\n"
        "assert 'nereid_example_backend.backend' not in sys.modules\n"
        "assert 'nereid.server' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
