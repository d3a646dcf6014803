"""The ``oldest`` strategy: sequences pinned to an instance, one request of each in flight,
ready requests batched oldest first."""

from __future__ import annotations

import asyncio

from nereid.testing import settle


async def test_one_request_per_sequence_per_batch(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, strategy="oldest { max_candidate_sequences: 4 }")
    server = await serve()
    api = server.api
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 9, 0, start=True, end=True))
    await kit.until(recorder.holding.is_set)
    # Sequence 1 sends three requests at once, 2 sends two: a batch never holds two of one.
    a = [api.infer(kit.req("m", 1, v, start=v == 1, end=v == 3)) for v in (1, 2, 3)]
    b = [api.infer(kit.req("m", 2, v, start=v == 1, end=v == 2)) for v in (1, 2)]
    recorder.gate.set()
    await kit.answered(blocker)
    assert [await kit.output(s) for s in a + b] == [1, 2, 3, 1, 2]
    assert recorder.ids()[1:] == [["1.1", "2.1"], ["1.2", "2.2"], ["1.3"]]
    assert recorder.rows(1) == [
        {"id": "1.1", "START": 1, "END": 0, "READY": 1, "CORRID": 1},
        {"id": "2.1", "START": 1, "END": 0, "READY": 1, "CORRID": 2},
    ]
    assert recorder.rows(2)[1] == {"id": "2.2", "START": 0, "END": 1, "READY": 1, "CORRID": 2}


async def test_candidates_beyond_the_batch_size_go_oldest_first(
    serve, model_repository, recorder, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=2,
        strategy="oldest { max_candidate_sequences: 5 }",
        state=kit.ACC_STATE,
    )
    server = await serve()
    api = server.api
    scheduler = kit.scheduler_of(server)
    recorder.gate.clear()
    blocker = api.infer(kit.hold("m", 99, 0, start=True))
    await kit.until(recorder.holding.is_set)
    firsts = [api.infer(kit.req("m", cid, cid, start=True)) for cid in (1, 2, 3, 4, 5)]
    assert scheduler.sequences()["slots"]["m_0_0"] == [99, 1, 2, 3, 4]
    assert scheduler.sequences()["backlog"] == [5]
    recorder.gate.set()
    await kit.answered(blocker)
    assert [await kit.output(s) for s in firsts[:4]] == [1, 2, 3, 4]
    assert recorder.ids()[1:3] == [["1.1", "2.2"], ["3.3", "4.4"]]
    # 99 ends: 5 leaves the backlog once that END has executed.
    await kit.answered(api.infer(kit.req("m", 99, 0, end=True)))
    assert await kit.output(firsts[4]) == 5
    assert scheduler.sequences()["slots"]["m_0_0"][0] == 5
    # Running sums per sequence, across interleaved batches.
    streams = [api.infer(kit.req("m", cid, 10)) for cid in (5, 4, 3, 2, 1)]
    assert [await kit.output(s) for s in streams] == [15, 14, 13, 12, 11]


async def test_delay_and_preferred_batch_size(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(
        model_repository,
        max_batch_size=4,
        strategy="oldest { max_candidate_sequences: 8 max_queue_delay_microseconds: 10000 "
        "preferred_batch_size: [ 2 ] }",
    )
    server = await serve()
    api = server.api
    lone = api.infer(kit.req("m", 1, 1, start=True))
    await settle()
    assert recorder.batches == []
    await clock.advance(0.011)
    assert await kit.output(lone) == 1
    # Two ready requests make the preferred size: they go without waiting.
    pair = [api.infer(kit.req("m", 1, 2)), api.infer(kit.req("m", 2, 3, start=True))]
    assert [await kit.output(s) for s in pair] == [2, 3]
    assert recorder.ids() == [["1.1"], ["1.2", "2.3"]]


async def test_sequences_spread_over_instances_and_stay(serve, model_repository, recorder, kit):
    kit.recorder_model(
        model_repository,
        max_batch_size=2,
        instances=2,
        strategy="oldest { max_candidate_sequences: 3 }",
        state=kit.ACC_STATE,
    )
    server = await serve()
    api = server.api
    scheduler = kit.scheduler_of(server)

    async def sequence(cid: int, count: int) -> list[int]:
        outputs = []
        for index in range(count):
            stream = api.infer(kit.req("m", cid, 1, start=index == 0, end=index == count - 1))
            outputs.append(await kit.output(stream))
        return outputs

    tasks = [asyncio.ensure_future(sequence(cid, 6)) for cid in range(1, 9)]
    await settle(2)
    slots = scheduler.sequences()["slots"]
    assert slots["m_0_0"][0] is not None and slots["m_0_1"][0] is not None
    for outputs in await asyncio.gather(*tasks):
        assert outputs == [1, 2, 3, 4, 5, 6]
    where: dict[int, set] = {}
    for instance, rows in recorder.batches:
        for row in rows:
            where.setdefault(row["CORRID"], set()).add(instance)
    assert all(len(instances) == 1 for instances in where.values())
    assert {i for i, _ in recorder.batches} == {"m_0_0", "m_0_1"}
