"""Queue policies: timeouts with REJECT and DELAY, the request's own timeout (override allowed
or not), and per-level policies. The ManualClock drives every timeout."""

from __future__ import annotations

import pytest
from nereid.errors import UnavailableError

TEN_SECONDS = 10_000_000


async def _busy(server, recorder, kit, clock=None):
    held = server.api.infer(kit.hold("m"))
    await kit.until(recorder.holding.is_set)
    return held


async def test_timeout_reject_fails_the_queued_request(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="default_queue_policy { default_timeout_microseconds: 1000 }",
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    late = server.api.infer(kit.req("m", "late"))
    await clock.advance(0.0009)
    assert not late._items
    await clock.advance(0.0002)
    with pytest.raises(UnavailableError) as info:
        await kit.answered(late)
    assert info.value.message == "Request timeout expired"
    recorder.gate.set()
    await kit.answered(held)
    assert recorder.ids() == [["hold"]]  # never reached the model


async def test_timeout_delay_moves_the_request_behind(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="""default_queue_policy {
            timeout_action: DELAY default_timeout_microseconds: 1000 }""",
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    first = server.api.infer(kit.req("m", "first"))
    await clock.advance(0.0005)
    second = server.api.infer(kit.req("m", "second"))
    await clock.advance(0.0007)  # "first" is past its timeout, "second" is not
    recorder.gate.set()
    for stream in (held, first, second):
        await kit.answered(stream)  # delayed, not rejected
    assert recorder.ids() == [["hold"], ["second"], ["first"]]


async def test_delayed_requests_stay_ahead_of_lower_levels(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="""
        priority_levels: 2 default_priority_level: 2
        priority_queue_policy {
          key: 1 value: { timeout_action: DELAY default_timeout_microseconds: 1000 } }
        """,
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    low = server.api.infer(kit.req("m", "low", priority=2))
    high = server.api.infer(kit.req("m", "high", priority=1))
    await clock.advance(0.002)
    recorder.gate.set()
    for stream in (held, low, high):
        await kit.answered(stream)
    assert recorder.ids() == [["hold"], ["high"], ["low"]]


@pytest.mark.parametrize("allowed", [True, False])
async def test_request_timeout_override(serve, model_repository, recorder, clock, kit, allowed):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching=f"""default_queue_policy {{
            default_timeout_microseconds: {TEN_SECONDS}
            allow_timeout_override: {"true" if allowed else "false"} }}""",
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    short = server.api.infer(kit.req("m", "short", timeout_us=1000))
    await clock.advance(0.002)
    if allowed:
        with pytest.raises(UnavailableError, match="Request timeout expired"):
            await kit.answered(short)
        recorder.gate.set()
        await kit.answered(held)
        assert recorder.ids() == [["hold"]]
    else:
        assert not short._items  # the request's timeout is ignored
        recorder.gate.set()
        await kit.answered(held)
        await kit.answered(short)
        assert recorder.ids() == [["hold"], ["short"]]


async def test_request_timeout_cannot_lengthen_the_default(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="""default_queue_policy {
            default_timeout_microseconds: 1000 allow_timeout_override: true }""",
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    long = server.api.infer(kit.req("m", "long", timeout_us=TEN_SECONDS))
    await clock.advance(0.002)
    with pytest.raises(UnavailableError, match="Request timeout expired"):
        await kit.answered(long)
    recorder.gate.set()
    await kit.answered(held)


async def test_request_timeout_needs_a_default_timeout(
    serve, model_repository, recorder, clock, kit
):
    """Triton's rule: an override may only shorten the default; with no default timeout (0)
    there is nothing to shorten, so the request's timeout is ignored."""
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="default_queue_policy { allow_timeout_override: true }",
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    stream = server.api.infer(kit.req("m", "r", timeout_us=1000))
    await clock.advance(1.0)
    recorder.gate.set()
    await kit.answered(held)
    await kit.answered(stream)


async def test_timeouts_apply_per_level(serve, model_repository, recorder, clock, kit):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        batching="""
        priority_levels: 2 default_priority_level: 1
        priority_queue_policy { key: 2 value: { default_timeout_microseconds: 1000 } }
        """,
    )
    server = await serve()
    held = await _busy(server, recorder, kit)
    patient = server.api.infer(kit.req("m", "patient", priority=1))
    hasty = server.api.infer(kit.req("m", "hasty", priority=2))
    await clock.advance(0.005)
    with pytest.raises(UnavailableError, match="Request timeout expired"):
        await kit.answered(hasty)
    recorder.gate.set()
    await kit.answered(held)
    await kit.answered(patient)
    assert recorder.ids() == [["hold"], ["patient"]]


async def test_timed_out_requests_leave_the_batch_being_formed(
    serve, model_repository, recorder, clock, kit
):
    kit.recorder_model(
        model_repository,
        max_batch_size=4,
        batching="""max_queue_delay_microseconds: 10000
        default_queue_policy {
          default_timeout_microseconds: 20000 allow_timeout_override: true }""",
        fair_share=False,
    )
    server = await serve()
    quick = server.api.infer(kit.req("m", "quick", timeout_us=1000))
    slow = server.api.infer(kit.req("m", "slow"))
    await clock.advance(0.002)
    with pytest.raises(UnavailableError):
        await kit.answered(quick)
    await clock.advance(0.01)
    await kit.answered(slow)
    assert recorder.ids() == [["slow"]]
