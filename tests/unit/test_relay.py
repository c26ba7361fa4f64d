"""Relay batch accounting with an in-process fake Graph sender (no network)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from capi_relay.app import delivery_config
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.fate.letters import DeadLetter
from capi_relay.relay import Relay, derived_event_id
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens, make_relay

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


def test_events_without_event_id_get_one_derived_from_the_pixel_and_their_content() -> None:
    # Identity comes from the event, never from the SQS message (issue 17): not "sqs-<messageId>-<n>".
    sender = FakeSender()
    first = event()
    make_relay(sender).process({"Records": [record("m-1", {"data": [first, event(event_id="own")]})]})
    ids = [e["event_id"] for e in sender.events]
    assert ids == [derived_event_id("111", first), "own"]
    assert ids[0].startswith("cr1-")
    assert "m-1" not in ids[0]


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
        if any(e["event_id"] == "g1-2" for e in events):
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804036)
        return GraphReply(len(events), None, 1.0)

    sender = FakeSender(reject_g1_second)
    batch = {"Records": [record(f"g{g}-{i}", event(event_id=f"g{g}-{i}"), group=f"g{g}")
                         for i in (1, 2, 3) for g in (1, 2)]}  # fmt: skip
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


# ------------------------------------------------------------------------- each event's fate (issue 10)
DLQ = "https://sqs.eu-west-1.amazonaws.com/123456789012/events-dlq"
FIFO_DLQ = "https://sqs.eu-west-1.amazonaws.com/123456789012/events-dlq.fifo"


class FakeQueues:
    """QueueIO double: stores dead letters, records visibility changes; ``refuse`` fails every send."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.letters: list[DeadLetter] = []
        self.calls: list[int] = []
        self.visibility: list[tuple[str, str, int]] = []

    def send_dead_letters(self, queue_url: str, letters: Sequence[DeadLetter]) -> set[int]:
        # What SQS refuses: another queue, more than 10 entries, group/dedup ids only on a FIFO queue (required there)
        assert queue_url in {DLQ, FIFO_DLQ}
        assert 1 <= len(letters) <= 10
        fifo = queue_url.endswith(".fifo")
        assert all((letter.group_id is not None and letter.dedup_id is not None) is fifo for letter in letters)
        self.calls.append(len(letters))
        if self.refuse:
            return set(range(len(letters)))
        self.letters.extend(letters)
        return set()

    def change_visibility(self, queue_arn: str, changes: Sequence[tuple[str, int]]) -> int:
        self.visibility.extend((queue_arn, handle, seconds) for handle, seconds in changes)
        return len(changes)


def fate_relay(sender: FakeSender, queues: FakeQueues, *, dlq: bool = True, **env: str) -> Relay:
    base = {"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "2", "MAX_RECEIVE_COUNT": "3"}
    if dlq:
        base["DLQ_URL"] = DLQ
    settings = settings_from_env(base | env)
    return Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings), sleep=lambda _: None), queues)


def reject_event_ids(*ids: str) -> Callable[[str, list[dict[str, Any]]], GraphReply | Exception]:
    def behaviour(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        if any(e.get("event_id") in ids for e in events):
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804003)
        return GraphReply(len(events), None, 1.0)

    return behaviour


