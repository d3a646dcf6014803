"""The ``priority`` and ``timeout`` request parameters of the HTTP and gRPC frontends, sent by
``tritonclient``, take effect in the dynamic batcher.

Each test is skipped, with the reason, when its frontend distribution (``nereid-http``,
``nereid-grpc``) or the matching ``tritonclient`` extra is not installed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from nereid.testing import ManualClock, frontend_url, serve_in_process

CONFIG = """
backend: "recorder"
max_batch_size: 1
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching {
  priority_levels: 3 default_priority_level: 2
  default_queue_policy { default_timeout_microseconds: 60000000 allow_timeout_override: true }
}
"""


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


class _Client:
    """Sends requests without waiting for them: each on a thread of its own, with a client of
    its own (tritonclient.http's ``async_infer`` only sends while its gevent hub runs)."""

    def __init__(self, frontend: str, url: str) -> None:
        if frontend == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        self.module = module
        self.url = url
        self.pool = ThreadPoolExecutor(8)

    def _infer(self, rid: str, kwargs: dict):
        client = self.module.InferenceServerClient(self.url)
        try:
            tensor = self.module.InferInput("INPUT0", [1, 2], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 2), np.float32))
            return client.infer("m", [tensor], request_id=rid, **kwargs)
        finally:
            client.close()

    def send(self, rid: str, **kwargs):
        """Start a request; returns a function that waits for its result."""
        future = self.pool.submit(self._infer, rid, kwargs)
        return lambda: future.result(timeout=10)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(params=["http", "grpc"])
def frontend(request):
    name = request.param
    pytest.importorskip(f"nereid_{name}", reason=f"the nereid-{name} frontend is not installed")
    pytest.importorskip(f"tritonclient.{name}", reason=f"tritonclient[{name}] is not installed")
    return name


@pytest.fixture
def served(frontend, model_repository, recorder, kit):
    model_repository.add("m", CONFIG)
    clock = ManualClock()
    with serve_in_process(
        model_repository.root, [frontend], plugins=[kit.RecorderPlugin(recorder)], clock=clock
    ) as server:
        client = _Client(frontend, frontend_url(server, frontend))
        try:
            yield server, client, clock
        finally:
            recorder.gate.set()
            client.close()


def test_priority_and_timeout_over_the_wire(served, recorder):
    server, client, clock = served
    scheduler = server.api.model("m").scheduler
    held = client.send("hold", parameters={"hold": True})
    _wait(recorder.holding.is_set)
    low = client.send("low", priority=3)
    unset = client.send("unset")
    top = client.send("top", priority=1)
    short = client.send("short", timeout=1000)  # microseconds; shorter than the default
    _wait(lambda: scheduler.queued() == 4)
    server._call(clock.advance(0.002))
    with pytest.raises(Exception, match="Request timeout expired"):
        short()
    recorder.gate.set()
    for result in (held, low, unset, top):
        result()
    assert recorder.ids() == [["hold"], ["top"], ["unset"], ["low"]]
