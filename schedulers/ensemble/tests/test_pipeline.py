"""Requests through ensembles: data flow, parallel steps, errors, cancellation, decoupled steps,
max_inflight_requests, request fields, batching and statistics (in-process, probe backend)."""

from __future__ import annotations

import asyncio

import nereid
import numpy as np
import pytest
from nereid.testing import cyclic_garbage, make_request, settle

pytestmark = pytest.mark.usefixtures("delivery")

X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)


def chain(kit, repository, names=("a", "b", "c"), **params_by_model):
    for index, name in enumerate(names):
        kit.probe_model(repository, name, add=10**index, **params_by_model.get(name, {}))
    tensors = ["IN", *[f"t{i}" for i in range(len(names) - 1)], "OUT"]
    repository.add(
        "pipeline",
        kit.ensemble_config(
            [
                (name, {"INPUT0": tensors[i]}, {"OUTPUT0": tensors[i + 1]})
                for i, name in enumerate(names)
            ]
        ),
    )


async def test_chain_runs_each_step_with_the_batch(serve, model_repository, recorder, kit):
    chain(kit, model_repository)
    server = await serve()
    response = await server.api.infer(make_request("pipeline", {"IN": X}, id="r1")).single()
    np.testing.assert_array_equal(response.as_numpy("OUT"), X + 111)
    assert response.model_name == "pipeline" and response.id == "r1"
    assert [(e.model, e.rows, e.request_id) for e in recorder.executions] == [
        ("a", 3, "r1"),
        ("b", 3, "r1"),
        ("c", 3, "r1"),
    ]


async def test_statistics_of_the_ensemble_and_its_steps(serve, model_repository, kit):
    chain(kit, model_repository)
    server = await serve()
    for _ in range(2):
        await server.api.infer(make_request("pipeline", {"IN": X})).single()
    await settle()
    ens = kit.stats(server, "pipeline")
    # As in Triton: one execution per ensemble request, counting its batch size in inferences,
    # with compute times summed over the steps.
    assert ens["inference_count"] == 6 and ens["execution_count"] == 2
    infer = ens["inference_stats"]
    assert infer["success"]["count"] == 2 and infer["fail"]["count"] == 0
    assert infer["queue"]["count"] == 2 and infer["compute_infer"]["count"] == 2
    assert ens["batch_stats"][0]["batch_size"] == 3
    steps = [kit.stats(server, name) for name in "abc"]
    assert all(s["inference_count"] == 6 and s["execution_count"] == 2 for s in steps)
    summed = sum(s["inference_stats"]["compute_infer"]["ns"] for s in steps)
    assert infer["compute_infer"]["ns"] == summed
    assert infer["success"]["ns"] >= summed
    assert server.api.model("pipeline").statistics.pending == 0


async def test_independent_steps_run_in_parallel(serve, model_repository, recorder, kit):
    kit.probe_model(model_repository, "split", add=0)
    kit.probe_model(model_repository, "left", add=1, delay_ms=300)
    kit.probe_model(model_repository, "right", add=2, delay_ms=300)
    kit.probe_model(model_repository, "join", inputs="INPUT0,INPUT1", outputs="OUTPUT0,OUTPUT1")
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [
                ("split", {"INPUT0": "IN"}, {"OUTPUT0": "x"}),
                ("left", {"INPUT0": "x"}, {"OUTPUT0": "l"}),
                ("right", {"INPUT0": "x"}, {"OUTPUT0": "r"}),
                ("join", {"INPUT0": "l", "INPUT1": "r"}, {"OUTPUT0": "L", "OUTPUT1": "R"}),
            ],
            outputs='{ name: "L" data_type: TYPE_FP32 dims: [ 2 ] }, '
            '{ name: "R" data_type: TYPE_FP32 dims: [ 2 ] }',
        ),
    )
    server = await serve()
    response = await server.api.infer(make_request("pipeline", {"IN": X})).single()
    np.testing.assert_array_equal(response.as_numpy("L"), X + 1)
    np.testing.assert_array_equal(response.as_numpy("R"), X + 2)
    (left,) = recorder.of("left")
    (right,) = recorder.of("right")
    (join,) = recorder.of("join")
    # The two branches overlap in time (each runs 300 ms), and the join runs after both.
    assert left.start_ns < right.end_ns and right.start_ns < left.end_ns
    assert join.start_ns >= max(left.end_ns, right.end_ns)


