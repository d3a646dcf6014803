"""Implicit state: initial state (zeros, a data file, none), the state output kept from the
client, and the backends that serve it (the recorder, Python, ONNX Runtime)."""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest
from nereid.testing import make_request
from sequence_models import (
    DECOUPLED_CONFIG,
    DECOUPLED_MODEL,
    PYTHON_STATE_CONFIG,
    PYTHON_STATE_MODEL,
    accumulator_config,
    accumulator_onnx,
)

HAVE_PYTHON = importlib.util.find_spec("nereid_python") is not None
HAVE_ORT = all(importlib.util.find_spec(m) for m in ("nereid_onnxruntime", "onnx", "onnxruntime"))
needs_python = pytest.mark.skipif(not HAVE_PYTHON, reason="nereid-python is not installed")
needs_ort = pytest.mark.skipif(
    not HAVE_ORT, reason="nereid-onnxruntime, onnx and onnxruntime are needed"
)
THREAD_MODE = ["python,execution-mode=thread"]


async def _sums(api, model: str, corrid, values, **kw) -> list[int]:
    expect = kw.pop("expect_outputs", ["OUTPUT"])
    outputs = []
    for index, value in enumerate(values):
        request = make_request(
            model,
            {"INPUT": np.full((1, 1), value, np.int32)},
            sequence_id=corrid,
            sequence_start=index == 0,
            sequence_end=index == len(values) - 1,
            **kw,
        )
        response = await asyncio.wait_for(api.infer(request).single(), 10)
        assert [t.name for t in response.outputs] == expect
        outputs.append(int(response.as_numpy("OUTPUT")[0, 0]))
    return outputs


async def test_state_from_a_data_file(serve, model_repository, recorder, kit):
    state = """
    state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ -1 ]
              initial_state { data_type: TYPE_INT32 dims: [ 1 ] data_file: "hundred"
                              name: "from file" } } ]
    """
    kit.recorder_model(model_repository, state=state)
    (model_repository.root / "m" / "initial_state").mkdir()
    (model_repository.root / "m" / "initial_state" / "hundred").write_bytes(
        np.array([100], np.int32).tobytes()
    )
    api = (await serve()).api
    assert await _sums(api, "m", 1, [1, 2, 3]) == [101, 103, 106]
    assert [row["ACC_IN"] for _, rows in recorder.batches for row in rows] == [100, 101, 103]


async def test_state_without_initial_state_starts_as_zeros(serve, model_repository, kit):
    state = (
        'state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 '
        "dims: [ -1 ] } ]"
    )
    kit.recorder_model(model_repository, state=state)
    api = (await serve()).api
    assert await _sums(api, "m", 1, [5, 5]) == [5, 10]


async def test_state_output_is_kept_from_the_client(serve, model_repository, kit):
    kit.recorder_model(model_repository, state=kit.ACC_STATE)
    api = (await serve()).api
    assert await _sums(api, "m", 1, [1, 2]) == [1, 3]
    # Asking for OUTPUT by name: the backend is asked for the state too, the client gets OUTPUT.
    assert await _sums(api, "m", 2, [1, 2], outputs=["OUTPUT"]) == [1, 3]


async def test_state_output_listed_as_output_may_be_requested(serve, model_repository, kit):
    extra = 'output [ { name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]'
    kit.recorder_model(model_repository, state=kit.ACC_STATE, extra=extra)
    api = (await serve()).api
    both = ["OUTPUT", "ACC_OUT"]
    assert await _sums(api, "m", 1, [1, 2], expect_outputs=both) == [1, 3]
    assert await _sums(api, "m", 2, [1, 2], outputs=["OUTPUT"]) == [1, 3]
    asked = ["ACC_OUT", "OUTPUT"]
    assert await _sums(api, "m", 3, [4], outputs=asked, expect_outputs=asked) == [4]


