"""Bad input never crashes the relay (issue 6): property-based fuzzing of SQS events and message bodies.

Over 10,000 generated cases in total (see the ``max_examples`` below). For every case: no exception
escapes, the response lists only messageIds from the input, and a known-good neighbour record in the same
batch is still delivered. Deterministic oversized inputs follow at the end.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_relay.app import delivery_config
from capi_relay.deliver.engine import Deliverer
from capi_relay.relay import Relay, derived_event_id
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens

NOW = int(time.time())
GOOD_ID = "good-neighbour"
GOOD_EVENT = {
    "event_name": "Lead",
    "event_time": NOW - 30,
    "action_source": "system_generated",
    "user_data": {"em": "good@example.com"},
}
SETTINGS = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"})


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc80b"])
texts = st.one_of(st.text(max_size=40), surrogates, st.text(max_size=3).map(lambda s: s * 500))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(texts, st.sampled_from(list(GOOD_EVENT))), children, max_size=4),
    ),
    max_leaves=12,
)
user_data = st.dictionaries(
    st.sampled_from(["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
                     "client_ip_address", "client_user_agent", "fbc", "fbp", "lead_id", "bogus"]),
    json_values, max_size=6,
)  # fmt: skip
events = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "event_name": json_values,
            "event_time": st.one_of(st.integers(), st.floats(), texts, st.just(NOW), st.just(NOW * 1000)),
            "action_source": st.one_of(st.sampled_from(["website", "app", "other", "physical_store"]), json_values),
            "user_data": st.one_of(user_data, json_values),
            "custom_data": json_values,
            "event_source_url": texts,
            "event_id": json_values,
            "data_processing_options": json_values,
        },
    ),
)


def body_strategy() -> st.SearchStrategy[Any]:
    as_json = st.one_of(
        events.map(json.dumps),
        st.lists(events, max_size=5).map(lambda data: json.dumps({"data": data})),
        events.map(lambda e: json.dumps({"detail-type": "x", "detail": e})),
        events.map(lambda e: json.dumps({"Type": "Notification", "TopicArn": "t", "Message": json.dumps(e)})),
        json_values.map(json.dumps),
    )
    return st.one_of(as_json, texts, json_values)


records = st.fixed_dictionaries(
    {},
    optional={
        "messageId": st.one_of(st.sampled_from(["m1", "m2", "m3", ""]), json_values),
        "body": body_strategy(),
        "attributes": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"SentTimestamp": texts, "MessageGroupId": st.sampled_from(["g1", "g2"])}
            ),
            json_values,
        ),
        "messageAttributes": st.one_of(
            st.dictionaries(
                st.sampled_from(["pixel_id", "test_event_code"]), st.fixed_dictionaries({"stringValue": texts})
            ),
            json_values,
        ),
        "eventSourceARN": st.sampled_from(["arn:aws:sqs:r:1:q", "arn:aws:sqs:r:1:q.fifo"]),
    },
)


_SENDER = FakeSender()
_RELAY = Relay(SETTINGS, Deliverer(_SENDER, FakeTokens(), delivery_config(SETTINGS)))


def relay_and_sender() -> tuple[Relay, FakeSender]:
    """One relay for the whole module (as in a warm Lambda environment); the request log starts empty."""
    _SENDER.requests.clear()
    return _RELAY, _SENDER


def good_record() -> dict[str, Any]:
    return {"messageId": GOOD_ID, "body": json.dumps(GOOD_EVENT), "attributes": {}, "messageAttributes": {}}


def input_ids(event: Any) -> set[str]:
    found = event.get("Records") if isinstance(event, dict) else None
    return {r["messageId"] for r in found or [] if isinstance(r, dict) and isinstance(r.get("messageId"), str)}


def check_response(event: Any, response: Any) -> list[str]:
    assert isinstance(response, dict)
    items = response["batchItemFailures"]
    ids = [item["itemIdentifier"] for item in items]
    assert all(isinstance(i, str) and i for i in ids)
    assert set(ids) <= input_ids(event)
    assert len(ids) == len(set(ids))
    return ids


@fuzz(2000)
@given(json_values)
def test_any_json_as_the_lambda_event(event: Any) -> None:
    relay, _ = relay_and_sender()
    check_response(event, relay.process(event).response)


@fuzz(5000)
@given(st.lists(records, max_size=6))
def test_garbage_records_never_sink_a_good_neighbour(garbage: list[Any]) -> None:
    relay, sender = relay_and_sender()
    event = {"Records": [*garbage, good_record()]}
    ids = check_response(event, relay.process(event).response)
    assert GOOD_ID not in ids
    assert derived_event_id("111", GOOD_EVENT) in {e.get("event_id") for e in sender.events}


@fuzz(3500)
@given(st.lists(events, min_size=1, max_size=4))
def test_generated_event_bodies(event_list: list[Any]) -> None:
    relay, sender = relay_and_sender()
    bodies = [json.dumps(e) for e in event_list] + [json.dumps({"data": event_list})]
    event = {"Records": [{"messageId": f"r{i}", "body": b} for i, b in enumerate(bodies)] + [good_record()]}
    ids = check_response(event, relay.process(event).response)
    assert GOOD_ID not in ids
    sent = json.dumps([doc for _, doc in sender.requests])
    assert "good@example.com" not in sent


def test_one_mebibyte_message_is_handled() -> None:
    relay, sender = relay_and_sender()
    big = dict(GOOD_EVENT, custom_data={"blob": "x" * (1024 * 1024)})
    event = {"Records": [{"messageId": "big", "body": json.dumps(big)}, good_record()]}
    response = relay.process(event).response
    assert check_response(event, response) == []
    assert len(sender.events) == 2


def test_ten_thousand_events_in_one_message_are_all_sent_in_capped_requests() -> None:
    relay, sender = relay_and_sender()
    event = {"Records": [{"messageId": "many", "body": json.dumps({"data": [GOOD_EVENT] * 10_000})}]}
    response = relay.process(event).response
    assert check_response(event, response) == []
    assert len(sender.events) == 10_000
    assert max(len(doc["data"]) for _, doc in sender.requests) <= 1000


def test_more_than_the_per_message_cap_fails_with_a_clear_reason() -> None:
    relay, sender = relay_and_sender()
    event = {"Records": [{"messageId": "too-many", "body": json.dumps({"data": [GOOD_EVENT] * 10_001})}]}
    summary = relay.process(event)
    assert check_response(event, summary.response) == ["too-many"]
    assert summary.failures == {"too_many_events": 1}
    assert sender.requests == []
