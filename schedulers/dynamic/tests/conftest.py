"""A recording backend with a gate, and helpers, for the dynamic batcher's tests.

The ``recorder`` backend answers like ``identity`` (through gather/scatter, so batching
correctness shows in the outputs) and records every batch it executes. A request whose
``parameters`` hold ``"hold": True`` makes its batch wait until the test opens the gate, which
keeps an instance busy for as long as a test needs, without real-time sleeps.
"""

from __future__ import annotations

import numpy as np
from nereid.backend import ModelInstance
from nereid.runtime.batching import gather_inputs, scatter_outputs
from nereid.testing import BackendPlugin, HoldGate, gated_backend_fixtures, make_request
from nereid_dynamic_batcher import TRITON_RULE


class Recorder(HoldGate):
    """What the backend did, shared with the test; ``gate`` holds batches marked ``hold``."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, list[str], int]] = []

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
        self.recorder.wait_if_held(requests)
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
    """A ``recorder`` model (FP32 ``INPUT0`` to ``OUTPUT0``, as an identity model) with dynamic
    batching; ``fair_share=False`` gives it Triton's batch formation rule."""
    if not fair_share:
        extra += TRITON_RULE
    repository.identity(
        name,
        dims=dims,
        max_batch_size=max_batch_size,
        backend="recorder",
        extra=f"""
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


# ``recorder``, ``clock`` (a ManualClock), ``serve`` (``server = await serve(**options)``)
# and ``kit``: the helpers above, with ``until`` and ``answered``, for test modules
recorder, clock, serve, kit = gated_backend_fixtures(
    Recorder, RecorderPlugin, [req, hold, recorder_model, RecorderPlugin]
)
