"""BatchSummary -> CloudWatch metrics (EMF through Powertools) and one summary log line.

Metric names are a contract with the template's alarms and dashboard (see README, "Metrics").
Per-reason counts go out as ``single_metric`` blobs with a ``reason`` (or ``field``) dimension.
"""

from __future__ import annotations

import logging
from collections import Counter

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from capi_relay.relay import BatchSummary

logger = logging.getLogger(__name__)


def _by_dimension(metrics: Metrics, name: str, dimension: str, counts: Counter[str]) -> None:
    for value, count in counts.items():
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=count,
            namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name=dimension, value=value)


def publish(metrics: Metrics, summary: BatchSummary, *, production_test_code: bool = False) -> None:
    """Emit the batch's metrics and summary line. Never raises: telemetry must not fail a delivered batch."""
    try:
        _publish(metrics, summary, production_test_code)
    except Exception:
        logger.exception("could not publish metrics for this batch")


def _publish(metrics: Metrics, summary: BatchSummary, production_test_code: bool) -> None:
    d = summary.delivery
    add = metrics.add_metric
    add(name="RecordsReceived", unit=MetricUnit.Count, value=summary.records)
    add(name="RecordsDelivered", unit=MetricUnit.Count, value=summary.records_delivered)
    add(name="RecordsFailed", unit=MetricUnit.Count, value=summary.records_failed)
    add(name="EventsPrepared", unit=MetricUnit.Count, value=summary.events_prepared)
    add(name="EventsRejected", unit=MetricUnit.Count, value=sum(summary.events_rejected.values()))
    add(name="EventsAccepted", unit=MetricUnit.Count, value=d.delivered_events)
    add(name="GraphRequests", unit=MetricUnit.Count, value=d.requests)
    add(name="GraphErrors", unit=MetricUnit.Count, value=sum(d.graph_errors.values()))
    add(name="GraphRetries", unit=MetricUnit.Count, value=d.retries)
    add(name="GraphThrottles", unit=MetricUnit.Count, value=d.throttles)
    add(name="AuthRefreshes", unit=MetricUnit.Count, value=d.auth_refreshes)
    add(name="BisectSplits", unit=MetricUnit.Count, value=d.splits)
    add(name="BatchSize", unit=MetricUnit.Count, value=summary.records)
    add(name="FieldsDropped", unit=MetricUnit.Count, value=sum(summary.fields_dropped.values()))
    auth_failures = sum(n for r, n in summary.failures.items() if r.startswith("graph_auth") or r == "secret_malformed")
    add(name="AuthFailures", unit=MetricUnit.Count, value=auth_failures)
    # Each event's fate: quarantined by the relay (total here, by reason below), records parked after a
    # throttle/transient failure, events SQS moves to the DLQ on their next receive, events POSTed twice.
    add(name="EventsQuarantined", unit=MetricUnit.Count, value=sum(summary.quarantined.values()))
    add(name="RecordsParked", unit=MetricUnit.Count, value=summary.records_parked)
    add(name="EventsDeadLettered", unit=MetricUnit.Count, value=summary.events_dead_lettered)
    add(name="EventsResent", unit=MetricUnit.Count, value=d.resent_events)
    add(name="GraphAnomalousSuccess", unit=MetricUnit.Count, value=d.anomalous_2xx)
    add(name="RecordsDeadLettered", unit=MetricUnit.Count, value=summary.records_dead_lettered)
    # Request-level Graph errors (code 100 without an event subcode) and a retired Graph API version (2635).
    add(name="GraphRequestErrors", unit=MetricUnit.Count,
        value=sum(n for r, n in d.graph_errors.items() if r.startswith("graph_request")))  # fmt: skip
    add(name="GraphApiVersionRetired", unit=MetricUnit.Count, value=d.graph_errors.get("graph_config_2635", 0))
    for latency in d.latencies_ms[:100]:
        add(name="GraphLatency", unit=MetricUnit.Milliseconds, value=round(latency, 1))
    events = sum(summary.match_keys.values())
    if events:
        mean = sum(k * n for k, n in summary.match_keys.items()) / events
        add(name="MatchKeysPerEvent", unit=MetricUnit.Count, value=round(mean, 3))
    if production_test_code:
        add(name="TestEventCodeInProduction", unit=MetricUnit.Count, value=1)
    _by_dimension(metrics, "RecordFailuresByReason", "reason", summary.failures)
    _by_dimension(metrics, "EventsRejectedByReason", "reason", summary.events_rejected)
    _by_dimension(metrics, "EventsQuarantined", "reason", summary.quarantined)
    _by_dimension(metrics, "GraphErrorsByCode", "reason", d.graph_errors)
    # Events the relay adjusted rather than rejected: event_time_ms (milliseconds converted to seconds),
    # event_time_clamped (<= 5 min in the future), event_time_defaulted, fbc_derived.
    _by_dimension(metrics, "EventAdjustments", "note", summary.notes)
    _by_dimension(
        metrics, "FieldsDroppedByReason", "field_reason",
        Counter({f"{f}:{r}": n for (f, r), n in summary.fields_dropped.items()}),
    )  # fmt: skip
    logger.info(
        "batch done",
        extra={
            "records": summary.records,
            "delivered": summary.records_delivered,
            "failed": summary.records_failed,
            "events_prepared": summary.events_prepared,
            "events_accepted": d.delivered_events,
            "requests": d.requests,
            "retries": d.retries,
            "throttles": d.throttles,
            "splits": d.splits,
            "failures": dict(summary.failures),
            "rejected": dict(summary.events_rejected),
            "quarantined": dict(summary.quarantined),
            "parked": summary.records_parked,
            "dead_lettered_events": summary.events_dead_lettered,
            "resent_events": d.resent_events,
        },
    )
