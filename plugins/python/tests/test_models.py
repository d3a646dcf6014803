"""Real model.py files served through the kernel (start_server, api.infer)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
import pytest
from nereid.errors import ErrorKind, NereidError
from nereid.testing import make_request, settle
from python_backend_models import (
    ADD_SUB_SOURCE,
    ASYNC_CONFIG,
    ASYNC_DECOUPLED_CONFIG,
    ASYNC_DECOUPLED_SOURCE,
    ASYNC_SOURCE,
    AUTO_COMPLETE_SOURCE,
    CANCEL_CONFIG,
    CANCEL_DECOUPLED_SOURCE,
    CANCEL_SOURCE,
    ERRORS_CONFIG,
    ERRORS_SOURCE,
    IDENTITY_BYTES_CONFIG,
    IDENTITY_BYTES_SOURCE,
    INIT_FAILS_SOURCE,
    OBSERVE_CONFIG,
    OBSERVE_SOURCE,
    REPEAT_CONFIG,
    REPEAT_SOURCE,
    add_sub_config,
)


def _python_model(repo, name, config, source, filename="model.py"):
    return repo.add(name, config, versions={1: {filename: source}})


def _bytes(*items: str) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = [s.encode() for s in items]
    return array


@pytest.mark.parametrize("datatype, dtype", [("TYPE_FP32", np.float32), ("TYPE_INT32", np.int32)])
async def test_add_sub(start_server, model_repository, datatype, dtype):
    _python_model(model_repository, "add_sub", add_sub_config(datatype), ADD_SUB_SOURCE)
    server = await start_server()
    a = np.array([1, 2, 3, 4], dtype=dtype)
    b = np.array([10, 20, 30, 40], dtype=dtype)
    response = await server.api.infer(make_request("add_sub", {"INPUT0": a, "INPUT1": b})).single()
    assert response.as_numpy("OUTPUT0").dtype == dtype
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    assert server.api.model_config("add_sub").backend == "python"


async def test_requested_output_only(start_server, model_repository):
    _python_model(model_repository, "add_sub", add_sub_config(), ADD_SUB_SOURCE)
    server = await start_server()
    a = np.ones(4, np.float32)
    request = make_request("add_sub", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    response = await server.api.infer(request).single()
    assert [t.name for t in response.outputs] == ["OUTPUT1"]


async def test_string_identity(start_server, model_repository):
    _python_model(model_repository, "strings", IDENTITY_BYTES_CONFIG, IDENTITY_BYTES_SOURCE)
    server = await start_server()
    data = _bytes("hello", "", "wörld")
    response = await server.api.infer(make_request("strings", {"IN": data})).single()
    out = response.output("OUT")
    assert out.datatype.value == "BYTES"
    assert list(out.data) == list(data)


async def test_decoupled_repeat_from_thread(start_server, model_repository, caplog):
    caplog.set_level(logging.INFO, logger="nereid.python")
    _python_model(model_repository, "repeat", REPEAT_CONFIG, REPEAT_SOURCE)
    server = await start_server()
    values = np.array([4, 2, 0, 1], np.int32)
    inputs = {
        "IN": values,
        "DELAY": np.array([1, 20, 5, 10], np.uint32),
        "WAIT": np.array([5], np.uint32),
    }
    started = time.monotonic()
    responses = await server.api.infer(make_request("repeat", inputs)).collect()
    assert time.monotonic() - started >= 0.03
    data = [r for r in responses if not r.empty]
    assert [int(r.as_numpy("OUT")[0]) for r in data] == list(values)
    assert [int(r.as_numpy("IDX")[0]) for r in data] == [0, 1, 2, 3]
    assert [r.final for r in responses] == [False] * 4 + [True]
    assert responses[-1].empty
    # A second final from the model is refused with Triton's message.
    for _ in range(100):
        if "after final" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "after final: Unable to send response. Response sender has been closed." in caplog.text


async def test_decoupled_requests_interleave(start_server, model_repository):
    """WAIT shorter than the delays: execute returns while its thread still sends, so one
    instance serves two requests at once."""
    _python_model(model_repository, "repeat", REPEAT_CONFIG, REPEAT_SOURCE)
    server = await start_server()
    inputs = {
        "IN": np.array([1, 2, 3], np.int32),
        "DELAY": np.array([30, 30, 30], np.uint32),
        "WAIT": np.array([0], np.uint32),
    }
    arrivals: list[tuple[str, bool]] = []

    async def consume(tag: str, stream) -> None:
        async for response in stream:
            arrivals.append((tag, response.final))

    first = server.api.infer(make_request("repeat", inputs))
    second = server.api.infer(make_request("repeat", inputs))
    await asyncio.gather(consume("a", first), consume("b", second))
    assert len(arrivals) == 8
    # b's first response comes before a's final one: the two requests ran at the same time.
    assert arrivals.index(("b", False)) < arrivals.index(("a", True))


async def test_async_execute(start_server, model_repository):
    _python_model(model_repository, "async_double", ASYNC_CONFIG, ASYNC_SOURCE)
    server = await start_server()
    x = np.array([1.5, -2.0], np.float32)
    streams = [server.api.infer(make_request("async_double", {"IN": x})) for _ in range(3)]
    for response in await asyncio.gather(*(s.single() for s in streams)):
        np.testing.assert_array_equal(response.as_numpy("OUT"), x * 2)


async def test_async_execute_decoupled_runs_in_background(start_server, model_repository):
    _python_model(model_repository, "async_square", ASYNC_DECOUPLED_CONFIG, ASYNC_DECOUPLED_SOURCE)
    server = await start_server()
    arrivals: list[tuple[int, int | None]] = []

    async def consume(tag: int, stream) -> None:
        async for response in stream:
            arrivals.append((tag, None if response.empty else int(response.as_numpy("OUT")[0])))

    streams = [
        server.api.infer(make_request("async_square", {"IN": np.array([5], np.int32)}))
        for _ in range(3)
    ]
    await asyncio.gather(*(consume(i, s) for i, s in enumerate(streams)))
    for tag in range(3):
        assert [v for t, v in arrivals if t == tag] == [5] * 5 + [None]
    # One instance, yet the third request answers before the first is done: Triton runs a
    # decoupled async execute in the background.
    assert arrivals.index((2, 5)) < arrivals.index((0, None))


async def test_auto_complete_without_config(start_server, model_repository):
    model_repository.add("auto", None, versions={1: {"model.py": AUTO_COMPLETE_SOURCE}})
    server = await start_server()
    config = server.api.model_config("auto")
    assert config.backend == "python"
    assert config.max_batch_size == 4
    assert [(i.name, list(i.dims)) for i in config.input] == [("X", [2])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("Y", [2])]
    assert not config.model_transaction_policy.decoupled
    x = np.array([[1, 2], [3, 4]], np.float32)
    response = await server.api.infer(make_request("auto", {"X": x})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x + 1)


async def test_auto_complete_conflict_fails_load(start_server, model_repository):
    model_repository.add(
        "auto",
        """
        backend: "python"
        input [ { name: "X" data_type: TYPE_INT32 dims: [ 2 ] } ]
        """,
        versions={1: {"model.py": AUTO_COMPLETE_SOURCE}},
    )
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("auto")
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "configuration expects datatype TYPE_INT32 for input 'X'" in index["auto"]["reason"]


async def test_auto_complete_disabled(start_server, model_repository):
    model_repository.add("auto", None, versions={1: {"model.py": AUTO_COMPLETE_SOURCE}})
    server = await start_server(exit_on_error=False, disable_auto_complete_config=True)
    assert not server.api.model_ready("auto")


@pytest.mark.parametrize(
    "mode, kind, message",
    [
        ("default_code", ErrorKind.INTERNAL, "plain error"),
        ("not_found", ErrorKind.NOT_FOUND, "not_found error"),
        ("invalid_arg", ErrorKind.INVALID_ARG, "invalid_arg error"),
        ("unavailable", ErrorKind.UNAVAILABLE, "unavailable error"),
        ("unsupported", ErrorKind.UNSUPPORTED, "unsupported error"),
        ("already_exists", ErrorKind.ALREADY_EXISTS, "already_exists error"),
        ("cancelled", ErrorKind.CANCELLED, "cancelled error"),
        ("unknown", ErrorKind.UNKNOWN, "unknown error"),
    ],
)
async def test_returned_error_keeps_its_code(start_server, model_repository, mode, kind, message):
    _python_model(model_repository, "errors", ERRORS_CONFIG, ERRORS_SOURCE)
    server = await start_server()
    with pytest.raises(NereidError) as info:
        await server.api.infer(make_request("errors", {"MODE": _bytes(mode)})).single()
    assert info.value.kind is kind
    assert info.value.message == message


PREFIX = "Failed to process the request(s) for model 'errors_0_0', message: "


@pytest.mark.parametrize(
    "mode, kind, message",
    [
        ("raise", ErrorKind.INTERNAL, "TritonModelException: raised on purpose"),
        ("raise_value", ErrorKind.INTERNAL, "ValueError: bad value"),
        ("raise_triton_error", ErrorKind.NOT_FOUND, "TritonError: raised with a code"),
        (
            "too_many",
            ErrorKind.INTERNAL,
            "Number of InferenceResponse objects do not match the number of InferenceRequest "
            "objects. InferenceRequest(s) size is:1, and InferenceResponse(s) size is:2",
        ),
        (
            "none",
            ErrorKind.INTERNAL,
            "Expected a list in the execute return, found type 'NoneType'.",
        ),
        ("not_a_list", ErrorKind.INTERNAL, "Expected a list in the execute return"),
        ("bls", ErrorKind.INTERNAL, "TritonModelException: bls: "),
        (
            "sender_twice",
            ErrorKind.INTERNAL,
            "Non-decoupled model cannot send more than one response.",
        ),
    ],
)
async def test_execute_failure_fails_request(start_server, model_repository, mode, kind, message):
    _python_model(model_repository, "errors", ERRORS_CONFIG, ERRORS_SOURCE)
    server = await start_server()
    with pytest.raises(NereidError) as info:
        await server.api.infer(make_request("errors", {"MODE": _bytes(mode)})).single()
    assert info.value.kind is kind
    assert info.value.message.startswith(PREFIX)
    assert message in info.value.message
    # The model keeps serving.
    ok = await server.api.infer(make_request("errors", {"MODE": _bytes("ok")})).single()
    assert ok.as_numpy("OUT")[0] == 1
    assert ok.parameters == {"source": "python", "n": 3, "ok": True}


async def test_non_decoupled_response_through_sender(start_server, model_repository):
    _python_model(model_repository, "errors", ERRORS_CONFIG, ERRORS_SOURCE)
    server = await start_server()
    response = await server.api.infer(make_request("errors", {"MODE": _bytes("sender")})).single()
    assert response.as_numpy("OUT")[0] == 7


async def test_initialize_error_fails_load(start_server, model_repository):
    _python_model(model_repository, "broken", add_sub_config(), INIT_FAILS_SOURCE)
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("broken")
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "TritonModelException: cannot initialize: missing weights" in index["broken"]["reason"]


async def test_import_error_fails_load(start_server, model_repository):
    _python_model(model_repository, "bad_import", add_sub_config(), "import no_such_module_x\n")
    _python_model(model_repository, "no_class", add_sub_config(), "X = 1\n")
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert (
        "ModuleNotFoundError: No module named 'no_such_module_x'" in index["bad_import"]["reason"]
    )
    assert "does not define class 'TritonPythonModel'" in index["no_class"]["reason"]


async def _wait_for(caplog, text: str) -> None:
    for _ in range(300):
        if text in caplog.text:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} not logged")


async def test_cancellation_seen_by_execute(start_server, model_repository, caplog):
    caplog.set_level(logging.INFO, logger="nereid.python")
    _python_model(model_repository, "cancel", CANCEL_CONFIG % "false", CANCEL_SOURCE)
    server = await start_server()
    stream = server.api.infer(make_request("cancel", {"IN": np.array([1], np.int32)}))
    await asyncio.sleep(0.05)
    stream.cancel()
    with pytest.raises(NereidError) as info:
        await stream.single()
    assert info.value.kind is ErrorKind.CANCELLED
    await _wait_for(caplog, "execute saw the cancellation")


async def test_cancellation_seen_by_response_sender(start_server, model_repository, caplog):
    caplog.set_level(logging.INFO, logger="nereid.python")
    _python_model(model_repository, "cancel", CANCEL_CONFIG % "true", CANCEL_DECOUPLED_SOURCE)
    server = await start_server()
    stream = server.api.infer(make_request("cancel", {"IN": np.array([1], np.int32)}))
    first = await stream.__anext__()
    assert first.as_numpy("OUT")[0] == 1
    stream.cancel()
    rest = await stream.collect()
    assert rest[-1].final and rest[-1].error.kind is ErrorKind.CANCELLED
    await _wait_for(caplog, "stream saw the cancellation")


async def test_logger_initialize_args_request_fields(start_server, model_repository, caplog):
    caplog.set_level(logging.DEBUG, logger="nereid.python")
    _python_model(model_repository, "observe", OBSERVE_CONFIG, OBSERVE_SOURCE)
    server = await start_server()
    request = make_request(
        "observe",
        {"IN": np.zeros(3, np.float32)},
        id="req-7",
        parameters={"temperature": 1, "mode": "fast", "flag": True},
        sequence_id=42,
        sequence_start=True,
        timeout_us=5000,
    )
    response = await server.api.infer(request).single()
    seen = json.loads(response.as_numpy("ARGS")[0])
    args = seen["args"]
    assert set(args) == {
        "model_config",
        "model_instance_kind",
        "model_instance_name",
        "model_instance_device_id",
        "model_repository",
        "model_version",
        "model_name",
    }
    assert all(isinstance(v, str) for v in args.values())
    assert args["model_instance_kind"] == "CPU"
    assert args["model_instance_name"] == "observe_0_0"
    assert args["model_instance_device_id"] == "0"
    assert args["model_name"] == "observe" and args["model_version"] == "1"
    assert args["model_repository"] == str(model_repository.root / "observe")
    config = json.loads(args["model_config"])
    assert config["parameters"] == {"custom_key": {"string_value": "custom_value"}}
    assert config["input"][0]["dims"] == [-1]
    assert seen["request_id"] == "req-7"
    assert seen["correlation_id"] == 42
    assert seen["flags"] == 1  # TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
    assert seen["parameters"] == {"temperature": 1, "mode": "fast", "flag": True}
    assert seen["timeout"] == 5000

    records = [(r.levelname, r.getMessage(), r.filename) for r in caplog.records]
    for level, message in [
        ("INFO", "initialized observe_0_0"),
        ("INFO", "info message"),
        ("WARNING", "warning message"),
        ("ERROR", "error message"),
        ("DEBUG", "verbose message"),
        ("WARNING", "explicit warning"),
    ]:
        assert (level, message, "model.py") in records, records
    assert all(r.name == "nereid.python" for r in caplog.records if r.filename == "model.py")


def _family(server, name):
    return next(f for f in server.api.custom_metrics.snapshot() if f["name"] == name)


async def test_custom_metrics_in_kernel_registry(start_server, model_repository):
    _python_model(model_repository, "observe", OBSERVE_CONFIG, OBSERVE_SOURCE)
    server = await start_server()
    for size in (1, 3):
        request = make_request("observe", {"IN": np.zeros(size, np.float32)})
        response = await server.api.infer(request).single()
    assert json.loads(response.as_numpy("ARGS")[0])["count"] == 2.0
    counter = _family(server, "observe_requests_total")
    assert counter["kind"] == "counter"
    assert counter["description"] == "requests seen by the observe model"
    assert counter["metrics"] == [
        {**counter["metrics"][0], "labels": {"model": "observe", "version": "1"}, "value": 2.0}
    ]
    assert _family(server, "observe_last_size")["metrics"][0]["value"] == 3.0
    histogram = _family(server, "observe_sizes")["metrics"][0]
    assert histogram["count"] == 2 and histogram["sum"] == 4.0
    assert histogram["bucket_counts"] == [1, 1, 0, 0]
    # Unloading the model removes its series.
    await server.repository.unload("observe")
    names = {f["name"] for f in server.api.custom_metrics.snapshot()}
    assert "observe_requests_total" not in names


async def test_is_model_ready(start_server, model_repository, execution_mode):
    _python_model(model_repository, "observe", OBSERVE_CONFIG, OBSERVE_SOURCE)
    server = await start_server()
    assert server.api.model_ready("observe")
    await server.api.infer(make_request("observe", {"IN": np.array([-1.0], np.float32)})).single()
    if execution_mode == "thread":
        assert not server.api.model_ready("observe")
        return
    # In a model process, readiness is the last known answer; each probe asks for a fresh one
    # (the event loop never waits for a model process).
    for _ in range(200):
        if not server.api.model_ready("observe"):
            break
        await asyncio.sleep(0.01)
    assert not server.api.model_ready("observe")


async def test_default_model_filename_and_runtime(start_server, model_repository):
    config = add_sub_config(extra='default_model_filename: "my_model.py"')
    _python_model(model_repository, "renamed", config, ADD_SUB_SOURCE, filename="my_model.py")
    # runtime: a Python file shared by every version, in the model folder
    model_repository.add(
        "shared",
        add_sub_config(extra='runtime: "shared_model.py"'),
        versions={1: {}},
        files={"shared_model.py": ADD_SUB_SOURCE},
    )
    model_repository.add("missing", add_sub_config(), versions={1: {"other.py": ADD_SUB_SOURCE}})
    server = await start_server(exit_on_error=False)
    a = np.ones(4, np.float32)
    for name in ("renamed", "shared"):
        response = await server.api.infer(make_request(name, {"INPUT0": a, "INPUT1": a})).single()
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * 2)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "Python model file not found in" in index["missing"]["reason"]


async def test_helper_module_next_to_model(start_server, model_repository):
    source = (
        "import helper\nfrom . import helper as relative\n"
        "assert helper.VALUE == relative.VALUE\n" + ADD_SUB_SOURCE
    )
    model_repository.add(
        "helped", add_sub_config(), versions={1: {"model.py": source, "helper.py": "VALUE = 3\n"}}
    )
    server = await start_server()
    assert server.api.model_ready("helped")


async def test_backend_config_settings(start_server, model_repository):
    _python_model(model_repository, "add_sub", add_sub_config(), ADD_SUB_SOURCE)
    server = await start_server(
        backend_config=["python,shm-default-byte-size=1048576", "python,execution-mode=thread"]
    )
    assert server.api.model_ready("add_sub")


async def test_backend_config_invalid_value(start_server, model_repository):
    _python_model(model_repository, "add_sub", add_sub_config(), ADD_SUB_SOURCE)
    server = await start_server(
        exit_on_error=False, backend_config=["python,stub-timeout-seconds=soon"]
    )
    assert not server.api.model_ready("add_sub")


async def test_two_instances_and_unload_finalizes(start_server, model_repository, caplog):
    caplog.set_level(logging.INFO, logger="nereid.python")
    extra = "instance_group [ { count: 2 kind: KIND_CPU } ]"
    _python_model(model_repository, "add_sub", add_sub_config(extra=extra), ADD_SUB_SOURCE)
    server = await start_server()
    a = np.ones(4, np.float32)
    streams = [
        server.api.infer(make_request("add_sub", {"INPUT0": a, "INPUT1": a})) for _ in range(6)
    ]
    await asyncio.gather(*(s.single() for s in streams))
    await server.repository.unload("add_sub")
    await settle()
    assert caplog.text.count("add_sub_python: finalized") == 2


async def test_example_repository_add_sub_python(start_server):
    from python_backend_models import EXAMPLE

    server = await start_server(EXAMPLE.parent)
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([1, 1, 1, 1], np.float32)
    request = make_request("add_sub_python", {"INPUT0": a, "INPUT1": b})
    response = await server.api.infer(request).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
