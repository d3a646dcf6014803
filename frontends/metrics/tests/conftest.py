"""Fixtures: servers with the http and metrics frontends over the test repository."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from metrics_support import build_repository
from nereid.inprocess import InProcessServer
from nereid.testing import ModelRepositoryBuilder


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> ModelRepositoryBuilder:
    return build_repository(tmp_path_factory.mktemp("metrics_models"))


@pytest.fixture(scope="module")
def server(repository):
    """Every model, the http and metrics frontends, summaries and histograms on."""
    with InProcessServer(
        str(repository.root),
        frontends=["http", "metrics"],
        http_port=0,
        http_address="127.0.0.1",
        metrics_port=0,
        metrics_config=[
            "summary_latencies=true",
            "summary_quantiles=0.5:0.05,0.9:0.01,0.99:0.001",
            "histogram_latencies=true",
        ],
        metrics_interval_ms=100,
    ) as running:
        yield running
