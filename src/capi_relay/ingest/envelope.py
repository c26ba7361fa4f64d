"""SQS record -> the events it carries and their routing.

Accepted message bodies (architecture contract):

* one server event (a JSON object with ``event_name``);
* ``{"data": [events], "pixel_id"?, "test_event_code"?, request-level fields?}`` (the shape Meta
  documents); the request-level fields ``upload_tag``, ``upload_source``, ``namespace_id`` and
  ``partner_agent`` (strings of at most ``MAX_REQUEST_FIELD_CHARS``) go to Meta at the request's top level;
* either of those in an EventBridge event's ``detail``;
* either of those (or an EventBridge event) in an SNS notification's ``Message`` (raw delivery off).

SQS message attributes ``pixel_id`` and ``test_event_code`` override what the body says; so do the
SNS notification's ``MessageAttributes`` of the same names. Request-level values are validated here: one
holding a character that cannot be encoded (a lone surrogate, U+FFFE/U+FFFF) makes the body invalid
(``invalid_request_field`` / ``invalid_routing``), never an exception later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from capi_relay._compat import orjson as _orjson
from capi_relay.ingest.model import InboundMessage
from capi_relay.settings import PIXEL_RE

MAX_EVENTS_PER_MESSAGE = 10_000
# Lambda's invocation payload limit: no record of an invocation can be larger (an SQS body is at most 1 MiB);
# a larger body (the `check` CLI, a test) is refused before it is parsed.
MAX_MESSAGE_BYTES = 6 * 1024 * 1024
# Meta's request-level (main body) parameters for offline and partner uploads that a {"data": ...} body may
# carry besides pixel_id / test_event_code (shared/spec/meta-capi.md A2; the Business SDK's EventRequest).
REQUEST_FIELDS = ("namespace_id", "partner_agent", "upload_source", "upload_tag")
MAX_REQUEST_FIELD_CHARS = 256
_MAX_UNWRAP = 3
# A lone surrogate (valid as a JSON escape, SQS stores it: the body is ASCII) has no UTF-8 form; SQS refuses
# U+FFFE/U+FFFF. A request-level value holding one could be neither POSTed nor written into a letter.
_UNENCODABLE = re.compile(r"[\ud800-\udfff\ufffe\uffff]")  # escapes read by re: mypyc takes no surrogate literal
# orjson reads an integer outside [-2**63, 2**64) as a float (the standard library: an int); such a number has
# at least 19 digits in a row, right after what can precede a JSON number (``-``, ``:``, ``[``, ``,``,
# whitespace, or the start of the body). Digits -> "0", those -> "S", anything else -> " ": "S" and 19 zeros
# mark a body to leave to json.loads. A run inside a string (a SHA-256 hex hash often holds one) follows a
# letter or a quote and is no alarm; one that follows a space or a comma is a false alarm that costs only the
# slower parse. (Floats are read alike by both, correctly rounded; what orjson refuses goes to json.loads.)
_NUMBER_CHARS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x53 if b in b"-:[, \t\n\r" else 0x20 for b in range(256))
_LONG_INTEGER = b"S" + b"0" * 19
_LEADING_LONG_INTEGER = _LONG_INTEGER[1:]  # at the start of the body


class EnvelopeError(ValueError):
    """The body cannot be turned into events. ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _attr(attributes: Mapping[str, Any] | None, name: str) -> str | None:
    """Read a string SQS message attribute (``stringValue``) or SNS one (``Value``)."""
    if not isinstance(attributes, dict):  # Lambda's event is parsed JSON: dicts, never another Mapping
        return None
    entry = attributes.get(name)
    if not isinstance(entry, dict):
        return None
    value = entry.get("stringValue", entry.get("Value"))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _routing_value(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise EnvelopeError("invalid_routing", f"{key} must be a string")
    return value.strip() or None


def _request_fields(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The request-level fields of a {"data": ...} body as sorted (key, value) pairs; empty ones omitted."""
    fields = []
    for key in REQUEST_FIELDS:  # already sorted
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a numeric namespace_id
        if value is not None and not isinstance(value, str):
            raise EnvelopeError("invalid_request_field", f"{key} must be a string")
        if value is not None and len(value) > MAX_REQUEST_FIELD_CHARS:  # as written (the schema's maxLength)
            raise EnvelopeError("invalid_request_field", f"{key} is longer than {MAX_REQUEST_FIELD_CHARS} characters")
        if value is not None and _UNENCODABLE.search(value):
            raise EnvelopeError("invalid_request_field", f"{key} holds a character that cannot be encoded")
        value = value.strip() if value is not None else ""
        if value:
            fields.append((key, value))
    return tuple(fields)


def _unwrap(body: Any, depth: int) -> InboundMessage:
    if depth > _MAX_UNWRAP:
        raise EnvelopeError("unknown_shape", "too many nested envelopes")
    if not isinstance(body, dict):
        raise EnvelopeError("unknown_shape", f"message body is a JSON {type(body).__name__}, not an object")

    if body.get("Type") == "Notification" and "TopicArn" in body and "Message" in body:
        raw = body["Message"]
        if not isinstance(raw, str):
            raise EnvelopeError("unknown_shape", "SNS Message is not a string")
        try:
            inner_body = json.loads(raw)
        except ValueError:
            raise EnvelopeError("body_not_json", "SNS Message is not JSON") from None
        inner = _unwrap(inner_body, depth + 1)
        inner.shape = "sns" if inner.shape in ("event", "data") else inner.shape
        attrs = body.get("MessageAttributes")
        inner.pixel_id = _attr(attrs, "pixel_id") or inner.pixel_id
        inner.test_event_code = _attr(attrs, "test_event_code") or inner.test_event_code
        return inner

    if "detail-type" in body and "detail" in body:
        inner = _unwrap(body["detail"], depth + 1)
        inner.shape = "eventbridge"
        return inner

    if "data" in body:
        data = body["data"]
        if not isinstance(data, list):
            raise EnvelopeError("unknown_shape", "'data' must be a list of events")
        if not data:
            raise EnvelopeError("empty_data", "'data' is an empty list")
        if len(data) > MAX_EVENTS_PER_MESSAGE:
            raise EnvelopeError("too_many_events", f"{len(data)} events in one message (max {MAX_EVENTS_PER_MESSAGE})")
        return InboundMessage(
            events=list(data),
            pixel_id=_routing_value(body, "pixel_id"),
            test_event_code=_routing_value(body, "test_event_code"),
            shape="data",
            request_fields=_request_fields(body),
        )

    if "event_name" in body:
        return InboundMessage(events=[body], shape="event")

    raise EnvelopeError(
        "unknown_shape",
        "expected a server event, {'data': [...]}, an EventBridge event or an SNS notification",
    )


def _loads(body: str) -> Any:
    """``json.loads(body)``, done by orjson when it reads the body exactly as the standard library does
    (~2x faster per event: bench/bench_pipeline.py). orjson refuses what json reads differently (NaN and
    Infinity literals, numbers beyond a double, lone surrogates, nesting beyond 1,024, a BOM) and reads
    integers beyond 64 bits as floats: both go to json.loads, whose result and errors are the reference."""
    if _orjson is not None:
        encoded = body.encode("utf-8", "surrogatepass")
        marked = encoded.translate(_NUMBER_CHARS)  # one copy of the body (a prefix would add another)
        # find(), not ``in``: bytes' ``in`` first tries its operand as an integer (a TypeError raised and
        # cleared per call: ~0.4 us of a ~0.9 us screen on a 1 KB body)
        if marked.find(_LONG_INTEGER) < 0 and not marked.startswith(_LEADING_LONG_INTEGER):
            try:
                return _orjson.loads(encoded)
            except _orjson.JSONDecodeError:
                pass
    return json.loads(body)


def parse_body(body: str | None, message_attributes: Mapping[str, Any] | None = None) -> InboundMessage:
    """Unwrap one SQS message body. Raises :class:`EnvelopeError` for anything unusable."""
    if isinstance(body, str) and (
        len(body) > MAX_MESSAGE_BYTES
        # UTF-8 takes at most 4 bytes a character: a shorter body cannot be over the cap (no copy to count it)
        or (len(body) > MAX_MESSAGE_BYTES // 4 and not body.isascii()
            and len(body.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES)
    ):  # fmt: skip
        raise EnvelopeError("message_too_large", f"message body is over {MAX_MESSAGE_BYTES} bytes")
    if not isinstance(body, str) or not body or body.isspace():  # = not body.strip(), without a copy
        raise EnvelopeError("empty_body", "message body is empty")
    try:
        decoded = _loads(body)
    except json.JSONDecodeError as exc:  # msg is json's own wording ("Expecting ',' delimiter"), never content
        detail = f"message body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise EnvelopeError("body_not_json", detail) from None
    except (ValueError, RecursionError):
        raise EnvelopeError("body_not_json", "message body is not valid JSON") from None
    message = _unwrap(decoded, 0)
    if message_attributes:  # usually {} (Lambda's SQS event always has the key): _attr would find nothing
        message.pixel_id = _attr(message_attributes, "pixel_id") or message.pixel_id
        message.test_event_code = _attr(message_attributes, "test_event_code") or message.test_event_code
    if message.pixel_id is not None and not PIXEL_RE.fullmatch(message.pixel_id):
        raise EnvelopeError("invalid_pixel_id", "pixel_id must be numeric")
    if message.test_event_code is not None and len(message.test_event_code) > MAX_REQUEST_FIELD_CHARS:
        raise EnvelopeError("invalid_routing", f"test_event_code is longer than {MAX_REQUEST_FIELD_CHARS} characters")
    if message.test_event_code is not None and _UNENCODABLE.search(message.test_event_code):
        raise EnvelopeError("invalid_routing", "test_event_code holds a character that cannot be encoded")
    return message
