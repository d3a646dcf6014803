"""Models in processes of their own: crash isolation, hangs, restarts, parallel instances,
shared-memory tensors and their clean-up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from nereid.errors import ErrorKind, NereidError
from nereid.inprocess import InProcessServer
from nereid.testing import ModelRepositoryBuilder, make_request
from python_backend_models import (
    ADD_SUB_SOURCE,
    BUSY_CONFIG,
    BUSY_SOURCE,
    IDENTITY_CONFIG,
    IDENTITY_SOURCE,
    PROCESS_CONFIG,
    PROCESS_SOURCE,
    STREAM_CRASH_CONFIG,
    STREAM_CRASH_SOURCE,
    add_sub_config,
)

TIMEOUT_PARAMETER = 'parameters { key: "execute_timeout_seconds" value: { string_value: "1" } }'
THREAD_PARAMETER = 'parameters { key: "execution_mode" value: { string_value: "thread" } }'
PROCESS_PARAMETER = 'parameters { key: "execution_mode" value: { string_value: "process" } }'
SMALL_SHM = ["python,shm-default-byte-size=65536", "python,shm-growth-byte-size=65536"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[InProcessServer]:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))

    def add(name: str, config: str, source: str) -> None:
        repo.add(name, config, versions={1: {"model.py": source}})

    add("proc", PROCESS_CONFIG % TIMEOUT_PARAMETER, PROCESS_SOURCE)
    add("in_server", PROCESS_CONFIG % THREAD_PARAMETER, PROCESS_SOURCE)
    add("busy1", BUSY_CONFIG % 1, BUSY_SOURCE)
    add("busy2", BUSY_CONFIG % 2, BUSY_SOURCE)
    add("add_sub", add_sub_config(), ADD_SUB_SOURCE)
    add("identity", IDENTITY_CONFIG, IDENTITY_SOURCE)
    add("stream_crash", STREAM_CRASH_CONFIG, STREAM_CRASH_SOURCE)
    with InProcessServer(str(repo.root), backend_config=SMALL_SHM) as running:
        yield running


def _bytes(*items: str) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = [s.encode() for s in items]
    return array


def _gather(server: InProcessServer, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Send every request at once; the responses (or the errors) in order."""

    async def run() -> list[Any]:
        streams = [server.api.infer(make_request(model, inputs)) for model, inputs in requests]
        return await asyncio.gather(*(s.single() for s in streams), return_exceptions=True)

    return server._call(run())


def _pid(server: InProcessServer, model: str = "proc") -> int:
    return int(server.infer(model, {"MODE": _bytes("pid")})["PID"][0])


