"""Streaming quantiles for the latency summaries: targeted quantiles over a sliding window.

:class:`TargetedQuantiles` is the CKMS algorithm (Cormode, Korn, Muthukrishnan and Srivastava,
"Effective computation of biased quantiles over data streams", 2005) for a set of targets
``(q, e)``: the estimate of quantile ``q`` has a rank within ``e * n`` of the true one, in
memory that grows with ``log(e * n) / e`` rather than with ``n``. Observations are merged in
batches: numpy does the merge, the compress pass is one Python loop over the samples.

:class:`WindowQuantiles` keeps one such summary per age bucket (Triton's window: 60 s in 5
buckets of 12 s); an observation goes to the newest bucket only, and a query merges the live
buckets' samples by weight, so the window slides without inserting every value five times.

Single-threaded: the observers and the scrape both run on the server's event loop.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

_BUFFER = 512


class _Invariant:
    """The CKMS error function f(r, n) of a set of targets, vectorized.

    f(r, n) = min over targets j of ``2 e_j r / q_j`` when ``r >= q_j n``, else
    ``2 e_j (n - r) / (1 - q_j)``. With the targets sorted by q, the targets with
    ``q_j <= r / n`` form a prefix, so the minimum is a prefix minimum and a suffix minimum.
    """

    __slots__ = ("_high", "_high_list", "_low", "_low_list", "_qs", "_qs_list")

    def __init__(self, targets: Sequence[tuple[float, float]]) -> None:
        ordered = sorted(targets)
        low = [2 * e / q if q > 0 else math.inf for q, e in ordered]
        high = [2 * e / (1 - q) if q < 1 else math.inf for q, e in ordered]
        # low[k]: min of the slopes of targets 0..k-1 (those at or below r/n)
        prefix = [math.inf]
        for slope in low:
            prefix.append(min(prefix[-1], slope))
        # high[k]: min of the slopes of targets k.. (those above r/n)
        suffix = [math.inf] * (len(high) + 1)
        for k in range(len(high) - 1, -1, -1):
            suffix[k] = min(suffix[k + 1], high[k])
        self._qs_list, self._low_list, self._high_list = [q for q, _ in ordered], prefix, suffix
        self._qs, self._low, self._high = (
            np.array(self._qs_list),
            np.array(prefix),
            np.array(suffix),
        )

    def __call__(self, rank: np.ndarray, n: np.ndarray | int) -> np.ndarray:
        k = np.searchsorted(self._qs, rank / np.maximum(n, 1), side="right")
        with np.errstate(invalid="ignore"):  # 0 * inf where a side has no target: no bound
            return np.fmin(rank * self._low[k], (n - rank) * self._high[k])

    def scalar(self, rank: float, n: int) -> float:
        k = bisect.bisect_right(self._qs_list, rank / n) if n else 0
        low, high = self._low_list[k], self._high_list[k]
        below = rank * low if rank or low != math.inf else math.inf  # 0 * inf: no bound
        above = (n - rank) * high if n != rank or high != math.inf else math.inf
        return min(below, above)


_EMPTY = np.empty(0)


class TargetedQuantiles:
    """CKMS targeted quantiles: sorted sample ``values``, each with ``g`` (its rank gap to
    the previous sample) and ``delta`` (the uncertainty of its rank)."""

    __slots__ = ("_f", "count", "delta", "g", "values")

    def __init__(self, invariant: _Invariant) -> None:
        self._f = invariant
        self.values = self.g = self.delta = _EMPTY
        self.count = 0

    def insert(self, new: np.ndarray) -> None:
        """Insert observations (vectorized), then compress."""
        if not len(new):
            return
        new = np.sort(np.asarray(new, dtype=np.float64))
        size, m = len(self.values), len(new)
        k = np.arange(m)
        if size:
            position = np.searchsorted(self.values, new, side="right")
            before = np.concatenate(([0.0], np.cumsum(self.g)))
            rank = before[position] + k  # samples before it, old and new
        else:
            position = np.zeros(m, dtype=np.int64)
            rank = k.astype(np.float64)
        count = self.count + k + 1
        delta = np.maximum(np.floor(self._f(rank, count)) - 1, 0.0)
        # a new minimum or maximum is known exactly
        delta[(position == size) | ((position == 0) & (k == 0))] = 0.0
        values = np.concatenate((self.values, new))
        order = np.argsort(values, kind="stable")  # equal values: the old sample first
        self.count += m
        self._compress(
            values[order],
            np.concatenate((self.g, np.ones(m)))[order],
            np.concatenate((self.delta, delta))[order],
        )

    def _compress(self, values: np.ndarray, g: np.ndarray, delta: np.ndarray) -> None:
        """Merge each sample into its successor while the invariant allows. The first and the
        last sample stay, so the minimum and the maximum are exact."""
        size = len(values)
        if size < 3:
            self.values, self.g, self.delta = values, g, delta
            return
        ranks = np.cumsum(g) - g
        allowed = self._f(ranks, self.count).tolist()
        gaps, deltas = g.tolist(), delta.tolist()
        keep = [size - 1]
        successor, carried, successor_delta = size - 1, gaps[-1], deltas[-1]
        for index in range(size - 2, 0, -1):
            gap = gaps[index]
            if gap + carried + successor_delta <= allowed[index]:
                carried += gap
            else:
                gaps[successor] = carried
                keep.append(index)
                successor, carried, successor_delta = index, gap, deltas[index]
        gaps[successor] = carried
        keep.append(0)
        keep.reverse()
        self.values = values[keep]
        self.g = np.asarray(gaps)[keep]
        self.delta = delta[keep]

    def query(self, quantiles: Sequence[float]) -> list[float]:
        values = self.values
        if not len(values):
            return [math.nan] * len(quantiles)
        n = self.count
        f = self._f.scalar
        bounds = []
        for q in quantiles:
            desired = min(max(math.ceil(q * n), 1), n)  # the nearest rank, 1-based
            bounds.append(desired + f(desired, n) / 2)
        # For each quantile, the first sample i >= 1 whose largest possible rank (rmin + delta)
        # passes the bound; the answer is sample i - 1. A running maximum makes the largest
        # ranks monotonic, so one search answers every quantile.
        upper = np.maximum.accumulate((np.cumsum(self.g) + self.delta)[1:])
        found = np.searchsorted(upper, bounds, side="right")
        return values[np.minimum(found, len(values) - 1)].tolist()


def weighted_quantiles(
    summaries: Sequence[TargetedQuantiles], quantiles: Sequence[float]
) -> list[float]:
    """Quantiles of the union of several summaries: their samples weighted by g."""
    live = [s for s in summaries if s.count]
    if not live:
        return [math.nan] * len(quantiles)
    if len(live) == 1:
        return live[0].query(quantiles)
    values = np.concatenate([s.values for s in live])
    order = np.argsort(values, kind="stable")
    values = values[order]
    cumulative = np.cumsum(np.concatenate([s.g for s in live])[order])
    found = np.searchsorted(cumulative, np.asarray(quantiles) * cumulative[-1])
    return values[np.minimum(found, len(values) - 1)].tolist()


class WindowQuantiles:
    """Targeted quantiles of the observations of the last ``max_age`` seconds.

    Times are ``time.monotonic_ns`` values that the caller already holds (a request's
    completion, a batch's end), so observing reads no clock. Observations are taken one at a
    time (:meth:`observe`, buffered) or as an array (:meth:`observe_many`).
    """

    __slots__ = ("_buckets", "_buffer", "_clock", "_invariant", "_rotated", "_span")

    def __init__(
        self,
        targets: Sequence[tuple[float, float]],
        max_age: float = 60.0,
        age_buckets: int = 5,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._invariant = _Invariant(targets)
        self._span = int(max_age * 1e9 / age_buckets)
        self._clock = clock
        # the last bucket is the newest: it takes the observations
        self._buckets = [TargetedQuantiles(self._invariant) for _ in range(age_buckets)]
        self._buffer: list[float] = []
        self._rotated = clock()

    def observe(self, value: float, now_ns: int) -> None:
        if now_ns - self._rotated >= self._span:
            self.rotate(now_ns)
        buffer = self._buffer
        buffer.append(value)
        if len(buffer) >= _BUFFER:
            self._flush()

    def observe_many(self, values: np.ndarray, now_ns: int) -> None:
        if now_ns - self._rotated >= self._span:
            self.rotate(now_ns)
        if self._buffer:
            values = np.concatenate((np.asarray(self._buffer), values))
            self._buffer = []
        self._buckets[-1].insert(values)

    def _flush(self) -> None:
        if self._buffer:
            self._buckets[-1].insert(np.asarray(self._buffer))
            self._buffer = []

    def rotate(self, now_ns: int) -> None:
        """Retire the buckets that have left the window; a fresh bucket takes observations."""
        steps = (now_ns - self._rotated) // self._span
        if steps <= 0:
            return
        self._flush()  # what was observed before belongs to the bucket that is ending
        buckets = self._buckets
        for _ in range(min(steps, len(buckets))):
            buckets.pop(0)
            buckets.append(TargetedQuantiles(self._invariant))
        self._rotated += steps * self._span

    def query(self, quantiles: Sequence[float]) -> list[float]:
        self.rotate(self._clock())
        self._flush()
        return weighted_quantiles(self._buckets, quantiles)
