"""A real ``nereid serve`` process with the HTTP frontend, driven over its socket."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from nereid.testing import ModelRepositoryBuilder, free_port, serve_process


@pytest.fixture
def serve(tmp_path):
    builder = ModelRepositoryBuilder(tmp_path / "models")
    builder.identity("identity", "TYPE_INT64", "[ -1 ]", max_batch_size=4)
    port = free_port()
    arguments = [
        "--model-repository",
        str(builder.root),
        "--plugins",
        "nereid-http",
        "--http-address",
        "127.0.0.1",
        f"--http-port={port}",
        "--http-thread-count",
        "3",
    ]
    log = tmp_path / "server.log"

    def ready() -> bool:
        return requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).ok

    with serve_process(arguments, log, ready) as process:
        yield process, port, log


def test_nereid_serve(serve):
    process, port, log_path = serve
    with httpclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.is_server_live()
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        values = np.array([[1, -2, 3]], dtype=np.int64)
        for binary in (True, False):
            tensor = httpclient.InferInput("INPUT0", [1, 3], "INT64")
            tensor.set_data_from_numpy(values, binary_data=binary)
            result = client.infer(
                "identity",
                [tensor],
                outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
            )
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    log = log_path.read_text()
    assert f"Started HTTPService at 127.0.0.1:{port}" in log
    assert "--http-thread-count=3 is accepted for compatibility and ignored" in log
