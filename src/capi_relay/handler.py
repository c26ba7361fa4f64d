"""Lambda entry point: wiring only. Handler path: ``capi_relay.handler.lambda_handler``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from capi_relay.app import build_relay
from capi_relay.graph_versions import days_left
from capi_relay.settings import get_settings
from capi_relay.telemetry import publish, publish_version_days_left

settings = get_settings()  # validated once, at cold start: a bad configuration fails INIT loudly
logger = Logger(service=settings.service_name)
metrics = Metrics(namespace=settings.metrics_namespace, service=settings.service_name)
relay = build_relay(settings)
# The library modules log through stdlib loggers (capi_relay.*); give them this Logger's JSON formatter,
# level and Lambda context keys.
copy_config_to_registered_loggers(source_logger=logger, include={"capi_relay"})


# No ColdStart metric ($0.30 a month): Lambda's REPORT lines give each Init Duration.
@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = relay.process(event, context.get_remaining_time_in_millis)
    publish(metrics, summary, production_test_code=settings.is_production and bool(settings.test_event_code))
    publish_version_days_left(metrics, days_left(settings.graph_api_version, datetime.now(UTC).date()))
    return summary.response
