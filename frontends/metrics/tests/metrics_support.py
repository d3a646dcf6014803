"""Test helpers: a repository of small models and a scrape helper that parses the exposition
with prometheus_client's own parser."""

from __future__ import annotations

import textwrap
import urllib.request
from pathlib import Path

from nereid.inprocess import InProcessServer
from nereid.testing import ModelRepositoryBuilder, repeat_config
from nereid_dynamic_batcher import TRITON_RULE
from prometheus_client.parser import text_string_to_metric_families

IDENTITY = """
backend: "identity"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{extra}
"""

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "300" } }'

REPEAT = repeat_config(
    extra="""
model_metrics {
  metric_control: [
    {
      metric_identifier: { family: "nv_inference_first_response_histogram_ms" }
      histogram_options: { buckets: [ 10, 40, 1000 ] }
    }
  ]
}
"""
)

PYTHON_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# A Python-backend model that counts its calls in custom metrics and raises on negative input.
PYTHON_MODEL = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            labels = {"model": args["model_name"], "version": args["model_version"]}
            self.calls = pb_utils.MetricFamily(
                name="custom_calls_total",
                description="requests seen by the model",
                kind=pb_utils.MetricFamily.COUNTER,
            ).Metric(labels=labels)
            self.last = pb_utils.MetricFamily(
                "custom_last_size", "size of the last input", pb_utils.MetricFamily.GAUGE
            ).Metric(labels=labels)
            self.sizes = pb_utils.MetricFamily(
                "custom_sizes", "input sizes", pb_utils.MetricFamily.HISTOGRAM
            ).Metric(labels=labels, buckets=[1.0, 4.0])

        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                self.calls.increment(1)
                self.last.set(data.size)
                self.sizes.observe(data.size)
                if (data < 0).any():
                    raise pb_utils.TritonModelException("negative input")
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]))
            return responses
    """
)


def build_repository(root: Path) -> ModelRepositoryBuilder:
    builder = ModelRepositoryBuilder(root)
    builder.add("identity", IDENTITY.format(max_batch_size=8, extra=""))
    # one instance, 300 ms per execution: requests pile up behind it
    builder.add("slow", IDENTITY.format(max_batch_size=0, extra=SLOW))
    # a queue of one request in front of the slow instance: more are REJECTED
    builder.add(
        "bounded",
        IDENTITY.format(
            max_batch_size=4,
            extra=SLOW + "\ndynamic_batching { default_queue_policy { max_queue_size: 1 } }",
        ),
    )
    # requests wait up to 200 ms to be batched together (Triton's rule: the batcher's fair
    # share would send the first request alone at once)
    builder.add(
        "batched",
        IDENTITY.format(
            max_batch_size=8,
            extra=f"dynamic_batching {{ max_queue_delay_microseconds: 200000 }}\n{TRITON_RULE}",
        ),
    )
    builder.add("repeat", REPEAT)
    builder.add("pymodel", PYTHON_CONFIG, versions={1: {"model.py": PYTHON_MODEL}})
    return builder


def scrape(port: int) -> dict:
    """The families of ``/metrics``, by name (a counter's samples are named ``<name>_total``
    by the parser)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    """The value of the one sample of ``family`` with these labels (``sample``: its name when
    not the family's own, e.g. ``_count``)."""
    names = {family + s for s in (sample,)} if sample else {family, family + "_total"}
    found = [
        s.value
        for s in families[family].samples
        if s.name in names and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (family, sample, labels, families[family].samples)
    return found[0]


def ports(server: InProcessServer) -> tuple[int, int]:
    frontends = server.server.frontends
    return frontends["http"].port, frontends["metrics"].port
