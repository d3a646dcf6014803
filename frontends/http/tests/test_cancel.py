"""A client that disconnects before its response cancels its request: a request still queued is
never executed."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import tritonclient.http as httpclient


def _stats(client) -> dict:
    return client.get_inference_statistics("slow")["model_stats"][0]


def _send_and_drop(host: str, port: int, hold_s: float) -> None:
    """POST an inference request on a raw socket and close it before the answer."""
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [2.0]}]}
    ).encode()
    head = (
        f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + body)
        time.sleep(hold_s)
    # closed here, while the first request still occupies the only instance


def test_disconnect_while_queued_is_never_executed(client, url):
    host, port = url.split(":")
    before = _stats(client)
    first: dict = {}

    def run_first() -> None:
        tensor = httpclient.InferInput("INPUT0", [1], "FP32")
        tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        started = time.monotonic()
        with httpclient.InferenceServerClient(url) as own:
            first["result"] = own.infer("slow", [tensor]).as_numpy("OUTPUT0")
        first["elapsed"] = time.monotonic() - started

    worker = threading.Thread(target=run_first)
    worker.start()
    time.sleep(0.1)  # the first request is executing (500 ms)
    _send_and_drop(host, int(port), hold_s=0.1)
    worker.join(timeout=10)
    assert first["result"].tolist() == [1.0]
    assert first["elapsed"] >= 0.45

    time.sleep(0.7)  # time enough for the second to have run, had it not been cancelled
    after = _stats(client)
    assert after["execution_count"] == before["execution_count"] + 1
    assert after["inference_count"] == before["inference_count"] + 1
    infer = after["inference_stats"]
    assert infer["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert infer["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    # the server still serves the model
    tensor = httpclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.array([3.0], dtype=np.float32))
    assert client.infer("slow", [tensor]).as_numpy("OUTPUT0").tolist() == [3.0]


def test_client_timeout_disconnect(client, url):
    """Same with a client library timing out (tritonclient's network timeout)."""
    before = _stats(client)
    tensor = httpclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    results = []

    def run(timeout: float) -> None:
        with httpclient.InferenceServerClient(url, network_timeout=timeout) as own:
            try:
                results.append(own.infer("slow", [tensor]).as_numpy("OUTPUT0").tolist())
            except Exception as exc:  # the timed-out one
                results.append(type(exc).__name__)

    slow = threading.Thread(target=run, args=(10.0,))
    slow.start()
    time.sleep(0.1)
    impatient = threading.Thread(target=run, args=(0.15,))
    impatient.start()
    impatient.join(timeout=10)
    slow.join(timeout=10)
    assert [1.0] in results
    assert len(results) == 2
    time.sleep(0.7)
    after = _stats(client)
    assert after["execution_count"] == before["execution_count"] + 1
