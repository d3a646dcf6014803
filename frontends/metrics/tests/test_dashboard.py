"""docs/grafana_dashboard.json: valid, and every query names a metric the frontend exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nereid_metrics.collector import BUILTIN_NAMES, SUMMARIES

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana_dashboard.json"


def test_dashboard_queries_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exported = set(BUILTIN_NAMES)
    exported |= {name + suffix for _, name, _ in SUMMARIES for suffix in ("_sum", "_count")}
    histogram = "nv_inference_first_response_histogram_ms"
    exported |= {histogram + suffix for suffix in ("_bucket", "_sum", "_count")}
    queried = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bnv_[a-z_]+", target["expr"]))
            assert names, target["expr"]
            assert names <= exported, (panel["title"], names - exported)
            queried |= names
    # every family of the frontend has a panel (two of the five summaries excepted)
    missing = {n for n in BUILTIN_NAMES if not any(q.startswith(n) for q in queried)}
    assert missing <= {
        "nv_inference_compute_input_summary_us",
        "nv_inference_compute_output_summary_us",
    }
