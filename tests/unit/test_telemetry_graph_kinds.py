"""The request-level and retired-version Graph errors reach their own metrics (the alarms watch them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools import Metrics

from capi_relay.deliver.engine import DeliveryReport
from capi_relay.relay import BatchSummary
from capi_relay.telemetry import publish


def emitted(graph_errors: Counter[str]) -> dict[str, float]:
    metrics = Metrics(namespace="CapiRelayTest", service="capi-relay")
    summary = BatchSummary(delivery=DeliveryReport(graph_errors=graph_errors))
    publish(metrics, summary)
    blob: dict[str, Any] = dict(metrics.serialize_metric_set())
    metrics.clear_metrics()
    directives = blob.get("_aws", {}).get("CloudWatchMetrics", [{"Metrics": []}])
    names = [m["Name"] for m in directives[0]["Metrics"]]
    values = {name: blob[name] for name in names}
    return {name: float(sum(v) if isinstance(v, list) else v) for name, v in values.items()}


def test_request_level_and_retired_version_errors_are_counted() -> None:
    values = emitted(Counter({"graph_request_100": 2, "graph_request_100_1234": 1, "graph_config_2635": 3,
                              "graph_config_10": 5, "graph_invalid_100_2804003": 7}))  # fmt: skip
    assert values["GraphRequestErrors"] == 3
    assert values["GraphApiVersionRetired"] == 3


def test_not_published_when_none_happened() -> None:
    # nothing is published for zero (issue 21): the alarms treat missing data as not breaching
    values = emitted(Counter({"graph_transient_2": 1}))
    assert "GraphRequestErrors" not in values
    assert "GraphApiVersionRetired" not in values
    assert values["GraphErrors"] == 1
