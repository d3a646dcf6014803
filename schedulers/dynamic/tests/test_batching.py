"""Batch formation: rows, delay, preferred sizes, shapes, instances, polling, statistics.

Time is the ManualClock's: the batcher's delays and timeouts move only when the test advances
it. Instance threads run in real time; ``kit.until`` waits for them.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from nereid.errors import CancelledError
from nereid.testing import cyclic_garbage, settle

DELAY_10MS = "max_queue_delay_microseconds: 10000"


async def test_waits_for_the_delay_then_sends_what_is_queued(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS, fair_share=False)
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
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS, fair_share=False)
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
        fair_share=False,
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
        fair_share=False,
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
    kit.recorder_model(
        model_repository, max_batch_size=8, dims="[ -1 ]", batching=DELAY_10MS, fair_share=False
    )
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
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS, fair_share=False)
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
    kit.recorder_model(model_repository, max_batch_size=4, batching=DELAY_10MS, fair_share=False)
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


async def test_fair_share_sends_a_lone_request_at_once(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=4, instances=2, batching=DELAY_10MS)
    server = await serve()
    await kit.answered(server.api.infer(kit.req("m", "alone")))  # the clock never moved
    assert recorder.ids() == [["alone"]]


async def test_fair_share_waits_for_the_share_while_another_instance_executes(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=8, instances=2, batching=DELAY_10MS)
    server = await serve()
    held = server.api.infer(kit.hold("m", rows=4))  # 4 rows executing on one instance
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(2)]
    await asyncio.sleep(0.02)
    assert recorder.ids() == [["hold"]]  # share (2 + 4) / 2 = 3: two rows wait
    streams.append(server.api.infer(kit.req("m", "r2")))  # share (3 + 4) / 2 -> 3: enough
    await kit.until(lambda: len(recorder.batches) == 2)
    assert recorder.ids()[1] == ["r0", "r1", "r2"]
    late = server.api.infer(kit.req("m", "r3"))
    await asyncio.sleep(0.02)
    assert len(recorder.batches) == 2  # share (1 + 4) / 2 -> 2: waits, up to the delay
    await clock.advance(0.01)
    await kit.answered(late)
    recorder.gate.set()
    for stream in [held, *streams]:
        await kit.answered(stream)
    assert recorder.ids()[2] == ["r3"]


async def test_fair_share_splits_a_burst_between_the_instances(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(model_repository, max_batch_size=8, instances=2, batching=DELAY_10MS)
    server = await serve()
    streams = [server.api.infer(kit.hold("m", f"r{i}")) for i in range(7)]
    await kit.until(lambda: len(recorder.batches) == 2)  # both held at once: no clock time
    assert sorted(recorder.ids()) == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6"]]
    assert len({name for name, _, _ in recorder.batches}) == 2
    recorder.gate.set()
    for stream in streams:
        await kit.answered(stream)


async def test_fair_share_shrinks_when_a_batch_ends(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(model_repository, max_batch_size=8, instances=2, batching=DELAY_10MS)
    server = await serve()
    held = server.api.infer(kit.hold("m", rows=6))
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(2)]
    await asyncio.sleep(0.02)
    assert recorder.ids() == [["hold"]]  # share (2 + 6) / 2 = 4
    recorder.gate.set()  # the share falls to 1: both go, the clock still at 0
    for stream in [held, *streams]:
        await kit.answered(stream)
    assert sorted(recorder.ids()[1:]) == [["r0"], ["r1"]]


async def test_triton_rule_makes_one_instance_take_the_whole_burst(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository, max_batch_size=8, instances=2, batching="", fair_share=False
    )
    server = await serve()
    streams = [server.api.infer(kit.hold("m", f"r{i}")) for i in range(7)]
    await kit.until(lambda: len(recorder.batches) == 1)
    await asyncio.sleep(0.02)
    assert recorder.ids() == [[f"r{i}" for i in range(7)]]
    recorder.gate.set()
    for stream in streams:
        await kit.answered(stream)


async def test_fair_share_counts_a_batch_whose_end_the_loop_has_not_seen(clock, kit):
    """White-box: an instance asking again from its own thread, before its ``batch_done``
    reached the loop, counts its own batch as work in hand: the requests its responses answer
    are on their way back, so it takes a full share rather than half of what is queued."""
    from nereid.config import parse_pbtxt
    from nereid.scheduler import SchedulerContext
    from nereid_dynamic_batcher.scheduler import DynamicBatcher

    class Handle:  # what the batcher uses of an instance handle
        retired = False

    config = parse_pbtxt(
        f"""
        name: "m" backend: "recorder" max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        dynamic_batching {{ {DELAY_10MS} }}
        """
    )
    first, second = Handle(), Handle()
    scheduler = DynamicBatcher(
        SchedulerContext("m", 1, config, [first, second], clock, api=None, statistics=None)
    )
    for i in range(8):
        scheduler.enqueue(kit.req("m", f"a{i}"))
    batch_a = scheduler.poll_batch(first)  # 8 in hand: a share of 4
    batch_b = scheduler.poll_batch(second)
    assert [len(batch_a), len(batch_b)] == [4, 4]
    scheduler.batch_done(first, batch_a)  # the first ends, and its 4 come back
    for i in range(4):
        scheduler.enqueue(kit.req("m", f"c{i}"))
    # The second ends too; before its end reaches the loop it asks from its thread: 4 queued
    # and its own 4 on their way back make 8, a share of 4: all that is queued.
    assert [r.id for r in scheduler.poll_batch(second)] == ["c0", "c1", "c2", "c3"]
    for i in range(2):
        scheduler.enqueue(kit.req("m", f"d{i}"))
    scheduler.batch_done(second, batch_b)  # late: it has its next batch already
    assert scheduler.poll_batch(first) is None  # 2 queued, 4 executing: a share of 3
    await scheduler.stop(drain=False)


async def test_answered_requests_leave_no_reference_cycles(serve, model_repository, kit):
    kit.recorder_model(model_repository, max_batch_size=4, batching="")
    server = await serve()
    with cyclic_garbage() as garbage:
        streams = [server.api.infer(kit.req("m", f"r{i}")) for i in range(6)]
        for stream in streams:
            await kit.answered(stream)
        del streams
    assert garbage == []
