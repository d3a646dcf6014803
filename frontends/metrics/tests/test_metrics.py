"""Real traffic through tritonclient.http, then ``/metrics`` over a real socket: values, not
only names."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient
from metrics_support import IDENTITY, ports, scrape, value
from nereid.inprocess import InProcessServer
from nereid.testing import ModelRepositoryBuilder
from tritonclient.utils import InferenceServerException

REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def _input(name: str, data: np.ndarray) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def _client(server, **kwargs) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{ports(server)[0]}", **kwargs)


def _failures(families, model: str) -> dict[str, float]:
    return {
        r: value(families, "nv_inference_request_failure", model=model, reason=r) for r in REASONS
    }


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_success_counts_and_durations(server):
    client = _client(server)
    for _ in range(5):
        client.infer("identity", [_input("INPUT0", np.ones((2, 3), np.float32))])
    families = scrape(ports(server)[1])
    labels = {"model": "identity", "version": "1"}
    assert value(families, "nv_inference_request_success", **labels) == 5
    assert _failures(families, "identity") == dict.fromkeys(REASONS, 0)
    # two rows per request: Triton counts inferences by the batch dimension
    assert value(families, "nv_inference_count", **labels) == 10
    assert value(families, "nv_inference_exec_count", **labels) == 5
    assert value(families, "nv_inference_pending_request_count", **labels) == 0
    request_us = value(families, "nv_inference_request_duration_us", **labels)
    parts = [
        value(families, f"nv_inference_{part}_duration_us", **labels)
        for part in ("queue", "compute_input", "compute_infer", "compute_output")
    ]
    assert all(part >= 0 for part in parts) and request_us > 0
    assert sum(parts) <= request_us
    # the kernel's statistics are the source: the same numbers as the statistics API
    stats = client.get_inference_statistics("identity")["model_stats"][0]["inference_stats"]
    assert request_us == int(stats["success"]["ns"]) // 1000
    assert parts[0] == int(stats["queue"]["ns"]) // 1000
    load = value(families, "nv_model_load_duration_secs", **labels)
    assert 0 < load < 30


def test_pending_count_and_slow_compute(server):
    client = _client(server, concurrency=3)
    data = np.ones(4, np.float32)
    handles = [client.async_infer("slow", [_input("INPUT0", data)]) for _ in range(3)]
    metrics_port = ports(server)[1]

    def pending() -> float:
        return value(scrape(metrics_port), "nv_inference_pending_request_count", model="slow")

    # one request executes (300 ms), two wait behind it
    _wait_for(lambda: pending() == 2, timeout=1.0)
    for handle in handles:
        handle.get_result()
    families = scrape(metrics_port)
    assert value(families, "nv_inference_pending_request_count", model="slow") == 0
    assert value(families, "nv_inference_request_success", model="slow") >= 3
    assert value(families, "nv_inference_compute_infer_duration_us", model="slow") >= 3 * 290_000
    assert value(families, "nv_inference_queue_duration_us", model="slow") >= 290_000


def test_dynamic_batching_inference_count_exceeds_exec_count(server):
    client = _client(server, concurrency=8)
    data = np.ones((1, 4), np.float32)
    handles = [client.async_infer("batched", [_input("INPUT0", data)]) for _ in range(8)]
    for handle in handles:
        handle.get_result()
    families = scrape(ports(server)[1])
    assert value(families, "nv_inference_request_success", model="batched") == 8
    assert value(families, "nv_inference_count", model="batched") == 8
    executions = value(families, "nv_inference_exec_count", model="batched")
    assert 1 <= executions < 8


def test_rejected_when_the_queue_is_full(server):
    client = _client(server, concurrency=4)
    data = np.ones((1, 4), np.float32)
    handles = [client.async_infer("bounded", [_input("INPUT0", data)]) for _ in range(4)]
    refused = 0
    for handle in handles:
        try:
            handle.get_result()
        except InferenceServerException as exc:
            assert "Exceeds maximum queue size" in str(exc)
            refused += 1
    assert refused >= 1
    families = scrape(ports(server)[1])
    failures = _failures(families, "bounded")
    assert failures == {"REJECTED": refused, "CANCELED": 0, "BACKEND": 0, "OTHER": 0}
    assert value(families, "nv_inference_request_success", model="bounded") == 4 - refused


def test_canceled_when_a_queued_request_times_out(server):
    client = _client(server)
    data = np.ones(4, np.float32)
    before = _failures(scrape(ports(server)[1]), "slow")["CANCELED"]
    busy = _client(server, concurrency=1).async_infer("slow", [_input("INPUT0", data)])
    time.sleep(0.1)  # the first request now executes (300 ms): the next one waits in the queue
    impatient = _client(server, network_timeout=0.1)
    with pytest.raises(TimeoutError):
        impatient.infer("slow", [_input("INPUT0", data)])
    busy.get_result()
    metrics_port = ports(server)[1]
    _wait_for(lambda: _failures(scrape(metrics_port), "slow")["CANCELED"] == before + 1)
    client.close()


def test_backend_and_other_failures_and_custom_metrics(server):
    client = _client(server)
    for _ in range(3):
        client.infer("pymodel", [_input("IN", np.ones(3, np.float32))])
    with pytest.raises(InferenceServerException, match="negative input"):
        client.infer("pymodel", [_input("IN", -np.ones(2, np.float32))])
    bad = httpclient.InferInput("IN", [2, 2], "FP32")  # the model takes one dimension
    bad.set_data_from_numpy(np.ones((2, 2), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("pymodel", [bad])
    families = scrape(ports(server)[1])
    assert _failures(families, "pymodel") == {
        "REJECTED": 0,
        "CANCELED": 0,
        "BACKEND": 1,
        "OTHER": 1,
    }
    assert value(families, "nv_inference_request_success", model="pymodel") == 3
    # the model's own metrics, with their names, types and labels
    labels = {"model": "pymodel", "version": "1"}
    assert families["custom_calls"].type == "counter"
    assert value(families, "custom_calls", **labels) == 4  # the failing request counted too
    assert families["custom_last_size"].type == "gauge"
    assert value(families, "custom_last_size", **labels) == 2
    assert families["custom_sizes"].type == "histogram"
    assert value(families, "custom_sizes", "_count", **labels) == 4
    assert value(families, "custom_sizes", "_sum", **labels) == 3 * 3 + 2
    assert value(families, "custom_sizes", "_bucket", le="1", **labels) == 0
    assert value(families, "custom_sizes", "_bucket", le="4", **labels) == 4
    assert value(families, "custom_sizes", "_bucket", le="+Inf", **labels) == 4


def test_decoupled_first_response_histogram(server):
    # three responses, the first after 50 ms: one observation in the (40, 1000] bucket
    responses = list(
        server.stream(
            "repeat",
            {
                "IN": np.array([1, 2, 3], np.int32),
                "DELAY": np.array([50, 0, 0], np.uint32),
                "WAIT": np.array([0], np.uint32),
            },
        )
    )
    assert len(responses) == 3
    families = scrape(ports(server)[1])
    labels = {"model": "repeat", "version": "1"}
    name = "nv_inference_first_response_histogram_ms"
    assert families[name].type == "histogram"
    assert value(families, name, "_count", **labels) == 1
    assert 50 <= value(families, name, "_sum", **labels) < 1000
    buckets = {
        s.labels["le"]: s.value
        for s in families[name].samples
        if s.name == name + "_bucket" and s.labels["model"] == "repeat"
    }
    # the buckets of the model's model_metrics, not the defaults
    assert buckets == {"10": 0, "40": 0, "1000": 1, "+Inf": 1}
    # only decoupled models have it
    assert {s.labels["model"] for s in families[name].samples} == {"repeat"}
    assert value(families, "nv_inference_request_success", **labels) == 1


def test_latency_summaries(server):
    client = _client(server)
    for _ in range(20):
        client.infer("identity", [_input("INPUT0", np.ones((1, 3), np.float32))])
    families = scrape(ports(server)[1])
    labels = {"model": "identity", "version": "1"}
    success = value(families, "nv_inference_request_success", **labels)
    for part in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        name = f"nv_inference_{part}_summary_us"
        assert families[name].type == "summary"
        count = value(families, name, "_count", **labels)
        total = value(families, name, "_sum", **labels)
        # every request counted once; the sums match the cumulative counters
        assert count == success
        if part != "request":
            counter = value(families, f"nv_inference_{part}_duration_us", **labels)
            assert abs(total - counter) <= count  # microsecond truncation per request
        quantiles = {
            s.labels["quantile"]: s.value
            for s in families[name].samples
            if s.name == name and s.labels["model"] == "identity"
        }
        assert set(quantiles) == {"0.5", "0.9", "0.99"}
        assert 0 <= quantiles["0.5"] <= quantiles["0.9"] <= quantiles["0.99"]
    assert value(families, "nv_inference_request_summary_us", quantile="0.5", **labels) > 0


def test_cpu_metrics_plausible(server):
    families = scrape(ports(server)[1])
    utilization = value(families, "nv_cpu_utilization")
    total = value(families, "nv_cpu_memory_total_bytes")
    used = value(families, "nv_cpu_memory_used_bytes")
    assert 0.0 <= utilization <= 1.0
    assert 0 < used < total
    with open("/proc/meminfo") as f:
        mem_total_kb = int(f.readline().split()[1])
    assert total == mem_total_kb * 1024
    # refreshed every --metrics-interval-ms (100 ms here)
    frontend = server.server.frontends["metrics"]
    first = frontend.cpu_reading
    _wait_for(lambda: frontend.cpu_reading is not first, timeout=2.0)


def test_no_gpu_metrics_without_nvml(server):
    families = scrape(ports(server)[1])
    assert not [name for name in families if name.startswith(("nv_gpu_", "nv_energy"))]


def test_other_paths_and_methods(server):
    port = ports(server)[1]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
    assert info.value.code == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 405


def test_scrapes_in_parallel_with_traffic(server):
    """Scrapes during traffic: every exposition parses and counters never go backwards."""
    client = _client(server, concurrency=4)
    data = np.ones((1, 2), np.float32)
    metrics_port = ports(server)[1]
    seen = []

    def scrape_loop() -> None:
        for _ in range(10):
            seen.append(value(scrape(metrics_port), "nv_inference_count", model="identity"))

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(scrape_loop)
        for _ in range(40):
            client.infer("identity", [_input("INPUT0", data)])
        future.result()
    assert seen == sorted(seen)


@pytest.fixture(scope="module")
def plain_repository(tmp_path_factory) -> ModelRepositoryBuilder:
    builder = ModelRepositoryBuilder(tmp_path_factory.mktemp("plain"))
    builder.add("identity", IDENTITY.format(max_batch_size=8, extra=""))
    return builder


def test_defaults_have_no_summaries_and_no_histogram(plain_repository):
    with InProcessServer(
        str(plain_repository.root),
        frontends=["metrics"],
        metrics_port=0,
        metrics_address="127.0.0.1",
    ) as running:
        running.infer("identity", {"INPUT0": np.ones((1, 2), np.float32)})
        families = scrape(running.server.frontends["metrics"].port)
    assert value(families, "nv_inference_request_success", model="identity") == 1
    assert "nv_inference_queue_duration_us" in families
    assert not [name for name in families if "summary" in name or "histogram" in name]


def test_counter_latencies_off_and_cpu_metrics_off(plain_repository):
    with InProcessServer(
        str(plain_repository.root),
        frontends=["metrics"],
        metrics_port=0,
        metrics_address="127.0.0.1",
        metrics_config=["counter_latencies=false"],
        allow_cpu_metrics=False,
        allow_gpu_metrics=False,
    ) as running:
        running.infer("identity", {"INPUT0": np.ones((1, 2), np.float32)})
        families = scrape(running.server.frontends["metrics"].port)
    assert value(families, "nv_inference_count", model="identity") == 1
    assert not [name for name in families if name.endswith("_duration_us")]
    assert not [name for name in families if name.startswith("nv_cpu_")]


def test_reload_starts_from_zero(plain_repository):
    """A reloaded model is a new version object: its counts, like Triton's, restart."""
    with InProcessServer(
        str(plain_repository.root),
        frontends=["metrics"],
        metrics_port=0,
        metrics_address="127.0.0.1",
        model_control_mode="explicit",
        load_model=["identity"],
    ) as running:
        port = running.server.frontends["metrics"].port
        with pytest.raises(Exception, match="expects"):
            running.infer("identity", {"INPUT0": np.ones((1, 2), np.int32)})
        assert _failures(scrape(port), "identity")["OTHER"] == 1
        api = running.api
        api.run_coroutine(api.unload_model("identity"))
        assert "nv_inference_count" not in scrape(port)  # no model: no samples, no family
        api.run_coroutine(api.load_model("identity"))
        families = scrape(port)
        assert _failures(families, "identity") == dict.fromkeys(REASONS, 0)
        assert value(families, "nv_inference_count", model="identity") == 0
