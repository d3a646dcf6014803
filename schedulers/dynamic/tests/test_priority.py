"""Priority levels: level 1 first, 0 and out-of-range priorities take the default level,
requests of one level in arrival order, per-level queue sizes."""

from __future__ import annotations

import pytest
from nereid.errors import NereidError, UnavailableError

LEVELS = "priority_levels: 3 default_priority_level: 2"


async def test_higher_priority_bypasses_lower(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=1, batching=LEVELS)
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    order = [("low", 3), ("unset", 0), ("top", 1), ("mid", 2), ("beyond", 9)]
    streams = [server.api.infer(kit.req("m", rid, priority=p)) for rid, p in order]
    recorder.gate.set()
    await kit.answered(held)
    for stream in streams:
        await kit.answered(stream)
    # 1 first; the default level 2 holds "unset", "mid" and "beyond" in arrival order; then 3.
    assert recorder.ids()[1:] == [["top"], ["unset"], ["mid"], ["beyond"], ["low"]]


async def test_one_batch_takes_levels_in_priority_order(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=3, batching=LEVELS)
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    order = [("l3", 3), ("l2", 2), ("l1", 1), ("l1b", 1)]
    streams = [server.api.infer(kit.req("m", rid, priority=p)) for rid, p in order]
    recorder.gate.set()
    for stream in [held, *streams]:
        await kit.answered(stream)
    assert recorder.ids()[1:] == [["l1", "l1b", "l2"], ["l3"]]


async def test_priority_is_ignored_without_levels(serve, model_repository, recorder, kit):
    kit.recorder_model(model_repository, max_batch_size=1, batching="")
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    streams = [server.api.infer(kit.req("m", rid, priority=p)) for rid, p in [("a", 5), ("b", 1)]]
    recorder.gate.set()
    for stream in [held, *streams]:
        await kit.answered(stream)
    assert recorder.ids()[1:] == [["a"], ["b"]]


async def test_max_queue_size_per_level(serve, model_repository, recorder, kit):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="""
        priority_levels: 2 default_priority_level: 2
        default_queue_policy { max_queue_size: 2 }
        priority_queue_policy { key: 1 value: { max_queue_size: 1 } }
        """,
    )
    server = await serve()
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)  # executing: no longer counts as queued
    accepted = [
        server.api.infer(kit.req("m", "a", priority=1)),
        server.api.infer(kit.req("m", "c")),
        server.api.infer(kit.req("m", "d")),
    ]
    with pytest.raises(UnavailableError) as info:
        server.api.infer(kit.req("m", "b", priority=1))
    assert info.value.message == "[request id: b] Exceeds maximum queue size"
    with pytest.raises(UnavailableError, match="Exceeds maximum queue size"):
        server.api.infer(kit.req("m", "e"))
    recorder.gate.set()
    for stream in [held, *accepted]:
        await kit.answered(stream)
    assert recorder.ids()[1:] == [["a"], ["c"], ["d"]]
    # Room again once the queue drained; the rejections were counted as failures.
    await kit.answered(server.api.infer(kit.req("m", "f", priority=1)))
    stats = server.api.model_statistics("m")[0]
    assert stats["inference_stats"]["fail"]["count"] == 2


async def test_default_priority_level_must_be_a_level(serve, model_repository, kit):
    kit.recorder_model(model_repository, batching="priority_levels: 2 default_priority_level: 3")
    with pytest.raises(NereidError, match="default_priority_level"):
        await serve()
