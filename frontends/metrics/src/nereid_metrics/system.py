"""CPU and GPU readings for the "per interval" metrics.

CPU: ``/proc/stat`` and ``/proc/meminfo`` on Linux (as Triton reads them), else psutil when it
is installed. GPU: NVML through nvidia-ml-py, imported when the sampler opens; without NVML or
without a GPU the GPU metrics are absent, and that is logged once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nereid.metrics")


@dataclass(frozen=True)
class CpuReading:
    utilization: float  # 0.0 - 1.0, all cores, since the previous reading
    memory_total_bytes: int
    memory_used_bytes: int


def _proc_cpu_times(path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) jiffies of all cores together."""
    with open(path, "rb") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    values = [int(v) for v in fields[1:9]]
    idle = values[3] + values[4]
    total = sum(values)  # guest time is already counted in user and nice
    return total - idle, total


def _proc_memory(path: str = "/proc/meminfo") -> tuple[int, int]:
    """(total, used) bytes; used is MemTotal - MemAvailable, as Triton computes it."""
    info: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree", b"Buffers", b"Cached"):
                info[key] = int(rest.split()[0]) * 1024
    total = info[b"MemTotal"]
    available = info.get(b"MemAvailable")
    if available is None:
        available = info.get(b"MemFree", 0) + info.get(b"Buffers", 0) + info.get(b"Cached", 0)
    return total, total - available


class CpuSampler:
    """Utilization between two readings, and memory; ``None`` where neither /proc nor psutil
    is available."""

    def __init__(self, proc: str = "/proc") -> None:
        self._stat = os.path.join(proc, "stat")
        self._meminfo = os.path.join(proc, "meminfo")
        self._psutil: Any = None
        self._previous: tuple[int, int] | None = None
        self.available = True
        try:
            _proc_cpu_times(self._stat)
            self._previous = (0, 0)  # so the first reading is the utilization since boot
        except (OSError, ValueError, IndexError):
            try:
                import psutil

                self._psutil = psutil
                psutil.cpu_percent(None)  # starts psutil's own interval
            except ImportError:
                self.available = False
                log.info("CPU metrics unavailable: no /proc/stat and psutil is not installed")

    def read(self) -> CpuReading | None:
        if not self.available:
            return None
        try:
            if self._psutil is not None:
                memory = self._psutil.virtual_memory()
                return CpuReading(
                    self._psutil.cpu_percent(None) / 100.0,
                    int(memory.total),
                    int(memory.total - memory.available),
                )
            busy, total = _proc_cpu_times(self._stat)
            last_busy, last_total = self._previous or (0, 0)
            self._previous = (busy, total)
            elapsed = total - last_total
            utilization = (busy - last_busy) / elapsed if elapsed > 0 else 0.0
            memory_total, memory_used = _proc_memory(self._meminfo)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log.warning("CPU metrics unavailable from now on: %s", exc)
            self.available = False
            return None
        return CpuReading(min(max(utilization, 0.0), 1.0), memory_total, memory_used)


@dataclass(frozen=True)
class GpuReading:
    uuid: str
    utilization: float | None  # 0.0 - 1.0
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    power_usage_watts: float | None
    power_limit_watts: float | None
    energy_joules: float | None  # since the sampler opened


def _visible(devices: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The devices ``CUDA_VISIBLE_DEVICES`` leaves to the process: indices or UUID prefixes,
    up to the first entry that names no device (as CUDA reads it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return devices
    chosen: list[tuple[int, str]] = []
    for item in (v.strip() for v in visible.split(",")):
        if item.isdigit():
            match = [d for d in devices if d[0] == int(item)]
        else:
            prefix = item if item.startswith("GPU-") else f"GPU-{item}"
            match = [d for d in devices if item and d[1].startswith(prefix)]
        if not match:
            break
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


class GpuSampler:
    """NVML readings for every visible GPU. ``open`` and ``read`` block (NVML calls take up
    to milliseconds): the frontend runs them on a worker thread."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._handles: list[tuple[str, Any]] = []
        self._energy_start: dict[str, float] = {}
        self.available = False

    def open(self) -> bool:
        nvml = self._nvml
        try:
            if nvml is None:
                import pynvml as nvml

                self._nvml = nvml
            nvml.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
            log.info("GPU metrics unavailable: %s", _describe(exc))
            return False
        try:
            devices = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                if isinstance(uuid, bytes):
                    uuid = uuid.decode()
                devices.append((index, uuid, handle))
        except Exception as exc:
            log.info("GPU metrics unavailable: %s", _describe(exc))
            self._shutdown()
            return False
        by_index = {(i, u): h for i, u, h in devices}
        visible = _visible([(i, u) for i, u, _ in devices])
        self._handles = [(u, by_index[(i, u)]) for i, u in visible]
        if not self._handles:
            log.info("GPU metrics unavailable: no GPU")
            self._shutdown()
            return False
        for uuid, handle in self._handles:
            energy = self._call(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
            if energy is not None:
                self._energy_start[uuid] = energy
        self.available = True
        log.info("GPU metrics for %d GPU(s) through NVML", len(self._handles))
        return True

    @staticmethod
    def _call(function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except Exception:  # NVMLError_NotSupported and friends: that reading is absent
            return None

    def read(self) -> list[GpuReading]:
        if not self.available:
            return []
        nvml, call = self._nvml, self._call
        readings = []
        for uuid, handle in self._handles:
            rates = call(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = call(nvml.nvmlDeviceGetMemoryInfo, handle)
            power = call(nvml.nvmlDeviceGetPowerUsage, handle)  # milliwatts
            limit = call(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            if limit is None:
                limit = call(nvml.nvmlDeviceGetPowerManagementLimit, handle)
            energy = call(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)  # millijoules
            start = self._energy_start.get(uuid)
            readings.append(
                GpuReading(
                    uuid=uuid,
                    utilization=rates.gpu / 100.0 if rates is not None else None,
                    memory_total_bytes=int(memory.total) if memory is not None else None,
                    memory_used_bytes=int(memory.used) if memory is not None else None,
                    power_usage_watts=power / 1000.0 if power is not None else None,
                    power_limit_watts=limit / 1000.0 if limit is not None else None,
                    energy_joules=(energy - start) / 1000.0
                    if energy is not None and start is not None
                    else None,
                )
            )
        return readings

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        if self.available:
            self.available = False
            self._shutdown()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    return f"{type(exc).__name__}: {exc}"
