"""Ragged batching: requests of different lengths batched together, every ``batch_input`` kind
as a backend receives it, and ``batch_output`` scattered by the input's shape.

The ``ragged`` backend below is what a framework backend does with a ragged model: it gathers
with :func:`gather_batch`, uses one batch input (chosen by the ``use`` parameter) to find each
request's elements in the flattened input, answers each request with the sum of its elements
(``SUM``, one per batch row) and the doubled elements (``DOUBLED``, a batch output).
"""

from __future__ import annotations

import nereid
import numpy as np
import pytest
from nereid.backend import Backend, Model, ModelInstance
from nereid.config import parse_pbtxt
from nereid.testing import make_request
from nereid_dynamic_batcher.ragged import BatchSpec, batch_inputs, gather_batch, scatter_batch

BATCH_INPUTS = {
    "COUNT": ("BATCH_ELEMENT_COUNT", "TYPE_INT32"),
    "ENDS": ("BATCH_ACCUMULATED_ELEMENT_COUNT", "TYPE_INT32"),
    "OFFSETS": ("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "TYPE_INT32"),
    "MAXLEN": ("BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", "TYPE_INT32"),
    "ITEM_SHAPE": ("BATCH_ITEM_SHAPE", "TYPE_INT32"),
    "ITEM_SHAPE_FLAT": ("BATCH_ITEM_SHAPE_FLATTEN", "TYPE_FP32"),
}


def ragged_config(name: str = "ragged", use: str = "ENDS", item_dims: str = "[ -1 ]") -> str:
    batch_input = ",\n".join(
        f'{{ kind: {kind} target_name: "{target}" data_type: {dtype} source_input: "INPUT" }}'
        for target, (kind, dtype) in BATCH_INPUTS.items()
    )
    return f"""
    name: "{name}"
    backend: "ragged"
    max_batch_size: 8
    input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: {item_dims} allow_ragged_batch: true }} ]
    output [ {{ name: "SUM" data_type: TYPE_FP32 dims: [ 1 ] }},
             {{ name: "DOUBLED" data_type: TYPE_FP32 dims: {item_dims} }} ]
    batch_input [ {batch_input} ]
    batch_output [ {{ target_name: "DOUBLED" kind: BATCH_SCATTER_WITH_INPUT_SHAPE
                      source_input: "INPUT" }} ]
    dynamic_batching {{ max_queue_delay_microseconds: 10000 }}
    parameters {{ key: "use" value: {{ string_value: "{use}" }} }}
    """


def row_ends(arrays: dict[str, np.ndarray], use: str) -> np.ndarray:
    """Where each batch element ends in the flattened INPUT, from one batch input alone (or,
    for MAXLEN, by padding to its shape with COUNT)."""
    if use == "COUNT":
        return np.cumsum(arrays["COUNT"])
    if use == "ENDS":
        return arrays["ENDS"]
    if use == "OFFSETS":
        return arrays["OFFSETS"][1:]
    if use in ("ITEM_SHAPE", "ITEM_SHAPE_FLAT"):
        shapes = arrays["ITEM_SHAPE"] if use == "ITEM_SHAPE" else arrays["ITEM_SHAPE_FLAT"]
        shapes = shapes.reshape(-1, 1).astype(np.int64)  # one variable dim per item
        return np.cumsum(np.prod(shapes, axis=1))
    raise AssertionError(use)


class RaggedInstance(ModelInstance):
    def __init__(self, use: str, seen: list) -> None:
        self.use = use
        self.seen = seen

    def execute(self, requests):
        arrays = gather_batch(requests)
        self.seen.append({k: v.copy() for k, v in arrays.items()})
        x = arrays["INPUT"]
        if self.use == "MAXLEN":  # pad to [requests, max length], then sum rows
            counts = arrays["COUNT"]
            padded = np.zeros((len(counts), arrays["MAXLEN"].shape[0]), np.float32)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            for i, (start, count) in enumerate(zip(starts, counts, strict=True)):
                padded[i, :count] = x[start : start + count]
            sums = padded.sum(axis=1)
        else:
            ends = row_ends(arrays, self.use)
            sums = np.add.reduceat(x, np.concatenate(([0], ends[:-1]))) if len(x) else ends
        scatter_batch(requests, {"SUM": sums.reshape(-1, 1), "DOUBLED": x * 2})


class RaggedPlugin:
    def __init__(self) -> None:
        self.seen: list[dict[str, np.ndarray]] = []

    @nereid.hookimpl
    def register_backends(self, registry):
        seen = self.seen

        class _Backend(Backend):
            def __init__(self, context):
                self.context = context

            def create_model(self, config, path):
                use = config.parameters["use"].string_value

                class _Model(Model):
                    def create_instance(self, spec):
                        return RaggedInstance(use, seen)

                return _Model()

        registry.add("ragged", _Backend)


def _inputs(*lengths: int, rows: int = 1):
    return [np.arange(1, n + 1, dtype=np.float32).reshape(1, n).repeat(rows, 0) for n in lengths]


@pytest.mark.parametrize("use", list(BATCH_INPUTS))
async def test_ragged_requests_batch_and_split_by_each_batch_input(
    start_server, model_repository, clock, kit, use
):
    model_repository.add("ragged", ragged_config(use=use))
    plugin = RaggedPlugin()
    server = await start_server(plugins=[plugin], clock=clock)
    xs = _inputs(3, 4, 5)
    streams = [server.api.infer(make_request("ragged", {"INPUT": x})) for x in xs]
    await clock.advance(0.01)
    responses = [await kit.answered(s) for s in streams]
    (seen,) = plugin.seen  # one batch, though the shapes differ
    assert seen["INPUT"].shape == (12,)
    np.testing.assert_array_equal(seen["COUNT"], [3, 4, 5])
    np.testing.assert_array_equal(seen["ENDS"], [3, 7, 12])
    np.testing.assert_array_equal(seen["OFFSETS"], [0, 3, 7, 12])
    assert seen["MAXLEN"].shape == (5,)
    np.testing.assert_array_equal(seen["ITEM_SHAPE"], [[3], [4], [5]])
    np.testing.assert_array_equal(seen["ITEM_SHAPE_FLAT"], [3.0, 4.0, 5.0])
    assert seen["COUNT"].dtype == np.int32 and seen["ITEM_SHAPE_FLAT"].dtype == np.float32
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(response.as_numpy("SUM"), [[x.sum()]])
        np.testing.assert_array_equal(response.as_numpy("DOUBLED"), x * 2)


async def test_item_shape_counts_every_batch_row(start_server, model_repository, clock, kit):
    model_repository.add("ragged", ragged_config(use="ITEM_SHAPE"))
    plugin = RaggedPlugin()
    server = await start_server(plugins=[plugin], clock=clock)
    two_rows = _inputs(3, rows=2)[0] * np.array([[1], [10]], np.float32)
    xs = [two_rows, *_inputs(4)]
    streams = [server.api.infer(make_request("ragged", {"INPUT": x})) for x in xs]
    await clock.advance(0.01)
    responses = [await kit.answered(s) for s in streams]
    (seen,) = plugin.seen
    np.testing.assert_array_equal(seen["ITEM_SHAPE"], [[3], [3], [4]])
    np.testing.assert_array_equal(seen["COUNT"], [6, 4])
    np.testing.assert_allclose(responses[0].as_numpy("SUM"), [[6.0], [60.0]])
    np.testing.assert_allclose(responses[1].as_numpy("SUM"), [[10.0]])
    np.testing.assert_array_equal(responses[0].as_numpy("DOUBLED"), two_rows * 2)
    assert responses[1].as_numpy("DOUBLED").shape == (1, 4)


async def test_batch_output_with_requested_outputs(start_server, model_repository, clock, kit):
    model_repository.add("ragged", ragged_config(use="ENDS"))
    server = await start_server(plugins=[RaggedPlugin()], clock=clock)
    xs = _inputs(2, 3, 4)
    streams = [
        server.api.infer(make_request("ragged", {"INPUT": xs[0]}, outputs=["SUM"])),
        server.api.infer(make_request("ragged", {"INPUT": xs[1]}, outputs=["DOUBLED"])),
        server.api.infer(make_request("ragged", {"INPUT": xs[2]})),
    ]
    await clock.advance(0.01)
    first, second, third = [await kit.answered(s) for s in streams]
    assert [t.name for t in first.outputs] == ["SUM"]
    assert [t.name for t in second.outputs] == ["DOUBLED"]
    np.testing.assert_array_equal(second.as_numpy("DOUBLED"), xs[1] * 2)
    np.testing.assert_array_equal(third.as_numpy("DOUBLED"), xs[2] * 2)


def test_helpers_without_the_scheduler_take_the_spec():
    """A request that did not come through the dynamic batcher (a warm-up sample) carries no
    tag; the backend passes the spec it parsed from its config."""
    config = parse_pbtxt(ragged_config(item_dims="[ -1, 2 ]"))
    spec = BatchSpec.from_config(config)
    assert spec.ragged_inputs == {"INPUT"}
    requests = [
        make_request("ragged", {"INPUT": np.ones((1, 3, 2), np.float32)}),
        make_request("ragged", {"INPUT": np.ones((1, 1, 2), np.float32)}),
    ]
    arrays = gather_batch(requests, spec)
    assert arrays["INPUT"].shape == (8,)
    np.testing.assert_array_equal(arrays["ITEM_SHAPE"], [[3, 2], [1, 2]])
    np.testing.assert_array_equal(arrays["ITEM_SHAPE_FLAT"], [3, 2, 1, 2])
    np.testing.assert_array_equal(arrays["OFFSETS"], [0, 6, 8])
    assert batch_inputs(requests) == {}  # untagged, no spec given
    plain = parse_pbtxt(
        'name: "p" backend: "x" max_batch_size: 2 '
        'input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'output [ { name: "O" data_type: TYPE_FP32 dims: [ 1 ] } ]'
    )
    assert BatchSpec.from_config(plain) is None
