"""Lambda entry point: wiring only. Handler path: ``capi_relay.handler.lambda_handler``.

INIT (the import) reads and validates the settings: a bad configuration fails INIT loudly, with a
:class:`~capi_relay.settings.SettingsError` naming the variable. The relay, the Powertools Logger and Metrics
are built on the first invocation (:func:`function`), from those settings. :func:`start` is what INIT runs;
tests call it to begin again from the environment, as a fresh execution environment would, without reloading
this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from capi_relay.app import build_relay
from capi_relay.compiled import core, fallback_reason
from capi_relay.deliver.versions import days_left
from capi_relay.relay import Relay
from capi_relay.settings import Settings, get_settings
from capi_relay.telemetry import publish, publish_version_days_left

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Function:
    """What the first invocation builds from the settings: the relay and the decorated handler."""

    settings: Settings
    logger: Logger
    metrics: Metrics
    relay: Relay
    handle: Handler


def build(settings: Settings) -> Function:
    logger = Logger(service=settings.service_name)
    metrics = Metrics(namespace=settings.metrics_namespace, service=settings.service_name)
    relay = build_relay(settings)
    # The library modules log through stdlib loggers (capi_relay.*); give them this Logger's JSON formatter,
    # level and Lambda context keys.
    copy_config_to_registered_loggers(source_logger=logger, include={"capi_relay"})
    # Once per execution environment: "compiled" on Lambda (the artifact's arm64 core); "pure" where its C cannot load
    # (an emulator on x86_64) or was not built (sam build without mypyc/ziglang); "mixed" is a broken build.
    if (kind := core()) == "compiled":
        logger.info("relay ready", extra={"core": kind})
    else:
        logger.warning("relay ready without its compiled core (expected where its arm64 C cannot load, e.g. an "
                       "x86_64 emulator): ~1.4x the CPU per event, see docs/performance.md",
                       extra={"core": kind, "core_error": fallback_reason()})  # fmt: skip

    # No ColdStart metric ($0.30 a month): Lambda's REPORT lines give each Init Duration.
    @metrics.log_metrics
    @logger.inject_lambda_context(clear_state=True)
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        summary = relay.process(event, context.get_remaining_time_in_millis)
        publish(metrics, summary, production_test_code=settings.is_production and bool(settings.test_event_code))
        publish_version_days_left(metrics, days_left(settings.graph_api_version, datetime.now(UTC).date()))
        return summary.response

    return Function(settings, logger, metrics, relay, handle)


_function: Function | None = None


def start() -> Settings:
    """INIT: forget any relay built before, read and validate the settings from the environment. Raises
    SettingsError naming the variable."""
    global _function  # noqa: PLW0603 -- one per execution environment
    _function = None
    get_settings.cache_clear()
    return get_settings()


def function() -> Function:
    """The relay and its handler, built on the first invocation from the settings INIT validated."""
    global _function  # noqa: PLW0603 -- one per execution environment
    if _function is None:
        _function = build(get_settings())
    return _function


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:  # Any: as Powertools' decorators had it
    return function().handle(event, context)


start()
