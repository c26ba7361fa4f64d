"""Envelopes around multi-event bodies and the edges of routing (issue 17, mutation testing).

The SNS notification shape is the one SNS delivers to SQS with raw delivery off (AWS's sample in
``events/sns.json``: ``Type``, ``MessageId``, ``TopicArn``, ``Message``, ``MessageAttributes`` with ``Type`` /
``Value``); the EventBridge one is ``PutEvents``' envelope (``detail-type``, ``detail``); Lambda's SQS
message attributes are ``{"stringValue"?, "binaryValue"?, "dataType", "stringListValues", "binaryListValues"}``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from capi_relay.ingest.envelope import MAX_MESSAGE_BYTES, MAX_REQUEST_FIELD_CHARS, EnvelopeError, parse_body

EVENTS = [{"event_name": "Purchase", "event_id": "a"}, {"event_name": "Lead", "event_id": "b"}]
DATA = {"data": EVENTS, "pixel_id": "111", "test_event_code": "TEST1", "upload_tag": "t-1", "namespace_id": 42}


def sns(inner: Any, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:capi-events",
        "Message": inner if isinstance(inner, str) else json.dumps(inner),
        "Timestamp": "2026-12-06T23:00:00.000Z",
        "SignatureVersion": "1",
    }
    if attributes is not None:
        doc["MessageAttributes"] = attributes
    return doc


def eventbridge(detail: Any) -> dict[str, Any]:
    return {"version": "0", "id": "6a7e8feb", "detail-type": "capi-relay event", "source": "shop.orders",
            "account": "123456789012", "time": "2026-12-06T23:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}  # fmt: skip


def string_attr(value: str) -> dict[str, Any]:
    return {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}


# ------------------------------------------------------------------------------------ multi-event bodies
@pytest.mark.parametrize("wrap", [sns, eventbridge, lambda d: sns(eventbridge(d))], ids=["sns", "eb", "sns-eb"])
def test_a_wrapped_data_body_keeps_every_event_its_routing_and_its_request_fields(wrap: Any) -> None:
    message = parse_body(json.dumps(wrap(DATA)))
    assert message.events == EVENTS
    assert message.pixel_id == "111"
    assert message.test_event_code == "TEST1"
    assert message.request_fields == (("namespace_id", "42"), ("upload_tag", "t-1"))


def test_shapes_name_the_outermost_envelope_except_an_eventbridge_event_inside_sns() -> None:
    assert parse_body(json.dumps(sns(DATA))).shape == "sns"
    assert parse_body(json.dumps(sns(EVENTS[0]))).shape == "sns"
    assert parse_body(json.dumps(eventbridge(DATA))).shape == "eventbridge"
    assert parse_body(json.dumps(sns(eventbridge(EVENTS[0])))).shape == "eventbridge"
    assert parse_body(json.dumps(DATA)).shape == "data"
    assert parse_body(json.dumps(EVENTS[0])).shape == "event"


def test_sns_message_attributes_route_a_wrapped_data_body() -> None:
    attrs = {"pixel_id": {"Type": "String", "Value": " 222 "}, "test_event_code": {"Type": "String", "Value": "T2"}}
    message = parse_body(json.dumps(sns(DATA, attrs)))
    assert (message.pixel_id, message.test_event_code) == ("222", "T2")


def test_sns_test_event_code_alone_overrides_and_the_pixel_stays_the_bodys() -> None:
    message = parse_body(json.dumps(sns(DATA, {"test_event_code": {"Type": "String", "Value": "TEST9"}})))
    assert (message.pixel_id, message.test_event_code) == ("111", "TEST9")


def test_sqs_attributes_override_what_an_sns_envelope_said() -> None:
    body = json.dumps(sns(DATA, {"pixel_id": {"Type": "String", "Value": "222"}}))
    message = parse_body(body, {"pixel_id": string_attr("333"), "test_event_code": string_attr("T3")})
    assert (message.pixel_id, message.test_event_code) == ("333", "T3")


@pytest.mark.parametrize(
    ("inner", "reason"),
    [
        (["not", "an", "object"], "unknown_shape"),
        ({"data": []}, "empty_data"),
        ({"data": {"event_name": "x"}}, "unknown_shape"),
        ({"something": "else"}, "unknown_shape"),
    ],
)
def test_a_wrapped_body_that_cannot_be_read_is_refused_like_a_plain_one(inner: Any, reason: str) -> None:
    for wrap in (sns, eventbridge):
        with pytest.raises(EnvelopeError) as info:
            parse_body(json.dumps(wrap(inner)))
        assert info.value.reason == reason


def test_an_sns_message_that_is_not_a_string_or_not_json_is_refused() -> None:
    doc = sns(DATA)
    doc["Message"] = DATA  # an object, not the JSON string SNS sends
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(doc))
    assert info.value.reason == "unknown_shape"
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(sns("{not json")))
    assert info.value.reason == "body_not_json"


def test_an_object_that_only_looks_like_sns_is_not_unwrapped() -> None:
    # No TopicArn: not an SNS notification, and not a server event either
    doc = sns(EVENTS[0])
    del doc["TopicArn"]
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(doc))
    assert info.value.reason == "unknown_shape"
    doc = sns(EVENTS[0])
    doc["Type"] = "SubscriptionConfirmation"
    with pytest.raises(EnvelopeError):
        parse_body(json.dumps(doc))


def test_eventbridge_needs_both_detail_type_and_detail() -> None:
    doc = eventbridge(EVENTS[0])
    del doc["detail-type"]
    with pytest.raises(EnvelopeError):
        parse_body(json.dumps(doc))


def test_three_envelopes_deep_is_read_four_is_refused() -> None:
    three = sns(eventbridge(eventbridge(EVENTS[0])))
    assert parse_body(json.dumps(three)).events == [EVENTS[0]]
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(sns(eventbridge(eventbridge(eventbridge(EVENTS[0]))))))
    assert info.value.reason == "unknown_shape"


# -------------------------------------------------------------------------------- message attributes
def test_a_binary_message_attribute_is_not_routing() -> None:
    attrs = {
        "pixel_id": {"binaryValue": "MTIz", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
        "test_event_code": {"binaryValue": "VEVTVA==", "dataType": "Binary"},
    }
    message = parse_body(json.dumps(DATA), attrs)
    assert (message.pixel_id, message.test_event_code) == ("111", "TEST1")


@pytest.mark.parametrize(
    "attrs",
    [None, [], {"pixel_id": "222"}, {"pixel_id": {"stringValue": "   ", "dataType": "String"}},
     {"pixel_id": {"stringValue": 222, "dataType": "Number"}}],
)  # fmt: skip
def test_unusable_attributes_leave_the_bodys_routing(attrs: Any) -> None:
    assert parse_body(json.dumps(DATA), attrs).pixel_id == "111"


def test_an_attribute_value_is_stripped() -> None:
    assert parse_body(json.dumps(DATA), {"pixel_id": string_attr(" 222\n")}).pixel_id == "222"


# ------------------------------------------------------------------------------------ routing fields
@pytest.mark.parametrize(("value", "expected"), [(123, "123"), ("  ", None), (" 9 ", "9"), (None, None)])
def test_routing_values_in_the_body(value: Any, expected: str | None) -> None:
    assert parse_body(json.dumps({"data": EVENTS, "pixel_id": value})).pixel_id == expected


@pytest.mark.parametrize("value", [True, 1.5, ["1"], {"id": "1"}])
def test_a_routing_value_that_is_not_a_string_or_integer_is_refused(value: Any) -> None:
    for key in ("pixel_id", "test_event_code"):
        with pytest.raises(EnvelopeError) as info:
            parse_body(json.dumps({"data": EVENTS, key: value}))
        assert info.value.reason == "invalid_routing"
        assert key in info.value.detail


def test_request_fields_at_the_limit_and_over_it() -> None:
    at = "x" * MAX_REQUEST_FIELD_CHARS
    assert parse_body(json.dumps({"data": EVENTS, "upload_tag": at})).request_fields == (("upload_tag", at),)
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": EVENTS, "upload_tag": at + "x"}))
    assert info.value.reason == "invalid_request_field"
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": EVENTS, "namespace_id": True}))
    assert info.value.reason == "invalid_request_field"


def test_every_request_field_is_read_stripped_in_name_order() -> None:
    body = {"data": EVENTS, "upload_tag": " t ", "upload_source": "s", "partner_agent": "p", "namespace_id": "n"}
    assert parse_body(json.dumps(body)).request_fields == (
        ("namespace_id", "n"), ("partner_agent", "p"), ("upload_source", "s"), ("upload_tag", "t"),
    )  # fmt: skip


def test_a_test_event_code_at_the_limit_is_kept() -> None:
    at = "T" * MAX_REQUEST_FIELD_CHARS
    assert parse_body(json.dumps({"data": EVENTS, "test_event_code": at})).test_event_code == at


# ----------------------------------------------------------------------------------------- sizes
def test_a_body_over_the_limit_is_refused_before_it_is_parsed() -> None:
    pad = MAX_MESSAGE_BYTES - len(json.dumps({"data": EVENTS, "p": ""}))
    fits = json.dumps({"data": EVENTS, "p": "x" * pad})
    assert len(fits) == MAX_MESSAGE_BYTES
    assert parse_body(fits).events == EVENTS
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": EVENTS, "p": "x" * (pad + 1)}))
    assert info.value.reason == "message_too_large"


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    # "é" is 2 bytes: a body of fewer characters than the limit is over it in bytes
    pad = (MAX_MESSAGE_BYTES - len(json.dumps({"data": EVENTS, "p": ""}))) // 2 + 1
    body = json.dumps({"data": EVENTS, "p": "é" * pad}, ensure_ascii=False)
    assert len(body) < MAX_MESSAGE_BYTES < len(body.encode())
    with pytest.raises(EnvelopeError) as info:
        parse_body(body)
    assert info.value.reason == "message_too_large"
    fits = json.dumps({"data": EVENTS, "p": "é" * (pad - 2)}, ensure_ascii=False)
    assert len(fits.encode()) <= MAX_MESSAGE_BYTES
    assert parse_body(fits).events == EVENTS


@pytest.mark.parametrize("body", ["", "   \n", None])
def test_an_empty_body_is_refused(body: str | None) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body(body)
    assert info.value.reason == "empty_body"


# ---------------------------------------------------------------------------- what a user is told
LONG = "x" * (MAX_REQUEST_FIELD_CHARS + 1)
DEEP = json.dumps(sns(eventbridge(eventbridge(eventbridge(EVENTS[0])))))


@pytest.mark.parametrize(
    ("body", "attrs", "reason", "detail"),
    [
        (DEEP, None, "unknown_shape", "too many nested envelopes"),
        ("[1]", None, "unknown_shape", "message body is a JSON list, not an object"),
        (json.dumps({**sns(DATA), "Message": 5}), None, "unknown_shape", "SNS Message is not a string"),
        (json.dumps(sns("{nope")), None, "body_not_json", "SNS Message is not JSON"),
        ('{"data": {}}', None, "unknown_shape", "'data' must be a list of events"),
        ('{"data": []}', None, "empty_data", "'data' is an empty list"),
        ('{"x": 1}', None, "unknown_shape",
         "expected a server event, {'data': [...]}, an EventBridge event or an SNS notification"),
        ("  ", None, "empty_body", "message body is empty"),
        ("[" * 100_000 + "]" * 100_000, None, "body_not_json", "message body is not valid JSON"),
        (json.dumps(DATA), {"pixel_id": string_attr("12a")}, "invalid_pixel_id", "pixel_id must be numeric"),
        (json.dumps({**DATA, "test_event_code": LONG}), None, "invalid_routing",
         f"test_event_code is longer than {MAX_REQUEST_FIELD_CHARS} characters"),
        (json.dumps({**DATA, "upload_tag": LONG}), None, "invalid_request_field",
         f"upload_tag is longer than {MAX_REQUEST_FIELD_CHARS} characters"),
        (json.dumps({**DATA, "partner_agent": 1.5}), None, "invalid_request_field", "partner_agent must be a string"),
    ],
)  # fmt: skip
def test_each_refusal_says_what_is_wrong(body: str, attrs: Any, reason: str, detail: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body(body, attrs)
    assert (info.value.reason, info.value.detail) == (reason, detail)
    assert str(info.value) == f"{reason}: {detail}"


def test_a_body_over_the_limit_names_the_limit() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body("x" * (MAX_MESSAGE_BYTES + 1))
    assert info.value.detail == f"message body is over {MAX_MESSAGE_BYTES} bytes"


def test_ten_thousand_events_are_one_message_and_one_more_is_refused() -> None:
    from capi_relay.ingest.envelope import MAX_EVENTS_PER_MESSAGE

    events = [{"event_name": "E"}] * MAX_EVENTS_PER_MESSAGE
    assert len(parse_body(json.dumps({"data": events})).events) == MAX_EVENTS_PER_MESSAGE
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": [*events, {"event_name": "E"}]}))
    assert info.value.detail == f"{MAX_EVENTS_PER_MESSAGE + 1} events in one message (max {MAX_EVENTS_PER_MESSAGE})"


def test_a_non_ascii_body_of_exactly_the_limit_is_read() -> None:
    base = len(json.dumps({"data": EVENTS, "p": ""}))
    room = MAX_MESSAGE_BYTES - base
    body = json.dumps({"data": EVENTS, "p": "é" * (room // 2) + "x" * (room % 2)}, ensure_ascii=False)
    assert len(body.encode()) == MAX_MESSAGE_BYTES
    assert parse_body(body).events == EVENTS


def test_a_lone_surrogate_character_in_the_body_is_read_as_the_standard_library_reads_it() -> None:
    # Lambda's event is JSON: a body holding the escape "\ud800" arrives as a str with a lone surrogate in it
    body = '{"event_name": "Lead", "custom_data": {"note": "a\ud800b"}}'
    assert parse_body(body).events == [json.loads(body)]


def test_a_body_of_four_byte_characters_just_over_the_limit_is_refused() -> None:
    # The byte count is skipped for bodies of at most MAX_MESSAGE_BYTES // 4 characters (UTF-8: <= 4 bytes each);
    # one of four-byte characters a little longer than that is over the limit and must still be counted.
    overhead = len(json.dumps({"data": EVENTS, "p": ""}))
    n = (MAX_MESSAGE_BYTES - overhead) // 4 + 1
    body = json.dumps({"data": EVENTS, "p": "\U0001f600" * n}, ensure_ascii=False)
    assert MAX_MESSAGE_BYTES // 4 < len(body) < MAX_MESSAGE_BYTES // 3 < MAX_MESSAGE_BYTES < len(body.encode())
    with pytest.raises(EnvelopeError) as info:
        parse_body(body)
    assert info.value.reason == "message_too_large"
    fits = json.dumps({"data": EVENTS, "p": "\U0001f600" * (n - 1)}, ensure_ascii=False)
    assert len(fits.encode()) <= MAX_MESSAGE_BYTES
    assert parse_body(fits).events == EVENTS
