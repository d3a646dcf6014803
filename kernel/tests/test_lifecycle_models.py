"""Loading model versions: version policies, warmup, retries, parallel loads, auto-complete."""

from __future__ import annotations

import threading
import time

import nereid
import numpy as np
import pytest
from nereid.backend import Backend, Model, ModelInstance
from nereid.errors import NereidError, NotFoundError, UnavailableError
from nereid.testing import make_request
from nereid.types import InferenceResponse, Tensor

RECORDER = """
backend: "recorder"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


class Recorder:
    """What the ``recorder`` backend saw, shared by its models."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executions: list[dict] = []
        self.create_attempts: dict[str, int] = {}
        self.loading_now = 0
        self.most_loading = 0
        self.ready_events: list[tuple[str, int]] = []


class RecorderInstance(ModelInstance):
    def __init__(self, model: RecorderModel, name: str) -> None:
        self.model = model
        self.name = name

    def execute(self, requests):
        model = self.model
        for request in requests:
            warmup = request.id.startswith("warmup:")
            with model.recorder.lock:
                model.recorder.executions.append(
                    {
                        "model": model.name,
                        "instance": self.name,
                        "warmup": warmup,
                        "reachable": model.api.model_ready(model.name),
                        "data": request.inputs["INPUT0"].data.copy(),
                    }
                )
            if warmup and "fail_warmup" in model.config.parameters:
                raise ValueError("warmup refused")
            request.respond(InferenceResponse([Tensor("OUTPUT0", request.inputs["INPUT0"].data)]))


class RecorderModel(Model):
    def __init__(self, recorder: Recorder, api, config, path) -> None:
        self.recorder = recorder
        self.api = api
        self.config = config
        self.name = config.name or path.parent.name

    def complete_config(self, config) -> None:
        config.parameters["completed"].string_value = "yes"

    def create_instance(self, spec):
        return RecorderInstance(self, spec.name)


class RecorderBackend(Backend):
    recorder: Recorder

    def create_model(self, config, path):
        recorder = self.recorder
        key = f"{path.parent.name}/{path.name}"
        with recorder.lock:
            recorder.create_attempts[key] = recorder.create_attempts.get(key, 0) + 1
            attempts = recorder.create_attempts[key]
            recorder.loading_now += 1
            recorder.most_loading = max(recorder.most_loading, recorder.loading_now)
        try:
            params = config.parameters
            if "load_delay_ms" in params:
                time.sleep(int(params["load_delay_ms"].string_value) / 1000)
            if (path / "broken").exists():
                raise ValueError(f"version folder {path.name} is broken")
            failing = (
                params["fail_first_attempts"].string_value if "fail_first_attempts" in params else 0
            )
            if attempts <= int(failing):
                raise RuntimeError(f"attempt {attempts} failed")
        finally:
            with recorder.lock:
                recorder.loading_now -= 1
        return RecorderModel(recorder, self.context.api, config, path)


class RecorderPlugin:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.backend = type("Bound", (RecorderBackend,), {"recorder": self.recorder})

    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("recorder", self.backend)

    @nereid.hookimpl
    def model_ready(self, model_name, version, config):
        self.recorder.ready_events.append((model_name, version))


@pytest.fixture
def plugin() -> RecorderPlugin:
    return RecorderPlugin()


async def infer(server, name: str, version: int = -1):
    x = np.array([[1.0, 2.0]], np.float32)
    return await server.api.infer(make_request(name, {"INPUT0": x}, model_version=version)).single()


def versions_in_index(server, name: str) -> dict[str, str]:
    return {r["version"]: r["state"] for r in server.api.repository_index() if r["name"] == name}


# -- version policies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "loaded"),
    [
        ("", ["3"]),
        ("version_policy { latest { num_versions: 2 } }", ["2", "3"]),
        ("version_policy { all { } }", ["1", "2", "3"]),
        ("version_policy { specific { versions: [ 1, 3, 7 ] } }", ["1", "3"]),
    ],
)
async def test_version_policies(start_server, model_repository, plugin, policy, loaded):
    model_repository.add("m", RECORDER + policy, versions={1: {}, 2: {}, 3: {}})
    server = await start_server(plugins=[plugin])
    assert versions_in_index(server, "m") == dict.fromkeys(loaded, "READY")
    assert server.repository.ready_versions("m") == [int(v) for v in loaded]
    assert (await infer(server, "m")).model_version == "3"  # unversioned: the highest
    for version in (1, 2, 3):
        if str(version) in loaded:
            assert (await infer(server, "m", version)).model_version == str(version)
        else:
            with pytest.raises(NotFoundError, match=f"version {version} is not found"):
                await infer(server, "m", version)
    assert server.api.model_metadata("m")["versions"] == loaded


async def test_unversioned_requests_go_to_the_highest_ready_version(
    start_server, model_repository, plugin
):
    model_repository.add(
        "m", RECORDER + "version_policy { all { } }", versions={1: {}, 2: {}, 3: {"broken": ""}}
    )
    server = await start_server(plugins=[plugin], exit_on_error=False)
    assert versions_in_index(server, "m") == {"1": "READY", "2": "READY", "3": "UNAVAILABLE"}
    assert (await infer(server, "m")).model_version == "2"
    with pytest.raises(UnavailableError, match="version 3 is not at ready state"):
        await infer(server, "m", 3)


