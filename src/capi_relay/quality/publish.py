"""A :class:`~capi_relay.quality.decide.Plan` -> CloudWatch metrics (EMF log lines through Powertools) and
log lines. EMF needs no cloudwatch:PutMetricData permission: the function only writes its own logs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from capi_relay.quality.config import QualityConfig
from capi_relay.quality.decide import Plan
from capi_relay.quality.reader import PixelRead
from capi_relay.quality.reasons import WHAT_TO_DO

logger = logging.getLogger(__name__)


def publish(config: QualityConfig, plan: Plan) -> None:
    """Emit every point of the plan. Never raises: telemetry must not fail the read."""
    for point in plan.points:
        try:
            with single_metric(
                name=point.name,
                unit=MetricUnit(point.unit),
                value=point.value,
                namespace=config.metrics_namespace,
                default_dimensions={"service": config.service_name},
            ) as metric:
                for name, value in point.dimensions:
                    metric.add_dimension(name=name, value=value)
        except Exception:
            logger.exception("could not publish a quality metric", extra={"metric": point.name})


def log_reads(config: QualityConfig, reads: Sequence[PixelRead], plan: Plan) -> None:
    """One line per pixel (what Meta says, or why it could not be read), one per collapsed key, one summary."""
    for read in reads:
        if read.quality is None:
            logger.error(
                "dataset quality not read",
                extra={"pixel_id": read.pixel_id, "reason": read.error, "detail": read.detail,
                       "what_to_do": WHAT_TO_DO.get(read.error or "", "see docs/quality.md"),
                       "retry_after_s": read.retry_after_s},
            )  # fmt: skip
            continue
        events = {
            e.event_name: {"emq": e.composite_score, "keys": e.match_keys, "event_coverage": e.event_coverage_pct,
                           "dedup_rate": e.dedup_rate_pct, "freshness": e.upload_frequency,
                           "diagnostics": [d.name for d in e.diagnostics]}
            for e in read.quality.events
            if config.watches(e.event_name)
        }  # fmt: skip
        logger.info(
            "dataset quality read",
            extra={"pixel_id": read.pixel_id, "events": events, "events_returned": len(read.quality.events),
                   "notes": dict(read.quality.notes), "fields_fallback": read.fields_fallback},
        )  # fmt: skip
    for c in plan.collapses:
        logger.warning(
            "match key coverage below the floor",
            extra={"pixel_id": c.pixel_id, "event_name": c.event_name, "match_key": c.match_key,
                   "coverage_pct": c.coverage_pct, "floor_pct": config.key_coverage_floor_pct},
        )  # fmt: skip
    if plan.capped:
        logger.warning(
            "quality metrics capped",
            extra={"published": len(plan.points), "left_out": plan.capped, "max_metrics": config.max_metrics},
        )
