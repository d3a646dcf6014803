"""Batch formation: rows, delay, preferred sizes, shapes, instances, polling, statistics.

Time is the ManualClock's: the batcher's delays and timeouts move only when the test advances
it. Instance threads run in real time; ``kit.until`` waits for them.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from nereid.errors import CancelledError
from nereid.testing import settle

DELAY_10MS = "max_queue_delay_microseconds: 10000"


async def test_waits_for_the_delay_then_sends_what_is_queued(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS)
    server = await serve()
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(3)]
    await settle()
    await clock.advance(0.009)
    assert recorder.batches == []  # still waiting for a fourth row
    await clock.advance(0.0011)
    responses = [await kit.answered(s) for s in streams]
    assert recorder.ids() == [["r0", "r1", "r2"]]
    for i, response in enumerate(responses):
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), np.full((1, 2), i))


async def test_a_full_batch_goes_at_once_and_the_rest_waits(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS)
    server = await serve()
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(6)]
    await kit.until(lambda: len(recorder.batches) == 1)
    assert recorder.sizes() == [4]  # no clock time has passed
    await asyncio.sleep(0.02)
    assert recorder.sizes() == [4]
    await clock.advance(0.01)
    for stream in streams:
        await kit.answered(stream)
    assert recorder.ids() == [["r0", "r1", "r2", "r3"], ["r4", "r5"]]


async def test_batch_counts_rows_never_more_than_max(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=4, batching="")
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    streams = [
        server.api.infer(kit.req("m", f"r{i}", rows=rows))
        for i, rows in enumerate([2, 1, 3, 1, 1, 4])
    ]
    recorder.gate.set()
    await kit.answered(held)
    responses = [await kit.answered(s) for s in streams]
    # In order: 2+1 (3 does not fit), 3+1, 1, then 4 alone.
    assert recorder.ids()[1:] == [["r0", "r1"], ["r2", "r3"], ["r4"], ["r5"]]
    assert recorder.sizes()[1:] == [3, 4, 1, 4]
    for i, (response, rows) in enumerate(zip(responses, [2, 1, 3, 1, 1, 4], strict=True)):
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), np.full((rows, 2), i))


async def test_delay_zero_takes_what_is_queued_at_once(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=8, batching="")
    server = await serve()
    await kit.answered(server.api.infer(kit.req("m", "alone")))  # no clock advance needed
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(3)]
    recorder.gate.set()
    await kit.answered(held)
    for stream in streams:
        await kit.answered(stream)
    assert recorder.ids() == [["alone"], ["hold"], ["r0", "r1", "r2"]]


async def test_preferred_sizes_largest_first_then_delay(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=8,
        batching=f"preferred_batch_size: [ 2, 4 ] {DELAY_10MS}",
    )
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await clock.advance(0.01)  # alone, it waits for the delay
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(7)]
    recorder.gate.set()
    await kit.until(lambda: len(recorder.batches) == 3)
    # 7 queued: the largest preferred size (4), then 2 (preferred), then 1 waits for the delay.
    assert recorder.sizes() == [1, 4, 2]
    await asyncio.sleep(0.02)
    assert len(recorder.batches) == 3
    await clock.advance(0.01)
    await kit.answered(held)
    for stream in streams:
        await kit.answered(stream)
    assert recorder.sizes() == [1, 4, 2, 1]


async def test_preferred_size_goes_at_once_and_an_expired_delay_sends_up_to_max(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=8,
        batching=f"preferred_batch_size: [ 4 ] {DELAY_10MS}",
    )
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await clock.advance(0.01)  # alone, it waits for the delay
    await kit.until(recorder.holding.is_set)
    early = [server.api.infer(kit.req("m", f"e{i}")) for i in range(7)]
    recorder.gate.set()
    await kit.until(lambda: len(recorder.batches) == 2)
    assert recorder.sizes() == [1, 4]  # the preferred size, before the delay expires
    recorder.gate.clear()
    held = server.api.infer(kit.hold("m", "hold2"))
    await kit.until(lambda: len(recorder.batches) == 3)
    late = [server.api.infer(kit.req("m", f"l{i}")) for i in range(9)]
    await clock.advance(0.011)  # every queued request is past the delay
    recorder.gate.set()
    for stream in [held, *early, *late]:
        await kit.answered(stream)
    # Once the delay expired, a batch grows past the preferred size, up to max_batch_size.
    assert recorder.sizes() == [1, 4, 4, 8, 1]
    assert recorder.ids()[2] == ["e4", "e5", "e6", "hold2"]


async def test_different_shapes_are_not_batched_together(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=8, dims="[ -1 ]", batching=DELAY_10MS)
    server = await serve()
    held = server.api.infer(kit.hold("m", width=2))
    await clock.advance(0.01)  # alone, it waits for the delay
    await kit.until(recorder.holding.is_set)
    widths = {"a1": 2, "b2": 2, "c3": 3, "d4": 2}
    streams = {rid: server.api.infer(kit.req("m", rid, width=w)) for rid, w in widths.items()}
    recorder.gate.set()
    await kit.until(lambda: len(recorder.batches) == 3)
    # The batch stops at the first request that does not match and goes at once; order kept.
    assert recorder.ids()[1:] == [["a1", "b2"], ["c3"]]
    await clock.advance(0.01)
    await kit.answered(held)
    for rid, stream in streams.items():
        out = (await kit.answered(stream)).as_numpy("OUTPUT0")
        assert out.shape == (1, widths[rid])
    assert recorder.ids()[1:] == [["a1", "b2"], ["c3"], ["d4"]]


async def test_several_instances_drain_one_queue(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=2, instances=3, batching="")
    server = await serve()
    streams = [server.api.infer(kit.hold("m", f"r{i}")) for i in range(6)]
    # Three batches executing at the same time, one per instance, all waiting on the gate.
    await kit.until(lambda: len(recorder.batches) == 3)
    assert len({name for name, _, _ in recorder.batches}) == 3
    assert sorted(recorder.ids()) == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    recorder.gate.set()
    for stream in streams:
        await kit.answered(stream)


async def test_free_instance_polls_a_ready_batch_from_its_thread(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS)
    server = await serve()
    scheduler = server.api.model("m").scheduler
    polled = []
    original = scheduler.poll_batch

    def spy(instance):
        batch = original(instance)
        polled.append(None if batch is None else [r.id for r in batch])
        return batch

    scheduler.poll_batch = spy
    held = server.api.infer(kit.hold("m"))
    await clock.advance(0.01)  # alone, it waits for the delay
    await kit.until(recorder.holding.is_set)
    full = [server.api.infer(kit.req("m", f"f{i}")) for i in range(4)]
    partial = [server.api.infer(kit.req("m", f"p{i}")) for i in range(2)]
    assert scheduler.queued() == 6  # the busy instance was given nothing
    recorder.gate.set()
    await kit.answered(held)
    for stream in full:
        await kit.answered(stream)
    await kit.until(lambda: len(polled) == 2)
    # The full batch was taken on the instance thread; the partial one is not ready.
    assert polled == [["f0", "f1", "f2", "f3"], None]
    await clock.advance(0.01)
    for stream in partial:
        await kit.answered(stream)
    assert recorder.ids()[2] == ["p0", "p1"]


async def test_statistics_follow_the_batches(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS)
    server = await serve()
    streams = [server.api.infer(kit.req("m", f"a{i}")) for i in range(3)]
    await clock.advance(0.01)
    for stream in streams:
        await kit.answered(stream)
    streams = [server.api.infer(kit.req("m", f"b{i}", rows=2)) for i in range(2)]
    for stream in streams:
        await kit.answered(stream)
    streams = [server.api.infer(kit.req("m", "c"))]
    await clock.advance(0.01)
    await kit.answered(streams[0])
    await settle()
    stats = server.api.model_statistics("m")[0]
    assert recorder.sizes() == [3, 4, 1]
    assert stats["execution_count"] == 3
    assert stats["inference_count"] == 8
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == {
        1: 1,
        3: 1,
        4: 1,
    }
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == 6
    assert infer["queue"]["count"] == 6
    assert infer["compute_infer"]["count"] == 6


async def test_cancelled_in_the_queue_never_reaches_the_model(
    serve, model_repository, recorder, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, batching="")
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    kept = server.api.infer(kit.req("m", "kept"))
    gone = server.api.infer(kit.req("m", "gone"))
    gone.cancel()
    with pytest.raises(CancelledError):
        await kit.answered(gone)
    assert server.api.model("m").scheduler.queued() == 1
    recorder.gate.set()
    await kit.answered(held)
    await kit.answered(kept)
    await settle()
    assert recorder.ids() == [["hold"], ["kept"]]
    stats = server.api.model_statistics("m")[0]
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_count"] == 2


async def test_unload_without_drain_fails_queued_requests(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS)
    server = await serve()
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(2)]
    await settle()
    unloading = asyncio.ensure_future(server.api.model("m").unload(timeout=0))
    responses = [await asyncio.wait_for(s.collect(), 5) for s in streams]
    await unloading
    for (response,) in responses:
        assert response.error is not None and response.error.kind.value == "UNAVAILABLE"
    assert recorder.batches == []


async def test_fewer_instances_keep_serving(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=2, instances=2, batching="")
    server = await serve()
    model = server.api.model("m")
    group = type(model.config.instance_group[0])()
    group.CopyFrom(model.config.instance_group[0])
    group.count = 1
    await model.set_instance_groups([group])
    assert len(model.runners) == 1
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(4)]
    for stream in streams:
        await kit.answered(stream)
    assert len({name for name, _, _ in recorder.batches}) == 1


IDLE_BYPASS = (
    'parameters { key: "nereid.dynamic_batching.idle_bypass" value: { string_value: "true" } }'
)


async def test_idle_bypass_skips_the_delay_only_while_nothing_executes(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository, max_batch_size=4, instances=2, batching=DELAY_10MS, extra=IDLE_BYPASS
    )
    server = await serve()
    await kit.answered(server.api.infer(kit.req("m", "alone")))  # idle: no wait for the delay
    held = server.api.infer(kit.hold("m"))  # idle again: goes at once, then keeps one busy
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(2)]
    await asyncio.sleep(0.02)
    assert recorder.ids() == [["alone"], ["hold"]]  # one instance busy: the delay applies
    recorder.gate.set()
    await kit.answered(held)
    for stream in streams:  # nothing executing any more: sent without the clock moving
        await kit.answered(stream)
    assert recorder.ids() == [["alone"], ["hold"], ["r0", "r1"]]


BALANCE = (
    'parameters { key: "nereid.dynamic_batching.balance_instances" '
    'value: { string_value: "true" } }'
)


@pytest.mark.parametrize("balance", [True, False])
async def test_balance_instances_shares_a_ready_batch(
    serve, model_repository, recorder, kit, balance
):
    kit.recorder_model(
        model_repository,
        max_batch_size=8,
        instances=3,
        batching="",
        extra=BALANCE if balance else "",
    )
    server = await serve()
    streams = [server.api.infer(kit.hold("m", f"r{i}")) for i in range(7)]
    expected = (
        [["r0", "r1", "r2"], ["r3", "r4"], ["r5", "r6"]]
        if balance
        else [[f"r{i}" for i in range(7)]]
    )
    await kit.until(lambda: len(recorder.batches) == len(expected))
    await asyncio.sleep(0.02)
    assert sorted(recorder.ids()) == expected  # executing at the same time, one per instance
    assert len({name for name, _, _ in recorder.batches}) == len(expected)
    recorder.gate.set()
    for stream in streams:
        await kit.answered(stream)


async def test_balance_releases_the_shares_of_instances_on_their_way_back(clock, kit):
    """White-box: the leader splits a ready batch though the other instance has not asked yet
    (its batch has just ended); that instance then takes its share at once, delay or not."""
    from types import SimpleNamespace

    from nereid.config import parse_pbtxt
    from nereid.scheduler import SchedulerContext
    from nereid_dynamic_batcher.scheduler import DynamicBatcher

    config = parse_pbtxt(
        f"""
        name: "m" backend: "recorder" max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        dynamic_batching {{ {DELAY_10MS} }}
        {BALANCE}
        """
    )
    instances = [SimpleNamespace(retired=False), SimpleNamespace(retired=False)]
    scheduler = DynamicBatcher(
        SchedulerContext("m", 1, config, instances, clock, api=None, statistics=None)
    )
    for i in range(8):
        scheduler.enqueue(kit.req("m", f"r{i}"))
    first, _ = scheduler._take_shared(clock.now_ns())  # full: split between the two
    assert [r.id for r in first] == ["r0", "r1", "r2", "r3"]
    second = scheduler.poll_batch(instances[1])  # no clock time has passed
    assert [r.id for r in second] == ["r4", "r5", "r6", "r7"]
    for i in range(2):
        scheduler.enqueue(kit.req("m", f"s{i}"))
    assert scheduler.poll_batch(instances[1]) is None  # no release left: the delay applies
    await scheduler.stop(drain=False)
