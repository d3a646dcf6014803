"""CPU readings from /proc, GPU readings through a fake NVML, and their exposition."""

from __future__ import annotations

import logging
import types

import pytest
from metrics_support import value
from nereid_metrics.collector import ServerCollector
from nereid_metrics.exposition import generate_text
from nereid_metrics.system import CpuSampler, GpuSampler
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families


def _families(cpu=None, gpus=()) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(lambda: [], None, None, lambda: (cpu, list(gpus))))
    text = generate_text(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_cpu_from_proc(tmp_path):
    (tmp_path / "stat").write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp_path / "meminfo").write_text(
        "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n"
    )
    sampler = CpuSampler(str(tmp_path))
    first = sampler.read()
    assert first.utilization == pytest.approx(200 / 1000)  # since boot: busy / total
    assert (first.memory_total_bytes, first.memory_used_bytes) == (1000 * 1024, 600 * 1024)
    # 300 more jiffies, 150 of them busy
    (tmp_path / "stat").write_text("cpu  200 0 150 800 150 0 0 0 0 0\n")
    assert sampler.read().utilization == pytest.approx(150 / 300)
    families = _families(cpu=sampler.read())
    assert value(families, "nv_cpu_utilization") == 0.0  # nothing moved since
    assert value(families, "nv_cpu_memory_used_bytes") == 600 * 1024


def test_cpu_on_this_machine():
    reading = CpuSampler().read()
    assert 0.0 <= reading.utilization <= 1.0
    assert 0 < reading.memory_used_bytes < reading.memory_total_bytes


class FakeNvmlError(Exception):
    pass


def fake_nvml(gpus: int = 2, energy_supported: bool = True) -> types.SimpleNamespace:
    state = {"energy": 50_000, "shutdown": 0}

    def get_energy(handle):
        if not energy_supported:
            raise FakeNvmlError("Not Supported")
        return state["energy"] + handle * 1000

    def shutdown():
        state["shutdown"] += 1

    return types.SimpleNamespace(
        state=state,
        nvmlInit=lambda: None,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: gpus,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-0000000{h}-aaaa",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=40 + h, memory=3),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            total=80 * 2**30, used=(h + 1) * 2**30, free=0
        ),
        nvmlDeviceGetPowerUsage=lambda h: 123_456,  # milliwatts
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetPowerManagementLimit=lambda h: 700_000,
        nvmlDeviceGetTotalEnergyConsumption=get_energy,  # millijoules since driver load
    )


def test_gpu_metrics_through_nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = fake_nvml()
    sampler = GpuSampler(nvml)
    assert sampler.open()
    nvml.state["energy"] += 2_500  # 2.5 J since the sampler opened
    families = _families(gpus=sampler.read())
    uuid = "GPU-00000001-aaaa"
    assert value(families, "nv_gpu_utilization", gpu_uuid=uuid) == pytest.approx(0.41)
    assert value(families, "nv_gpu_memory_total_bytes", gpu_uuid=uuid) == 80 * 2**30
    assert value(families, "nv_gpu_memory_used_bytes", gpu_uuid=uuid) == 2 * 2**30
    assert value(families, "nv_gpu_power_usage", gpu_uuid=uuid) == pytest.approx(123.456)
    assert value(families, "nv_gpu_power_limit", gpu_uuid=uuid) == pytest.approx(700.0)
    assert families["nv_energy_consumption"].type == "counter"
    assert value(families, "nv_energy_consumption", gpu_uuid=uuid) == pytest.approx(2.5)
    assert len(families["nv_gpu_utilization"].samples) == 2
    sampler.close()
    assert nvml.state["shutdown"] == 1


def test_unsupported_reading_is_left_out(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sampler = GpuSampler(fake_nvml(gpus=1, energy_supported=False))
    assert sampler.open()
    families = _families(gpus=sampler.read())
    assert "nv_energy_consumption" not in families
    assert value(families, "nv_gpu_utilization", gpu_uuid="GPU-00000000-aaaa") == 0.4


def test_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    sampler = GpuSampler(fake_nvml(gpus=3))
    assert sampler.open()
    assert [r.uuid for r in sampler.read()] == ["GPU-00000001-aaaa"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "00000002,bogus,0")
    sampler = GpuSampler(fake_nvml(gpus=3))
    assert sampler.open()
    assert [r.uuid for r in sampler.read()] == ["GPU-00000002-aaaa"]


def test_no_nvml_logs_once_and_exports_nothing(caplog):
    def fail():
        raise FakeNvmlError("NVML Shared Library Not Found")

    nvml = fake_nvml()
    nvml.nvmlInit = fail
    with caplog.at_level(logging.INFO, logger="nereid.metrics"):
        sampler = GpuSampler(nvml)
        assert not sampler.open()
        assert sampler.read() == []
    assert [r.message for r in caplog.records] == [
        "GPU metrics unavailable: FakeNvmlError: NVML Shared Library Not Found"
    ]
    assert not [n for n in _families(gpus=sampler.read()) if n.startswith("nv_gpu")]


def test_no_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = fake_nvml(gpus=0)
    assert not GpuSampler(nvml).open()
    assert nvml.state["shutdown"] == 1
