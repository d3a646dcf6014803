"""The summaries' streaming quantiles: rank error within the targets, bounded memory, a window
that slides."""

from __future__ import annotations

import bisect
import math
import random

import pytest
from nereid_metrics.quantiles import WindowQuantiles
from nereid_metrics.settings import DEFAULT_QUANTILES

QUANTILES = [q for q, _ in DEFAULT_QUANTILES]


def _rank_error(data: list[float], estimate: float, q: float) -> float:
    """How many ranks the estimate is from the nearest-rank quantile, over n."""
    ordered = sorted(data)
    n = len(ordered)
    target = min(max(math.ceil(q * n), 1), n)
    low = bisect.bisect_left(ordered, estimate) + 1
    high = bisect.bisect_right(ordered, estimate)
    return 0.0 if low <= target <= high else min(abs(low - target), abs(high - target)) / n


@pytest.mark.parametrize("n", [1, 7, 100, 3000, 40000])
@pytest.mark.parametrize("distribution", ["uniform", "lognormal", "constant"])
def test_rank_error_within_targets(n, distribution):
    rng = random.Random(n)
    draw = {
        "uniform": lambda: rng.random() * 1000,
        "lognormal": lambda: rng.lognormvariate(5, 1.5),
        "constant": lambda: 42.0,
    }[distribution]
    data = [draw() for _ in range(n)]
    window = WindowQuantiles(DEFAULT_QUANTILES, clock=lambda: 0)
    for item in data:
        window.observe(item, 0)
    for (q, error), estimate in zip(DEFAULT_QUANTILES, window.query(QUANTILES), strict=True):
        assert _rank_error(data, estimate, q) <= error + 1e-12, (q, estimate)


def test_memory_stays_bounded():
    window = WindowQuantiles(DEFAULT_QUANTILES, clock=lambda: 0)
    rng = random.Random(1)
    for _ in range(100_000):
        window.observe(rng.expovariate(0.01), 0)
    window.query(QUANTILES)
    assert sum(len(bucket.values) for bucket in window._buckets) < 2000


def test_small_sets_are_exact():
    window = WindowQuantiles([(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)], clock=lambda: 0)
    for item in [5.0, 1.0, 4.0, 2.0, 3.0]:
        window.observe(item, 0)
    assert window.query([0.5, 0.9, 0.99]) == [3.0, 5.0, 5.0]


def test_empty_window_is_nan():
    window = WindowQuantiles(DEFAULT_QUANTILES)
    assert all(math.isnan(v) for v in window.query(QUANTILES))


def test_window_slides():
    second = 1_000_000_000
    now = [0]
    window = WindowQuantiles([(0.5, 0.01)], max_age=60.0, age_buckets=5, clock=lambda: now[0])

    def observe(value: float, count: int, at: float) -> None:
        now[0] = int(at * second)
        for _ in range(count):
            window.observe(value, now[0])

    observe(1000.0, 100, at=0)
    observe(1.0, 300, at=30)
    assert window.query([0.5]) == [1.0]  # all 400 in the window: mostly 1.0
    observe(1000.0, 20, at=59)
    now[0] = 70 * second  # the first 100 have left the window; the 300 and the 20 remain
    assert window.query([0.5, 0.99]) == [1.0, 1000.0]
    now[0] = 95 * second  # only the last 20 remain
    assert window.query([0.5]) == [1000.0]
    now[0] = 200 * second
    assert math.isnan(window.query([0.5])[0])
