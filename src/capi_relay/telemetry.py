"""BatchSummary -> CloudWatch metrics (EMF through Powertools) and structured log lines.

Metric names are a contract with the template's alarms and dashboard (README, "Metrics"). Counts go out only
when non-zero (put_count: the alarms read missing data as 0) and reasons as log lines, not metrics
(docs/performance.md, "Idle cost"). A gauge whose 0 matters must use ``metrics.add_metric``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from capi_relay.relay import BatchSummary

logger = logging.getLogger(__name__)

REASON_LINE = "reason count"  # the message of the per-reason log lines (README's Logs Insights queries)


def put_count(metrics: Metrics, name: str, value: float, unit: MetricUnit = MetricUnit.Count) -> None:
    """Publish a count unless it is zero."""
    if value:
        metrics.add_metric(name=name, unit=unit, value=value)


def log_reasons(metric: str, counts: Mapping[str, int]) -> None:
    """One ``reason count`` line per non-zero reason (fields metric, reason, value)."""
    for reason, value in counts.items():
        if value:
            logger.info(REASON_LINE, extra={"metric": metric, "reason": reason, "value": value})


def publish(metrics: Metrics, summary: BatchSummary, *, production_test_code: bool = False) -> None:
    """Emit the batch's metrics and summary lines. Never raises: telemetry must not fail a delivered batch."""
    try:
        _publish(metrics, summary, production_test_code)
    except Exception:
        logger.exception("could not publish metrics for this batch")


def _publish(metrics: Metrics, summary: BatchSummary, production_test_code: bool) -> None:
    d = summary.delivery

    def count(name: str, value: float) -> None:
        put_count(metrics, name, value)

    count("RecordsReceived", summary.records)
    count("RecordsDelivered", summary.records_delivered)
    count("RecordsFailed", summary.records_failed)
    count("EventsPrepared", summary.events_prepared)
    count("EventsRejected", sum(summary.events_rejected.values()))
    count("EventsAccepted", d.delivered_events)
    count("GraphRequests", d.requests)
    count("GraphErrors", sum(d.graph_errors.values()))
    count("GraphRetries", d.retries)
    count("GraphThrottles", d.throttles)
    count("AuthRefreshes", d.auth_refreshes)
    count("BisectSplits", d.splits)
    count("FieldsDropped", sum(summary.fields_dropped.values()))
    auth_failures = sum(n for r, n in summary.failures.items() if r.startswith("graph_auth") or r == "secret_malformed")
    count("AuthFailures", auth_failures)
    # Each event's fate: quarantined by the relay (total here, by reason in the logs), records parked after a
    # throttle/transient failure, events SQS moves to the DLQ on their next receive, events POSTed twice.
    count("EventsQuarantined", sum(summary.quarantined.values()))
    count("RecordsParked", summary.records_parked)
    count("EventsDeadLettered", summary.events_dead_lettered)
    count("EventsResent", d.resent_events)
    count("GraphAnomalousSuccess", d.anomalous_2xx)
    count("RecordsDeadLettered", summary.records_dead_lettered)
    # Request-level Graph errors (code 100 without an event subcode) and a retired Graph API version (2635).
    count("GraphRequestErrors", sum(n for r, n in d.graph_errors.items() if r.startswith("graph_request")))
    count("GraphApiVersionRetired", d.graph_errors.get("graph_config_2635", 0))
    for latency in d.latencies_ms[:100]:
        metrics.add_metric(name="GraphLatency", unit=MetricUnit.Milliseconds, value=round(latency, 1))
    events = sum(summary.match_keys.values())
    if events:
        mean = sum(k * n for k, n in summary.match_keys.items()) / events
        metrics.add_metric(name="MatchKeysPerEvent", unit=MetricUnit.Count, value=round(mean, 3))
    if production_test_code:
        count("TestEventCodeInProduction", 1)
    # By reason: log lines for Logs Insights (a metric per reason value costs $0.30 a month).
    log_reasons("RecordFailuresByReason", summary.failures)
    log_reasons("EventsRejectedByReason", summary.events_rejected)
    log_reasons("EventsQuarantinedByReason", summary.quarantined)
    log_reasons("GraphErrorsByCode", d.graph_errors)
    # Events the relay adjusted rather than rejected: event_time_ms (milliseconds converted to seconds),
    # event_time_clamped (<= 5 min in the future), event_time_defaulted, event_time_iso, fbc_derived.
    log_reasons("EventAdjustments", summary.notes)
    log_reasons("FieldsDroppedByReason", Counter({f"{f}:{r}": n for (f, r), n in summary.fields_dropped.items()}))
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


def publish_version_days_left(metrics: Metrics, days_left: int) -> None:
    """``GraphApiVersionDaysLeft``: days until Meta retires the configured Graph API version (deliver/versions.py).
    One more key in the invocation's EMF document (no extra call, no extra log line); the alarm fires 90 days ahead.
    Never raises."""
    try:
        metrics.add_metric(name="GraphApiVersionDaysLeft", unit=MetricUnit.Count, value=days_left)
    except Exception:
        logger.exception("could not publish GraphApiVersionDaysLeft")
