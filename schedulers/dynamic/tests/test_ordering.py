"""``preserve_ordering``: responses leave in request order across instances, for ordinary and
decoupled models; requests that never ran do not hold the line."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from nereid.backend import ModelInstance
from nereid.errors import UnavailableError
from nereid.testing import BackendPlugin
from nereid.types import InferenceResponse, Tensor


class Delivered:
    """A request observer: the order in which responses reach their streams."""

    def __init__(self) -> None:
        self.order: list[tuple[str, bool]] = []

    def on_response(self, request, response) -> None:
        self.order.append((request.id, response.final))


async def _served(serve, model_repository, kit, ordered: bool, extra: str = ""):
    kit.recorder_model(
        model_repository,
        max_batch_size=1,
        instances=2,
        batching=f"preserve_ordering: {'true' if ordered else 'false'} {extra}",
    )
    server = await serve()
    delivered = Delivered()
    server.observers.add(delivered)
    return server, delivered


@pytest.mark.parametrize("ordered", [True, False])
async def test_later_response_waits_for_earlier(serve, model_repository, recorder, kit, ordered):
    server, delivered = await _served(serve, model_repository, kit, ordered)
    slow = server.api.infer(kit.hold("m", "slow"))
    fast = server.api.infer(kit.req("m", "fast"))
    await kit.until(lambda: len(recorder.batches) == 2)  # both executing, on two instances
    await asyncio.sleep(0.05)
    if ordered:
        assert delivered.order == []  # "fast" is done but held behind "slow"
    else:
        await kit.until(lambda: delivered.order)
        assert delivered.order == [("fast", True)]
    recorder.gate.set()
    await kit.answered(slow)
    await kit.answered(fast)
    expected = ["slow", "fast"] if ordered else ["fast", "slow"]
    assert [rid for rid, _ in delivered.order] == expected


async def test_requests_that_never_ran_do_not_hold_the_line(
    serve, model_repository, recorder, clock, kit
):
    server, delivered = await _served(
        serve,
        model_repository,
        kit,
        True,
        "default_queue_policy { default_timeout_microseconds: 1000 }",
    )
    first = server.api.infer(kit.hold("m", "first"))
    second = server.api.infer(kit.hold("m", "second"))
    await kit.until(lambda: len(recorder.batches) == 2)  # both instances busy
    doomed = server.api.infer(kit.req("m", "doomed"))
    cancelled = server.api.infer(kit.req("m", "cancelled"))
    last = server.api.infer(kit.req("m", "last"))
    cancelled.cancel()
    await clock.advance(0.002)  # "doomed" and "last" time out... unless dispatched
    with pytest.raises(UnavailableError):
        await kit.answered(doomed)
    with pytest.raises(UnavailableError):
        await kit.answered(last)
    later = server.api.infer(kit.req("m", "later"))
    recorder.gate.set()
    for stream in (first, second, later):
        await kit.answered(stream)
    ran = [rid for rid, _ in delivered.order if rid in ("first", "second", "later")]
    assert ran == ["first", "second", "later"]


class _LingerInstance(ModelInstance):
    """Answers every request at once; a batch holding a ``linger`` request then goes on
    executing until the gate opens (its responses are out, its batch is not over)."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def execute(self, requests):
        self.recorder.batches.append(("", [r.id for r in requests], len(requests)))
        for request in requests:
            request.respond(InferenceResponse([Tensor("OUTPUT0", request.inputs["INPUT0"].data)]))
        if any(r.parameters.get("linger") for r in requests):
            self.recorder.holding.set()
            assert self.recorder.gate.wait(10)


async def test_order_holds_while_an_earlier_batch_is_still_executing(
    start_server, model_repository, recorder, kit
):
    """The first request is answered while its batch goes on executing (the kernel hands a
    batch's responses to the loop when the batch ends); the second, answered later on another
    instance, must still come out after it."""
    model_repository.add(
        "linger",
        """
        backend: "linger"
        max_batch_size: 1
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        instance_group [ { kind: KIND_CPU count: 2 } ]
        dynamic_batching { preserve_ordering: true }
        """,
    )
    server = await start_server(
        plugins=[BackendPlugin("linger", lambda config, spec: _LingerInstance(recorder))]
    )
    delivered = Delivered()
    server.observers.add(delivered)
    first = server.api.infer(kit.req("linger", "first", parameters={"linger": True}))
    await kit.until(recorder.holding.is_set)
    second = server.api.infer(kit.req("linger", "second"))
    await kit.answered(second)
    assert [rid for rid, _ in delivered.order] == ["first", "second"]
    recorder.gate.set()
    await kit.answered(first)


class _ChattyInstance(ModelInstance):
    """Decoupled: two responses per request, then the final flag; a request marked ``hold``
    waits on the gate between its two responses."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def execute(self, requests):
        for request in requests:
            self.recorder.batches.append(("", [request.id], 1))
            value = request.inputs["INPUT0"].data
            request.respond(InferenceResponse([Tensor("OUTPUT0", value)]), final=False)
            if request.parameters.get("hold"):
                self.recorder.holding.set()
                assert self.recorder.gate.wait(10)
            request.respond(InferenceResponse([Tensor("OUTPUT0", value + 1)]), final=False)
            request.respond(None, final=True)


@pytest.mark.parametrize("ordered", [True, False])
async def test_decoupled_responses_keep_request_order(
    start_server, model_repository, recorder, kit, ordered
):
    model_repository.add(
        "chatty",
        f"""
        backend: "chatty"
        max_batch_size: 1
        model_transaction_policy {{ decoupled: true }}
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 2 }} ]
        dynamic_batching {{ preserve_ordering: {"true" if ordered else "false"} }}
        """,
    )
    server = await start_server(
        plugins=[BackendPlugin("chatty", lambda config, spec: _ChattyInstance(recorder))]
    )
    delivered = Delivered()
    server.observers.add(delivered)
    first = server.api.infer(kit.hold("chatty", "first"))
    second = server.api.infer(kit.req("chatty", "second"))
    await kit.until(lambda: len(recorder.batches) == 2)
    await asyncio.sleep(0.05)
    before_gate = list(delivered.order)
    recorder.gate.set()
    results = [await asyncio.wait_for(s.collect(), 5) for s in (first, second)]
    for responses in results:
        assert [r.final for r in responses] == [False, False, True]
        np.testing.assert_array_equal(
            responses[1].as_numpy("OUTPUT0"), responses[0].as_numpy("OUTPUT0") + 1
        )
    ids = [rid for rid, _ in delivered.order]
    if ordered:
        assert ids == ["first"] * 3 + ["second"] * 3
        assert all(rid == "first" for rid, _ in before_gate)  # "second" is held
    else:  # "second" finished while "first" was still on its way
        assert ("first", True) not in before_gate
        assert ids.index("second") < len(ids) - 1 - ids[::-1].index("first")