def test_valid_events_are_sent_and_rejected_ones_quarantined_with_their_reason() -> None:
    # Given one message of four events: one too old (local), one Meta rejects, two good
    sender, queues = FakeSender(reject_event_ids("meta-bad")), FakeQueues()
    data = [event(event_id="ok-1"), event(event_id="old", event_time=NOW - 30 * 86_400),
            event(event_id="meta-bad"), event(event_id="ok-2")]  # fmt: skip
    batch = {"Records": [record("m", {"data": data, "pixel_id": "222"}, test_event_code="T1")]}

    summary = fate_relay(sender, queues).process(batch)

    # Then the record is delivered, the good events reached Meta, each rejected one is one DLQ message
    assert failed_ids(summary.response) == []
    accepted = {e["event_id"] for _, doc in sender.requests for e in doc["data"]} - {"meta-bad"}
    assert accepted == {"ok-1", "ok-2"}
    by_index = {dict(letter.attributes)["event_index"]: letter for letter in queues.letters}
    assert set(by_index) == {"1", "2"}
    expected = {"rejection_reason": "event_too_old", "source_message_id": "m", "event_index": "1", "pixel_id": "222",
                "test_event_code": "T1", "event_id": "old"}  # fmt: skip
    assert dict(by_index["1"].attributes) == expected
    assert dict(by_index["2"].attributes)["rejection_reason"] == "graph_invalid_100_2804003"
    # as received, raw PII and all, with the message's routing (its test_event_code came as an attribute)
    assert json.loads(by_index["2"].body) == {"data": [data[2]], "pixel_id": "222", "test_event_code": "T1"}
    assert summary.quarantined == {"event_too_old": 1, "graph_invalid_100_2804003": 1}
    assert summary.records_quarantined == 1


def test_without_a_dlq_rejected_events_fail_their_record_after_the_valid_ones_were_sent() -> None:
    sender, queues = FakeSender(), FakeQueues()
    batch = {"Records": [record("m", {"data": [event(event_id="ok"), event(event_id="old", event_time=1)]})]}
    summary = fate_relay(sender, queues, dlq=False).process(batch)
    assert failed_ids(summary.response) == ["m"]
    assert summary.failures == {"event_too_old": 1}
    assert [e["event_id"] for e in sender.events] == ["ok"]
    assert queues.letters == []
    assert queues.visibility == []  # a permanent rejection is not parked


def test_unreadable_bodies_are_quarantined_as_received() -> None:
    queues = FakeQueues()
    batch = {"Records": [record("a", "{not json"), record("b", ""), record("c", {"x": 1}), record("d", event())]}
    summary = fate_relay(FakeSender(), queues).process(batch)
    assert failed_ids(summary.response) == []
    got = {dict(letter.attributes)["source_message_id"]: letter for letter in queues.letters}
    assert got["a"].body == "{not json"
    assert json.loads(got["b"].body)["capi_relay_quarantine"]["reason"] == "empty_body"
    assert dict(got["c"].attributes)["rejection_reason"] == "unknown_shape"
    assert set(got) == {"a", "b", "c"}


def test_a_failed_quarantine_send_fails_the_record_instead() -> None:
    queues = FakeQueues(refuse=True)
    batch = {"Records": [record("a", "{not json"), record("b", event())]}
    summary = fate_relay(FakeSender(), queues).process(batch)
    assert failed_ids(summary.response) == ["a"]
    assert summary.failures == {"quarantine_failed": 1}
    assert summary.quarantined == {}


