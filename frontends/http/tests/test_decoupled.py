"""Decoupled models: /infer refuses them unless the client accepts server-sent events; the
generate extension (one JSON answer, or one event per response)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import requests

SSE = {"Accept": "text/event-stream"}


def events(text: str) -> list[dict]:
    """The JSON documents of a server-sent event stream."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        out.append(json.loads(block[len("data: ") :]))
    return out


def repeat_body(values, delays, wait=0) -> dict:
    return {
        "inputs": [
            {"name": "IN", "shape": [len(values)], "datatype": "INT32", "data": values},
            {"name": "DELAY", "shape": [len(delays)], "datatype": "UINT32", "data": delays},
            {"name": "WAIT", "shape": [1], "datatype": "UINT32", "data": [wait]},
        ]
    }


def square_body(n: int) -> dict:
    return {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [n]}]}


def test_infer_rejects_decoupled_without_sse(base_url):
    reply = requests.post(f"{base_url}/v2/models/repeat/infer", json=repeat_body([1], [0]))
    assert reply.status_code == 501
    assert reply.json() == {
        "error": "HTTP end point doesn't support models with decoupled transaction policy"
    }


def test_infer_streams_repeat_as_events(base_url):
    reply = requests.post(
        f"{base_url}/v2/models/repeat/infer",
        json={**repeat_body([4, 5, 6], [5, 5, 5]), "id": "stream-1"},
        headers=SSE,
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    got = events(reply.text)
    assert len(got) == 3
    for index, (event, value) in enumerate(zip(got, [4, 5, 6], strict=True)):
        assert event["id"] == "stream-1"
        assert event["model_name"] == "repeat"
        assert event["model_version"] == "1"
        outputs = {o["name"]: o for o in event["outputs"]}
        assert outputs["OUT"] == {"name": "OUT", "datatype": "INT32", "shape": [1], "data": [value]}
        assert outputs["IDX"]["data"] == [index]


def test_infer_streams_square_and_empty_streams(base_url):
    reply = requests.post(
        f"{base_url}/v2/models/square/infer", json=square_body(3), headers=SSE, timeout=10
    )
    assert [e["outputs"][0]["data"] for e in events(reply.text)] == [[3], [3], [3]]
    # no responses at all, only the final flag: an empty stream
    reply = requests.post(
        f"{base_url}/v2/models/square/infer", json=square_body(0), headers=SSE, timeout=10
    )
    assert reply.status_code == 200
    assert reply.text == ""
    # a non-decoupled model streams its one response
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    reply = requests.post(f"{base_url}/v2/models/identity/infer", json=body, headers=SSE)
    assert [e["outputs"][0]["data"] for e in events(reply.text)] == [[1.0, 2.0]]


def test_sse_errors_before_streaming_are_json(base_url):
    body = repeat_body([1], [0])
    body["inputs"][0]["datatype"] = "FP32"
    reply = requests.post(f"{base_url}/v2/models/repeat/infer", json=body, headers=SSE)
    assert reply.status_code == 400
    assert reply.headers["Content-Type"] == "application/json"
    assert "data-type is 'FP32', but model 'repeat' expects 'INT32'" in reply.json()["error"]


# The kernel's ``repeat`` test backend raises from its thread when it wakes up to answer a
# request that was cancelled meanwhile (reported to the kernel); that is not this frontend's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_sse_disconnect_cancels_the_request(base_url, client):
    """A client that goes away mid-stream cancels the rest of the responses."""

    def cancelled() -> int:
        stats = client.get_inference_statistics("repeat")["model_stats"][0]["response_stats"]
        return sum(entry["cancel"]["count"] for entry in stats.values())

    before = cancelled()
    async with aiohttp.ClientSession() as session:
        reply = await session.post(
            f"{base_url}/v2/models/repeat/infer",
            json=repeat_body([1, 2, 3, 4, 5], [20, 300, 300, 300, 300]),
            headers=SSE,
        )
        first = await reply.content.readuntil(b"\n\n")
        assert json.loads(first[len(b"data: ") :])["outputs"][0]["data"] == [1]
        reply.close()  # drop the connection
    deadline = time.monotonic() + 5
    while cancelled() == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert cancelled() == before + 1
    await asyncio.sleep(0.4)  # let the backend's thread wake up and finish within this test


def test_generate_one_response(base_url):
    reply = requests.post(
        f"{base_url}/v2/models/text/generate",
        json={"text_input": "hello world", "parameters": {"temperature": 0.5, "stream": False}},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "model_name": "text",
        "model_version": "1",
        "text_output": "hello world",
    }
    reply = requests.post(
        f"{base_url}/v2/models/square/generate", json={"IN": 1, "id": "g1"}, timeout=10
    )
    assert reply.json() == {"id": "g1", "model_name": "square", "model_version": "1", "OUT": 1}


def test_generate_parameters_and_response_parameters(base_url):
    reply = requests.post(
        f"{base_url}/v2/models/paramecho/generate",
        json={"INPUT0": [1, 2], "max_tokens": 16, "parameters": {"mode": "greedy"}},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["echoed"] is True  # response parameters are top-level keys
    seen = json.loads(doc["OUTPUT0"])
    assert seen["parameters"] == {"max_tokens": 16, "mode": "greedy"}


def test_generate_needs_exactly_one_response(base_url):
    reply = requests.post(f"{base_url}/v2/models/square/generate", json={"IN": 2}, timeout=10)
    assert reply.status_code == 500
    assert reply.json()["error"].startswith("generate expects model to produce exactly 1 response")


def test_generate_stream(base_url):
    reply = requests.post(
        f"{base_url}/v2/models/repeat/generate_stream",
        json={"IN": [7, 8, 9], "DELAY": [1, 1, 1], "WAIT": 0},
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert events(reply.text) == [
        {"model_name": "repeat", "model_version": "1", "OUT": 7, "IDX": 0},
        {"model_name": "repeat", "model_version": "1", "OUT": 8, "IDX": 1},
        {"model_name": "repeat", "model_version": "1", "OUT": 9, "IDX": 2},
    ]
    reply = requests.post(
        f"{base_url}/v2/models/square/generate_stream", json={"IN": 2}, timeout=10
    )
    assert [e["OUT"] for e in events(reply.text)] == [2, 2]
    reply = requests.post(
        f"{base_url}/v2/models/text/generate_stream", json={"text_input": "hi"}, timeout=10
    )
    assert [e["text_output"] for e in events(reply.text)] == ["hi"]


@pytest.mark.parametrize(
    ("model", "body", "status", "message"),
    [
        ("square", {"IN": [1, 2]}, 400, "can not convert input 'IN' to tensor with proper shape"),
        ("square", {"IN": "x"}, 400, "INT32 elements must be integers"),
        ("square", {"IN": 1, "extra": {"a": 1}}, 400, "parameter 'extra' has invalid type"),
        ("square", {"IN": 1, "parameters": 3}, 400, "Expected JSON object for keyword"),
        ("square", {}, 400, "expected 1 inputs but got 0 inputs"),
        ("missing", {"IN": 1}, 404, "Request for unknown model: 'missing' is not found"),
        ("text", ["a"], 400, "expected an object"),
    ],
)
def test_generate_errors(base_url, model, body, status, message):
    for kind in ("generate", "generate_stream"):
        reply = requests.post(f"{base_url}/v2/models/{model}/{kind}", json=body, timeout=10)
        assert reply.status_code == status, reply.text
        assert reply.headers["Content-Type"] == "application/json"
        assert message in reply.json()["error"]
