"""Scheduled quality reader: wiring only. Handler path: ``capi_relay.quality.handler.lambda_handler``.

EventBridge Scheduler invokes it (default hourly); the event is ignored. It reads Meta's Dataset Quality API
for each configured pixel with the relay's token and publishes the metrics ``decide.plan`` chooses.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from capi_relay.quality.app import build_reader
from capi_relay.quality.config import quality_config_from_env
from capi_relay.quality.decide import plan
from capi_relay.quality.publish import log_reads, publish

config = quality_config_from_env()  # validated at cold start: a bad configuration fails INIT loudly
logger = Logger(service=config.service_name)
reader = build_reader(config)
copy_config_to_registered_loggers(source_logger=logger, include={"capi_relay"})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
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
