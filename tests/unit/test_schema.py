"""schema/message.schema.json (JSON Schema 2020-12) against the samples in events/ and against `check`:
whatever the schema refuses, `check` refuses too (so a producer validating with the schema never gets a
false alarm); `check` may refuse more (time windows, ISO 4217, combinations Meta rejects)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from capi_relay.ingest.envelope import EnvelopeError
from capi_relay.tools import cli
from tests.factories import NOW, make_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schema" / "message.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
DELETE = object()


def schema_accepts(message: Any) -> bool:
    return VALIDATOR.is_valid(message)


def check_accepts(message: Any, now: int = NOW) -> bool:
    try:
        _, code = cli.check(json.dumps(message), now)
    except EnvelopeError:
        return False
    return code == 0


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


# ------------------------------------------------------------------------------------------- samples
def producer_payload(body: str) -> Any:
    """What the producer wrote: the SQS body, or the inner payload of an SNS / EventBridge envelope."""
    doc = json.loads(body)
    if isinstance(doc, dict) and doc.get("Type") == "Notification":
        doc = json.loads(doc["Message"])
    if isinstance(doc, dict) and "detail-type" in doc:
        doc = doc["detail"]
    return doc


def sample_payloads() -> list[tuple[str, Any]]:
    out = []
    for path in sorted((ROOT / "events").glob("*.json")):
        if path.name == "env.json":
            continue
        for n, record in enumerate(json.loads(path.read_text())["Records"]):
            try:
                out.append((f"{path.stem}[{n}]", producer_payload(record["body"])))
            except json.JSONDecodeError:
                continue  # the deliberately malformed bodies are not messages at all
    return out


SAMPLE_PAYLOADS = sample_payloads()


@pytest.mark.parametrize(("name", "payload"), SAMPLE_PAYLOADS, ids=[n for n, _ in SAMPLE_PAYLOADS])
def test_every_sample_gets_the_same_verdict_from_schema_and_check(name: str, payload: Any) -> None:
    accepted_by_check = check_accepts(payload, int(time.time()))
    if name == "invalid_event[0]":  # too old: a time window no schema can express
        assert schema_accepts(payload)
        assert not accepted_by_check
        return
    assert schema_accepts(payload) == accepted_by_check, list(VALIDATOR.iter_errors(payload))


def test_the_samples_cover_both_shapes_and_a_refusal() -> None:
    verdicts = {name: schema_accepts(p) for name, p in SAMPLE_PAYLOADS}
    assert verdicts["website_purchase[0]"]
    assert verdicts["data_batch[0]"]
    assert verdicts["sns[0]"]
    assert verdicts["eventbridge[0]"]
    assert not verdicts["invalid_event[1]"]  # no action_source


# ------------------------------------------------------------------------------- generated messages
LEAD = {"event_name": "Lead", "action_source": "system_generated", "user_data": {"em": "a@example.com"}}
APP = {"event_name": "AppInstall", "action_source": "app", "user_data": {"madid": "38400000-8cf0-11bd-b23e"},
       "app_data": {"advertiser_tracking_enabled": 1, "extinfo": ["a2"] + [""] * 15}}  # fmt: skip
VALUES: list[Any] = [
    None, "", " ", "x", " Purchase ", "Purchase", "website", " app", "other", "LDU", 0, 1, 1000, -1, 1.5, True,
    [], ["LDU"], ["ldu"], {}, "12.5", "1e3", "abc", "usd", "USDX", NOW - 60, str(NOW - 60), "2026-09-21T14:12:00Z",
    [{"id": "a", "quantity": 1}], [{"id": "", "quantity": 1}], [{"id": "a", "quantity": 1.5}], [{"quantity": 1}],
    {"em": "b@example.com"}, {"client_user_agent": "Mozilla/5.0"}, {"client_user_agent": 7},
    {"value": 3, "currency": "EUR"}, {"value": None, "currency": "EUR"}, {"value": "x", "currency": "EUR"},
    {"advertiser_tracking_enabled": 0, "extinfo": []}, {"extinfo": []}, "123456", 123456, "\u0661\u0662", "x" * 300,
    DELETE,
]  # fmt: skip
EVENT_PATHS = [
    ("event_name",), ("action_source",), ("event_time",), ("event_id",), ("event_source_url",), ("user_data",),
    ("custom_data",), ("custom_data", "value"), ("custom_data", "currency"), ("custom_data", "contents"),
    ("user_data", "client_user_agent"), ("app_data",), ("data_processing_options",),
    ("data_processing_options_country",), ("data_processing_options_state",), ("opt_out",), ("unknown_key",),
    ("data",), ("detail",), ("detail-type",),
]  # fmt: skip
# Besides the hand-picked values, any small JSON value (floats finite: json.dumps writes NaN as a literal
# Python reads but JSON does not have; the relay refuses it separately).
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2_000_000_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
NEW_VALUE = st.one_of(st.sampled_from(VALUES), ANY_JSON)
REQUEST_KEYS = ["pixel_id", "test_event_code", "upload_tag", "namespace_id", "partner_agent", "data"]


def mutate(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    for key in parents:
        child = doc.get(key)
        if not isinstance(child, dict):
            return
        doc = child
    if value is DELETE:
        doc.pop(last, None)
    else:
        doc[last] = json.loads(json.dumps(value))  # a fresh copy


@st.composite
def server_events(draw: st.DrawFn) -> dict[str, Any]:
    base: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from([make_event(), LEAD, APP]))))
    for _ in range(draw(st.integers(0, 3))):
        mutate(base, draw(st.sampled_from(EVENT_PATHS)), draw(NEW_VALUE))
    return base


@st.composite
def messages(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(server_events())
    body: dict[str, Any] = {"data": draw(st.lists(server_events(), min_size=1, max_size=3))}
    for key in draw(st.lists(st.sampled_from(REQUEST_KEYS), max_size=3)):
        mutate(body, (key,), draw(NEW_VALUE))
    return body


@settings(max_examples=400, deadline=None)
@given(message=messages())
def test_what_the_schema_refuses_check_refuses(message: Any) -> None:
    if schema_accepts(message):
        event("schema accepts")
        return
    event("schema refuses")
    assert not check_accepts(message), [e.message for e in VALIDATOR.iter_errors(message)]


@pytest.mark.parametrize(
    ("path", "value"),
    [(("action_source",), DELETE), (("user_data",), None), (("custom_data", "currency"), DELETE),
     (("event_source_url",), " "), (("user_data", "client_user_agent"), DELETE), (("event_id",), True),
     (("custom_data", "value"), "abc"), (("data_processing_options",), ["ldu"]), (("data",), [])],
)  # fmt: skip
def test_typical_producer_mistakes_are_refused_by_both(path: tuple[str, ...], value: Any) -> None:
    message = make_event()
    mutate(message, path, value)
    assert not schema_accepts(message)
    assert not check_accepts(message)


def test_a_valid_request_with_request_fields_is_accepted_by_both() -> None:
    message = {"data": [make_event(), LEAD], "pixel_id": "123", "test_event_code": "T1", "upload_tag": "pos"}
    assert schema_accepts(message)
    assert check_accepts(message)
