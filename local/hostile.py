"""Hostile inputs for the relay (issue 11), shared by ``tests/e2e/test_hostile.py`` and
``bench/bench_hostile.py`` so that the tests and the benchmark attack with the same values.

* :func:`good_event` -- a valid website Purchase with raw PII (what a producer sends);
* :func:`spaced_phone_event` -- the same with a phone number holding a long run of inner spaces (a regex
  with adjacent unbounded quantifiers over whitespace goes quadratic on it);
* :func:`large_distinct_event` -- hashed fields filled with long random values, different in every event
  (a memo keyed on raw values grows with them);
* :func:`pixel_message` -- Meta's request shape naming its own pixel (several pixels in one batch).
"""

from __future__ import annotations

import random
import string
from typing import Any

PHONE_SPACES = 60_000
LARGE_VALUE_CHARS = 4096
# Fields the large values go into: every hashed field whose rule keeps letters or digits.
LARGE_FIELDS = ("em", "fn", "ln", "ct", "st", "zp", "external_id")


def good_event(now: int, event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": now - 60,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout/thanks",
        "user_data": {
            "em": f"{event_id}@example.com",
            "ph": "(650) 555-1212",
            "fn": "Jane",
            "ln": "Doe",
            "ct": "Menlo Park",
            "st": "California",
            "zp": "94025",
            "country": "US",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15",
        },
        "custom_data": {"value": 42.5, "currency": "USD"},
    }


def spaced_phone_event(now: int, event_id: str, spaces: int = PHONE_SPACES) -> dict[str, Any]:
    """A good event whose ``ph`` is ``650 555<spaces>1212``."""
    event = good_event(now, event_id)
    event["user_data"]["ph"] = "650 555" + " " * spaces + "1212"
    return event


def large_distinct_event(now: int, event_id: str, rng: random.Random, chars: int = LARGE_VALUE_CHARS) -> dict[str, Any]:
    """A good event whose :data:`LARGE_FIELDS` hold ``chars`` random characters each (distinct per call).
    IP and user agent stay, so the event is valid even when every long value is dropped."""
    event = good_event(now, event_id)
    user_data = event["user_data"]
    for field in LARGE_FIELDS:
        value = "".join(rng.choices(string.ascii_lowercase, k=chars))
        user_data[field] = f"{value}@example.com" if field == "em" else value
    return event


def pixel_message(event: dict[str, Any], pixel_id: str) -> dict[str, Any]:
    """Meta's request shape for one pixel: ``{"data": [event], "pixel_id": ...}``."""
    return {"data": [event], "pixel_id": pixel_id}