async def test_requested_outputs_run_only_the_steps_they_need(
    serve, model_repository, recorder, kit
):
    kit.probe_model(model_repository, "left", add=1)
    kit.probe_model(model_repository, "right", add=2)
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [
                ("left", {"INPUT0": "IN"}, {"OUTPUT0": "L"}),
                ("right", {"INPUT0": "IN"}, {"OUTPUT0": "R"}),
            ],
            outputs='{ name: "L" data_type: TYPE_FP32 dims: [ 2 ] }, '
            '{ name: "R" data_type: TYPE_FP32 dims: [ 2 ] }',
        ),
    )
    server = await serve()
    response = await server.api.infer(make_request("pipeline", {"IN": X}, outputs=["R"])).single()
    assert [t.name for t in response.outputs] == ["R"]
    assert [e.model for e in recorder.executions] == ["right"]
    response = await server.api.infer(make_request("pipeline", {"IN": X})).single()
    assert sorted(t.name for t in response.outputs) == ["L", "R"]


async def test_error_in_a_middle_step_names_it(serve, model_repository, recorder, kit):
    chain(kit, model_repository, b={"fail": "no good input"})
    server = await serve()
    with pytest.raises(nereid.NereidError) as info:
        await server.api.infer(make_request("pipeline", {"IN": X})).single()
    assert info.value.kind is nereid.ErrorKind.INVALID_ARG
    assert info.value.message == "in ensemble 'pipeline', step 'b' failed: no good input"
    assert [e.model for e in recorder.executions] == ["a", "b"]  # c never ran
    await settle()
    assert kit.stats(server, "pipeline")["inference_stats"]["fail"]["count"] == 1
    assert kit.stats(server, "pipeline")["execution_count"] == 0


async def test_a_failing_step_cancels_the_others(serve, model_repository, recorder, kit):
    kit.probe_model(model_repository, "bad", fail="broken", delay_ms=50)
    kit.probe_model(model_repository, "slow", delay_ms=10_000)
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [
                ("bad", {"INPUT0": "IN"}, {"OUTPUT0": "L"}),
                ("slow", {"INPUT0": "IN"}, {"OUTPUT0": "R"}),
            ],
            outputs='{ name: "L" data_type: TYPE_FP32 dims: [ 2 ] }, '
            '{ name: "R" data_type: TYPE_FP32 dims: [ 2 ] }',
        ),
    )
    server = await serve()
    with pytest.raises(nereid.NereidError, match="step 'bad' failed: broken"):
        await asyncio.wait_for(server.api.infer(make_request("pipeline", {"IN": X})).single(), 5)
    # The ensemble answered only once no step request was left running.
    assert server.api.model("slow").in_flight == 0
    (slow,) = recorder.of("slow")
    assert slow.cancelled and (slow.end_ns - slow.start_ns) < 2e9


async def test_cancelling_the_ensemble_cancels_its_steps(serve, model_repository, recorder, kit):
    chain(kit, model_repository, a={"delay_ms": 10_000})
    server = await serve()
    stream = server.api.infer(make_request("pipeline", {"IN": X}))
    await kit.until(recorder.started.is_set)
    stream.cancel()
    response = await asyncio.wait_for(stream.__anext__(), 5)
    assert response.error is not None and response.error.kind is nereid.ErrorKind.CANCELLED
    assert [(e.model, e.cancelled) for e in recorder.executions] == [("a", True)]
    assert all(server.api.model(name).in_flight == 0 for name in "abc")
    await settle()
    assert kit.stats(server, "pipeline")["inference_stats"]["fail"]["count"] == 1
    assert kit.stats(server, "a")["inference_stats"]["fail"]["count"] == 1
    assert kit.stats(server, "b")["inference_stats"]["success"]["count"] == 0


async def test_cancelling_a_request_waiting_for_a_limited_step(
    serve, model_repository, recorder, kit
):
    chain(kit, model_repository, names=("a", "b"), a={"delay_ms": 10_000})
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [("a", {"INPUT0": "IN"}, {"OUTPUT0": "t"}), ("b", {"INPUT0": "t"}, {"OUTPUT0": "OUT"})],
            scheduling="max_inflight_requests: 1",
        ),
    )
    server = await serve()
    first = server.api.infer(make_request("pipeline", {"IN": X}, id="first"))
    second = server.api.infer(make_request("pipeline", {"IN": X}, id="second"))
    await kit.until(recorder.started.is_set)
    second.cancel()  # its step request never left the ensemble: it waits for the limiter
    response = await asyncio.wait_for(second.__anext__(), 5)
    assert response.error.kind is nereid.ErrorKind.CANCELLED
    first.cancel()
    response = await asyncio.wait_for(first.__anext__(), 5)
    assert response.error.kind is nereid.ErrorKind.CANCELLED
    assert [e.request_id for e in recorder.executions] == ["first"]


