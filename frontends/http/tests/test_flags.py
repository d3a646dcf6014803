"""Flags: restricted APIs, header forwarding, --allow-http, --http-thread-count, the logging
endpoints behind a restriction, and the plugin's import cost."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from nereid.errors import InvalidArgumentError
from nereid.inprocess import InProcessServer
from nereid.options import build_parser
from nereid.plugins import PluginSystem
from nereid.testing import free_port
from nereid_http.frontend import create_frontend
from nereid_http.restricted import parse_restricted_apis
from tritonclient.utils import InferenceServerException

ADMIN = {"admin-key": "secret"}
LOGS = {"log-key": "L"}


@pytest.fixture(scope="module")
def server_options():
    return {
        "allow_client_shm": True,
        "http_header_forward_pattern": "^[Xx]-[Ff]orward-",
        "http_restricted_api": [
            "model-repository,shared-memory:admin-key=secret",
            "logging:log-key=L",
        ],
        "http_thread_count": 4,
    }


def test_plugin_module_does_not_import_aiohttp():
    code = (
        "import sys, nereid_http.plugin, nereid_http; "
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'; "
        "assert 'nereid_http.frontend' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flags_parse_with_tritonserver_names():
    plugins = PluginSystem()
    plugins.load_entry_points()
    plugins.collect_registrations()
    parser = build_parser(plugins)
    defaults = parser.parse_args([])
    assert defaults.allow_http is True
    assert defaults.http_port == 8000
    assert defaults.http_address == "0.0.0.0"
    assert defaults.reuse_http_port is False
    assert defaults.allow_client_shm is False
    assert defaults.http_restricted_api == []
    assert defaults.http_max_input_size == 64 * 1024 * 1024
    options = parser.parse_args(
        [
            "--allow-http=false",
            "--http-port",
            "9000",
            "--http-address=127.0.0.1",
            "--reuse-http-port",
            "--allow-client-shm=true",
            "--http-header-forward-pattern",
            "x-.*",
            "--http-restricted-api",
            "health:k=v",
            "--http-restricted-api",
            "inference,statistics:a=b",
            "--http-max-input-size",
            "1024",
            "--http-thread-count",
            "2",
        ]
    )
    assert options.allow_http is False
    assert options.http_port == 9000
    assert options.reuse_http_port is True
    assert options.allow_client_shm is True
    assert options.http_restricted_api == ["health:k=v", "inference,statistics:a=b"]
    assert options.http_max_input_size == 1024
    assert create_frontend(options) is None  # --allow-http=false


def test_restricted_api_parsing():
    assert parse_restricted_apis(["health,metadata:k=v", "inference:a=b=c"]) == {
        "health": ("k", "v"),
        "metadata": ("k", "v"),
        "inference": ("a", "b=c"),
    }
    for bad, message in (
        (["health:k"], "option format"),
        (["nope:k=v"], "unknown restricted API 'nope'"),
        (["health:k=v", "health:x=y"], "given more than once"),
        ([":k=v"], "option format"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            parse_restricted_apis(bad)


def test_bad_flags_fail_start(tmp_path):
    bad = InProcessServer(
        str(tmp_path), frontends=["http"], http_port=0, http_restricted_api=["x:k=v"]
    )
    with pytest.raises(InvalidArgumentError, match="unknown restricted API"):
        bad.start()
    bad.stop()


def test_allow_http_false_starts_no_frontend(tmp_path):
    with InProcessServer(str(tmp_path), frontends=["http"], allow_http=False) as running:
        assert "http" not in running.server.frontends


def test_restricted_groups(client, base_url):
    # unrestricted groups answer as usual
    assert client.is_server_ready()
    assert client.get_model_metadata("identity")["name"] == "identity"
    # restricted: 403 without the header, or with a wrong value
    for headers in (None, {"admin-key": "wrong"}):
        reply = requests.post(f"{base_url}/v2/repository/index", headers=headers, timeout=10)
        assert reply.status_code == 403
        assert reply.json() == {"error": "This API is restricted, expecting header 'admin-key'"}
    with pytest.raises(InferenceServerException, match="This API is restricted") as denied:
        client.get_system_shared_memory_status()
    assert denied.value.status() == "403"
    # restriction comes before the method check, as in Triton
    reply = requests.get(f"{base_url}/v2/repository/index", timeout=10)
    assert reply.status_code == 403
    # with the header
    assert any(m["name"] == "identity" for m in client.get_model_repository_index(headers=ADMIN))
    assert client.get_system_shared_memory_status(headers=ADMIN) == []
    reply = requests.post(f"{base_url}/v2/repository/index", headers={"Admin-Key": "secret"})
    assert reply.status_code == 200  # header names are case-insensitive


def test_logging_endpoints(client, base_url):
    with pytest.raises(InferenceServerException, match="expecting header 'log-key'"):
        client.get_log_settings()
    settings = client.get_log_settings(headers=LOGS)
    assert set(settings) == {
        "log_file",
        "log_info",
        "log_warning",
        "log_error",
        "log_verbose_level",
        "log_format",
    }
    original = dict(settings)
    try:
        updated = client.update_log_settings(
            {"log_verbose_level": 2, "log_format": "ISO8601", "log_warning": False}, headers=LOGS
        )
        assert updated["log_verbose_level"] == 2
        assert updated["log_format"] == "ISO8601"
        assert updated["log_warning"] is False
        assert client.get_log_settings(headers=LOGS) == updated
        # null values are left as they are
        reply = requests.post(
            f"{base_url}/v2/logging", json={"log_info": None}, headers=LOGS, timeout=10
        )
        assert reply.json()["log_info"] == original["log_info"]
        for body, status, message in (
            ({"log_file": "/tmp/x.log"}, 501, "log file location can not be updated"),
            ({"log_verbose_level": -1}, 400, "log_verbose_level"),
            ({"log_info": "yes"}, 400, "log_info"),
            ({"log_format": "fancy"}, 400, "fancy"),
            ({"no_such_setting": 1}, 400, "no_such_setting"),
        ):
            reply = requests.post(f"{base_url}/v2/logging", json=body, headers=LOGS, timeout=10)
            assert reply.status_code == status, body
            assert message in reply.json()["error"]
        reply = requests.post(f"{base_url}/v2/logging", data=b"{oops", headers=LOGS, timeout=10)
        assert reply.status_code == 400
    finally:
        restore = {k: v for k, v in original.items() if k != "log_file"}
        client.update_log_settings(restore, headers=LOGS)
    assert client.get_log_settings(headers=LOGS) == original


def test_header_forwarding(client):
    tensor = httpclient.InferInput("INPUT0", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer(
        "paramecho",
        [tensor],
        headers={"X-Forward-User": "alice", "X-Other": "hidden", "x-forward-trace": "t1"},
        parameters={"own": 1},
    )
    seen = json.loads(result.as_numpy("OUTPUT0")[0])
    forwarded = {k.lower(): v for k, v in seen["parameters"].items()}
    assert forwarded == {"x-forward-user": "alice", "x-forward-trace": "t1", "own": 1}


def test_thread_count_is_accepted(server):
    options = server.server.options
    assert options.http_thread_count == 4
    assert server.server.frontends["http"].port > 0


def test_reuse_port_and_fixed_port(tmp_path):
    port = free_port()
    first = InProcessServer(
        str(tmp_path),
        frontends=["http"],
        http_port=port,
        reuse_http_port=True,
        http_address="127.0.0.1",
    )
    second = InProcessServer(
        str(tmp_path),
        frontends=["http"],
        http_port=port,
        reuse_http_port=True,
        http_address="127.0.0.1",
    )
    with first, second:
        assert first.server.frontends["http"].port == port
        assert second.server.frontends["http"].port == port
        assert requests.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=10).ok
    with InProcessServer(
        str(tmp_path), frontends=["http"], http_port=port, http_address="127.0.0.1"
    ) as taken:
        clash = InProcessServer(
            str(tmp_path), frontends=["http"], http_port=port, http_address="127.0.0.1"
        )
        with pytest.raises(Exception, match="already in use"):
            clash.start()
        clash.stop()
        assert taken.server.frontends["http"].port == port


def test_options_namespace_factory():
    options = argparse.Namespace(
        allow_http=True,
        http_address="127.0.0.1",
        http_port=0,
        http_max_input_size=10,
        allow_client_shm=False,
        http_restricted_api=[],
        http_header_forward_pattern="(",
        http_thread_count=8,
        reuse_http_port=False,
    )
    with pytest.raises(InvalidArgumentError, match="invalid --http-header-forward-pattern"):
        create_frontend(options)
