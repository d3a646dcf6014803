"""Lifecycle changes while requests flow: reloads, unloads, instance updates, ensembles."""

from __future__ import annotations

import asyncio
import json
import threading

import nereid
import numpy as np
import pytest
from nereid.errors import NereidError, UnavailableError
from nereid.testing import make_request, settle, wait_until
from nereid.types import InferenceRequest, InferenceResponse, Tensor

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "%d" } }'


def request(name: str, value: float = 1.0) -> InferenceRequest:
    return make_request(name, {"INPUT0": np.full((1, 2), value, np.float32)})


async def answered(streams) -> list[InferenceResponse]:
    return [await stream.single() for stream in streams]


async def test_reload_under_traffic_loses_no_request(start_server, model_repository):
    model_repository.identity("m", extra=SLOW % 20)
    server = await start_server(model_control_mode="explicit", load_model=["m"])
    old = server.api.model("m")
    # The new configuration warms up slowly, so the reload takes a while.
    config = {
        "backend": "identity",
        "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "parameters": {"execute_delay_ms": {"string_value": "20"}},
        "model_warmup": [
            {
                "name": "w",
                "batch_size": 1,
                "count": 10,
                "inputs": {"INPUT0": {"data_type": "TYPE_FP32", "dims": [2], "zero_data": True}},
            }
        ],
    }
    reload = asyncio.create_task(server.api.load_model("m", config=json.dumps(config)))
    streams = []
    while not reload.done():
        streams.append(server.api.infer(request("m", len(streams))))
        await asyncio.sleep(0.005)
    await reload
    for _ in range(10):  # and some after the switch
        streams.append(server.api.infer(request("m", len(streams))))
    responses = await answered(streams)
    assert len(responses) == len(streams) >= 20
    for index, response in enumerate(responses):
        assert response.as_numpy("OUTPUT0")[0, 0] == index
    new = server.api.model("m")
    assert new is not old and len(new.config.model_warmup) == 1
    await settle()
    served_by_old = old.statistics.inference_count
    served_by_new = new.statistics.inference_count
    assert served_by_old > 0 and served_by_new >= 10
    assert served_by_old + served_by_new == len(streams)
    assert old.in_flight == 0 and not old.accepting