async def test_request_fields_flow_to_the_steps(serve, model_repository, recorder, kit):
    chain(kit, model_repository, names=("a", "b"))
    server = await serve()
    request = make_request(
        "pipeline",
        {"IN": X},
        id="req-7",
        parameters={"user": "alice", "n": 3},
        priority=2,
        timeout_us=5_000_000,
    )
    await server.api.infer(request).single()
    for execution in recorder.executions:
        assert execution.request_id == "req-7"
        assert execution.parameters == {"user": "alice", "n": 3}
        assert (execution.priority, execution.timeout_us) == (2, 5_000_000)


async def test_max_inflight_requests_bounds_each_step(serve, model_repository, recorder, kit):
    for name in ("limited_step", "free_step"):
        kit.probe_model(model_repository, name, delay_ms=60, instances=4)
    for name, step, extra in (
        ("limited", "limited_step", "max_inflight_requests: 1"),
        ("free", "free_step", ""),
    ):
        model_repository.add(
            name,
            kit.ensemble_config(
                [(step, {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
                scheduling=extra,
            ),
        )
    server = await serve()
    for name in ("limited", "free"):
        streams = [server.api.infer(make_request(name, {"IN": X})) for _ in range(4)]
        responses = await asyncio.wait_for(asyncio.gather(*(s.single() for s in streams)), 10)
        for response in responses:
            np.testing.assert_array_equal(response.as_numpy("OUT"), X)
    assert recorder.max_running["limited_step"] == 1
    assert recorder.max_running["free_step"] > 1


DECOUPLED_REPEAT = """
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] optional: true },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] optional: true }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"""


def decoupled_pipeline(kit, repository, declared: str = "") -> None:
    repository.add("repeat", DECOUPLED_REPEAT)
    kit.probe_model(
        repository, "plus", datatype="TYPE_INT32", dims="[ 1 ]", max_batch_size=0, add=100
    )
    repository.add(
        "pipeline",
        kit.ensemble_config(
            [
                ("repeat", {"IN": "VALUES"}, {"OUT": "value", "IDX": "INDEX"}),
                ("plus", {"INPUT0": "value"}, {"OUTPUT0": "SHIFTED"}),
            ],
            inputs='{ name: "VALUES" data_type: TYPE_INT32 dims: [ -1 ] }',
            outputs='{ name: "SHIFTED" data_type: TYPE_INT32 dims: [ 1 ] }, '
            '{ name: "INDEX" data_type: TYPE_UINT32 dims: [ 1 ] }',
            max_batch_size=0,
            extra=declared,
        ),
    )


@pytest.mark.parametrize("declared", ["", "model_transaction_policy { decoupled: true }"])
async def test_each_response_of_a_decoupled_step_flows_on(
    serve, model_repository, recorder, kit, declared
):
    decoupled_pipeline(kit, model_repository, declared)
    server = await serve()
    assert server.api.model("pipeline").decoupled
    assert server.api.model_config("pipeline").model_transaction_policy.decoupled
    values = np.array([4, 5, 6], np.int32)
    responses = await server.api.infer(make_request("pipeline", {"VALUES": values})).collect()
    assert responses[-1].final and all(r.error is None for r in responses)
    got = sorted(
        (int(r.as_numpy("INDEX")[0]), int(r.as_numpy("SHIFTED")[0]))
        for r in responses
        if not r.empty
    )
    assert got == [(0, 104), (1, 105), (2, 106)]
    assert len(recorder.of("plus")) == 3
    await settle()
    assert kit.stats(server, "pipeline")["inference_stats"]["success"]["count"] == 1


async def test_answered_ensemble_requests_leave_no_reference_cycles(serve, model_repository, kit):
    chain(kit, model_repository)
    model_repository.root.joinpath("pipeline").rename(model_repository.root / "chain")
    decoupled_pipeline(kit, model_repository)
    server = await serve()
    values = np.array([4, 5], np.int32)
    with cyclic_garbage() as garbage:
        for _ in range(2):
            await server.api.infer(make_request("chain", {"IN": X})).single()
        responses = await server.api.infer(make_request("pipeline", {"VALUES": values})).collect()
        assert len([r for r in responses if not r.empty]) == 2
    assert garbage == []


async def test_a_pipeline_without_decoupled_steps_is_not_decoupled(serve, model_repository, kit):
    chain(kit, model_repository, names=("a",))
    model_repository.add(
        "declared",
        kit.ensemble_config(
            [("a", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
            extra="model_transaction_policy { decoupled: true }",
        ),
    )
    server = await serve()
    assert not server.api.model("declared").decoupled  # as Triton: the steps decide
    await server.api.infer(make_request("declared", {"IN": X})).single()


async def test_batching_and_non_batching_sides_meet(serve, model_repository, recorder, kit):
    """A non-batching ensemble over a batching step: the step gets a batch of one, and the
    ensemble output loses that batch dimension again (Triton's rule)."""
    kit.probe_model(model_repository, "batched", add=1, max_batch_size=4)
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [("batched", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
            max_batch_size=0,
        ),
    )
    server = await serve()
    x = np.array([1.0, 2.0], np.float32)
    response = await server.api.infer(make_request("pipeline", {"IN": x})).single()
    np.testing.assert_array_equal(response.as_numpy("OUT"), x + 1)
    assert recorder.executions[0].rows == 1


async def test_nested_ensemble(serve, model_repository, recorder, kit):
    chain(kit, model_repository, names=("a", "b"))
    model_repository.add(
        "outer",
        kit.ensemble_config(
            [
                ("pipeline", {"IN": "IN"}, {"OUT": "mid"}),
                ("a", {"INPUT0": "mid"}, {"OUTPUT0": "OUT"}),
            ]
        ),
    )
    server = await serve()
    response = await server.api.infer(make_request("outer", {"IN": X})).single()
    np.testing.assert_array_equal(response.as_numpy("OUT"), X + 12)
    await settle()
    outer = kit.stats(server, "outer")["inference_stats"]["compute_infer"]["ns"]
    inner = kit.stats(server, "pipeline")["inference_stats"]["compute_infer"]["ns"]
    assert outer >= inner > 0


async def test_unload_waits_for_requests_under_way(serve, model_repository, recorder, kit):
    chain(kit, model_repository, names=("a", "b"), a={"delay_ms": 200})
    server = await serve(model_control_mode="explicit", load_model=["pipeline"])
    stream = server.api.infer(make_request("pipeline", {"IN": X}))
    await kit.until(recorder.started.is_set)
    await server.api.unload_model("pipeline", unload_dependents=False)
    response = await asyncio.wait_for(stream.single(), 5)
    np.testing.assert_array_equal(response.as_numpy("OUT"), X + 11)
    assert not server.api.model_ready("pipeline")
    with pytest.raises(nereid.NereidError):
        server.api.infer(make_request("pipeline", {"IN": X}))


async def test_an_optional_input_left_out_stays_out(serve, model_repository, recorder, kit):
    model_repository.add(
        "two",
        """
        backend: "probe"
        max_batch_size: 8
        input [
          { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] },
          { name: "INPUT1" data_type: TYPE_FP32 dims: [ 2 ] optional: true }
        ]
        output [
          { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] },
          { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 2 ] }
        ]
        """,
    )
    model_repository.add(
        "pipeline",
        kit.ensemble_config(
            [("two", {"INPUT0": "IN", "INPUT1": "OPT"}, {"OUTPUT0": "OUT", "OUTPUT1": "ECHO"})],
            inputs='{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }, '
            '{ name: "OPT" data_type: TYPE_FP32 dims: [ 2 ] optional: true }',
            outputs='{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }, '
            '{ name: "ECHO" data_type: TYPE_FP32 dims: [ 2 ] }',
        ),
    )
    server = await serve()
    response = await server.api.infer(make_request("pipeline", {"IN": X, "OPT": X * 2})).single()
    np.testing.assert_array_equal(response.as_numpy("ECHO"), X * 2)
    response = await server.api.infer(make_request("pipeline", {"IN": X})).single()
    # The step got no INPUT1 and wrote no OUTPUT1: the ensemble leaves ECHO out, as Triton does.
    assert [t.name for t in response.outputs] == ["OUT"]
