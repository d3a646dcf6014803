"""The metrics frontend's settings, from the server options (``--metrics-*`` flags).

``--metrics-config key=value`` takes tritonserver's keys: ``counter_latencies`` (true),
``summary_latencies`` (false), ``summary_quantiles`` (``q:error,...``) and
``histogram_latencies`` (false). Light module: the entry point and the observers import it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from nereid.errors import InvalidArgumentError
from nereid.options import str2bool

# tritonserver's default summary quantiles, as (quantile, allowed rank error) pairs
DEFAULT_QUANTILES: tuple[tuple[float, float], ...] = (
    (0.5, 0.05),
    (0.9, 0.01),
    (0.95, 0.001),
    (0.99, 0.001),
    (0.999, 0.001),
)
# prometheus-cpp's summary window, which Triton uses: 60 s in 5 age buckets
SUMMARY_MAX_AGE_S = 60.0
SUMMARY_AGE_BUCKETS = 5

_BOOL_KEYS = ("counter_latencies", "summary_latencies", "histogram_latencies")


@dataclass(frozen=True)
class MetricsSettings:
    counter_latencies: bool = True
    summary_latencies: bool = False
    summary_quantiles: tuple[tuple[float, float], ...] = DEFAULT_QUANTILES
    histogram_latencies: bool = False
    cpu: bool = True
    gpu: bool = True
    interval_s: float = 2.0


def parse_quantiles(text: str) -> tuple[tuple[float, float], ...]:
    """``0.5:0.05,0.9:0.01`` -> ((0.5, 0.05), (0.9, 0.01))."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        quantile, sep, error = item.partition(":")
        try:
            q, e = float(quantile), float(error)
        except ValueError:
            raise InvalidArgumentError(
                f"invalid summary_quantiles entry '{item}': expected <quantile>:<error>"
            ) from None
        if not sep or not 0.0 <= q <= 1.0 or not 0.0 < e < 1.0:
            raise InvalidArgumentError(
                f"invalid summary_quantiles entry '{item}': the quantile must be within "
                "[0, 1] and the error within (0, 1)"
            )
        pairs.append((q, e))
    if not pairs:
        raise InvalidArgumentError("summary_quantiles names no quantile")
    return tuple(sorted(set(pairs)))


def settings_from_options(options: argparse.Namespace) -> MetricsSettings:
    """The settings of ``options``; a malformed ``--metrics-config`` is INVALID_ARG."""
    values: dict[str, object] = {}
    for entry in getattr(options, "metrics_config", None) or ():
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep:
            raise InvalidArgumentError(
                f"invalid --metrics-config '{entry}': expected <setting>=<value>"
            )
        if key in _BOOL_KEYS:
            try:
                values[key] = str2bool(value.strip())
            except argparse.ArgumentTypeError:
                raise InvalidArgumentError(
                    f"invalid --metrics-config '{entry}': expected a boolean"
                ) from None
        elif key == "summary_quantiles":
            values[key] = parse_quantiles(value)
        else:
            raise InvalidArgumentError(
                f"unknown --metrics-config setting '{key}' (known: "
                f"{', '.join((*_BOOL_KEYS, 'summary_quantiles'))})"
            )
    interval_ms = float(getattr(options, "metrics_interval_ms", 2000) or 2000)
    if interval_ms <= 0:
        raise InvalidArgumentError("--metrics-interval-ms must be positive")
    return MetricsSettings(
        cpu=bool(getattr(options, "allow_cpu_metrics", True)),
        gpu=bool(getattr(options, "allow_gpu_metrics", True)),
        interval_s=interval_ms / 1000.0,
        **values,
    )


def metrics_enabled(options: argparse.Namespace) -> bool:
    return bool(getattr(options, "allow_metrics", True))
