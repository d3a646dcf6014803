"""Prometheus text format 0.0.4, with Triton's metric names.

prometheus_client's own ``generate_latest`` renames every counter family to ``<name>_total``
(the OpenMetrics convention); Triton's counters have no such suffix (``nv_inference_count``),
and dashboards and alerts written for Triton query those names. This writer prints each family
under the name its samples carry, which is otherwise what ``generate_latest`` prints.

OpenMetrics is not offered: a Prometheus server that negotiated it would store Triton's
counters as ``..._total`` series.
"""

from __future__ import annotations

from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INF, _NEG_INF = float("inf"), float("-inf")

_TYPES = {
    "unknown": "untyped",
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
}


def _escape_label(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _value(value: float | int) -> str:
    if type(value) is int:
        return str(value)
    if value != value or value in (_INF, _NEG_INF):
        return floatToGoString(value)  # NaN, +Inf, -Inf
    return repr(float(value))


def generate_text(registry: Collector) -> bytes:
    """Every family the registry collects, in the text format."""
    out: list[str] = []
    append = out.append
    # label sets by identity: a model's label dict is shared by many of its samples. The dict
    # is kept with its text, so no id is reused while the cache lives.
    label_text: dict[int, tuple[dict, str]] = {}
    for metric in registry.collect():
        name, kind = metric.name, metric.type
        samples = metric.samples
        if kind == "counter" and samples and samples[0].name == name + "_total":
            name += "_total"  # a prometheus_client Counter: its samples carry the suffix
        elif kind == "info":
            name += "_info"
        append(f"# HELP {name} {_escape_help(metric.documentation)}\n")
        append(f"# TYPE {name} {_TYPES.get(kind, kind)}\n")
        for sample in samples:
            if sample.name.endswith("_created") and sample.name == metric.name + "_created":
                continue  # prometheus_client's creation times: not part of Triton's output
            labels = sample.labels
            if labels:
                cached = label_text.get(id(labels))
                if cached is None:
                    text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                    cached = label_text[id(labels)] = (labels, "{" + text + "}")
                append(f"{sample.name}{cached[1]} {_value(sample.value)}\n")
            else:
                append(f"{sample.name} {_value(sample.value)}\n")
    return "".join(out).encode()
