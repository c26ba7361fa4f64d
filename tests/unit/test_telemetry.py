"""Telemetry costs nothing while nothing happens (issue 21): no metric is published for zero, breakdowns by reason
are log lines, and every alarm on a custom metric still gets its datapoint when its condition happens."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from bench.cfn import load_template, parameter_default
from capi_relay.deliver.engine import DeliveryReport
from capi_relay.relay import BatchSummary
from capi_relay.telemetry import REASON_LINE, publish, put_count

ROOT = Path(__file__).resolve().parents[2]


def published(summary: BatchSummary, *, production_test_code: bool = False) -> dict[str, list[float]]:
    """Metric name -> the values published for this summary (EMF through Powertools, not printed)."""
    metrics = Metrics(namespace="CapiRelayTest", service="capi-relay")
    metrics.clear_metrics()
    publish(metrics, summary, production_test_code=production_test_code)
    out = {name: [float(v) for v in m["Value"]] for name, m in metrics.metric_set.items()}
    metrics.clear_metrics()
    return out


@dataclass
class Captured:
    records: list[logging.LogRecord]

    def reason_lines(self) -> list[tuple[str, str, int]]:
        return [(r.metric, r.reason, r.value) for r in self.records if r.getMessage() == REASON_LINE]  # type: ignore[attr-defined]


@pytest.fixture
def logs() -> Iterator[Captured]:
    """Records of the telemetry logger, captured on the logger itself (the handler module may have given the
    capi_relay loggers their own handlers and turned propagation off)."""
    captured = Captured([])

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.records.append(record)

    target = logging.getLogger("capi_relay.telemetry")
    handler, level = Keep(level=logging.DEBUG), target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


def healthy() -> BatchSummary:
    return BatchSummary(
        records=3, records_delivered=3, events_prepared=3, match_keys=Counter({4: 3}),
        delivery=DeliveryReport(delivered_events=3, requests=1, latencies_ms=[120.0]),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ no zeros
def test_an_invocation_where_nothing_happened_publishes_no_metric() -> None:
    assert published(BatchSummary()) == {}


def test_a_healthy_batch_publishes_only_what_is_not_zero() -> None:
    values = published(healthy())
    assert set(values) == {"RecordsReceived", "RecordsDelivered", "EventsPrepared", "EventsAccepted",
                           "GraphRequests", "GraphLatency", "MatchKeysPerEvent"}  # fmt: skip
    assert all(v != 0 for vs in values.values() for v in vs)
    for quiet in ("RecordsFailed", "EventsRejected", "GraphErrors", "AuthFailures", "EventsQuarantined",
                  "EventsDeadLettered", "EventsResent", "GraphRequestErrors", "GraphApiVersionRetired"):  # fmt: skip
        assert quiet not in values, quiet


def test_put_count_skips_zero_and_publishes_anything_else() -> None:
    metrics = Metrics(namespace="CapiRelayTest", service="capi-relay")
    metrics.clear_metrics()
    put_count(metrics, "Zero", 0)
    put_count(metrics, "ZeroFloat", 0.0)
    put_count(metrics, "One", 1)
    put_count(metrics, "Negative", -2)
    assert {name: m["Value"] for name, m in metrics.metric_set.items()} == {"One": [1.0], "Negative": [-2.0]}
    metrics.clear_metrics()


# ------------------------------------------------------------------------------------------ reasons
def test_reasons_are_log_lines_not_metric_dimensions(logs: Captured) -> None:
    summary = BatchSummary(
        records=2, records_failed=1, failures=Counter({"graph_transient_2": 1}),
        events_rejected=Counter({"event_too_old": 2, "never": 0}), quarantined=Counter({"event_too_old": 2}),
        notes=Counter({"event_time_ms": 1}), fields_dropped=Counter({("ph", "invalid_phone"): 3}),
        delivery=DeliveryReport(graph_errors=Counter({"graph_transient_2": 1})),
    )  # fmt: skip
    metrics = Metrics(namespace="CapiRelayTest", service="capi-relay")
    metrics.clear_metrics()
    publish(metrics, summary)
    assert metrics.dimension_set == {}  # only the default dimension (service): no reason, note, field_reason
    assert not any(name.endswith(("ByReason", "ByCode")) or name == "EventAdjustments" for name in metrics.metric_set)
    metrics.clear_metrics()
    assert sorted(logs.reason_lines()) == sorted([
        ("RecordFailuresByReason", "graph_transient_2", 1),
        ("EventsRejectedByReason", "event_too_old", 2),
        ("EventsQuarantinedByReason", "event_too_old", 2),
        ("GraphErrorsByCode", "graph_transient_2", 1),
        ("EventAdjustments", "event_time_ms", 1),
        ("FieldsDroppedByReason", "ph:invalid_phone", 3),
    ])  # fmt: skip


def test_a_healthy_batch_logs_no_reason_line(logs: Captured) -> None:
    published(healthy())
    assert logs.reason_lines() == []
    assert [r.getMessage() for r in logs.records] == ["batch done"]


# ------------------------------------------------------------------------------------------ alarms
# For each alarm on a relay metric: a batch in which its condition happens (and the production flag).
CONDITIONS: dict[str, tuple[BatchSummary, bool]] = {
    "DeadLetteredEventsAlarm": (BatchSummary(records=1, records_failed=1, events_dead_lettered=3), False),
    "QuarantinedEventsAlarm": (BatchSummary(records=1, records_delivered=1,
                                            quarantined=Counter({"graph_invalid_100_2804003": 2})), False),
    "AuthFailuresAlarm": (BatchSummary(records=1, records_failed=1, failures=Counter({"graph_auth_190": 1})), False),
    "GraphRequestErrorsAlarm": (BatchSummary(records=1, records_failed=1,
                                             delivery=DeliveryReport(graph_errors=Counter({"graph_request_100": 1}))),
                                False),
    "GraphApiVersionRetiredAlarm": (BatchSummary(records=1, records_failed=1, delivery=DeliveryReport(
                                        graph_errors=Counter({"graph_config_2635": 1}))), False),
    "TestEventCodeInProductionAlarm": (healthy(), True),
    # every event rejected: nothing prepared, so EventsPrepared is not published at all
    "RejectedEventRateAlarm": (BatchSummary(records=5, records_delivered=5,
                                            events_rejected=Counter({"event_too_old": 5})), False),
    "ResentEventRateAlarm": (BatchSummary(records=10, records_delivered=10, events_prepared=10,
                                          delivery=DeliveryReport(delivered_events=10, requests=2, resent_events=1)),
                             False),
}  # fmt: skip


def relay_alarms() -> dict[str, dict[str, Any]]:
    """Alarms on the relay's own metrics (namespace MetricsNamespace), thresholds resolved to their defaults."""
    template = load_template(ROOT / "template.yaml")
    out = {}
    for aid, alarm in template["Resources"].items():
        if alarm["Type"] != "AWS::CloudWatch::Alarm":
            continue
        if alarm.get("Condition") == "QualityReaderOn":
            continue  # the quality reader's alarms: their conditions are modelled in tests/unit/test_quality.py
        if aid == "GraphApiVersionExpiringAlarm":
            continue  # a low value alarms (days left): tests/unit/test_template.py and test_handler.py cover it
        props = alarm["Properties"]
        stats = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
        namespaces = [props.get("Namespace")] + [s["Namespace"] for s in stats]
        if {"Ref": "MetricsNamespace"} in namespaces:
            out[aid] = {**props, "Threshold": float(parameter_default(template, props["Threshold"]))}
    return out