def _add_sub_works(server: InProcessServer) -> None:
    a = np.arange(4, dtype=np.float32)
    outputs = server.infer("add_sub", {"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(outputs["OUTPUT0"], a * 2)


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_models_run_in_processes_of_their_own(server):
    pid = _pid(server)
    assert pid != os.getpid()
    # execution_mode "thread" keeps that model in the server process
    assert _pid(server, "in_server") == os.getpid()
    assert server.api.model_ready("proc")


@pytest.mark.parametrize(
    "mode, reason", [("exit", "exited with code 3"), ("kill", "killed by SIGKILL")]
)
def test_crash_fails_the_batch_and_restarts(server, mode, reason):
    before = _pid(server)
    with pytest.raises(NereidError) as info:
        server.infer("proc", {"MODE": _bytes(mode)})
    assert info.value.kind is ErrorKind.INTERNAL
    assert "Stub process 'proc_0_0' is not healthy" in info.value.message
    assert reason in info.value.message
    _add_sub_works(server)  # other models never noticed
    # The instance is restarted: the next request waits for the new process.
    after = _pid(server)
    assert after != before
    _wait(lambda: server.api.model_ready("proc"))


def test_crash_with_batches_queued_behind_it(server):
    # Several batches are sent ahead to the model process; when it dies on one of them, every
    # request gets an answer: served, or failed as not healthy. Later ones go to the new process.
    before = _pid(server)
    modes = ["pid"] * 3 + ["exit"] + ["pid"] * 8
    results = _gather(server, [("proc", {"MODE": _bytes(mode)}) for mode in modes])
    assert isinstance(results[3], NereidError)
    assert "exited with code 3" in results[3].message
    pids = set()
    for result in results:
        if isinstance(result, NereidError):
            assert result.kind is ErrorKind.INTERNAL
            assert "Stub process 'proc_0_0' is not healthy" in result.message
        else:
            pids.add(int(result.as_numpy("PID")[0]))
    after = int(results[-1].as_numpy("PID")[0])
    assert after != before and pids <= {before, after}


def test_process_killed_while_idle_is_restarted(server):
    before = _pid(server)
    os.kill(before, signal.SIGKILL)
    _wait(lambda: not server.api.model_ready("proc"))
    _wait(lambda: server.api.model_ready("proc"))
    assert _pid(server) != before


def test_hung_execute_is_killed_after_the_timeout(server):
    async def run() -> tuple[Any, float, float]:
        started = time.monotonic()
        hung = server.api.infer(make_request("proc", {"MODE": _bytes("spin")}))
        task = asyncio.ensure_future(hung.single())
        await asyncio.sleep(0.2)
        # While proc_0_0 spins, the server and its other models keep serving.
        a = np.ones(4, np.float32)
        other = await server.api.infer(make_request("add_sub", {"INPUT0": a, "INPUT1": a})).single()
        assert other.as_numpy("OUTPUT0")[0] == 2
        served = time.monotonic() - started
        try:
            await task
        except NereidError as exc:
            return exc, served, time.monotonic() - started
        raise AssertionError("the hung request was answered")

    error, served, failed = server._call(run())
    assert served < failed  # the other model answered while proc_0_0 was still hanging
    assert 0.9 < failed < 10
    assert "Stub process 'proc_0_0' is not healthy" in error.message
    assert "execute did not finish within 1 s" in error.message
    assert _pid(server) > 0  # restarted


def test_decoupled_stream_open_when_the_process_dies(server):
    async def run(value: int) -> list[Any]:
        stream = server.api.infer(make_request("stream_crash", {"IN": np.array([value], np.int32)}))
        return await stream.collect()

    responses = server._call(run(1))
    assert int(responses[0].as_numpy("OUT")[0]) == 7
    assert responses[-1].final and responses[-1].error is not None
    assert "Stub process 'stream_crash_0_0' is not healthy" in responses[-1].error.message
    assert "exited with code 5" in responses[-1].error.message
    # restarted: the next stream completes
    responses = server._call(run(0))
    assert [r.final for r in responses] == [False, True]


def test_two_instances_run_in_parallel(server):
    n = 1_000_000  # about 0.1 s of pure Python

    def run(model: str, count: int) -> tuple[float, list[Any]]:
        started = time.monotonic()
        results = _gather(server, [(model, {"N": np.array([n], np.int64)})] * count)
        return time.monotonic() - started, results

    run("busy2", 2)  # warm up
    run("busy1", 1)
    one, _ = run("busy1", 4)
    two, results = run("busy2", 4)
    intervals = [
        (r.as_numpy("START")[0], r.as_numpy("END")[0], r.as_numpy("PID")[0]) for r in results
    ]
    assert len({pid for _, _, pid in intervals}) == 2
    # Each instance has its own process and GIL: their executions overlap in time.
    overlapping = any(
        a[2] != b[2] and max(a[0], b[0]) < min(a[1], b[1]) for a in intervals for b in intervals
    )
    assert overlapping, intervals
    print(f"4 requests: one instance {one:.3f} s, two instances {two:.3f} s: x{one / two:.2f}")


def test_big_tensors_and_many_requests_through_small_arenas(server):
    # 64 KiB arenas: a 4 MB tensor needs a grown segment in each direction.
    x = np.random.default_rng(0).random(1_000_000, dtype=np.float32)
    s = np.empty(3000, dtype=object)
    s[:] = [("é" * (i % 50)).encode() + b"\0" for i in range(3000)]
    for _ in range(2):
        outputs = server.infer("identity", {"X": x, "S": s})
        np.testing.assert_array_equal(outputs["Y"], x)
        assert list(outputs["T"]) == list(s)
    # Many small requests at once go around the rings, out of order.
    requests = [
        ("identity", {"X": np.full(700, i, np.float32), "S": _bytes(str(i) * (i % 7))})
        for i in range(300)
    ]
    for i, response in enumerate(_gather(server, requests)):
        assert response.as_numpy("Y")[0] == i and len(response.as_numpy("Y")) == 700
        assert list(response.as_numpy("T")) == [(str(i) * (i % 7)).encode()]


def _shm_files(prefix: str) -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


@pytest.mark.parametrize("execution_mode", ["process"])
async def test_unload_leaves_no_shared_memory_and_no_process(start_server, model_repository):
    prefix = f"nereid_test_{uuid.uuid4().hex[:8]}"
    model_repository.add("busy", BUSY_CONFIG % 2, versions={1: {"model.py": BUSY_SOURCE}})
    assert _shm_files(prefix) == []
    server = await start_server(backend_config=[f"python,shm-region-prefix-name={prefix}"])
    request = {"N": np.array([10], np.int64)}
    streams = [server.api.infer(make_request("busy", request)) for _ in range(4)]
    responses = await asyncio.gather(*(s.single() for s in streams))
    pids = {int(r.as_numpy("PID")[0]) for r in responses}
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, 0)  # alive
    await server.repository.unload("busy")
    assert _shm_files(prefix) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone and reaped


@pytest.mark.parametrize("execution_mode", ["process"])
@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "python,shm-dir=/nonexistent/shm",
            "cannot use the shared-memory directory '/nonexistent/shm'",
        ),
        ("python,shm-default-byte-size=1125899906842624", "not enough shared memory in"),
    ],
)
async def test_shared_memory_problems_are_load_errors(
    start_server, model_repository, setting, message
):
    model_repository.add("add_sub", add_sub_config(), versions={1: {"model.py": ADD_SUB_SOURCE}})
    model_repository.add(
        "in_server",
        add_sub_config(extra=THREAD_PARAMETER),
        versions={1: {"model.py": ADD_SUB_SOURCE}},
    )
    server = await start_server(exit_on_error=False, backend_config=[setting])
    index = {m["name"]: m for m in server.api.repository_index()}
    assert not server.api.model_ready("add_sub")
    assert message in index["add_sub"]["reason"]
    assert server.api.model_ready("in_server")  # a model in the server process needs none


