"""The entry point: cheap to import, and the tracer's life with the server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from tracing_testsupport import read_entries, start, traces_of


def test_entry_point_imports_nothing_heavy():
    code = (
        "import sys, nereid_tracing.plugin\n"
        "heavy = [m for m in ('opentelemetry', 'aiohttp', 'grpc', 'nereid_tracing.tracer',"
        " 'nereid_tracing.otel') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_traces_in_flight_at_stop_are_flushed(repo, tmp_path):
    path = tmp_path / "trace.json"
    server = start(
        repo,
        [f"triton,file={path}", "triton,log-frequency=100", "rate=1", "level=TIMESTAMPS"],
        frontends=[],
    )
    try:
        for i in range(3):
            server.infer("ident", {"IN": np.array([float(i)], np.float32)}, id=f"s-{i}")
        assert server.api.tracer is not None
        assert not (tmp_path / "trace.json.0").exists()  # 3 of 100 collected
    finally:
        server.stop()
    traces = traces_of(read_entries(tmp_path / "trace.json.0"))
    assert sorted(t["request_id"] for t in traces.values()) == ["s-0", "s-1", "s-2"]
