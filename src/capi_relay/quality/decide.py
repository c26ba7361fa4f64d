"""Pure decisions: which metrics one read publishes (bounded by a cap), which match keys collapsed, and the
model of the EMQ-drop alarm the template defines (so its behaviour is tested without CloudWatch).

Cost is the bound that matters: every distinct series (metric name + dimensions) CloudWatch receives in an
hour is billed for that hour ($0.30 per series-month), so the number of series is capped by configuration
(pixels x watched events x families, match keys) and by ``max_metrics``; the most useful come first (EMQ,
then key coverage, then event coverage, dedup, freshness) so the cap drops the least useful.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from capi_relay.quality.config import QualityConfig
from capi_relay.quality.dataset_quality import EventQuality
from capi_relay.quality.reader import PixelRead

Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MetricPoint:
    name: str
    value: float
    unit: str  # a Powertools MetricUnit value: "Count", "Percent", "Seconds"
    dimensions: Dimensions = ()


@dataclass(frozen=True, slots=True)
class Collapse:
    pixel_id: str
    event_name: str
    match_key: str
    coverage_pct: float


@dataclass(slots=True)
class Plan:
    points: list[MetricPoint] = field(default_factory=list)
    capped: int = 0  # series left out by max_metrics
    collapses: list[Collapse] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def watched_events(config: QualityConfig, read: PixelRead) -> list[EventQuality]:
    if read.quality is None:
        return []
    return [e for e in read.quality.events if config.watches(e.event_name)]


def collapses(config: QualityConfig, reads: Sequence[PixelRead]) -> list[Collapse]:
    """Watched keys of watched events whose coverage Meta reports below the floor (absent from Meta's list of
    keys = 0 %). An event Meta did not return, or returned without key feedback, decides nothing."""
    found: list[Collapse] = []
    for read in reads:
        for event in watched_events(config, read):
            for key in config.match_keys:
                pct = event.coverage(key)
                if pct is not None and pct < config.key_coverage_floor_pct:
                    found.append(Collapse(read.pixel_id, event.event_name, key, pct))
    return found


def _series(config: QualityConfig, reads: Sequence[PixelRead]) -> list[MetricPoint]:
    """Every per-pixel series of this read, most useful family first."""
    families: dict[str, list[MetricPoint]] = {f: [] for f in ("emq", "keys", "coverage", "dedup", "freshness")}
    for read in reads:
        for event in watched_events(config, read):
            dims: Dimensions = (("pixel", read.pixel_id), ("event_name", event.event_name))
            if event.composite_score is not None:
                families["emq"].append(MetricPoint("EmqComposite", event.composite_score, "Count", dims))
            for key in config.match_keys:
                pct = event.coverage(key)
                if pct is not None:
                    key_dims = (*dims, ("match_key", key))
                    families["keys"].append(MetricPoint("MatchKeyCoverage", pct, "Percent", key_dims))
            if event.event_coverage_pct is not None:
                families["coverage"].append(MetricPoint("EventCoverage", event.event_coverage_pct, "Percent", dims))
            if event.dedup_rate_pct is not None:
                families["dedup"].append(MetricPoint("DedupRate", event.dedup_rate_pct, "Percent", dims))
            if event.freshness_hours is not None:
                seconds = event.freshness_hours * 3600
                families["freshness"].append(MetricPoint("DataFreshness", seconds, "Seconds", dims))
    return [p for family, points in families.items() if family in config.families for p in points]


def plan(config: QualityConfig, reads: Sequence[PixelRead]) -> Plan:
    """What one scheduled read publishes: per-pixel series up to ``max_metrics``; ``MatchKeysBelowFloor``
    (one series) only when a read found a collapsed key, and ``QualityReadErrors`` by reason only when a read
    failed (a healthy reader pays for neither; their alarms read a missing datapoint as not breaching)."""
    result = Plan()
    series = _series(config, reads)
    result.points = series[: config.max_metrics]
    result.capped = len(series) - len(result.points)
    result.collapses = collapses(config, reads)
    if result.collapses:
        result.points.append(MetricPoint("MatchKeysBelowFloor", float(len(result.collapses)), "Count"))
    result.errors = Counter(r.error for r in reads if r.error is not None)
    for reason, count in sorted(result.errors.items()):
        result.points.append(MetricPoint("QualityReadErrors", float(count), "Count", (("reason", reason),)))
    return result


# ------------------------------------------------------------------------ the EMQ-drop alarm, as a model
# template.yaml QualityEmqDropAlarm: EmqComposite (Average, 1 h periods) of one pixel and event; expression
# AVG(emq) - emq over 24 periods (AVG of one series is a scalar: the mean over the alarm's whole window, i.e.
# the pixel's own baseline for the last day); ALARM when at least 2 of the 24 hourly points are that far or
# further below the baseline. Missing hours (no read, Meta returned no score) are not breaching.
EMQ_ALARM_EXPRESSION = "AVG(emq) - emq"
EMQ_ALARM_PERIOD_S = 3600
EMQ_ALARM_WINDOW = 24
EMQ_ALARM_DATAPOINTS = 2


def emq_drop_breaches(hourly: Sequence[float | None], drop: float) -> list[bool]:
    """For the last ``EMQ_ALARM_WINDOW`` hourly values (None = no data), which points breach."""
    window = list(hourly)[-EMQ_ALARM_WINDOW:]
    present = [v for v in window if v is not None]
    if not present:
        return [False] * len(window)
    baseline = sum(present) / len(present)
    return [v is not None and baseline - v >= drop for v in window]


def emq_drop_alarm(hourly: Sequence[float | None], drop: float) -> bool:
    """Whether the template's alarm is in ALARM for this history."""
    return sum(emq_drop_breaches(hourly, drop)) >= EMQ_ALARM_DATAPOINTS
