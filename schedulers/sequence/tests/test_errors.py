"""Every way a request or a configuration is refused, with Triton's words where Triton has them;
idle sequences, cancellation and unloading."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from nereid.errors import (
    CancelledError,
    ErrorKind,
    InvalidArgumentError,
    NereidError,
    UnavailableError,
)
from nereid.testing import make_request, settle

START_ERROR = (
    "inference request for sequence {} to model 'm' must specify the START flag on the first "
    "request of the sequence"
)


async def _refused(api, request) -> NereidError:
    with pytest.raises(NereidError) as info:
        api.infer(request)
    return info.value


async def test_request_without_correlation_id(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    for corrid in (0, ""):
        error = await _refused(api, kit.req("m", corrid, 1, start=True))
        assert error.kind is ErrorKind.INVALID_ARG
        assert error.message == (
            "inference request to model 'm' must specify a non-zero or non-empty correlation ID"
        )


async def test_sequence_not_started(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    error = await _refused(api, kit.req("m", 42, 1))
    assert error.kind is ErrorKind.INVALID_ARG
    assert error.message == START_ERROR.format(42)
    error = await _refused(api, kit.req("m", "abc", 1))
    assert error.message == START_ERROR.format("abc")


async def test_request_after_the_end(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    await kit.answered(api.infer(kit.req("m", 7, 1, start=True)))
    await kit.answered(api.infer(kit.req("m", 7, 2, end=True)))
    error = await _refused(api, kit.req("m", 7, 3))
    assert error.message == START_ERROR.format(7)


async def test_integer_and_string_ids_are_different_sequences(serve, model_repository, kit):
    kit.recorder_model(model_repository, controls="")
    api = (await serve()).api
    await kit.answered(api.infer(kit.req("m", 5, 1, start=True)))
    error = await _refused(api, kit.req("m", "5", 2))
    assert error.message == START_ERROR.format(5)


async def test_batch_of_two_rows(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    request = make_request(
        "m", {"INPUT": np.zeros((2, 1), np.int32)}, sequence_id=1, sequence_start=True
    )
    error = await _refused(api, request)
    assert error.message == (
        "inference request to model 'm' must specify batch-size 1 due to requirements of "
        "sequence batcher"
    )


async def test_string_id_for_an_integer_corrid_control(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    error = await _refused(api, kit.req("m", "not-a-number", 1, start=True))
    assert error.kind is ErrorKind.INVALID_ARG
    assert "CONTROL_SEQUENCE_CORRID input 'CORRID' is UINT64" in error.message
    # A string that holds an integer is carried as that integer.
    await kit.answered(api.infer(kit.req("m", "12", 1, start=True, end=True)))


async def test_client_may_not_send_control_inputs(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    request = kit.req("m", 1, 1, start=True)
    request.inputs["START"] = request.inputs["INPUT"]
    error = await _refused(api, request)
    assert "unexpected inference input 'START'" in error.message


async def test_idle_sequence_is_released(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(
        model_repository, max_batch_size=1, batching="max_sequence_idle_microseconds: 5000000"
    )
    server = await serve()
    api = server.api
    scheduler = kit.scheduler_of(server)
    await kit.answered(api.infer(kit.req("m", 1, 1, start=True)))
    waiting = api.infer(kit.req("m", 2, 2, start=True))  # no slot: backlog
    await clock.advance(4)
    await kit.answered(api.infer(kit.req("m", 1, 3)))  # a request keeps it alive
    await clock.advance(4)
    assert scheduler.sequences()["backlog"] == [2]
    await clock.advance(1.5)  # 5 s since sequence 1's last request
    assert await kit.output(waiting) == 2
    assert scheduler.sequences()["slots"]["m_0_0"] == [2]
    error = await _refused(api, kit.req("m", 1, 4))
    assert error.message.startswith(START_ERROR.format(1))
    assert "released after being idle for more than 5000000 microseconds" in error.message
    # It may start again.
    started = api.infer(kit.req("m", 1, 5, start=True, end=True))
    await clock.advance(6)  # 2 goes idle, 1 gets the slot
    assert await kit.output(started) == 5


async def test_idle_default_is_one_second(serve, model_repository, clock, kit):
    kit.recorder_model(model_repository)
    server = await serve()
    api = server.api
    await kit.answered(api.infer(kit.req("m", 1, 1, start=True)))
    await clock.advance(0.9)
    await kit.answered(api.infer(kit.req("m", 1, 1)))
    await clock.advance(1.1)
    error = await _refused(api, kit.req("m", 1, 1))
    assert "released after being idle for more than 1000000 microseconds" in error.message


async def test_sequence_with_queued_work_is_not_idle(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        strategy="oldest { }",
        batching="max_sequence_idle_microseconds: 1000",
    )
    server = await serve()
    api = server.api
    recorder.gate.clear()
    first = api.infer(kit.hold("m", 1, 1, start=True))
    second = api.infer(kit.req("m", 1, 2))
    await kit.until(recorder.holding.is_set)
    await clock.advance(1)  # far past the idle time, but a request is executing, one queued
    recorder.gate.set()
    assert [await kit.output(s) for s in (first, second)] == [1, 2]
    await kit.answered(api.infer(kit.req("m", 1, 3, end=True)))


async def test_cancelled_request_cancels_its_sequence(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=1)
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 1, 1, start=True))
    await kit.until(recorder.holding.is_set)
    queued = [api.infer(kit.req("m", 1, v)) for v in (2, 3)]
    backlog = api.infer(kit.req("m", 2, 20, start=True, end=True))
    queued[0].cancel()
    with pytest.raises(CancelledError):
        await kit.answered(queued[0])
    recorder.gate.set()
    await kit.answered(blocker)
    with pytest.raises(CancelledError):  # the rest of the sequence is cancelled with it
        await kit.answered(queued[1])
    assert await kit.output(backlog) == 20  # its slot went to the backlog
    error = await _refused(api, kit.req("m", 1, 4))
    assert error.message == START_ERROR.format(1)
    await settle()
    assert recorder.ids() == [["1.1"], ["2.20"]]


async def test_unload_waits_for_queued_requests(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(model_repository, max_batch_size=1)
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 1, 1, start=True))
    await kit.until(recorder.holding.is_set)
    queued = api.infer(kit.req("m", 1, 2))
    backlog = api.infer(kit.req("m", 2, 3, start=True))
    unloading = asyncio.ensure_future(server.repository.unload("m"))
    recorder.gate.set()
    assert [await kit.output(s) for s in (blocker, queued)] == [1, 2]
    # Sequence 1 never ends (and no request may join it now): the backlogged sequence gets the
    # slot when 1 has been idle for max_sequence_idle_microseconds (1 s by default).
    await clock.advance(1)
    assert await kit.output(backlog) == 3
    await unloading


async def test_unload_with_timeout_fails_what_is_left(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=1)
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 1, 1, start=True))
    await kit.until(recorder.holding.is_set)
    queued = api.infer(kit.req("m", 1, 2))
    backlog = api.infer(kit.req("m", 2, 3, start=True))
    unloading = asyncio.ensure_future(server.repository.unload("m", timeout=0))
    await settle()
    recorder.gate.set()
    await unloading
    assert await kit.output(blocker) == 1
    for stream in (queued, backlog):
        with pytest.raises(UnavailableError):
            await kit.answered(stream)


CONFIG_ERRORS = {
    "two controls in one input": (
        'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START '
        "int32_false_true: [ 0, 1 ] }, { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] "
        "} ] } ]",
        "must have exactly one 'control'",
    ),
    "no false/true values": (
        'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START } ] } ]',
        "must give exactly one of int32_false_true",
    ),
    "three values": (
        'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_READY '
        "fp32_false_true: [ 0, 1, 2 ] } ] } ]",
        "must have 2 values",
    ),
    "corrid type": (
        'control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID '
        "data_type: TYPE_FP32 } ] } ]",
        "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING, not TYPE_FP32",
    ),
    "kind twice": (
        'control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_END '
        'bool_false_true: [ false, true ] } ] }, { name: "B" control [ { kind: '
        "CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] } ]",
        "more than one CONTROL_SEQUENCE_END control ('A' and 'B')",
    ),
    "control listed as input": (
        'control_input [ { name: "INPUT" control [ { kind: CONTROL_SEQUENCE_START '
        "int32_false_true: [ 0, 1 ] } ] } ]",
        "is also a model input",
    ),
    "two initial states": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 1 ] '
        'initial_state [ { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "a" }, '
        '{ data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "b" } ] } ]',
        "must contain exactly one or zero element. Found '2' elements.",
    ),
    "initial state type": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 1 ] '
        'initial_state { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "a" } } ]',
        "does not match the state data type",
    ),
    "initial state without name": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 1 ] '
        "initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } ]",
        "Field 'name' must be set",
    ),
    "initial state variable dims": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ -1 ] '
        'initial_state { data_type: TYPE_INT32 dims: [ -1 ] zero_data: true name: "a" } } ]',
        "contains variable dimensions",
    ),
    "initial state dims differ": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 2 ] '
        'initial_state { data_type: TYPE_INT32 dims: [ 3 ] zero_data: true name: "a" } } ]',
        "doesn't match 'state' dim description. 3 != 2",
    ),
    "initial state file missing": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 dims: [ 2 ] '
        'initial_state { data_type: TYPE_INT32 dims: [ 2 ] data_file: "nope" name: "a" } } ]',
        "unable to read initial_state file",
    ),
    "state without dims": (
        'state [ { input_name: "I" output_name: "O" data_type: TYPE_INT32 } ]',
        "must specify 'dims'",
    ),
    "iterative sequence": ("iterative_sequence: true", "iterative_sequence is not supported"),
    "preferred size": (
        "oldest { preferred_batch_size: [ 9 ] }",
        "preferred_batch_size 9 must be between 1 and max_batch_size 4",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
async def test_configuration_errors(serve, model_repository, kit, case):
    text, message = CONFIG_ERRORS[case]
    if text.startswith("oldest"):
        kit.recorder_model(model_repository, strategy=text)
    else:
        kit.recorder_model(model_repository, controls=text)
    server = await serve(exit_on_error=False)
    assert not server.api.model_ready("m")
    reason = {(e["name"], e["version"]): e for e in server.api.repository_index()}[("m", "1")]
    assert message in reason["reason"], reason


async def test_invalid_argument_error_type(serve, model_repository, kit):
    kit.recorder_model(model_repository)
    api = (await serve()).api
    with pytest.raises(InvalidArgumentError):
        api.infer(kit.req("m", 3, 1))