@pytest.mark.parametrize("execution_mode", ["thread"])
async def test_execution_mode_parameter_overrides_the_server_default(
    start_server, model_repository
):
    model_repository.add(
        "proc", PROCESS_CONFIG % PROCESS_PARAMETER, versions={1: {"model.py": PROCESS_SOURCE}}
    )
    model_repository.add("here", PROCESS_CONFIG % "", versions={1: {"model.py": PROCESS_SOURCE}})
    model_repository.add(
        "bad",
        PROCESS_CONFIG % 'parameters { key: "execution_mode" value: { string_value: "fork" } }',
        versions={1: {"model.py": PROCESS_SOURCE}},
    )
    server = await start_server(exit_on_error=False)

    async def pid(model: str) -> int:
        request = make_request(model, {"MODE": _bytes("pid")})
        return int((await server.api.infer(request).single()).as_numpy("PID")[0])

    assert await pid("proc") != os.getpid()
    assert await pid("here") == os.getpid()
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "parameter execution_mode is 'fork'" in index["bad"]["reason"]


def test_settings():
    from nereid_python.settings import BackendSettings

    settings = BackendSettings.parse(
        {
            "shm-dir": "/tmp",
            "shm-region-prefix-name": "mine",
            "shm-default-byte-size": "4096",
            "shm-growth-byte-size": "8192",
            "stub-timeout-seconds": "5",
            "execute-timeout-seconds": "2.5",
            "execution-mode": "thread",
        }
    )
    assert settings.execution_mode == "thread"
    process = settings.process
    assert (process.shm_dir, process.shm_prefix) == ("/tmp", "mine")
    assert (process.shm_default_size, process.shm_growth) == (4096, 8192)
    assert (process.stub_timeout, process.execute_timeout) == (5.0, 2.5)
    assert BackendSettings.parse({}).execution_mode == "process"
    for bad in (
        {"execution-mode": "fork"},
        {"execute-timeout-seconds": "-1"},
        {"shm-region-prefix-name": "a/b"},
        {"shm-growth-byte-size": "0"},
    ):
        with pytest.raises(NereidError):
            BackendSettings.parse(bad)