async def test_each_sequence_has_its_own_state_in_one_batch(serve, model_repository, kit):
    kit.recorder_model(model_repository, state=kit.ACC_STATE)
    api = (await serve()).api
    results = await asyncio.gather(
        _sums(api, "m", 1, [1, 1, 1, 1]),
        _sums(api, "m", 2, [10, 10, 10]),
        _sums(api, "m", "3", [100, 100]),
    )
    assert results == [[1, 2, 3, 4], [10, 20, 30], [100, 200]]


@needs_python
async def test_python_backend_state(start_server, model_repository):
    model_repository.add(
        "py_acc", PYTHON_STATE_CONFIG, versions={1: {"model.py": PYTHON_STATE_MODEL}}
    )
    server = await start_server(backend_config=THREAD_MODE)
    results = await asyncio.gather(
        _sums(server.api, "py_acc", 1, [1, 2, 3]), _sums(server.api, "py_acc", "x", [5, 5])
    )
    assert results == [[1, 3, 6], [5, 10]]


@needs_python
async def test_python_decoupled_state(start_server, model_repository):
    model_repository.add("dec", DECOUPLED_CONFIG, versions={1: {"model.py": DECOUPLED_MODEL}})
    server = await start_server(backend_config=THREAD_MODE)
    api = server.api
    seen = []
    for index, value in enumerate([1, 2, 3]):
        request = make_request(
            "dec",
            {"INPUT": np.full((1, 1), value, np.int32)},
            sequence_id=9,
            sequence_start=index == 0,
            sequence_end=index == 2,
        )
        responses = await asyncio.wait_for(api.infer(request).collect(), 10)
        seen.append([[t.name for t in r.outputs] for r in responses])
        seen.append([int(r.as_numpy("OUTPUT")[0, 0]) for r in responses if not r.empty])
    assert seen[1::2] == [[1, 10], [3, 30], [6, 60]]
    assert seen[0] == [["OUTPUT"], ["OUTPUT"], []]


@needs_ort
@pytest.mark.parametrize("strategy", ["direct { }", "oldest { max_candidate_sequences: 8 }"])
async def test_onnx_running_sum_with_state(start_server, model_repository, strategy):
    model_repository.add(
        "acc",
        accumulator_config(strategy=strategy),
        versions={1: {"model.onnx": accumulator_onnx()}},
    )
    server = await start_server()
    api = server.api
    first = await _sums(api, "acc", 1, [3])
    assert first == [3]
    results = await asyncio.gather(
        *(_sums(api, "acc", cid, list(range(1, 6))) for cid in (10, 11, "twelve", 13, 14, 15))
    )
    assert results == [[1, 3, 6, 10, 15]] * 6


@needs_ort
async def test_onnx_running_sum_with_start_control(start_server, model_repository):
    model_repository.add(
        "acc_start",
        accumulator_config(start=True, debug_output=True),
        versions={1: {"model.onnx": accumulator_onnx(start=True)}},
    )
    api = (await start_server()).api
    results = await asyncio.gather(
        _sums(api, "acc_start", 1, [7, 1, 1], outputs=["OUTPUT"]),
        _sums(api, "acc_start", 2, [9, 9], outputs=["OUTPUT"]),
    )
    assert results == [[7, 8, 9], [9, 18]]


@needs_ort
async def test_onnx_state_output_listed_as_output(start_server, model_repository):
    """With the state output also under ``output`` (Triton's debugging rule) every backend
    produces it; the client receives it only when it asks for all outputs or for it."""
    model_repository.add(
        "acc_dbg",
        accumulator_config(debug_output=True),
        versions={1: {"model.onnx": accumulator_onnx()}},
    )
    api = (await start_server()).api
    both = ["OUTPUT", "ACC_OUT"]
    assert await _sums(api, "acc_dbg", 1, [2, 2, 2], expect_outputs=both) == [2, 4, 6]
    assert await _sums(api, "acc_dbg", 2, [2, 2], outputs=["OUTPUT"]) == [2, 4]
