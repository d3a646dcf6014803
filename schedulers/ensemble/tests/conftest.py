"""A recording backend and helpers for the ensemble scheduler's tests.

The ``probe`` backend answers like ``identity`` (the i-th output is the i-th input, cast to the
output's configured datatype) and records every request it executes: when it ran, with what
parameters, priority, timeout and id, and whether it saw itself cancelled. Config parameters
shape its behaviour: ``delay_ms`` (it waits that long, watching for cancellation),
``fail`` (it answers every request with that error message) and ``add`` (a number added to
numeric outputs, so that a chain shows each step ran).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import nereid
import numpy as np
import pytest
from nereid.backend import ModelInstance
from nereid.lifecycle.model import tensor_datatype
from nereid.runtime.batching import mark_compute_input_end
from nereid.testing import BackendPlugin, wait_until


@dataclass
class Execution:
    model: str
    request_id: str
    start_ns: int
    end_ns: int = 0
    parameters: dict = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    rows: int = 0
    cancelled: bool = False


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executions: list[Execution] = []
        self.running = 0
        self.max_running: dict[str, int] = {}
        self.started = threading.Event()

    def of(self, model: str) -> list[Execution]:
        with self.lock:
            return [e for e in self.executions if e.model == model]


class ProbeInstance(ModelInstance):
    def __init__(self, recorder: Recorder, config) -> None:
        self.recorder = recorder
        self.name = config.name
        params = {k: v.string_value for k, v in config.parameters.items()}
        self.delay_s = float(params.get("delay_ms", 0)) / 1000
        self.fail = params.get("fail", "")
        self.add = float(params.get("add", 0))
        self.pairs = [
            (i.name, o.name, tensor_datatype(o.data_type))
            for i, o in zip(config.input, config.output, strict=False)
        ]
        self.running: dict[str, int] = {}

    def execute(self, requests):
        recorder = self.recorder
        mark_compute_input_end(requests)
        records = []
        with recorder.lock:
            for request in requests:
                record = Execution(
                    self.name,
                    request.id,
                    time.monotonic_ns(),
                    parameters=dict(request.parameters),
                    priority=request.priority,
                    timeout_us=request.timeout_us,
                    rows=request.batch_size,
                )
                recorder.executions.append(record)
                records.append(record)
            running = recorder.max_running.get(f"{self.name}:now", 0) + 1
            recorder.max_running[f"{self.name}:now"] = running
            recorder.max_running[self.name] = max(recorder.max_running.get(self.name, 0), running)
        recorder.started.set()
        try:
            deadline = time.monotonic() + self.delay_s
            while time.monotonic() < deadline:
                if all(r.is_cancelled() for r in requests):
                    break
                time.sleep(0.002)
            for request, record in zip(requests, records, strict=True):
                record.end_ns = time.monotonic_ns()
                if request.is_cancelled():
                    record.cancelled = True
                    request.fail_cancelled()
                    continue
                if self.fail:
                    request.fail(nereid.InvalidArgumentError(self.fail))
                    continue
                outputs = []
                for inp, out, datatype in self.pairs:
                    if inp not in request.inputs:
                        continue
                    data = request.inputs[inp].data
                    if datatype is not nereid.DataType.BYTES:
                        data = (data + self.add).astype(datatype.numpy_dtype)
                    outputs.append(nereid.Tensor(out, data, datatype))
                request.compute_output_start_ns = time.monotonic_ns()
                request.respond(nereid.InferenceResponse(outputs))
        finally:
            with recorder.lock:
                recorder.max_running[f"{self.name}:now"] -= 1


class ProbePlugin(BackendPlugin):
    """Registers the ``probe`` backend, recording into ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__("probe", lambda config, spec: ProbeInstance(recorder, config))


def probe_model(
    repository,
    name: str,
    *,
    inputs: str = "INPUT0",
    outputs: str = "OUTPUT0",
    datatype: str = "TYPE_FP32",
    dims: str = "[ 2 ]",
    max_batch_size: int = 8,
    instances: int = 1,
    extra: str = "",
    **params: object,
) -> None:
    """A probe model; several comma-separated ``inputs``/``outputs`` pair up in order."""
    ins = ", ".join(
        f'{{ name: "{n}" data_type: {datatype} dims: {dims} }}' for n in inputs.split(",")
    )
    outs = ", ".join(
        f'{{ name: "{n}" data_type: {datatype} dims: {dims} }}' for n in outputs.split(",")
    )
    parameters = " ".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    repository.add(
        name,
        f"""
        backend: "probe"
        max_batch_size: {max_batch_size}
        input [ {ins} ]
        output [ {outs} ]
        instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
        {parameters}
        {extra}
        """,
    )


def ensemble_config(
    steps: list[tuple[str, dict[str, str], dict[str, str]]],
    *,
    inputs: str = '{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }',
    outputs: str = '{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }',
    max_batch_size: int = 8,
    extra: str = "",
    scheduling: str = "",
) -> str:
    """An ensemble config from (model, input_map, output_map) steps."""
    parts = []
    for model, input_map, output_map in steps:
        ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in input_map.items())
        outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in output_map.items())
        parts.append(f'{{ model_name: "{model}" model_version: -1 {ins} {outs} }}')
    return f"""
    platform: "ensemble"
    max_batch_size: {max_batch_size}
    input [ {inputs} ]
    output [ {outputs} ]
    ensemble_scheduling {{ {scheduling} step [ {", ".join(parts)} ] }}
    {extra}
    """


def stats(server, name: str) -> dict:
    return server.api.model_statistics(name)[0]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable in importlib mode)."""
    return SimpleNamespace(
        probe_model=probe_model,
        ensemble_config=ensemble_config,
        until=wait_until,
        stats=stats,
        ProbePlugin=ProbePlugin,
        np=np,
    )


@pytest.fixture
async def serve(start_server, recorder):
    """``server = await serve(**options)``: a server with the probe backend."""

    async def start(**options):
        return await start_server(plugins=[ProbePlugin(recorder)], **options)

    return start


@pytest.fixture(params=["callbacks", "tasks"])
def delivery(request, monkeypatch):
    """Run a test with step responses taken by callback (``ResponseStream.consume``) and by a
    task iterating each stream (the path for a kernel without ``consume``)."""
    from nereid_ensemble import scheduler

    if request.param == "callbacks" and not hasattr(nereid.ResponseStream, "consume"):
        pytest.skip("this kernel has no ResponseStream.consume")
    monkeypatch.setattr(scheduler, "CALLBACKS", request.param == "callbacks")
    return request.param