async def test_unload_lets_in_flight_requests_finish(start_server, model_repository):
    model_repository.identity("slow", extra=SLOW % 100)
    server = await start_server(model_control_mode="explicit", load_model=["slow"])
    streams = [server.api.infer(request("slow")) for _ in range(3)]
    await asyncio.sleep(0.01)
    await server.api.unload_model("slow")
    responses = await answered(streams)
    assert all(r.error is None for r in responses)
    index = server.api.repository_index()
    assert index == [{"name": "slow", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
    with pytest.raises(UnavailableError):
        server.api.infer(request("slow"))


async def test_stop_gives_in_flight_requests_the_exit_timeout(start_server, model_repository):
    model_repository.identity("slow", extra=SLOW % 300)
    server = await start_server()
    streams = [server.api.infer(request("slow")) for _ in range(3)]
    await asyncio.sleep(0.02)
    await server.stop(grace=0.05)
    # the executing request finishes its batch; the queued ones fail when time is up
    responses = [await stream.collect() for stream in streams]
    assert responses[0][-1].error is None
    for answer in responses[1:]:
        assert isinstance(answer[-1].error, UnavailableError)


async def test_unload_shows_unloading_while_it_drains(start_server, model_repository):
    model_repository.identity("slow", extra=SLOW % 100)
    server = await start_server(model_control_mode="explicit", load_model=["slow"])
    stream = server.api.infer(request("slow"))
    unload = asyncio.create_task(server.api.unload_model("slow"))
    await asyncio.sleep(0.02)
    assert server.api.repository_index()[0]["state"] == "UNLOADING"
    assert not server.api.model_ready("slow")
    await unload
    assert (await stream.single()).error is None


async def test_instance_count_change_updates_instances_in_place(start_server, model_repository):
    model_repository.identity("m", extra=SLOW % 20)
    server = await start_server(model_control_mode="poll", repository_poll_secs=0)
    loaded = server.api.model("m")
    assert len(loaded.runners) == 1
    first = loaded.runners[0]
    in_flight = [server.api.infer(request("m")) for _ in range(4)]

    model_repository.identity("m", extra=SLOW % 20 + " instance_group [ { count: 3 } ]")
    await server.repository.poll_once()
    assert server.api.model("m") is loaded
    assert len(loaded.runners) == 3 and loaded.runners[0] is first
    assert loaded.config.instance_group[0].count == 3
    await answered(in_flight)

    model_repository.identity("m", extra=SLOW % 20 + " instance_group [ { count: 1 } ]")
    in_flight = [server.api.infer(request("m")) for _ in range(4)]
    await server.repository.poll_once()
    assert server.api.model("m") is loaded and len(loaded.runners) == 1
    assert all(r.error is None for r in await answered(in_flight))
    assert (await server.api.infer(request("m")).single()).error is None


async def test_instance_count_change_through_the_api(start_server, model_repository):
    model_repository.identity("m")
    server = await start_server(model_control_mode="explicit", load_model=["m"])
    loaded = server.api.model("m")
    model_repository.identity("m", extra="instance_group [ { count: 2 } ]")
    await server.api.load_model("m")
    assert server.api.model("m") is loaded and len(loaded.runners) == 2


def _instance_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("nereid-m_")}


@pytest.fixture
def thread_limit(monkeypatch):
    """Instance threads past the first ``limit[0]`` fail to start, as when the process has
    no threads left (RuntimeError "can't start new thread")."""
    limit = [0]
    start = threading.Thread.start

    def limited_start(thread) -> None:
        if thread.name.startswith("nereid-m_"):
            if limit[0] <= 0:
                raise RuntimeError("can't start new thread")
            limit[0] -= 1
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", limited_start)
    return limit


async def test_a_load_out_of_threads_fails_and_leaves_no_instance_thread(
    start_server, model_repository, thread_limit
):
    model_repository.identity("m", extra="instance_group [ { count: 6 } ]")
    model_repository.identity("other")
    server = await start_server(model_control_mode="explicit", load_model=["other"])
    thread_limit[0] = 4
    with pytest.raises(NereidError, match="can't start new thread"):
        await server.api.load_model("m")
    await wait_until(lambda: _instance_threads() == set())  # stopped threads end soon after
    assert not server.api.model_ready("m")
    assert (await server.api.infer(request("other")).single()).error is None


async def test_an_instance_update_out_of_threads_changes_nothing(
    start_server, model_repository, thread_limit
):
    thread_limit[0] = 1
    model_repository.identity("m")
    server = await start_server(model_control_mode="explicit", load_model=["m"])
    loaded = server.api.model("m")
    model_repository.identity("m", extra="instance_group [ { count: 4 } ]")
    thread_limit[0] = 2  # two of the three new instances get a thread
    with pytest.raises(NereidError, match="can't start new thread"):
        await server.api.load_model("m")
    assert server.api.model("m") is loaded and len(loaded.runners) == 1
    assert loaded.config.instance_group[0].count == 1
    await wait_until(lambda: _instance_threads() == {"nereid-m_0_0"})
    assert (await server.api.infer(request("m")).single()).error is None


# -- ensembles ------------------------------------------------------------------------------------


class StepScheduler:
    """A minimal ensemble: forwards each request to its one step model and relays the
    answers, renaming tensors by the step's input and output maps."""

    uses_instances = False

    def __init__(self, context) -> None:
        self.context = context
        self.step = context.config.ensemble_scheduling.step[0]
        self.tasks: set[asyncio.Task] = set()

    def enqueue(self, request: InferenceRequest) -> None:
        step = self.step
        inner = InferenceRequest(
            step.model_name,
            [
                Tensor(model_input, request.inputs[ensemble_input].data)
                for model_input, ensemble_input in step.input_map.items()
            ],
            model_version=step.model_version,
        )
        stream = self.context.api.infer(inner)
        task = asyncio.get_running_loop().create_task(self._relay(stream, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, stream, request: InferenceRequest) -> None:
        async for response in stream:
            if response.error is not None:
                request.fail(response.error)
                return
            outputs = [Tensor(self.step.output_map[t.name], t.data) for t in response.outputs]
            request.respond(InferenceResponse(outputs), final=response.final)

    async def next_batch(self, instance):
        return None

    def batch_done(self, instance, batch) -> None:
        pass

    def instances_changed(self, instances) -> None:
        pass

    async def stop(self, drain: bool) -> None:
        if drain and self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class EnsemblePlugin:
    """Registers ``ensemble``; the tests using it turn plugin autoload off so that an installed
    ensemble scheduler does not clash with it."""

    def __init__(self) -> None:
        self.ready: list[str] = []

    @nereid.hookimpl
    def register_schedulers(self, registry):
        registry.add("ensemble", StepScheduler)

    @nereid.hookimpl
    def model_ready(self, model_name, version, config):
        self.ready.append(model_name)


def ensemble(step: str) -> str:
    return f"""
    platform: "ensemble"
    max_batch_size: 8
    input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] }} ]
    output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] }} ]
    ensemble_scheduling {{ step [ {{ model_name: "{step}" model_version: -1
      input_map {{ key: "INPUT0" value: "IN" }}
      output_map {{ key: "OUTPUT0" value: "OUT" }} }} ] }}
    """


async def ensemble_infer(server, name: str = "pipeline") -> np.ndarray:
    x = np.array([[3.0, 4.0]], np.float32)
    response = await server.api.infer(make_request(name, {"IN": x})).single()
    np.testing.assert_array_equal(response.as_numpy("OUT"), x)
    return response


async def test_ensemble_loads_after_its_step(start_server, model_repository):
    # "a_pipeline" sorts before its step, so only the dependency order puts the step first
    model_repository.add("a_pipeline", ensemble("z_step"))
    model_repository.identity("z_step", extra=SLOW % 30)
    plugin = EnsemblePlugin()
    server = await start_server(plugins=[plugin], disable_plugin_autoload=True)
    assert plugin.ready == ["z_step", "a_pipeline"]
    await ensemble_infer(server, "a_pipeline")


async def test_ensemble_is_unavailable_while_its_step_is(start_server, model_repository):
    model_repository.add("pipeline", ensemble("step"))
    model_repository.identity("step")
    model_repository.identity("other")
    plugin = EnsemblePlugin()
    server = await start_server(
        plugins=[plugin], model_control_mode="explicit", disable_plugin_autoload=True
    )

    await server.api.load_model("pipeline")  # loads its step first
    assert plugin.ready == ["step", "pipeline"]
    await ensemble_infer(server)

    await server.api.unload_model("step")
    with pytest.raises(UnavailableError, match="step model 'step' is not ready"):
        await ensemble_infer(server)
    assert not server.api.model_ready("pipeline")
    await server.api.load_model("step")
    await ensemble_infer(server)

    await server.api.unload_model("step", unload_dependents=True)
    states = {r["name"]: r.get("state") for r in server.api.repository_index()}
    assert states == {"other": None, "pipeline": "UNAVAILABLE", "step": "UNAVAILABLE"}


async def test_ensemble_with_a_missing_or_broken_step(start_server, model_repository):
    model_repository.add("missing", ensemble("nowhere"))
    model_repository.add("on_broken", ensemble("broken"))
    model_repository.add("broken", "backend: 'nonexistent'")
    model_repository.add("loop_a", ensemble("loop_b"))
    model_repository.add("loop_b", ensemble("loop_a"))
    plugin = EnsemblePlugin()
    server = await start_server(plugins=[plugin], exit_on_error=False, disable_plugin_autoload=True)
    reasons = {r["name"]: r.get("reason", "") for r in server.api.repository_index()}
    assert "step model 'nowhere' is not available" in reasons["missing"]
    assert "step model 'broken' is not available" in reasons["on_broken"]
    assert "circular dependency" in reasons["loop_a"]
    assert "circular dependency" in reasons["loop_b"]
    with pytest.raises(NereidError):
        await start_server(plugins=[EnsemblePlugin()], disable_plugin_autoload=True)


async def test_stop_drains_ensembles_before_their_steps(start_server, model_repository):
    model_repository.add("pipeline", ensemble("step"))
    model_repository.identity("step", extra=SLOW % 100)
    server = await start_server(plugins=[EnsemblePlugin()], disable_plugin_autoload=True)
    x = np.array([[3.0, 4.0]], np.float32)
    streams = [server.api.infer(make_request("pipeline", {"IN": x})) for _ in range(2)]
    await asyncio.sleep(0.01)
    await server.stop(grace=5)
    assert all(r.error is None for r in await answered(streams))
