"""The entry point, the flags and ``nereid serve``."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from metrics_support import IDENTITY, value
from nereid import Server
from nereid.errors import InvalidArgumentError
from nereid.inprocess import InProcessServer
from nereid.testing import ModelRepositoryBuilder
from nereid_metrics.frontend import default_address
from nereid_metrics.observers import FailureCounter, FirstResponseHistogram, LatencySummaries
from nereid_metrics.settings import DEFAULT_QUANTILES, parse_quantiles, settings_from_options
from prometheus_client.parser import text_string_to_metric_families


def test_entry_point_imports_nothing_heavy():
    code = (
        "import sys, nereid_metrics.plugin\n"
        "heavy = [m for m in ('aiohttp', 'prometheus_client', 'pynvml', 'psutil', "
        "'nereid_metrics.frontend', 'nereid_metrics.collector') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _options(**values) -> argparse.Namespace:
    return argparse.Namespace(**values)


def test_settings():
    settings = settings_from_options(_options())
    assert settings.counter_latencies and not settings.summary_latencies
    assert settings.summary_quantiles == DEFAULT_QUANTILES
    assert settings.interval_s == 2.0
    settings = settings_from_options(
        _options(
            metrics_config=[
                "summary_latencies=true",
                "summary_quantiles=0.9:0.01, 0.5:0.05",
                "counter_latencies=false",
                "histogram_latencies=1",
            ],
            metrics_interval_ms=500,
            allow_gpu_metrics=False,
        )
    )
    assert settings.summary_latencies and settings.histogram_latencies
    assert not settings.counter_latencies and not settings.gpu and settings.cpu
    assert settings.summary_quantiles == ((0.5, 0.05), (0.9, 0.01))
    assert settings.interval_s == 0.5


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("bogus=true", "unknown --metrics-config setting 'bogus'"),
        ("summary_latencies", "expected <setting>=<value>"),
        ("summary_latencies=maybe", "expected a boolean"),
        ("summary_quantiles=0.5", "expected <quantile>:<error>"),
        ("summary_quantiles=1.5:0.01", "within [0, 1]"),
        ("summary_quantiles=", "names no quantile"),
    ],
)
def test_bad_metrics_config(entry, message):
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[")):
        settings_from_options(_options(metrics_config=[entry]))


def test_parse_quantiles():
    assert parse_quantiles("0.99:0.001,0.5:0.05") == ((0.5, 0.05), (0.99, 0.001))


def test_default_address():
    assert default_address(_options(metrics_address="10.0.0.1")) == "10.0.0.1"
    both = {"metrics_address": None, "http_address": "127.0.0.1"}
    assert default_address(_options(allow_http=True, **both)) == "127.0.0.1"
    assert default_address(_options(allow_http=False, **both)) == "0.0.0.0"
    assert default_address(_options(metrics_address=None)) == "0.0.0.0"


OURS = (FailureCounter, LatencySummaries, FirstResponseHistogram)


async def test_observers_only_where_metrics_are_served(tmp_path):
    ModelRepositoryBuilder(tmp_path).add("identity", IDENTITY.format(max_batch_size=0, extra=""))
    # a server that starts no metrics frontend pays nothing per request
    for kwargs in ({"frontends": []}, {"frontends": ["metrics"], "allow_metrics": False}):
        server = Server(str(tmp_path), metrics_port=0, **kwargs)
        await server.start()
        try:
            assert not [o for o in server.observers.observers if isinstance(o, OURS)]
            assert "metrics" not in server.frontends
        finally:
            await server.stop()
    server = Server(str(tmp_path), frontends=["metrics"], metrics_port=0)
    await server.start()
    try:
        ours = [type(o) for o in server.observers.observers if isinstance(o, OURS)]
        assert ours == [FailureCounter]  # the default: no summaries, no histogram
        # the failure counter's on_complete is the only point it takes
        assert len(server.observers.on_complete) == 1
        assert not server.observers.on_execution_end and not server.observers.on_response
    finally:
        await server.stop()


def test_registry_takes_more_collectors(tmp_path):
    """The frontend's private registry: a plugin may add its own prometheus_client metrics."""
    from prometheus_client import Counter

    ModelRepositoryBuilder(tmp_path).add("identity", IDENTITY.format(max_batch_size=0, extra=""))
    with InProcessServer(str(tmp_path), frontends=["metrics"], metrics_port=0) as running:
        frontend = running.server.frontends["metrics"]
        extra = Counter("extra_events", "events of a plugin", registry=frontend.registry)
        extra.inc(3)
        text = frontend.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert value(families, "extra_events") == 3
    assert "# TYPE extra_events_total counter" in text
    # Triton's counters keep their names: no _total suffix
    assert "# TYPE nv_inference_count counter" in text
    assert "\nnv_inference_count{" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(repository, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "nereid.cli", "serve", "--model-repository", repository]
    command += ["--plugins", "nereid-metrics", "--metrics-address", "127.0.0.1", *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_nereid_serve(tmp_path):
    ModelRepositoryBuilder(tmp_path).add("identity", IDENTITY.format(max_batch_size=0, extra=""))
    port = _free_port()
    process = _serve(str(tmp_path), f"--metrics-port={port}", "--metrics-interval-ms", "250")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "no metrics in 30 s"
                time.sleep(0.1)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert value(families, "nv_inference_request_success", model="identity") == 0
        assert value(families, "nv_model_load_duration_secs", model="identity") > 0
        assert 0 <= value(families, "nv_cpu_utilization") <= 1
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode == 0


def test_nereid_serve_bad_metrics_config(tmp_path):
    ModelRepositoryBuilder(tmp_path).add("identity", IDENTITY.format(max_batch_size=0, extra=""))
    process = _serve(str(tmp_path), "--metrics-port=0", "--metrics-config", "nonsense=1")
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 1
    assert "unknown --metrics-config setting 'nonsense'" in output


def test_in_process_infer_is_counted(tmp_path):
    ModelRepositoryBuilder(tmp_path).add("identity", IDENTITY.format(max_batch_size=0, extra=""))
    with InProcessServer(str(tmp_path), frontends=["metrics"], metrics_port=0) as running:
        for _ in range(3):
            running.infer("identity", {"INPUT0": np.ones(2, np.float32)})
        text = running.server.frontends["metrics"].render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert value(families, "nv_inference_request_success", model="identity") == 3
