"""A recording backend with a gate, and helpers, for the sequence batcher's tests.

The ``seqrec`` backend answers through gather/scatter (so batching mistakes show in the outputs):
``OUTPUT = INPUT``, or, for a model with the implicit state ``ACC_IN``/``ACC_OUT``, ``ACC_OUT =
ACC_IN + INPUT`` and ``OUTPUT = ACC_OUT``. It records every row of every batch it executes, with
the control values the scheduler filled in. A request whose ``parameters`` hold ``"hold": True``
makes its batch wait until the test opens the gate, which keeps an instance busy for as long as
a test needs without real-time sleeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nereid
import numpy as np
from nereid.backend import Backend, Model, ModelInstance
from nereid.runtime.batching import gather_inputs, scatter_outputs
from nereid.testing import HoldGate, answered, gated_backend_fixtures, make_request

sys.path.insert(0, str(Path(__file__).parent))

FILLER = "nereid.sequence.filler"
CONTROLS = ("START", "END", "READY", "CORRID")


class Recorder(HoldGate):
    """What the backend did, shared with the test; ``gate`` holds batches marked ``hold``."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, list[dict]]] = []

    def rows(self, index: int = -1) -> list[dict]:
        return self.batches[index][1]

    def ids(self) -> list[list[str]]:
        """Each batch's request ids, ``"-"`` for a filler."""
        return [[row["id"] for row in rows] for _, rows in self.batches]


def _value(tensor):
    item = tensor.data.reshape(-1)[0]
    return item.decode() if isinstance(item, bytes) else item.item()


class RecorderInstance(ModelInstance):
    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.name = name

    def execute(self, requests):
        rows = []
        for request in requests:
            row = {"id": "-" if request.context.get(FILLER) else request.id}
            for name in CONTROLS:
                if name in request.inputs:
                    row[name] = _value(request.inputs[name])
            if "ACC_IN" in request.inputs:
                row["ACC_IN"] = _value(request.inputs["ACC_IN"])
            rows.append(row)
        self.recorder.batches.append((self.name, rows))
        self.recorder.wait_if_held(requests)
        arrays = gather_inputs(requests, ["INPUT", "ACC_IN"])
        if "ACC_IN" in arrays:
            total = arrays["ACC_IN"] + arrays["INPUT"]
            outputs = {"OUTPUT": total, "ACC_OUT": total}
        else:
            outputs = {"OUTPUT": arrays["INPUT"]}
        scatter_outputs(requests, outputs)


class RecorderModel(Model):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def create_instance(self, spec):
        return RecorderInstance(self.recorder, spec.name)


class RecorderBackend(Backend):
    def __init__(self, context, recorder: Recorder) -> None:
        self.context = context
        self.recorder = recorder

    def create_model(self, config, path):
        return RecorderModel(self.recorder)


class RecorderPlugin:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("seqrec", lambda context: RecorderBackend(context, self.recorder))


CONTROL_INPUTS = """
control_input [
  { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
  { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
  { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
  { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
]
"""
ACC_STATE = """
state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
          initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" } } ]
"""


def recorder_model(
    repository,
    name: str = "m",
    *,
    max_batch_size: int = 4,
    strategy: str = "direct { }",
    instances: int = 1,
    controls: str = CONTROL_INPUTS,
    state: str = "",
    batching: str = "",
    dims: str = "[ 1 ]",
    extra: str = "",
) -> None:
    """A ``seqrec`` model with INT32 ``INPUT``/``OUTPUT`` and the given sequence batching."""
    repository.add(
        name,
        f"""
        backend: "seqrec"
        max_batch_size: {max_batch_size}
        input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: {dims} }} ]
        output [ {{ name: "OUTPUT" data_type: TYPE_INT32 dims: {dims} }} ]
        instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
        sequence_batching {{ {strategy} {controls} {state} {batching} }}
        {extra}
        """,
    )


def req(model: str, corrid, value: int = 0, *, start=False, end=False, rid="", **kw):
    """A request of sequence ``corrid`` whose INPUT holds ``value`` (shape [1, 1])."""
    x = np.full((1, 1), value, np.int32)
    return make_request(
        model,
        {"INPUT": x},
        id=rid or f"{corrid}.{value}",
        sequence_id=corrid,
        sequence_start=start,
        sequence_end=end,
        **kw,
    )


def hold(model: str, corrid, value: int = 0, **kw):
    """A request that keeps its instance busy until ``recorder.gate`` is set."""
    return req(model, corrid, value, parameters={"hold": True}, **kw)


async def output(stream) -> int:
    return int((await answered(stream)).as_numpy("OUTPUT").reshape(-1)[0])


def scheduler_of(server, model: str = "m"):
    return server.repository.get(model, -1).scheduler


# ``recorder``, ``clock`` (a ManualClock), ``serve`` (``server = await serve(**options)``)
# and ``kit``: the helpers above, with ``until`` and ``answered``, for test modules
recorder, clock, serve, kit = gated_backend_fixtures(
    Recorder,
    RecorderPlugin,
    [req, hold, output, recorder_model, scheduler_of],
    CONTROL_INPUTS=CONTROL_INPUTS,
    ACC_STATE=ACC_STATE,
)
