"""The request path through the public API: validation, execution, cancellation, statistics."""

from __future__ import annotations

import asyncio
import os

import nereid
import numpy as np
import pytest
from nereid.backend import Backend, Model, ModelInstance
from nereid.errors import (
    CancelledError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from nereid.testing import BackendPlugin, cyclic_garbage, make_request, repeat_config, settle
from nereid.types import InferenceResponse, RequestedOutput, Tensor

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "%d" } }'
# A batching model of the test backend ``backend``: FP32 [1] in (INPUT0) and out (OUTPUT0).
ONE_FLOAT_CONFIG = """
backend: "{backend}"
max_batch_size: 4
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
"""


class _FlakyInstance(ModelInstance):
    """Raises on inputs holding a negative number; answers nothing when asked to be silent."""

    def execute(self, requests):
        for request in requests:
            x = request.inputs["INPUT0"].data
            if (x < 0).any():
                raise ValueError("negative input")
            if (x == 7).all():
                continue  # forget to respond
            request.respond(InferenceResponse([Tensor("OUTPUT0", x)]))


class _FlakyBackend(Backend):
    def create_model(self, config, path):
        class _M(Model):
            def create_instance(self, spec):
                return _FlakyInstance()

        return _M()


class _FlakyPlugin:
    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("flaky", _FlakyBackend)


@pytest.fixture
async def server(start_server, model_repository):
    model_repository.identity("simple", dims="[ 4 ]")
    model_repository.add(
        "typed",
        """
        backend: "identity"
        max_batch_size: 0
        input [
          { name: "A" data_type: TYPE_INT32 dims: [ 2, 2 ] },
          { name: "B" data_type: TYPE_STRING dims: [ -1 ] optional: true }
        ]
        output [
          { name: "A_OUT" data_type: TYPE_INT32 dims: [ 2, 2 ] },
          { name: "B_OUT" data_type: TYPE_STRING dims: [ -1 ] }
        ]
        """,
    )
    model_repository.add(
        "reshaped",
        """
        backend: "identity"
        max_batch_size: 2
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]
        """,
    )
    return await start_server(allow_client_shm=True)


async def infer(server, model, inputs, **kwargs):
    return await server.api.infer(make_request(model, inputs, **kwargs)).single()


async def test_identity_roundtrip(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    response = await infer(server, "simple", {"INPUT0": x})
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x)
    assert response.model_name == "simple" and response.model_version == "1"


@pytest.mark.parametrize(
    ("model", "inputs", "error", "message"),
    [
        (
            "nope",
            {"INPUT0": np.zeros((1, 4), np.float32)},
            NotFoundError,
            "Request for unknown model: 'nope' is not found",
        ),
        (
            "simple",
            {"INPUT0": np.zeros((1, 4), np.float32), "EXTRA": np.zeros(1)},
            InvalidArgumentError,
            "unexpected inference input 'EXTRA' for model 'simple'",
        ),
        (
            "typed",
            {"B": np.array([b"x"], dtype=object)},
            InvalidArgumentError,
            "expected 1 inputs but got 1 inputs for model 'typed'. Got input(s) ['B'], but "
            "missing required input(s) ['A']",
        ),
        (
            "simple",
            {"INPUT0": np.zeros((1, 4), np.int32)},
            InvalidArgumentError,
            "inference input 'INPUT0' data-type is 'INT32', but model 'simple' expects 'FP32'",
        ),
        (
            "simple",
            {"INPUT0": np.zeros((1, 5), np.float32)},
            InvalidArgumentError,
            "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,4], got [1,5]",
        ),
        (
            "simple",
            {"INPUT0": np.zeros((9, 4), np.float32)},
            InvalidArgumentError,
            "inference request batch-size must be <= 8 for 'simple'",
        ),
        (
            "typed",
            {"A": np.zeros((2, 3), np.int32)},
            InvalidArgumentError,
            "unexpected shape for input 'A' for model 'typed'. Expected [2,2], got [2,3]",
        ),
    ],
)
async def test_validation_errors(server, model, inputs, error, message):
    with pytest.raises(error) as info:
        server.api.infer(make_request(model, inputs))
    assert message in info.value.message


