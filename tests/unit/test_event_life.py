"""An event's whole life (issue 17), one rule per test, with in-process fakes: the response is built from
proofs (fail closed), one identity per event fixed at first sight, the relay dead-letters on the last
chance, every letter is valid for SQS, and the fate I/O reserve grows with the batch."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from capi_relay.app import delivery_config
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer, DeliveryReport, Failure
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.fate.ledger import fate_io_reserve_s
from capi_relay.fate.letters import sqs_valid
from capi_relay.prepare.events import derived_event_id
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens
from tests.unit.test_relay import DLQ, NOW, FakeQueues, event, failed_ids, fate_relay, record


def unavailable(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
    return GraphError(ErrorKind.TRANSIENT, http_status=503)


def letters_by_index(queues: FakeQueues) -> dict[tuple[str, str | None], dict[str, Any]]:
    out = {}
    for letter in queues.letters:
        a = dict(letter.attributes)
        out[(a["source_message_id"], a.get("event_index"))] = {"attrs": a, "body": json.loads(letter.body)}
    return out


# ------------------------------------------------------------------------------------------ fail closed
def test_an_unreadable_receive_count_fails_no_neighbour_and_acknowledges_nothing_unsent() -> None:
    # Given a record whose ApproximateReceiveCount is "²" (str.isdigit() is True, int() raises), then two more
    sender = FakeSender()
    odd = record("odd", event(event_id="e-odd"))
    odd["attributes"]["ApproximateReceiveCount"] = "²"
    batch = {"Records": [odd, record("b", event(event_id="e-b")), record("c", event(event_id="e-c"))]}
    # When the relay processes the batch
    summary = fate_relay(sender, FakeQueues()).process(batch)
    # Then every record was read and sent: nothing acknowledged without its events reaching Meta
    assert sorted(e["event_id"] for e in sender.events) == ["e-b", "e-c", "e-odd"]
    assert failed_ids(summary.response) == []


class _SilentDeliverer(Deliverer):
    """Reports nothing at all about the events it was given (a bug, a lost report)."""

    def deliver(
        self, outbound: Any, deadline: float, *, fifo: bool = False, quarantine: bool = False
    ) -> DeliveryReport:
        list(outbound)
        return DeliveryReport()


def test_the_response_is_built_from_proven_successes_not_from_noticed_failures() -> None:
    # Given a delivery that proves nothing (no event accepted, none reported failed)
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"})
    relay = Relay(settings, _SilentDeliverer(FakeSender(), FakeTokens(), delivery_config(settings)))
    # When a batch is processed
    summary = relay.process({"Records": [record("a", event()), record("b", {"data": [event(), event()]})]})
    # Then every record is failed: none was proven delivered
    assert failed_ids(summary.response) == ["a", "b"]
    assert summary.failures == {"unsettled": 2}


@pytest.mark.pure_only  # replaces a Relay method: a compiled Relay has fixed methods
def test_an_unexpected_error_fails_every_record_not_proven_settled_and_keeps_the_proven_ones() -> None:
    # Given a batch whose unreadable body is quarantined, then a crash while parking
    queues = FakeQueues()
    relay = fate_relay(FakeSender(unavailable), queues)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    relay._park = crash  # type: ignore[method-assign]
    summary = relay.process({"Records": [record("bad", "{not json"), record("m", event())]})
    # Then the quarantined record (its letter stored) is not failed -- its letter would be stored again --
    # and the other one is
    assert failed_ids(summary.response) == ["m"]
    assert [dict(letter.attributes)["source_message_id"] for letter in queues.letters] == ["bad"]


@pytest.mark.pure_only  # replaces a Relay method: a compiled Relay has fixed methods
def test_records_never_registered_before_a_crash_are_failed() -> None:
    relay = fate_relay(FakeSender(), FakeQueues())

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    relay._read = crash  # type: ignore[method-assign]
    summary = relay.process({"Records": [record("a", event()), record("b", event())]})
    assert failed_ids(summary.response) == ["a", "b"]
    assert summary.failures == {"internal_error": 2}


# --------------------------------------------------------------------------------------------- identity
def test_the_same_event_in_two_messages_gets_the_same_id_whatever_the_sqs_metadata() -> None:
    # Given a producer's retried SendMessage: the same body as two messages, ids and SentTimestamps apart
    sender = FakeSender()
    doc = event()
    first, retry = record("m-1", doc), record("m-2", doc)
    retry["attributes"]["SentTimestamp"] = str((NOW + 61) * 1000)
    fate_relay(sender, FakeQueues()).process({"Records": [first]})
    fate_relay(sender, FakeQueues()).process({"Records": [retry]})
    # Then both copies reach Meta under one event_id and one event_time (Meta keeps one)
    ids = {(e["event_id"], e["event_time"]) for e in sender.events}
    assert ids == {(derived_event_id("111", doc), doc["event_time"])}


def test_a_derived_id_is_the_pixel_and_the_canonical_content() -> None:
    doc = event()
    reordered = dict(reversed(list(doc.items())))
    assert derived_event_id("111", doc) == derived_event_id("111", reordered)
    assert derived_event_id("111", doc) == derived_event_id("111", {**doc, "event_id": None})
    assert derived_event_id("111", doc) != derived_event_id("222", doc)
    assert derived_event_id("111", doc) != derived_event_id("111", {**doc, "event_time": doc["event_time"] + 1})
    assert derived_event_id("111", {"x": "\ud800"}).isascii()  # hostile bytes hash, never raise


def test_a_defaulted_event_time_is_fixed_at_first_sight_and_survives_a_redrive() -> None:
    # Given an event without event_id and event_time, failing on its last receive (Meta unavailable)
    doc = event()
    del doc["event_time"]
    first = record("m-1", {"data": [doc], "upload_tag": "t1"})
    first["attributes"]["ApproximateReceiveCount"] = "3"
    sender, queues = FakeSender(unavailable), FakeQueues()
    summary = fate_relay(sender, queues).process({"Records": [first]})
    sent_first = [(e["event_id"], e["event_time"]) for e in sender.events]
    assert failed_ids(summary.response) == []  # dead-lettered by the relay, not failed
    (letter,) = queues.letters
    # When the letter is redriven: a new message id, a new SentTimestamp, receive count 1, Meta healthy
    redriven = record("m-redriven", letter.body)
    redriven["attributes"]["SentTimestamp"] = str((NOW + 86_400) * 1000)
    healthy = FakeSender()
    assert failed_ids(fate_relay(healthy, FakeQueues()).process({"Records": [redriven]}).response) == []
    # Then Meta sees the same event_id and event_time as the first attempt, and the request-level field
    assert [(e["event_id"], e["event_time"]) for e in healthy.events] == [sent_first[0]]
    assert sent_first[0] == (derived_event_id("111", doc), NOW)
    assert healthy.requests[0][1]["upload_tag"] == "t1"


# ------------------------------------------------------------------------- the relay owns the DLQ
def test_a_record_failing_on_its_last_receive_is_dead_lettered_by_the_relay_with_its_reason() -> None:
    # Given a record of two events on its last receive; Meta takes the first request and is then unavailable
    calls = []

    def first_only(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
        calls.append(1)
        return GraphReply(len(events), None, 1.0) if len(calls) == 1 else unavailable(pixel, events)

    last = record("m", {"data": [event(event_id="taken"), event(event_id="pending")], "namespace_id": "ns"})
    last["attributes"]["ApproximateReceiveCount"] = "3"  # MAX_RECEIVE_COUNT
    queues = FakeQueues()
    relay = fate_relay(FakeSender(first_only), queues, MAX_EVENTS_PER_REQUEST="1", MAX_ATTEMPTS="1")
    summary = relay.process({"Records": [last]})
    # Then the event Meta did not take is in the DLQ with its reason, id and request-level field; the
    # record is settled (not failed, not parked, nothing left for SQS's redrive policy to move)
    letters = letters_by_index(queues)
    assert set(letters) == {("m", "1")}
    assert letters[("m", "1")]["attrs"]["rejection_reason"] == "graph_transient_http503"
    assert letters[("m", "1")]["attrs"]["event_id"] == "pending"
    assert letters[("m", "1")]["body"]["namespace_id"] == "ns"
    assert failed_ids(summary.response) == []
    assert queues.visibility == []
    assert summary.records_dead_lettered == 1


def test_a_failed_dead_letter_fails_the_record_for_sqs_to_move() -> None:
    last = record("m", event())
    last["attributes"]["ApproximateReceiveCount"] = "3"
    summary = fate_relay(FakeSender(unavailable), FakeQueues(refuse=True)).process({"Records": [last]})
    assert failed_ids(summary.response) == ["m"]
    assert summary.failures == {"quarantine_failed": 1}


def test_a_record_whose_retention_ends_before_its_next_receive_is_dead_lettered_on_any_receive() -> None:
    # Given a first receive of a message sent 3 days 23 h 30 min ago (retention 4 days): parking is capped
    # at retention minus an hour, so it would come back only after the visibility timeout -- and expire
    near = record("near", event(event_id="late"))
    near["attributes"]["SentTimestamp"] = str((int(time.time()) - 345_600 + 1_800) * 1000)
    fresh = record("fresh", event(event_id="fresh"))
    queues = FakeQueues()
    summary = fate_relay(FakeSender(unavailable), queues).process({"Records": [near, fresh]})
    # Then the relay dead-letters it now; the fresh one is failed and parked
    assert set(letters_by_index(queues)) == {("near", "0")}
    assert failed_ids(summary.response) == ["fresh"]
    assert [s for _, _, s in queues.visibility] == [300]


# ------------------------------------------------------------------------------ hostile bytes, letters
def test_a_lone_surrogate_in_a_rejected_event_is_quarantined_and_sinks_no_neighbour() -> None:
    hostile = event(event_id="h", custom_data={"note": "\ud800"}, event_name="Lead\ufffe")
    hostile["action_source"] = "nowhere\ud800"  # rejected locally (invalid_action_source)
    sender, queues = FakeSender(), FakeQueues()
    batch = {"Records": [record("h", {"data": [hostile, event(event_id="ok-1")]}), record("n", event(event_id="ok-2"))]}
    summary = fate_relay(sender, queues).process(batch)
    assert failed_ids(summary.response) == []
    assert sorted(e["event_id"] for e in sender.events) == ["ok-1", "ok-2"]
    (letter,) = queues.letters
    assert sqs_valid(letter.body)
    assert json.loads(letter.body)["data"] == [hostile]
    assert len(letter.body.encode("utf-8")) == letter.size - sum(
        len(k) + 6 + len(v.encode()) for k, v in letter.attributes
    )


@pytest.mark.parametrize("field", ["upload_tag", "namespace_id", "upload_source", "partner_agent", "test_event_code"])
def test_an_unencodable_request_level_value_rejects_its_body_not_the_batch(field: str) -> None:
    sender, queues = FakeSender(), FakeQueues()
    bad = {"data": [event(event_id="x")], field: "tag\ud800"}
    summary = fate_relay(sender, queues).process({"Records": [record("bad", bad), record("ok", event(event_id="ok"))]})
    assert failed_ids(summary.response) == []
    assert [e["event_id"] for e in sender.events] == ["ok"]
    (letter,) = queues.letters
    assert dict(letter.attributes)["rejection_reason"] in {"invalid_request_field", "invalid_routing"}
    assert sqs_valid(letter.body)


def test_letters_of_wrapped_messages_keep_every_request_level_field() -> None:
    # Given an SNS notification and an EventBridge event wrapping {"data": [...], request-level fields}
    inner = {"data": [event(event_id="good"), event(event_id="old", event_time=1)], "upload_tag": "u1",
             "namespace_id": "ns1", "test_event_code": "T9"}  # fmt: skip
    sns = {"Type": "Notification", "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": json.dumps(inner)}
    eventbridge = {"detail-type": "capi", "source": "shop", "detail": inner}
    queues = FakeQueues()
    summary = fate_relay(FakeSender(), queues).process({"Records": [record("sns", sns), record("eb", eventbridge)]})
    # Then each rejected event's letter is a {"data"} body with those fields: a redrive sends the same request
    assert failed_ids(summary.response) == []
    for source in ("sns", "eb"):
        body = letters_by_index(queues)[(source, "1")]["body"]
        assert body == {"data": [inner["data"][1]], "upload_tag": "u1", "namespace_id": "ns1", "test_event_code": "T9"}


# ---------------------------------------------------------------------------------- fate I/O reserve
def test_the_fate_reserve_is_waves_of_concurrent_calls_each_bounded_by_the_sqs_timeout() -> None:
    assert fate_io_reserve_s(park_calls=50, letter_calls=0, concurrency=10, call_timeout_s=2.0) == 10.0
    assert fate_io_reserve_s(park_calls=51, letter_calls=3, concurrency=10, call_timeout_s=2.0) == 14.0
    assert fate_io_reserve_s(park_calls=1000, letter_calls=0, concurrency=64, call_timeout_s=0.5) == 8.0


class _DeadlineSpy(Deliverer):
    """Records the deadline it was given and fails every event (each record may need a parking call)."""

    deadline = 0.0

    def deliver(
        self, outbound: Any, deadline: float, *, fifo: bool = False, quarantine: bool = False
    ) -> DeliveryReport:
        self.deadline = deadline
        return DeliveryReport(failed={o.message_id: Failure("graph_transient_http503") for o in outbound})


@pytest.mark.parametrize(("records", "reserve"), [(10, 3.0), (500, 10.0), (10_000, 200.0)])
def test_delivery_leaves_time_for_every_parking_call_the_batch_may_need(records: int, reserve: float) -> None:
    # Given SQS_TIMEOUT 2 s and SQS_CONCURRENCY 10 (the defaults), a batch whose every record may fail and
    # be parked (no letter known before delivery), and a clock that stands still
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "DLQ_URL": DLQ})
    spy = _DeadlineSpy(FakeSender(), FakeTokens(), delivery_config(settings))
    queues = FakeQueues()
    relay = Relay(settings, spy, queues, monotonic=lambda: 0.0)
    batch = {"Records": [record(f"m{i}", event(event_id=str(i))) for i in range(records)]}
    summary = relay.process(batch, lambda: 1_000_000)
    # Then delivery ends one 2 s wave per ten parking calls before the fate deadline (1,000 s - the 2 s
    # margin), at least FATE_RESERVE (3 s) -- not a fixed 3 s whatever the batch size -- and every record is
    # parked in that time
    assert spy.deadline == pytest.approx(998.0 - reserve)
    assert summary.fate_reserve_s == reserve
    assert len(queues.visibility) == records
    assert summary.records_parked == records


# -------------------------------------------------------------------------------- refuse what loses data
def test_receives_that_outlast_the_retention_are_refused_at_cold_start_without_a_dlq() -> None:
    from capi_relay.settings import SettingsError

    base = {"ACCESS_TOKEN_SECRET_ID": "s"}
    # 30 receives of the default schedule take ~12.9 days: a parked message would expire in neither queue
    with pytest.raises(SettingsError, match="MAX_RECEIVE_COUNT"):
        settings_from_env(base | {"MAX_RECEIVE_COUNT": "30"})
    with pytest.raises(SettingsError, match="QUEUE_RETENTION"):
        settings_from_env(base | {"MAX_RECEIVE_COUNT": "5", "QUEUE_RETENTION": "7200"})
    # the template's defaults fit, and with DLQ_URL the relay dead-letters before the retention ends
    assert settings_from_env(base | {"MAX_RECEIVE_COUNT": "5"}).max_receive_count == 5
    assert settings_from_env(base | {"MAX_RECEIVE_COUNT": "30", "DLQ_URL": DLQ}).max_receive_count == 30


@pytest.mark.parametrize("value", ["inf", "1e12", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_throttle_hold_is_capped_at_twelve_hours(value: str) -> None:
    from capi_relay.deliver.policy import MAX_HOLD_S, _hold_s

    assert _hold_s({"Retry-After": value}) == MAX_HOLD_S == 43_200
    assert _hold_s({"Retry-After": "nan"}) is None
    assert _hold_s({"Retry-After": "30"}) == 30.0
