"""Small factories for server events. Others import ``make_event``; keep its contract stable:
a valid website Purchase with raw (unhashed) PII and ``event_time = NOW - 60``."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from capi_relay.settings import NormalizationSettings

NOW = 1_790_000_000  # 2026-09-21T14:13:20Z, a fixed clock for deterministic tests
SETTINGS = NormalizationSettings()  # default_phone_region="US", date_order="MDY"

_BASE_EVENT: dict[str, Any] = {
    "event_name": "Purchase",
    "event_time": NOW - 60,
    "event_id": "order-1001",
    "action_source": "website",
    "event_source_url": "https://shop.example.com/checkout/thanks",
    "user_data": {
        "em": "John_Smith@Gmail.com",
        "ph": "(650) 555-1212",
        "fn": "John",
        "ln": "Smith",
        "ct": "Menlo Park",
        "st": "California",
        "zp": "94025-1234",
        "country": "US",
        "external_id": "user-123",
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15",
        "fbp": "fb.1.1789999000000.1234567890",
    },
    "custom_data": {"value": 42.5, "currency": "USD"},
}


def make_event(now: int = NOW, **overrides: Any) -> dict[str, Any]:
    """A valid website Purchase event with raw PII and ``event_time = now - 60``.

    Keyword overrides replace top-level keys; ``user_data=`` / ``custom_data=`` replace the whole object.
    Use :func:`with_user_data` to change single user_data keys. A value of ``...`` (Ellipsis) removes the key.
    """
    event = copy.deepcopy(_BASE_EVENT)
    event["event_time"] = now - 60
    for key, value in overrides.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def with_user_data(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Return ``event`` with user_data keys set (``...`` removes a key)."""
    out = copy.deepcopy(event)
    for key, value in fields.items():
        if value is ...:
            out["user_data"].pop(key, None)
        else:
            out["user_data"][key] = value
    return out


class FakeLambdaContext:
    """The parts of the Lambda context the handler and Powertools use; the remaining time counts down
    from ``budget_s`` like Lambda's."""

    function_name = "capi-relay-RelayFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:capi-relay-RelayFunction"
    log_group_name = "/aws/lambda/capi-relay"
    log_stream_name = "local"

    def __init__(self, budget_s: float = 30.0) -> None:
        self._deadline = time.monotonic() + budget_s
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)