async def test_unknown_version_and_unexpected_output(server):
    request = make_request("simple", {"INPUT0": np.zeros((1, 4), np.float32)})
    request.model_version = 3
    with pytest.raises(NotFoundError, match="version 3 is not found"):
        server.api.infer(request)
    with pytest.raises(InvalidArgumentError, match="unexpected inference output 'NOPE'"):
        server.api.infer(
            make_request("simple", {"INPUT0": np.zeros((1, 4), np.float32)}, outputs=["NOPE"])
        )


async def test_optional_input_and_requested_output_filter(server):
    a = np.arange(4, dtype=np.int32).reshape(2, 2)
    response = await infer(server, "typed", {"A": a})
    assert [t.name for t in response.outputs] == ["A_OUT"]
    words = np.array([b"hello", b""], dtype=object)
    response = await infer(server, "typed", {"A": a, "B": words}, outputs=["B_OUT"])
    assert [t.name for t in response.outputs] == ["B_OUT"]
    assert list(response.as_numpy("B_OUT")) == [b"hello", b""]


async def test_reshape_applied_to_inputs_and_undone_on_outputs(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    seen = []

    class Spy:
        def on_execution_start(self, instance, batch):
            seen.append(batch[0].inputs["X"].shape)

    server.observers.add(Spy())
    response = await infer(server, "reshaped", {"X": x})
    assert seen == [(2, 2, 2)]
    np.testing.assert_array_equal(response.as_numpy("Y"), x)


async def test_exception_in_execute_fails_only_that_batch(start_server, model_repository):
    model_repository.add("flaky", ONE_FLOAT_CONFIG.format(backend="flaky"))
    server = await start_server(plugins=[_FlakyPlugin()])
    bad = server.api.infer(make_request("flaky", {"INPUT0": np.array([[-1]], np.float32)}))
    good = server.api.infer(make_request("flaky", {"INPUT0": np.array([[2]], np.float32)}))
    silent = server.api.infer(make_request("flaky", {"INPUT0": np.array([[7]], np.float32)}))
    with pytest.raises(InternalError, match="negative input"):
        await bad.single()
    assert (await good.single()).as_numpy("OUTPUT0")[0, 0] == 2
    with pytest.raises(InternalError, match="without sending a response"):
        await silent.single()
    again = await infer(server, "flaky", {"INPUT0": np.array([[3]], np.float32)})
    assert again.as_numpy("OUTPUT0")[0, 0] == 3


async def test_cancel_while_queued_is_never_executed(start_server, model_repository):
    model_repository.identity("slow", extra=SLOW % 200)
    server = await start_server()
    x = np.ones((1, 2), np.float32)
    first = server.api.infer(make_request("slow", {"INPUT0": x}))
    second = server.api.infer(make_request("slow", {"INPUT0": x}))
    await asyncio.sleep(0.05)
    second.cancel()
    with pytest.raises(CancelledError):
        await second.single()
    await first.single()
    await settle()
    stats = server.api.model_statistics("slow")[0]
    assert stats["execution_count"] == 1
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert server.api.model("slow").statistics.pending == 0


async def test_several_instances_drain_one_queue(start_server, model_repository):
    model_repository.identity(
        "pair", extra=SLOW % 150 + " instance_group [ { count: 2 kind: KIND_CPU } ]"
    )
    server = await start_server()
    executed = []

    class Spy:
        def on_execution_start(self, instance, batch):
            executed.extend((instance, request) for request in batch)

    server.observers.add(Spy())
    x = np.ones((1, 1), np.float32)
    requests = [make_request("pair", {"INPUT0": x}) for _ in range(4)]
    streams = [server.api.infer(request) for request in requests]
    await asyncio.gather(*(s.single() for s in streams))
    await settle()
    by_instance = {}
    for instance, request in executed:
        by_instance.setdefault(instance, []).append(request)
    assert sorted(by_instance) == ["pair_0_0", "pair_0_1"]
    assert sorted(r.serial for r in requests) == sorted(r.serial for _, r in executed)
    # the two instances ran at the same time: some executions overlap
    first, second = by_instance["pair_0_0"], by_instance["pair_0_1"]
    assert any(
        a.compute_start_ns < b.compute_end_ns and b.compute_start_ns < a.compute_end_ns
        for a in first
        for b in second
    )


async def test_observers_see_every_event(server):
    events = []

    class Recorder:
        def on_arrival(self, request):
            events.append("arrival")

        def on_queued(self, request):
            events.append("queued")

        def on_execution_start(self, instance, batch):
            events.append("start")

        def on_execution_end(self, instance, batch):
            events.append("end")

        def on_response(self, request, response):
            events.append("response")

        def on_complete(self, request, failure):
            events.append(f"complete:{failure}")

    server.observers.add(Recorder())
    await infer(server, "simple", {"INPUT0": np.zeros((1, 4), np.float32)})
    await settle()
    assert events == ["arrival", "queued", "start", "end", "response", "complete:None"]
    events.clear()
    with pytest.raises(InvalidArgumentError):
        server.api.infer(make_request("simple", {"INPUT0": np.zeros((1, 3), np.float32)}))
    assert events == ["arrival", "complete:FailureReason.OTHER"]


async def test_statistics_schema(server):
    for batch in (1, 1, 3):
        await infer(server, "simple", {"INPUT0": np.zeros((batch, 4), np.float32)})
    await settle()
    (stats,) = server.api.model_statistics("simple")
    assert stats["inference_count"] == 5
    assert stats["execution_count"] == 3
    assert stats["last_inference"] > 0
    infer_stats = stats["inference_stats"]
    assert infer_stats["success"]["count"] == 3 and infer_stats["success"]["ns"] > 0
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert infer_stats[key]["count"] == 3
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    assert sizes == {1: 2, 3: 1}
    assert {s["name"] for s in server.api.model_statistics()} >= {"simple", "typed"}


async def test_decoupled_repeat_and_square(start_server, model_repository):
    model_repository.add(
        "repeat_int32",
        """
        backend: "repeat"
        max_batch_size: 0
        model_transaction_policy { decoupled: true }
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
                { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
                { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
        output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
                 { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]
        """,
    )
    model_repository.add(
        "square_int32",
        """
        backend: "square"
        max_batch_size: 0
        model_transaction_policy { decoupled: true }
        input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        """,
    )
    server = await start_server()
    values = np.array([4, 2, 0, 1], np.int32)
    stream = server.api.infer(
        make_request(
            "repeat_int32",
            {
                "IN": values,
                "DELAY": np.array([10, 5, 0, 1], np.uint32),
                "WAIT": np.array([5], np.uint32),
            },
        )
    )
    responses = await stream.collect()
    assert [int(r.as_numpy("OUT")[0]) for r in responses[:-1]] == [4, 2, 0, 1]
    assert [int(r.as_numpy("IDX")[0]) for r in responses[:-1]] == [0, 1, 2, 3]
    assert responses[-1].final and responses[-1].empty
    responses = await server.api.infer(
        make_request("square_int32", {"IN": np.array([3], np.int32)})
    ).collect()
    assert [int(r.as_numpy("OUT")[0]) for r in responses if not r.empty] == [3, 3, 3]
    await settle()
    (stats,) = server.api.model_statistics("square_int32")
    assert stats["response_stats"]["0"]["success"]["count"] == 1
    assert stats["response_stats"]["3"]["empty_response"]["count"] == 1


async def test_classification_with_labels(start_server, model_repository):
    model_repository.add(
        "classifier",
        """
        backend: "identity"
        max_batch_size: 2
        input [ { name: "SCORES" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "PROBS" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
        """,
        files={"labels.txt": "cat\ndog\nbird\nfish\n"},
    )
    server = await start_server()
    scores = np.array([[0.1, 0.7, 0.05, 0.15], [0.9, 0.0, 0.05, 0.05]], np.float32)
    response = await infer(
        server,
        "classifier",
        {"SCORES": scores},
        outputs=[RequestedOutput("PROBS", {"classification": 2})],
    )
    classes = response.as_numpy("PROBS")
    assert classes.shape == (2, 2)
    assert classes[0, 0] == b"0.700000:1:dog" and classes[0, 1] == b"0.150000:3:fish"
    assert classes[1, 0] == b"0.900000:0:cat"


async def test_shared_memory_registered_and_read_back(server, tmp_path):
    import tritonclient.utils.shared_memory as shm

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    in_handle = shm.create_shared_memory_region("in_region", "/nereid_test_in", x.nbytes)
    out_handle = shm.create_shared_memory_region("out_region", "/nereid_test_out", x.nbytes)
    try:
        shm.set_shared_memory_region(in_handle, [x])
        api = server.api
        api.system_shm.register("in", "/nereid_test_in", 0, x.nbytes)
        api.system_shm.register("out", "/nereid_test_out", 0, x.nbytes)
        assert [r["name"] for r in api.system_shm.status()] == ["in", "out"]
        tensor = api.system_shm.input_tensor(
            "INPUT0",
            nereid.DataType.FP32,
            [2, 4],
            {"shared_memory_region": "in", "shared_memory_byte_size": x.nbytes},
        )
        params = {"shared_memory_region": "out", "shared_memory_byte_size": x.nbytes}
        request = nereid.InferenceRequest(
            "simple", [tensor], requested_outputs=[RequestedOutput("OUTPUT0", params)]
        )
        response = await api.infer(request).single()
        assert response.outputs[0].parameters["shared_memory_byte_size"] == x.nbytes
        got = shm.get_contents_as_numpy(out_handle, np.float32, [2, 4])
        np.testing.assert_array_equal(got, x)
        with pytest.raises(InvalidArgumentError, match="Invalid offset"):
            api.system_shm.check("in", 4, x.nbytes)
        api.system_shm.unregister()
        assert api.system_shm.status() == []
        with pytest.raises(NotFoundError):
            api.system_shm.status("in")
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


async def test_a_region_the_client_truncates_fails_the_request_not_the_server(server):
    """Read through a mapping, a page past the file's new end would raise SIGBUS and kill the
    server; read and written through the file, the request gets an error."""
    import tritonclient.utils.shared_memory as shm

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    handle = shm.create_shared_memory_region("cut", "/nereid_test_cut", x.nbytes)
    try:
        shm.set_shared_memory_region(handle, [x])
        api = server.api
        api.system_shm.register("cut", "/nereid_test_cut", 0, x.nbytes)
        region = {"shared_memory_region": "cut", "shared_memory_byte_size": x.nbytes}
        kept = api.system_shm.input_tensor("INPUT0", nereid.DataType.FP32, [2, 4], region)
        os.truncate("/dev/shm/nereid_test_cut", 0)
        np.testing.assert_array_equal(kept.data, x)  # a copy, made when it was read
        with pytest.raises(InvalidArgumentError, match="smaller than when it was registered"):
            api.system_shm.input_tensor("INPUT0", nereid.DataType.FP32, [2, 4], region)
        request = nereid.InferenceRequest(
            "simple", [kept], requested_outputs=[RequestedOutput("OUTPUT0", region)]
        )
        with pytest.raises(InvalidArgumentError, match="smaller than when it was registered"):
            await api.infer(request).single()
        response = await api.infer(make_request("simple", {"INPUT0": x})).single()
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x)
    finally:
        server.api.system_shm.unregister()
        shm.destroy_shared_memory_region(handle)


