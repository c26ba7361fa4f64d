"""Envelope parsing: every message shape in the contract, overrides, and clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.ingest.envelope import MAX_EVENTS_PER_MESSAGE, EnvelopeError, parse_body

EVENT = {"event_name": "Lead", "action_source": "system_generated", "user_data": {"em": "a@example.com"}}


def sqs_attr(value: str) -> dict[str, Any]:
    return {"stringValue": value, "dataType": "String"}


def eventbridge(detail: Any) -> dict[str, Any]:
    return {
        "version": "0", "id": "b3c1", "detail-type": "Conversion", "source": "shop", "account": "123456789012",
        "time": "2026-11-26T10:00:00Z", "region": "eu-west-1", "resources": [], "detail": detail,
    }  # fmt: skip


def sns(message: Any, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:conv",
        "Message": json.dumps(message), "Timestamp": "2026-11-26T10:00:00Z", "SignatureVersion": "1",
    }  # fmt: skip
    if attributes:
        doc["MessageAttributes"] = attributes
    return doc


def test_single_event_body() -> None:
    message = parse_body(json.dumps(EVENT))
    assert message.events == [EVENT]
    assert message.shape == "event"
    assert message.pixel_id is None


def test_data_body_with_routing() -> None:
    body = {"data": [EVENT, EVENT], "pixel_id": "42", "test_event_code": "TEST1"}
    message = parse_body(json.dumps(body))
    assert len(message.events) == 2
    assert (message.pixel_id, message.test_event_code, message.shape) == ("42", "TEST1", "data")


def test_numeric_pixel_id_in_body_is_accepted_as_string() -> None:
    assert parse_body(json.dumps({"data": [EVENT], "pixel_id": 42})).pixel_id == "42"


@pytest.mark.parametrize("inner", [EVENT, {"data": [EVENT], "pixel_id": "7"}])
def test_eventbridge_envelope(inner: dict[str, Any]) -> None:
    message = parse_body(json.dumps(eventbridge(inner)))
    assert message.events == [EVENT]
    assert message.shape == "eventbridge"


@pytest.mark.parametrize("inner", [EVENT, {"data": [EVENT]}, eventbridge(EVENT)])
def test_sns_envelope(inner: dict[str, Any]) -> None:
    message = parse_body(json.dumps(sns(inner)))
    assert message.events == [EVENT]
    assert message.shape in ("sns", "eventbridge")


def test_sns_message_attributes_override() -> None:
    body = sns({"data": [EVENT], "pixel_id": "1"}, {"pixel_id": {"Type": "String", "Value": "2"}})
    assert parse_body(json.dumps(body)).pixel_id == "2"


def test_sqs_message_attributes_override_body() -> None:
    body = json.dumps({"data": [EVENT], "pixel_id": "1", "test_event_code": "A"})
    message = parse_body(body, {"pixel_id": sqs_attr("9"), "test_event_code": sqs_attr("B")})
    assert (message.pixel_id, message.test_event_code) == ("9", "B")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "empty_body"),
        ("", "empty_body"),
        ("   ", "empty_body"),
        ("{not json", "body_not_json"),
        ("[1, 2]", "unknown_shape"),
        ('"a string"', "unknown_shape"),
        ("{}", "unknown_shape"),
        ('{"data": {}}', "unknown_shape"),
        ('{"data": []}', "empty_data"),
        ('{"data": [{}], "pixel_id": ["x"]}', "invalid_routing"),
        ('{"data": [{}], "pixel_id": "abc"}', "invalid_pixel_id"),
        (json.dumps({"Type": "Notification", "TopicArn": "t", "Message": "{oops"}), "body_not_json"),
        (json.dumps({"Type": "Notification", "TopicArn": "t", "Message": 5}), "unknown_shape"),
        ("[" * 100_000 + "]" * 100_000, "body_not_json"),
    ],
)
def test_unusable_bodies_have_a_reason(body: str | None, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body(body)
    assert info.value.reason == reason


def test_too_many_events_in_one_message() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": [EVENT] * (MAX_EVENTS_PER_MESSAGE + 1)}))
    assert info.value.reason == "too_many_events"


def test_nesting_is_bounded() -> None:
    body: Any = EVENT
    for _ in range(5):
        body = eventbridge(body)
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(body))
    assert info.value.reason == "unknown_shape"


# ------------------------------------------------------------------ request-level fields of {"data": ...}
def test_request_level_fields_pass_through_sorted() -> None:
    body = {"data": [EVENT], "upload_tag": "store-2026-11", "partner_agent": " shopkit ", "namespace_id": 12345,
            "upload_source": "pos", "unrelated": "x"}  # fmt: skip
    message = parse_body(json.dumps(body))
    assert message.request_fields == (
        ("namespace_id", "12345"), ("partner_agent", "shopkit"), ("upload_source", "pos"),
        ("upload_tag", "store-2026-11"),
    )  # fmt: skip


def test_request_level_fields_survive_eventbridge_and_sns() -> None:
    inner = {"data": [EVENT], "upload_tag": "t1"}
    assert parse_body(json.dumps(eventbridge(inner))).request_fields == (("upload_tag", "t1"),)
    assert parse_body(json.dumps(sns(inner))).request_fields == (("upload_tag", "t1"),)


def test_a_single_event_body_has_no_request_fields() -> None:
    assert parse_body(json.dumps({**EVENT, "upload_tag": "ignored"})).request_fields == ()


@pytest.mark.parametrize("value", [["list"], {"o": 1}, True, 1.5, "x" * 257])
def test_invalid_request_level_fields_are_refused(value: Any) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_body(json.dumps({"data": [EVENT], "upload_tag": value}))
    assert caught.value.reason == "invalid_request_field"


def test_an_empty_request_level_field_is_omitted() -> None:
    assert parse_body(json.dumps({"data": [EVENT], "upload_tag": "  ", "upload_source": None})).request_fields == ()


def test_unreadable_json_names_line_and_column() -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_body('{"data": [\n  {"event_name": "Lead",}\n]}')
    assert caught.value.reason == "body_not_json"
    assert "at line 2 column 24" in caught.value.detail  # the "}" after the trailing comma


@pytest.mark.parametrize("pixel", ["١٢٣", "１２３", "12\u0663", "1²3", "123x", "-123", "1 23"])
def test_pixel_id_must_be_ascii_digits_in_the_body_and_in_attributes(pixel: str) -> None:
    # Unicode digits pass str.isdigit() and \d; they must never reach a Graph URL
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": [EVENT], "pixel_id": pixel}))
    assert info.value.reason == "invalid_pixel_id"
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(EVENT), {"pixel_id": {"stringValue": pixel, "dataType": "String"}})
    assert info.value.reason == "invalid_pixel_id"


@pytest.mark.parametrize(
    "value",
    [
        "18446744073709551616",  # 2**64: orjson alone would read a float
        "-9223372036854775809",  # -2**63 - 1: likewise
        "18446744073709551615",
        "123456789012345678901234567890",
        "1e400",  # json reads inf, orjson refuses
        "NaN",
        "-Infinity",
        '"\\ud800"',  # lone surrogate escape
        '"caf\u00e9 \\u00e9"',
        "4.9e-324",
        "-0",
        "0.30000000000000004",
    ],
)
def test_body_is_read_exactly_as_the_standard_library_reads_it(value: str) -> None:
    body = '{"event_name": "Lead", "custom_data": {"value": ' + value + '}, "user_data": {"external_id": '
    body += value + "}}"
    expected = json.loads(body)
    events = parse_body(body).events
    assert repr(events) == repr([expected])
    assert [type(events[0]["custom_data"]["value"])] == [type(expected["custom_data"]["value"])]


@pytest.mark.parametrize(
    "body",
    [
        '{"data": [{"custom_data": {"value": 18446744073709551616}}]}',  # after a space
        '{"data":[{"custom_data":{"value":18446744073709551616}}]}',  # after a colon
        '{"data": [{"custom_data": {"ids": [18446744073709551616]}}]}',  # after a bracket
        '{"data": [{"custom_data": {"ids": [1,-9223372036854775809]}}]}',  # after a comma, negative
        '{"data": [{"custom_data": {"value":\n\t18446744073709551616}}]}',  # after a newline and a tab
        '{"data": [{"custom_data": {"value":\r\n99999999999999999999999}}]}',
    ],
)
def test_a_long_integer_wherever_json_allows_it_is_read_as_an_int(body: str) -> None:
    expected = json.loads(body)
    assert repr(parse_body(body).events) == repr(expected["data"])


def test_digit_runs_inside_strings_keep_the_fast_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a packed body whose pre-hashed values hold 19+ digit runs inside strings (common in SHA-256 hex)
    hashed = "a" + "1234567890" * 3 + "b" * 33
    body = json.dumps({"data": [{"event_name": "Lead", "user_data": {"em": hashed, "ph": '"' + "9" * 30}}] * 3})
    expected = json.loads(body)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("fell back to json.loads")

    import orjson  # noqa: F401 -- a runtime dependency: the fast path must exist

    monkeypatch.setattr("capi_relay.ingest.envelope.json.loads", refuse)
    # Then orjson reads it (no fallback), exactly as json would
    assert repr(parse_body(body).events) == repr(expected["data"])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False)
    | st.text(alphabet="0123456789abcdef\"\\ -:[,", max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_json_values, st.sampled_from([(",", ":"), (", ", ": "), (",\n", ":\t"), (" ,\r\n", " : ")]))
def test_any_json_is_read_exactly_as_the_standard_library_reads_it(value: object, separators: tuple[str, str]) -> None:
    from capi_relay.ingest.envelope import _loads

    text = json.dumps(value, separators=separators, ensure_ascii=False)
    assert repr(_loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["18446744073709551616", "-18446744073709551616", " 18446744073709551616 "])
def test_a_long_integer_at_the_start_of_the_text_is_read_as_an_int(text: str) -> None:
    from capi_relay.ingest.envelope import _loads

    assert repr(_loads(text)) == repr(json.loads(text))


def test_a_test_event_code_over_256_characters_is_refused_from_the_body_or_an_attribute() -> None:
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps({"data": [EVENT], "test_event_code": "T" * 257}))
    assert info.value.reason == "invalid_routing"
    with pytest.raises(EnvelopeError) as info:
        parse_body(json.dumps(EVENT), {"test_event_code": {"stringValue": "T" * 257, "dataType": "String"}})
    assert info.value.reason == "invalid_routing"
    assert parse_body(json.dumps({"data": [EVENT], "test_event_code": "T" * 256})).test_event_code == "T" * 256
