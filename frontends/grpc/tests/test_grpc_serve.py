"""Against a real ``nereid serve`` process: the entry point, the flags, start and stop."""

from __future__ import annotations

import queue
import signal

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_testsupport import build_repository
from nereid.testing import free_port, serve_process


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = build_repository(tmp_path_factory.mktemp("served"))
    port = free_port()
    arguments = [
        "--model-repository",
        str(repo.root),
        "--plugins",
        "nereid-grpc",  # only this frontend: no other listens on its default port
        "--grpc-port",
        str(port),
        "--grpc-address",
        "127.0.0.1",
        "--model-control-mode=explicit",
        "--load-model=identity",
        "--load-model=repeat",
        "--exit-timeout-secs=5",
    ]
    log = tmp_path_factory.mktemp("log") / "serve.log"
    url = f"127.0.0.1:{port}"

    def ready() -> bool:
        with grpcclient.InferenceServerClient(url) as client:
            return client.is_server_ready(client_timeout=1)

    with serve_process(arguments, log, ready) as process:
        yield process, url, log


def test_serve_infers_and_streams(served):
    _, url, _ = served
    with grpcclient.InferenceServerClient(url) as client:
        data = np.arange(16, dtype=np.float32).reshape(1, 16)
        tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        tensor.set_data_from_numpy(data)
        result = client.infer("identity", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
        assert not client.is_model_ready("square")  # not loaded in explicit mode

        items: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: items.put((result, error)))
        inputs = []
        for name, values, datatype in (
            ("IN", np.array([7, 8], dtype=np.int32), "INT32"),
            ("DELAY", np.array([1, 1], dtype=np.uint32), "UINT32"),
            ("WAIT", np.array([1], dtype=np.uint32), "UINT32"),
        ):
            item = grpcclient.InferInput(name, list(values.shape), datatype)
            item.set_data_from_numpy(values)
            inputs.append(item)
        client.async_stream_infer("repeat", inputs, enable_empty_final_response=True)
        got = [items.get(timeout=10) for _ in range(3)]
        client.stop_stream()
        assert [r.as_numpy("OUT")[0] for r, _ in got[:2]] == [7, 8]
        assert got[2][0].get_response().parameters["triton_final_response"].bool_param


def test_serve_stops_on_sigterm(served):
    process, _, log = served
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert "Started GRPCInferenceService at 127.0.0.1" in log.read_text()