async def test_an_input_too_large_to_hold_is_an_error(server):
    """A sparse region of 1 PiB registers (it holds no memory), but no process can hold an
    input that size (more than the address space): the request fails, the server stays."""
    path = "/dev/shm/nereid_test_sparse"
    with open(path, "wb") as sparse:
        sparse.truncate(1 << 50)
    try:
        server.api.system_shm.register("sparse", "/nereid_test_sparse", 0, 1 << 50)
        region = {"shared_memory_region": "sparse", "shared_memory_byte_size": 1 << 50}
        with pytest.raises(InternalError, match="unable to allocate 1125899906842624 bytes"):
            server.api.system_shm.input_tensor("INPUT0", nereid.DataType.FP32, [1, 1 << 48], region)
    finally:
        server.api.system_shm.unregister()
        os.unlink(path)


async def test_shared_memory_refused_unless_allowed(start_server, model_repository):
    model_repository.identity("simple", dims="[ 4 ]")
    server = await start_server()
    with pytest.raises(UnavailableError, match="--allow-client-shm=true"):
        server.api.system_shm.register("in", "/nereid_test_never", 0, 16)


async def test_unavailable_after_unload(server):
    await server.repository.unload("simple")
    assert not server.api.model_ready("simple")
    with pytest.raises(UnavailableError, match="has no available versions"):
        server.api.infer(make_request("simple", {"INPUT0": np.zeros((1, 4), np.float32)}))


