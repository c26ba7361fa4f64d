"""Relay batch accounting with an in-process fake Graph sender (no network)."""

from __future__ import annotations

import json
import time
from typing import Any

from capi_relay.app import delivery_config
from capi_relay.delivery import Deliverer
from capi_relay.graph import ErrorKind, GraphError, GraphReply
from capi_relay.relay import Relay, derived_event_id
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens

NOW = int(time.time())


def event(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_name": "Lead",
        "event_time": NOW - 60,
        "action_source": "system_generated",
        "user_data": {"em": "Someone@Example.com", "ph": "+1 650 555 1212"},
    }
    doc.update(overrides)
    return doc


def record(message_id: str, body: Any, group: str | None = None, **attrs: str) -> dict[str, Any]:
    attributes: dict[str, str] = {"ApproximateReceiveCount": "1", "SentTimestamp": str(NOW * 1000)}
    if group:
        attributes["MessageGroupId"] = group
    return {
        "messageId": message_id,
        "receiptHandle": "rh",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": attributes,
        "messageAttributes": {k: {"stringValue": v, "dataType": "String"} for k, v in attrs.items()},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:events" + (".fifo" if group else ""),
    }


def make_relay(sender: FakeSender, **env: str) -> Relay:
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "2"} | env)
    return Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings), sleep=lambda _: None))


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_good_records_delivered_bad_neighbours_failed_alone() -> None:
    sender = FakeSender()
    batch = {
        "Records": [
            record("a", event()),
            record("b", "{not json"),
            record("c", {"data": [event(), event(event_name="Purchase")]}),  # Purchase without value
            record("d", {"data": [event(), event()]}),
        ]
    }
    summary = make_relay(sender).process(batch)
    assert failed_ids(summary.response) == ["b", "c"]
    assert summary.records_delivered == 2
    assert len(sender.events) == 4  # a, the valid event of c, both of d
    assert summary.failures == {"body_not_json": 1, "missing_value": 1}


def test_events_without_event_id_get_a_deterministic_one() -> None:
    sender = FakeSender()
    make_relay(sender).process({"Records": [record("m-1", {"data": [event(), event(event_id="own")]})]})
    ids = [e["event_id"] for e in sender.events]
    assert ids == [derived_event_id("m-1", 0), "own"]
    assert derived_event_id("m-1", 0) == derived_event_id("m-1", 0) != derived_event_id("m-1", 1)


def test_raw_pii_never_leaves() -> None:
    sender = FakeSender()
    make_relay(sender).process({"Records": [record("a", event())]})
    payload = json.dumps(sender.requests)
    assert "someone@example.com" not in payload.lower()
    assert "6505551212" not in payload


def test_routing_overrides_and_test_event_code() -> None:
    sender = FakeSender()
    batch = {"Records": [record("a", event()), record("b", event(), pixel_id="222", test_event_code="T1")]}
    make_relay(sender, TEST_EVENT_CODE="DEFAULT").process(batch)
    seen = sorted((pixel, doc.get("test_event_code")) for pixel, doc in sender.requests)
    assert seen == [("111", "DEFAULT"), ("222", "T1")]


def test_no_pixel_anywhere_fails_the_record() -> None:
    sender = FakeSender()
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s"})
    relay = Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings)))
    summary = relay.process({"Records": [record("a", event())]})
    assert failed_ids(summary.response) == ["a"]
    assert summary.failures == {"no_pixel_id": 1}
    assert sender.requests == []


def test_missing_event_time_defaults_to_sent_timestamp() -> None:
    sender = FakeSender()
    doc = event()
    del doc["event_time"]
    make_relay(sender).process({"Records": [record("a", doc)]})
    assert sender.events[0]["event_time"] == NOW


def test_duplicate_message_ids_get_one_outcome() -> None:
    sender = FakeSender()
    summary = make_relay(sender).process({"Records": [record("a", "{bad"), record("a", "{bad")]})
    assert failed_ids(summary.response) == ["a"]


def test_not_an_sqs_event() -> None:
    payloads: list[Any] = [{}, {"Records": "x"}, [], None, {"Records": [1, None, {"body": "{}"}]}]
    for payload in payloads:
        summary = make_relay(FakeSender()).process(payload)
        assert summary.response == {"batchItemFailures": []}


def test_fifo_failure_blocks_later_records_of_the_same_group_only() -> None:
    sender = FakeSender()
    batch = {
        "Records": [
            record("g1-1", event(), group="g1"),
            record("g1-2", "{bad", group="g1"),
            record("g2-1", event(), group="g2"),
            record("g1-3", event(), group="g1"),
            record("g2-2", event(), group="g2"),
        ]
    }
    summary = make_relay(sender).process(batch)
    assert failed_ids(summary.response) == ["g1-2", "g1-3"]
    assert len(sender.events) == 3


def test_fifo_delivery_failure_fails_later_records_of_that_group() -> None:
    def reject_g1_second(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        if any(e["event_id"].startswith("sqs-g1-2") for e in events):
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804036)
        return GraphReply(len(events), None, 1.0)

    sender = FakeSender(reject_g1_second)
    batch = {"Records": [record(f"g{g}-{i}", event(), group=f"g{g}") for i in (1, 2, 3) for g in (1, 2)]}
    summary = make_relay(sender).process(batch)
    assert failed_ids(summary.response) == ["g1-2", "g1-3"]


def test_unexpected_error_fails_whole_batch_without_raising() -> None:
    relay = make_relay(FakeSender())

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug")

    relay._deliverer.deliver = boom  # type: ignore[method-assign]
    summary = relay.process({"Records": [record("a", event()), record("b", event())]})
    assert failed_ids(summary.response) == ["a", "b"]
    assert summary.failures == {"internal_error": 2}