@pytest.mark.parametrize("execution_mode", ["process"])
async def test_segments_left_by_a_dead_server_are_removed(start_server, model_repository):
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    prefix = f"nereid_test_{uuid.uuid4().hex[:8]}"
    stale = f"/dev/shm/{prefix}_{int(gone.stdout)}_1_i1"
    mine = f"/dev/shm/{prefix}_{os.getpid()}_999_i1"
    for path in (stale, mine):
        with open(path, "wb") as file:
            file.write(b"x")
    try:
        model_repository.add(
            "add_sub", add_sub_config(), versions={1: {"model.py": ADD_SUB_SOURCE}}
        )
        await start_server(backend_config=[f"python,shm-region-prefix-name={prefix}"])
        assert not os.path.exists(stale)
        assert os.path.exists(mine)  # this server's own
    finally:
        for path in (stale, mine):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.parametrize("execution_mode", ["process"])
async def test_log_records_cross_with_their_traceback(start_server, model_repository, caplog):
    import logging

    from python_backend_models import ERRORS_CONFIG, ERRORS_SOURCE

    caplog.set_level(logging.INFO, logger="nereid.python")
    model_repository.add("errors", ERRORS_CONFIG, versions={1: {"model.py": ERRORS_SOURCE}})
    server = await start_server()
    with pytest.raises(NereidError):
        await server.api.infer(make_request("errors", {"MODE": _bytes("raise_value")})).single()
    records = [r for r in caplog.records if "failed executing a batch" in r.getMessage()]
    assert records, caplog.text
    record = records[0]
    assert record.name == "nereid.python" and record.levelname == "ERROR"
    assert record.process != os.getpid()  # written in the model process
    assert record.filename == "runner.py"
    assert "Traceback" in caplog.text and "ValueError: bad value" in caplog.text


@pytest.mark.parametrize("execution_mode", ["process"])
async def test_warmup_is_answered_before_the_model_is_ready(start_server, model_repository):
    warmup = """
    model_warmup [ { name: "zeros" batch_size: 1 count: 2
      inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
      inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
    """
    model_repository.add(
        "add_sub", add_sub_config(extra=warmup), versions={1: {"model.py": ADD_SUB_SOURCE}}
    )
    server = await asyncio.wait_for(start_server(), 30)
    assert server.api.model_ready("add_sub")
    ones = np.ones(4, np.float32)
    response = await server.api.infer(
        make_request("add_sub", {"INPUT0": ones, "INPUT1": ones})
    ).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), 2 * ones)


@pytest.mark.parametrize("execution_mode", ["process"])
async def test_compute_statistics_cover_the_model_process_run(start_server, model_repository):
    """Batches are answered after execute returns; their compute time ends at their answer."""
    model_repository.add("busy", BUSY_CONFIG % 1, versions={1: {"model.py": BUSY_SOURCE}})
    server = await start_server()
    request = {"N": np.array([300_000], np.int64)}
    streams = [server.api.infer(make_request("busy", request)) for _ in range(3)]
    responses = await asyncio.gather(*(s.single() for s in streams))
    ran_ns = sum((r.as_numpy("END")[0] - r.as_numpy("START")[0]) * 1e9 for r in responses)
    stats = server.api.model_statistics("busy")[0]
    infer = stats["inference_stats"]
    assert stats["execution_count"] == infer["compute_infer"]["count"] == 3
    computed = sum(infer[key]["ns"] for key in ("compute_input", "compute_infer", "compute_output"))
    assert computed >= ran_ns
    assert infer["success"]["ns"] >= computed