async def test_custom_metrics_registry(server):
    registry = server.api.custom_metrics
    family = registry.family("requests_seen", "requests seen by the model", "counter")
    metric = family.metric({"model": "simple"})
    metric.increment(2)
    metric.increment(3)
    gauge = registry.family("queue_depth", "depth", "gauge").metric({})
    gauge.set(7)
    histogram = registry.family("sizes", "sizes", "histogram").metric({}, buckets=[1, 10])
    for value in (0.5, 5, 50):
        histogram.observe(value)
    snapshot = {f["name"]: f for f in registry.snapshot()}
    assert snapshot["requests_seen"]["metrics"][0]["value"] == 5
    assert snapshot["queue_depth"]["metrics"][0]["value"] == 7
    assert snapshot["sizes"]["metrics"][0]["bucket_counts"] == [1, 1, 1]
    with pytest.raises(InvalidArgumentError):
        metric.increment(-1)
    with pytest.raises(nereid.AlreadyExistsError):
        registry.family("requests_seen", "x", "gauge")


async def test_model_metadata_and_server_metadata(server):
    metadata = server.api.model_metadata("simple")
    assert metadata == {
        "name": "simple",
        "versions": ["1"],
        "platform": "identity",
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    }
    server_md = server.api.server_metadata()
    assert server_md["name"] == "nereid"
    assert "classification" in server_md["extensions"]
    assert server.api.is_live() and server.api.is_ready()


