"""The scheduler contract is enough for a batching scheduler and for one without instances.

Both schedulers here are written against the public contract only (nereid.scheduler), as a
third-party scheduler package would be, and registered through a plugin object.
"""

from __future__ import annotations

import asyncio

import nereid
import numpy as np
import pytest
from nereid.builtin.default_scheduler import FifoQueue
from nereid.testing import ManualClock, make_request, settle
from nereid.testing.contracts import ContractModel, SchedulerContract


class CountingBatcher:
    """Batches up to max_batch_size rows, waiting up to 10 ms of the scheduler clock."""

    uses_instances = True

    def __init__(self, context):
        self.context = context
        self.queue = FifoQueue()
        self.max_rows = context.config.max_batch_size

    def enqueue(self, request):
        self.queue.put(request)

    async def next_batch(self, instance):
        clock = self.context.clock
        while True:
            first = self.queue.pop_live()
            if first is not None:
                break
            if self.queue.stopped or instance.retired:
                return None
            await self.queue.wait()
        batch, rows = [first], first.batch_size
        deadline = clock.now_ns() + 10_000_000
        while rows < self.max_rows:
            if self.queue.items:
                nxt = self.queue.items[0]
                if rows + nxt.batch_size > self.max_rows:
                    break
                self.queue.items.popleft()
                if not nxt.final_sent:
                    batch.append(nxt)
                    rows += nxt.batch_size
                continue
            if clock.now_ns() >= deadline:
                break
            await clock.sleep_until(deadline)
        return batch

    def batch_done(self, instance, batch):
        pass

    def instances_changed(self, instances):
        self.queue.wake_all()

    async def stop(self, drain):
        self.queue.stopped = True
        self.queue.wake_all()


class Relay:
    """No instances: answers each request by calling another model through the service."""

    uses_instances = False

    def __init__(self, context):
        self.context = context
        self.target = context.config.parameters["target"].string_value
        self.tasks = set()

    def enqueue(self, request):
        task = asyncio.get_running_loop().create_task(self._relay(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, request):
        inner = nereid.InferenceRequest(self.target, list(request.inputs.values()))
        try:
            response = await self.context.api.infer(inner).single()
        except nereid.NereidError as exc:
            request.fail(exc)
            return
        request.respond(nereid.InferenceResponse(response.outputs))

    async def next_batch(self, instance):
        return None

    def batch_done(self, instance, batch):
        pass

    def instances_changed(self, instances):
        pass

    async def stop(self, drain):
        if drain and self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


# Stand-ins for the real schedulers: block the installed plugin that registers the same name.
BLOCK_INSTALLED = ["dynamic-batcher", "ensemble"]


class SchedulersPlugin:
    @nereid.hookimpl
    def register_schedulers(self, registry):
        registry.add("dynamic", CountingBatcher)
        registry.add("ensemble", Relay)


async def test_batching_scheduler_forms_batches_by_clock(start_server, model_repository):
    clock = ManualClock()
    model_repository.identity(
        "batched", dims="[ 2 ]", max_batch_size=4, extra="dynamic_batching { }"
    )
    server = await start_server(
        plugins=[SchedulersPlugin()], clock=clock, plugin_block=BLOCK_INSTALLED
    )
    sizes = []

    class Spy:
        def on_execution_start(self, instance, batch):
            sizes.append(sum(r.batch_size for r in batch))

    server.observers.add(Spy())
    x = np.ones((1, 2), np.float32)
    streams = [server.api.infer(make_request("batched", {"INPUT0": x * i})) for i in range(3)]
    await settle()
    assert sizes == []  # waiting for more rows until the deadline
    await clock.advance(0.011)
    responses = await asyncio.gather(*(s.single() for s in streams))
    assert sizes == [3]
    for i, response in enumerate(responses):
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x * i)
    streams = [server.api.infer(make_request("batched", {"INPUT0": x})) for _ in range(5)]
    done = asyncio.gather(*(s.single() for s in streams))
    await settle()
    while not done.done():
        await clock.advance(0.011)
        await asyncio.sleep(0.01)  # the instance thread runs in real time
    assert sizes == [3, 4, 1]


async def test_scheduler_without_instances_calls_the_service(start_server, model_repository):
    model_repository.identity("target", dims="[ 2 ]")
    model_repository.add(
        "relay",
        """
        platform: "ensemble"
        max_batch_size: 8
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        ensemble_scheduling { step [ { model_name: "target" model_version: -1
          input_map { key: "INPUT0" value: "INPUT0" }
          output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
        parameters { key: "target" value: { string_value: "target" } }
        """,
    )
    server = await start_server(plugins=[SchedulersPlugin()], plugin_block=BLOCK_INSTALLED)
    x = np.array([[1.0, 2.0]], np.float32)
    response = await server.api.infer(make_request("relay", {"INPUT0": x})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), x)
    await settle()
    assert server.api.model_statistics("target")[0]["inference_count"] == 1
    assert server.api.model("relay").runners == []


async def test_missing_scheduler_names_the_distribution(start_server, model_repository):
    model_repository.identity("needs_dynamic", extra="dynamic_batching { }")
    with pytest.raises(nereid.NereidError, match="install the 'nereid-dynamic-batcher'"):
        await start_server(plugin_block=BLOCK_INSTALLED)


class TestDefaultSchedulerContract(SchedulerContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        model_repository.identity(
            "slow",
            dims="[ 2 ]",
            extra='parameters { key: "execute_delay_ms" value: { string_value: "200" } }',
        )
        x = np.ones((1, 2), np.float32)
        return ContractModel("slow", {"INPUT0": x}, {"OUTPUT0": x})


class TestCountingBatcherContract(SchedulerContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        model_repository.identity(
            "slow_batched",
            dims="[ 2 ]",
            max_batch_size=1,
            extra="dynamic_batching { } "
            'parameters { key: "execute_delay_ms" value: { string_value: "200" } }',
        )
        x = np.ones((1, 2), np.float32)
        return ContractModel(
            "slow_batched",
            {"INPUT0": x},
            {"OUTPUT0": x},
            server_options={"plugins": [SchedulersPlugin()], "plugin_block": BLOCK_INSTALLED},
        )
