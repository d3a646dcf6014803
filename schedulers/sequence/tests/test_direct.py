"""The ``direct`` strategy: a slot per sequence, rows in slot order, fillers, backlog, delays."""

from __future__ import annotations

import asyncio
import random

import numpy as np
from nereid.testing import settle


async def test_control_values_per_row(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository)
    server = await serve()
    api = server.api
    starts = [api.infer(kit.req("m", c, c, start=True)) for c in (5, 6, 7)]
    await asyncio.gather(*(kit.answered(s) for s in starts))
    assert recorder.rows() == [
        {"id": "5.5", "START": 1, "END": 0, "READY": 1, "CORRID": 5},
        {"id": "6.6", "START": 1, "END": 0, "READY": 1, "CORRID": 6},
        {"id": "7.7", "START": 1, "END": 0, "READY": 1, "CORRID": 7},
    ]
    await asyncio.gather(
        kit.answered(api.infer(kit.req("m", 5, 50))),
        kit.answered(api.infer(kit.req("m", 7, 70, end=True))),
    )
    assert recorder.rows() == [
        {"id": "5.50", "START": 0, "END": 0, "READY": 1, "CORRID": 5},
        {"id": "-", "START": 0, "END": 0, "READY": 0, "CORRID": 0},
        {"id": "7.70", "START": 0, "END": 1, "READY": 1, "CORRID": 7},
    ]
    # A request that both starts and ends a sequence.
    await kit.answered(api.infer(kit.req("m", 8, 80, start=True, end=True)))
    # Slot 2 (sequence 7's) was freed at its END; 8 takes it, below it slots 0 and 1 are held
    # by sequences 5 and 6, which have no request now.
    assert recorder.rows() == [
        {"id": "-", "START": 0, "END": 0, "READY": 0, "CORRID": 0},
        {"id": "-", "START": 0, "END": 0, "READY": 0, "CORRID": 0},
        {"id": "8.80", "START": 1, "END": 1, "READY": 1, "CORRID": 8},
    ]
    stats = api.model_statistics("m")[0]
    assert stats["inference_stats"]["success"]["count"] == 6  # fillers are not requests
    assert kit.scheduler_of(server).sequences()["slots"]["m_0_0"] == [5, 6, None, None]


async def test_backlog_waits_for_a_free_slot(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=2)
    server = await serve()
    api = server.api
    scheduler = kit.scheduler_of(server)
    streams = [api.infer(kit.req("m", cid, cid, start=True)) for cid in (1, 2, 3, 4)]
    assert scheduler.sequences()["backlog"] == [3, 4]
    assert [await kit.output(s) for s in streams[:2]] == [1, 2]
    await settle()
    assert recorder.ids() == [["1.1", "2.2"]]
    # Sequence 2 ends: 3 takes its slot (slot 1) and runs beside 1.
    ending = api.infer(kit.req("m", 2, 20, end=True))
    assert await kit.output(ending) == 20
    assert await kit.output(streams[2]) == 3
    assert scheduler.sequences()["slots"]["m_0_0"] == [1, 3]
    assert scheduler.sequences()["backlog"] == [4]
    await asyncio.gather(
        kit.answered(api.infer(kit.req("m", 1, 10, end=True))),
        kit.answered(api.infer(kit.req("m", 3, 30, end=True))),
    )
    assert await kit.output(streams[3]) == 4
    await settle()
    assert scheduler.sequences()["slots"]["m_0_0"] == [4, None]
    flat = [rid for batch in recorder.ids() for rid in batch]
    assert flat.index("2.20") < flat.index("3.3") < flat.index("4.4")


async def test_backlog_keeps_a_whole_sequence_in_order(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=1, state=kit.ACC_STATE)
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 1, 1, start=True))
    await kit.until(recorder.holding.is_set)
    # Sequence 2 comes whole while the only slot is taken: it waits in the backlog.
    second = [
        api.infer(kit.req("m", 2, v, start=v == 1, end=v == 4, rid=f"2.{v}")) for v in (1, 2, 3, 4)
    ]
    ending = api.infer(kit.req("m", 1, 5, end=True))
    recorder.gate.set()
    assert await kit.output(blocker) == 1
    assert await kit.output(ending) == 6
    assert [await kit.output(s) for s in second] == [1, 3, 6, 10]
    assert recorder.ids()[2:] == [["2.1"], ["2.2"], ["2.3"], ["2.4"]]


async def test_many_interleaved_sequences_on_fewer_slots(serve, model_repository, recorder, kit):
    """24 sequences, 4 slots on 2 instances: every sequence's running sum comes out right, and
    while a sequence lives all its requests go to one instance and one row."""
    kit.recorder_model(model_repository, max_batch_size=2, instances=2, state=kit.ACC_STATE)
    server = await serve()
    api = server.api
    rng = random.Random(3)
    placements: dict[int, set] = {}

    async def sequence(cid: int) -> list[int]:
        values = [rng.randrange(-9, 10) for _ in range(rng.randrange(1, 7))]
        outputs = []
        for index, value in enumerate(values):
            stream = api.infer(
                kit.req("m", cid, value, start=index == 0, end=index == len(values) - 1)
            )
            outputs.append(await kit.output(stream))
            await asyncio.sleep(0)
        assert outputs == list(np.cumsum(values)), cid
        return values

    await asyncio.gather(*(sequence(cid) for cid in range(100, 124)))
    for instance, rows in recorder.batches:
        for slot, row in enumerate(rows):
            if row["id"] != "-":
                placements.setdefault(row["CORRID"], set()).add((instance, slot))
    assert len(placements) == 24
    assert all(len(where) == 1 for where in placements.values())
    assert {instance for instance, _ in recorder.batches} == {"m_0_0", "m_0_1"}
    assert max(len(rows) for _, rows in recorder.batches) <= 2
    assert kit.scheduler_of(server).sequences()["active"] == []