class _OneBehindInstance(ModelInstance):
    """Answers each batch during the next ``execute``, the last one in ``flush``: what the
    contract's optional ``flush`` allows (the Python backend's process mode does it)."""

    def __init__(self) -> None:
        self.held: list = []
        self.log: list[str] = []

    def _answer_held(self) -> None:
        held, self.held = self.held, []
        for request in held:
            request.respond(InferenceResponse([Tensor("OUTPUT0", request.inputs["INPUT0"].data)]))

    def execute(self, requests):
        self.log.append(f"execute {len(requests)}")
        self._answer_held()
        self.held = list(requests)

    def flush(self):
        self.log.append("flush")
        self._answer_held()


async def test_an_instance_with_flush_may_answer_after_execute_returns(
    start_server, model_repository
):
    instance = _OneBehindInstance()
    model_repository.add("behind", ONE_FLOAT_CONFIG.format(backend="behind"))
    server = await start_server(plugins=[BackendPlugin("behind", lambda c, s: instance)])
    # Three queued at once: one instance thread runs them back to back, then goes idle.
    streams = [
        server.api.infer(make_request("behind", {"INPUT0": np.array([[i]], np.float32)}))
        for i in range(3)
    ]
    for i, stream in enumerate(streams):  # none failed "returned without sending a response"
        assert (await asyncio.wait_for(stream.single(), 5)).as_numpy("OUTPUT0")[0, 0] == i
    assert instance.log[-1] == "flush" and instance.log.count("execute 1") == 3
    again = await infer(server, "behind", {"INPUT0": np.array([[5]], np.float32)})
    assert again.as_numpy("OUTPUT0")[0, 0] == 5  # answered by the flush when it went idle


async def test_answered_requests_leave_no_reference_cycles(start_server, model_repository):
    model_repository.identity("simple", dims="[ 4 ]")
    model_repository.add("repeat_int32", repeat_config())
    server = await start_server()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    with cyclic_garbage() as garbage:
        for _ in range(3):
            await infer(server, "simple", {"INPUT0": x})
        responses = await server.api.infer(
            make_request(
                "repeat_int32",
                {
                    "IN": np.array([1, 2], np.int32),
                    "DELAY": np.zeros(2, np.uint32),
                    "WAIT": np.zeros(1, np.uint32),
                },
            )
        ).collect()
        assert len(responses) == 3
    assert garbage == []
