"""Scheduled quality reader: wiring only. Handler path: ``capi_relay.quality.handler.lambda_handler``.

EventBridge Scheduler invokes it (default hourly); the event is ignored. It reads Meta's Dataset Quality API
for each configured pixel with the relay's token and publishes the metrics ``decide.plan`` chooses.

INIT (the import) reads and validates the configuration: a bad one fails INIT loudly, naming the variable.
The reader and the Logger are built on the first invocation (:func:`function`); :func:`start` is what INIT
runs, and what tests call to begin again from the environment without reloading this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from capi_relay.quality.app import build_reader
from capi_relay.quality.config import QualityConfig, quality_config_from_env
from capi_relay.quality.decide import plan
from capi_relay.quality.publish import log_reads, publish
from capi_relay.quality.reader import QualityReader


@dataclass(frozen=True, slots=True)
class Function:
    """What the first invocation builds from the configuration: the reader and the decorated handler."""

    config: QualityConfig
    logger: Logger
    reader: QualityReader
    handle: Callable[[Any, LambdaContext], dict[str, Any]]


def build(config: QualityConfig) -> Function:
    logger = Logger(service=config.service_name)
    reader = build_reader(config)
    copy_config_to_registered_loggers(source_logger=logger, include={"capi_relay"})

    @logger.inject_lambda_context(clear_state=True)
    def handle(event: Any, context: LambdaContext) -> dict[str, Any]:
        try:
            deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
            reads = reader.read_all(deadline)
            result = plan(config, reads)
            log_reads(config, reads, result)
            publish(config, result)
        except Exception:  # never escapes: the next scheduled read tries again
            logger.exception("quality read failed")
            return {"pixels": len(config.pixel_ids), "read": 0, "errors": {"internal": 1}}
        return {
            "pixels": len(reads),
            "read": sum(1 for r in reads if r.ok),
            "errors": dict(result.errors),
            "metrics": len(result.points),
            "capped": result.capped,
            "collapsed_keys": len(result.collapses),
        }

    return Function(config, logger, reader, handle)


_config: QualityConfig | None = None
_function: Function | None = None


def start() -> QualityConfig:
    """INIT: forget any reader built before, read and validate the configuration from the environment.
    Raises SettingsError naming the variable."""
    global _config, _function  # noqa: PLW0603 -- one per execution environment
    _config, _function = None, None
    _config = quality_config_from_env()
    return _config


def function() -> Function:
    """The reader and its handler, built on the first invocation from the configuration INIT validated."""
    global _function  # noqa: PLW0603 -- one per execution environment
    if _function is None:
        _function = build(_config if _config is not None else start())
    return _function


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:  # Any: as Powertools' decorator had it
    return function().handle(event, context)


start()
