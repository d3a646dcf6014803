"""A recording backend with a gate, and helpers, for the dynamic batcher's tests.

The ``recorder`` backend answers like ``identity`` (through gather/scatter, so batching
correctness shows in the outputs) and records every batch it executes. A request whose
``parameters`` hold ``"hold": True`` makes its batch wait until the test opens the gate, which
keeps an instance busy for as long as a test needs, without real-time sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from nereid.backend import ModelInstance
from nereid.runtime.batching import gather_inputs, scatter_outputs
from nereid.testing import BackendPlugin, ManualClock, make_request, settle, wait_until
from nereid_dynamic_batcher import TRITON_RULE


class Recorder:
    """What the backend did, shared with the test; ``gate`` holds batches marked ``hold``."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[str], int]] = []
        self.gate = threading.Event()
        self.holding = threading.Event()

    def ids(self) -> list[list[str]]:
        return [ids for _, ids, _ in self.batches]

    def sizes(self) -> list[int]:
        return [rows for _, _, rows in self.batches]


class RecorderInstance(ModelInstance):
    def __init__(self, recorder: Recorder, config, spec) -> None:
        self.recorder = recorder
        self.name = spec.name
        # input name -> output name
        self.outputs = {i.name: o.name for i, o in zip(config.input, config.output, strict=False)}

    def execute(self, requests):
        self.recorder.batches.append(
            (self.name, [r.id for r in requests], sum(r.batch_size for r in requests))
        )
        if any(r.parameters.get("hold") for r in requests):
            self.recorder.holding.set()
            assert self.recorder.gate.wait(10), "the test never opened the gate"
        arrays = gather_inputs(requests)
        scatter_outputs(requests, {self.outputs[k]: v for k, v in arrays.items()})


class RecorderPlugin(BackendPlugin):
    """Registers the ``recorder`` backend, recording into ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__("recorder", lambda config, spec: RecorderInstance(recorder, config, spec))


def recorder_model(
    repository,
    name: str = "m",
    *,
    max_batch_size: int = 8,
    dims: str = "[ 2 ]",
    batching: str = "",
    instances: int = 1,
    extra: str = "",
    fair_share: bool = True,
) -> None:
    """A ``recorder`` model; ``fair_share=False`` gives it Triton's batch formation rule."""
    if not fair_share:
        extra += TRITON_RULE
    repository.add(
        name,
        f"""
        backend: "recorder"
        max_batch_size: {max_batch_size}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims} }} ]
        instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
        dynamic_batching {{ {batching} }}
        {extra}
        """,
    )


def req(model: str, rid: str, rows: int = 1, width: int = 2, value: float | None = None, **kw):
    """A request whose INPUT0 holds ``value`` (default: the number in its id) in every cell."""
    if value is None:
        digits = "".join(c for c in rid if c.isdigit())
        value = float(digits or 0)
    x = np.full((rows, width), value, np.float32)
    return make_request(model, {"INPUT0": x}, id=rid, **kw)


def hold(model: str, rid: str = "hold", **kw):
    """A request that keeps its instance busy until ``recorder.gate`` is set."""
    return req(model, rid, parameters={"hold": True}, **kw)


async def until(condition, timeout: float = 5.0) -> None:
    """Wait (in real time: instance threads run in real time) for ``condition()``, then let the
    loop's ready tasks run."""
    await wait_until(condition, timeout)
    await settle()


async def answered(stream):
    """The single response of a stream, its error raised."""
    return await asyncio.wait_for(stream.single(), 5)


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    return SimpleNamespace(
        req=req,
        hold=hold,
        until=until,
        answered=answered,
        recorder_model=recorder_model,
        RecorderPlugin=RecorderPlugin,
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def serve(start_server, recorder, clock):
    """``server = await serve()``: a server with the recorder backend and the manual clock."""

    async def start(**options):
        options.setdefault("clock", clock)
        server = await start_server(plugins=[RecorderPlugin(recorder)], **options)
        return server

    yield start
    recorder.gate.set()  # never leave an instance blocked at teardown