def _alarm_value(props: dict[str, Any], values: dict[str, list[float]]) -> float:
    """The alarm's value over this one batch: Sum of its metric, or its expression with missing metrics as CloudWatch
    leaves them (FILL(m, 0) gives 0; a bare missing metric gives no value at all: NaN here)."""
    if "MetricName" in props:
        assert props["Statistic"] == "Sum"
        return sum(values.get(props["MetricName"], [float("nan")]))
    ids = {m["Id"]: sum(values[n]) if (n := m["MetricStat"]["Metric"]["MetricName"]) in values else float("nan")
           for m in props["Metrics"] if "MetricStat" in m}  # fmt: skip
    (expression,) = [m["Expression"] for m in props["Metrics"] if m.get("ReturnData")]
    functions = {"IF": lambda c, a, b: a if c else b, "FILL": lambda v, d: d if v != v else v}
    result: float = eval(expression, {"__builtins__": {}}, {**functions, **ids})  # the template's own text
    return result


def test_every_relay_alarm_has_a_condition_here() -> None:
    assert set(relay_alarms()) == set(CONDITIONS)


@pytest.mark.parametrize("alarm_id", sorted(CONDITIONS))
def test_each_alarm_gets_a_breaching_datapoint_when_its_condition_happens(alarm_id: str) -> None:
    props = relay_alarms()[alarm_id]
    summary, production = CONDITIONS[alarm_id]
    values = published(summary, production_test_code=production)
    value = _alarm_value(props, values)
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert value > props["Threshold"], (alarm_id, value, values)


@pytest.mark.parametrize("alarm_id", sorted(CONDITIONS))
def test_no_alarm_breaches_on_a_healthy_batch(alarm_id: str) -> None:
    props = relay_alarms()[alarm_id]
    value = _alarm_value(props, published(healthy()))
    assert not value > props["Threshold"], alarm_id
