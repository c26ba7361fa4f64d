"""End to end: a bad configuration fails the packaged function's INIT, loudly and by name, under the Lambda
Runtime Interface Emulator (the relay itself is built on the first invocation; the settings are validated
at INIT). No AWS service is reached: INIT stops before anything is built.

Needs ``make build`` first (``make e2e`` depends on it); a missing artifact FAILS these tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.rie import LambdaEmulator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RELAY = ROOT / ".aws-sam" / "build" / "RelayFunction"
QUALITY = ROOT / ".aws-sam" / "build" / "QualityFunction"
BASE = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "ACCESS_TOKEN_SECRET_ID": "capi-relay/token", "PIXEL_ID": "123", "POWERTOOLS_LOG_LEVEL": "WARNING"}  # fmt: skip


@pytest.mark.parametrize(
    ("artifact", "handler", "env", "named"),
    [
        (RELAY, "capi_relay.handler.lambda_handler", {"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
        (RELAY, "capi_relay.handler.lambda_handler", {"ACCESS_TOKEN_SECRET_ID": ""}, "ACCESS_TOKEN_SECRET_ID"),
        (QUALITY, "capi_relay.quality.handler.lambda_handler", {"QUALITY_METRICS": "emq,bogus"}, "QUALITY_METRICS"),
    ],
)
def test_a_bad_configuration_fails_init_naming_the_variable(
    artifact: Path, handler: str, env: dict[str, str], named: str
) -> None:
    with LambdaEmulator(artifact, BASE | env, handler=handler) as fn:
        payload, error, _ = fn.invoke({"Records": []})
    assert error
    assert payload["errorType"] == "SettingsError"
    assert named in payload["errorMessage"]
    # raised by the module's import (INIT), not by an invocation
    assert "in <module>" in "".join(payload["stackTrace"])