def test_a_record_that_also_fails_transiently_is_parked_and_quarantines_nothing() -> None:
    def unavailable(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        return GraphError(ErrorKind.TRANSIENT, http_status=503)

    queues = FakeQueues()
    batch = {"Records": [record("m", {"data": [event(), event(event_time=1)]})]}
    summary = fate_relay(FakeSender(unavailable), queues).process(batch)
    assert failed_ids(summary.response) == ["m"]
    assert queues.letters == []
    assert queues.visibility == [("arn:aws:sqs:eu-west-1:123456789012:events", "rh", 300)]
    assert summary.records_parked == 1


def test_a_throttle_estimate_parks_the_record_for_that_long() -> None:
    def throttled(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        return GraphError(ErrorKind.THROTTLED, http_status=400, code=80004, retry_after_s=3600.0)

    queues = FakeQueues()
    summary = fate_relay(FakeSender(throttled), queues).process({"Records": [record("m", event())]})
    assert failed_ids(summary.response) == ["m"]
    assert [s for _, _, s in queues.visibility] == [3600]


def test_the_last_receive_is_not_parked_and_its_events_are_counted_as_dead_lettered() -> None:
    # Without DLQ_URL, SQS's redrive policy moves the record on its next receive (with DLQ_URL the relay
    # dead-letters it itself: test_event_life.py).
    def unavailable(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        return GraphError(ErrorKind.TRANSIENT, http_status=503)

    queues = FakeQueues()
    last = record("m", {"data": [event(), event(event_name="Other")]})
    last["attributes"]["ApproximateReceiveCount"] = "3"  # MAX_RECEIVE_COUNT
    summary = fate_relay(FakeSender(unavailable), queues, dlq=False).process({"Records": [last, record("n", event())]})
    assert failed_ids(summary.response) == ["m", "n"]
    assert [h for _, h, _ in queues.visibility] == ["rh"]  # only n's (both share the handle "rh" here)
    assert summary.records_parked == 1
    assert summary.events_dead_lettered == 2


def test_records_not_prepared_before_the_deadline_fail_and_the_prepared_ones_are_sent() -> None:
    # Given a clock that advances 1 s each time the relay reads it (preparing one record takes 1 s) and 15 s
    # left (margin 2, reserve 4 -- one letter call and one park call of 2 s --, min request 1: preparation
    # must end 8 s after the start)
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    sender, queues = FakeSender(), FakeQueues()
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "DLQ_URL": DLQ})
    deliverer = Deliverer(sender, FakeTokens(), delivery_config(settings), clock=lambda: now[0], sleep=lambda _: None)
    relay = Relay(settings, deliverer, queues, monotonic=tick)
    batch = {"Records": [record(f"m{i}", event(event_id=f"e{i}")) for i in range(10)]}
    summary = relay.process(batch, lambda: 15_000)
    failed = failed_ids(summary.response)
    assert failed
    assert summary.failures["deadline_preparing"] == len(failed)
    assert {e["event_id"] for e in sender.events} == {f"e{i}" for i in range(10)} - {f"e{m[1:]}" for m in failed}
    assert sender.events
    assert len(sender.events) + len(failed) == 10


def test_fifo_a_quarantined_event_does_not_block_its_group_without_a_dlq_it_does() -> None:
    batch = {"Records": [record("g-1", event(event_time=1), group="g"), record("g-2", event(), group="g")]}
    with_dlq, queues = FakeSender(), FakeQueues()
    summary = fate_relay(with_dlq, queues, DLQ_URL=FIFO_DLQ).process(batch)
    assert failed_ids(summary.response) == []
    assert len(with_dlq.events) == 1
    assert [(letter.group_id, letter.dedup_id) for letter in queues.letters] == [("g", "g-1-0")]
    without = FakeSender()
    summary = fate_relay(without, FakeQueues(), dlq=False).process(batch)
    assert failed_ids(summary.response) == ["g-1", "g-2"]
    assert summary.failures["fifo_group_blocked"] == 1
    assert without.events == []


def test_nothing_is_counted_as_parked_when_parking_is_off() -> None:
    def unavailable(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        return GraphError(ErrorKind.TRANSIENT, http_status=503)

    queues = FakeQueues()
    summary = fate_relay(FakeSender(unavailable), queues, PARK_SCHEDULE="off").process(
        {"Records": [record("m", event())]}
    )
    assert failed_ids(summary.response) == ["m"]
    assert (summary.records_parked, queues.visibility) == (0, [])
    summary = make_relay(FakeSender(unavailable)).process({"Records": [record("m", event())]})  # no QueueIO at all
    assert summary.records_parked == 0


def test_no_cyclic_collection_runs_while_a_batch_is_processed_and_the_collector_is_restored() -> None:
    relay = make_relay(FakeSender())
    batch = {"Records": [record(f"m{i}", event(event_id=f"e{i}")) for i in range(3_000)]}  # ~10 young passes' worth
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        summary = relay.process(batch)
        assert summary.response == {"batchItemFailures": []}
        assert passes == []  # none during the batch
        assert gc.isenabled()  # enabled again after it
        gc.disable()  # a caller that runs without the collector keeps it off
        try:
            relay.process({"Records": [record("x", event())]})
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(count)