async def test_utilization_and_delay(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(
        model_repository,
        strategy="direct { max_queue_delay_microseconds: 5000 minimum_slot_utilization: 0.5 }",
    )
    server = await serve()
    api = server.api
    lone = api.infer(kit.req("m", 1, 1, start=True))
    await settle()
    assert recorder.batches == []  # 1 of 4 slots ready: under 0.5, waits for the delay
    await clock.advance(0.004)
    assert recorder.batches == []
    await clock.advance(0.002)
    assert await kit.output(lone) == 1
    # Two of four slots ready is enough at once.
    pair = [api.infer(kit.req("m", 1, 2)), api.infer(kit.req("m", 2, 3, start=True))]
    assert [await kit.output(s) for s in pair] == [2, 3]
    assert recorder.ids()[-1] == ["1.2", "2.3"]


async def test_variable_shapes_that_differ_wait_for_the_next_batch(
    serve, model_repository, recorder, kit
):
    kit.recorder_model(model_repository, dims="[ -1 ]")
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 9, 0, start=True))
    await kit.until(recorder.holding.is_set)
    wide = kit.req("m", 1, 0, start=True)
    wide.inputs["INPUT"].data = np.ones((1, 3), np.int32)
    wide.inputs["INPUT"].shape = (1, 3)
    streams = [api.infer(wide), api.infer(kit.req("m", 2, 2, start=True))]
    recorder.gate.set()
    await kit.answered(blocker)
    shapes = [(await kit.answered(s)).as_numpy("OUTPUT").shape for s in streams]
    assert shapes == [(1, 3), (1, 1)]
    # The batch after the blocker: sequence 9's slot has nothing, 1 goes (3 wide); sequence 2,
    # 1 wide, cannot join and goes next, its lower slots filled.
    assert recorder.ids()[1:] == [["-", "1.0"], ["-", "-", "2.2"]]


async def test_start_on_a_live_sequence_restarts_it(serve, model_repository, kit):
    kit.recorder_model(model_repository, state=kit.ACC_STATE)
    server = await serve()
    api = server.api
    assert await kit.output(api.infer(kit.req("m", 4, 5, start=True))) == 5
    assert await kit.output(api.infer(kit.req("m", 4, 6))) == 11
    # Triton logs a conflict and goes on in the same slot; the state starts over.
    assert await kit.output(api.infer(kit.req("m", 4, 7, start=True))) == 7
    assert await kit.output(api.infer(kit.req("m", 4, 1, end=True))) == 8


async def test_same_id_may_start_again_after_its_end(serve, model_repository, kit):
    kit.recorder_model(model_repository, state=kit.ACC_STATE)
    server = await serve()
    api = server.api
    streams = [
        api.infer(kit.req("m", 3, 1, start=True)),
        api.infer(kit.req("m", 3, 2, end=True)),
        api.infer(kit.req("m", 3, 10, start=True)),
        api.infer(kit.req("m", 3, 20, end=True)),
    ]
    assert [await kit.output(s) for s in streams] == [1, 3, 10, 30]


async def test_no_batching_model_has_one_slot(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=0, state=kit.ACC_STATE)
    server = await serve()
    api = server.api
    x = np.array([4], np.int32)

    def one(cid, start=False, end=False):
        request = kit.req("m", cid, 0, start=start, end=end)
        request.inputs["INPUT"].data = x
        request.inputs["INPUT"].shape = (1,)
        return api.infer(request)

    streams = [one(1, start=True), one(2, start=True), one(1, end=True), one(2, end=True)]
    outputs = [(await kit.answered(s)).as_numpy("OUTPUT").tolist() for s in streams]
    assert outputs == [[4], [4], [8], [8]]
    assert [len(rows) for _, rows in recorder.batches] == [1, 1, 1, 1]
    assert recorder.rows(0)[0]["START"] == 1


async def test_removed_instance_hands_its_sequences_on(serve, model_repository, recorder, kit):
    """An instance-count update: the sequences of the removed instance move, with their state,
    to the backlog, and go on when a slot is free."""
    kit.recorder_model(model_repository, max_batch_size=1, instances=2, state=kit.ACC_STATE)
    server = await serve(model_control_mode="explicit", load_model=["m"])
    api = server.api
    scheduler = kit.scheduler_of(server)
    assert await kit.output(api.infer(kit.req("m", 1, 1, start=True))) == 1
    assert await kit.output(api.infer(kit.req("m", 2, 10, start=True))) == 10
    assert scheduler.sequences()["slots"] == {"m_0_0": [1], "m_0_1": [2]}
    kit.recorder_model(model_repository, max_batch_size=1, instances=1, state=kit.ACC_STATE)
    await api.load_model("m")
    assert scheduler.sequences()["slots"] == {"m_0_0": [1]}
    assert scheduler.sequences()["backlog"] == [2]
    waiting = api.infer(kit.req("m", 2, 10))
    assert await kit.output(api.infer(kit.req("m", 1, 1, end=True))) == 2
    assert await kit.output(waiting) == 20  # its state came along
    assert await kit.output(api.infer(kit.req("m", 2, 10, end=True))) == 30
    assert {instance for instance, _ in recorder.batches[2:]} == {"m_0_0"}