async def test_no_version_allowed_is_an_error(start_server, model_repository, plugin):
    model_repository.add(
        "m", RECORDER + "version_policy { specific { versions: [ 9 ] } }", versions={1: {}}
    )
    with pytest.raises(NereidError, match="at least one version must be available"):
        await start_server(plugins=[plugin])


async def test_policy_change_by_poll(start_server, model_repository, plugin):
    model_repository.add("m", RECORDER + "version_policy { all { } }", versions={1: {}, 2: {}})
    server = await start_server(plugins=[plugin], model_control_mode="poll", repository_poll_secs=0)
    assert (await infer(server, "m")).model_version == "2"  # the route is cached...
    model_repository.add("m", RECORDER + "version_policy { specific { versions: [ 1 ] } }")
    await server.repository.poll_once()
    assert (await infer(server, "m")).model_version == "1"  # ...until the versions change


# -- warmup ---------------------------------------------------------------------------------------

WARMUP = """
instance_group [ { count: 2 kind: KIND_CPU } ]
model_warmup [
  { name: "zeros" batch_size: 1 count: 2
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } },
  { name: "from_file" batch_size: 1
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 2 ] input_data_file: "x" } } },
  { name: "random" batch_size: 1
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 2 ] random_data: true } } }
]
"""


async def test_warmup_runs_on_every_instance_before_ready(start_server, model_repository, plugin):
    data = np.array([[5.0, 6.0]], np.float32).tobytes()
    model_repository.add("m", RECORDER + WARMUP, files={"warmup/x": data})
    server = await start_server(plugins=[plugin])
    executions = plugin.recorder.executions
    warmups = [e for e in executions if e["warmup"]]
    instances = {e["instance"] for e in warmups}
    assert len(instances) == 2
    for instance in instances:
        mine = [e for e in warmups if e["instance"] == instance]
        assert len(mine) == 4  # zeros twice, the file once, random once
        np.testing.assert_array_equal(mine[0]["data"], np.zeros((1, 2), np.float32))
        np.testing.assert_array_equal(mine[2]["data"], [[5.0, 6.0]])
    assert not any(e["reachable"] for e in warmups)
    assert plugin.recorder.ready_events == [("m", 1)]
    stats = server.api.model_statistics("m")[0]
    assert stats["execution_count"] == 0  # warmup is not inference
    await infer(server, "m")
    assert executions[-1]["reachable"] and not executions[-1]["warmup"]


async def test_a_failing_warmup_fails_the_load(start_server, model_repository, plugin):
    model_repository.add(
        "refuses",
        RECORDER + WARMUP + 'parameters { key: "fail_warmup" value: { } }',
        files={"warmup/x": np.zeros(2, np.float32).tobytes()},
    )
    model_repository.add("no_file", RECORDER + WARMUP)
    model_repository.add("short_file", RECORDER + WARMUP, files={"warmup/x": b"\0\0\0\0"})
    server = await start_server(plugins=[plugin], exit_on_error=False)
    reasons = {r["name"]: r.get("reason", "") for r in server.api.repository_index()}
    assert "failed to warm up model 'refuses'" in reasons["refuses"]
    assert "warmup refused" in reasons["refuses"]
    assert "sample 'from_file'" in reasons["no_file"]
    assert "elements" in reasons["short_file"]
    assert plugin.recorder.ready_events == []


# -- retries, parallel loads, auto-complete -------------------------------------------------------


async def test_load_retry_count(start_server, model_repository, plugin):
    model_repository.add(
        "m", RECORDER + 'parameters { key: "fail_first_attempts" value: { string_value: "2" } }'
    )
    with pytest.raises(NereidError, match="attempt 2 failed"):
        await start_server(plugins=[plugin], model_load_retry_count=1)
    plugin.recorder.create_attempts.clear()
    server = await start_server(plugins=[plugin], model_load_retry_count=2)
    await infer(server, "m")
    assert plugin.recorder.create_attempts == {"m/1": 3}


@pytest.mark.parametrize("threads", [1, 3])
async def test_parallel_loading(start_server, model_repository, plugin, threads):
    slow = 'parameters { key: "load_delay_ms" value: { string_value: "60" } }'
    for index in range(6):
        model_repository.add(f"m{index}", RECORDER + slow)
    await start_server(plugins=[plugin], model_load_thread_count=threads)
    assert plugin.recorder.most_loading == threads


async def test_auto_complete_and_disabling_it(start_server, model_repository, plugin):
    model_repository.add("m", RECORDER)
    model_repository.add("bare", None, versions={1: {"model.rec": "x"}})
    server = await start_server(plugins=[plugin], exit_on_error=False)
    assert server.api.model_config("m").parameters["completed"].string_value == "yes"
    assert "unable to determine the backend" in next(
        r["reason"] for r in server.api.repository_index() if r["name"] == "bare"
    )
    for option in ({"disable_auto_complete_config": True}, {"strict_model_config": True}):
        server = await start_server(plugins=[RecorderPlugin()], exit_on_error=False, **option)
        assert "completed" not in server.api.model_config("m").parameters
        reason = next(r["reason"] for r in server.api.repository_index() if r["name"] == "bare")
        assert "configuration file not found" in reason
