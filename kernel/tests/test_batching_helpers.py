"""The backends' shared batching helpers: how a batch of requests splits into executions."""

from __future__ import annotations

from nereid.runtime.batching import runs_of
from nereid.testing import make_request


def test_one_request_is_one_run() -> None:
    requests = [make_request("m", {"A": [[1.0]]})]
    assert [list(run) for run in runs_of(requests, batched=True)] == [requests]


def test_a_model_that_does_not_batch_runs_each_request_alone() -> None:
    requests = [make_request("m", {"A": [1.0]}) for _ in range(3)]
    assert [list(run) for run in runs_of(requests, batched=False)] == [[r] for r in requests]


def test_requests_leaving_out_different_optional_inputs_run_apart() -> None:
    both = [make_request("m", {"A": [[1.0]], "B": [[2.0]]}) for _ in range(2)]
    only_a = [make_request("m", {"A": [[1.0]]}) for _ in range(2)]
    b_then_a = make_request("m", {"B": [[2.0]], "A": [[1.0]]})  # input order does not matter
    requests = [both[0], only_a[0], both[1], b_then_a, only_a[1]]
    runs = [list(run) for run in runs_of(requests, batched=True)]
    assert runs == [[both[0], both[1], b_then_a], only_a]
