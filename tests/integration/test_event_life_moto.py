"""An event's whole life (issue 17) through moto SQS (real HTTP), the Graph stand-in and the event-source
emulator: hostile bytes, unreadable attributes, a hanging Meta behind a slow SQS, the redrive round trip, a
producer's duplicate SendMessage, a near-expiry record, wrapped letters redriven with their fields."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import pytest

from capi_relay.app import build_relay
from capi_relay.relay import BatchSummary, Relay
from capi_relay.settings import settings_from_env
from local.blackhole import BlackHole
from local.esm import InvokeResult
from local.graph_standin import GraphStandIn
from local.latency_proxy import LatencyProxy
from local.stack import MotoServer, drain_queue
from tests.factories import make_event
from tests.fate_harness import Harness, assert_partition, ev

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(moto_server: MotoServer, token: str, standin: GraphStandIn) -> Any:
    def make(**kw: Any) -> Harness:
        return Harness(moto_server, token, standin, **kw)

    return make


def invoker(h: Harness, relay: Relay, budget_s: float, mutate: Any = None) -> Any:
    def invoke(event: dict[str, Any]) -> InvokeResult:
        if mutate is not None:
            mutate(event)
        started = time.monotonic()
        summary = relay.process(event, lambda: int((started + budget_s - time.monotonic()) * 1000))
        h.summaries.append(summary)
        return InvokeResult(summary.response)

    return invoke


def no_id(marker: str, **kw: Any) -> dict[str, Any]:
    """An event without event_id, told apart by its custom_data.order_id."""
    doc = make_event(now=int(time.time()), custom_data={"value": 1.0, "currency": "USD", "order_id": marker}, **kw)
    doc.pop("event_id", None)
    return doc


def redrive(h: Harness) -> list[dict[str, Any]]:
    """What StartMessageMoveTask does (moto lacks it): every DLQ message becomes a new message of the events
    queue -- new messageId, new SentTimestamp, receive count 1 -- with its body and attributes."""
    letters = drain_queue(h.clients.sqs, h.dlq_url)
    time.sleep(1.1)  # SentTimestamp (ms) certainly differs from the first send
    for letter in letters:
        attrs: dict[str, Any] = {k: {"DataType": "String", "StringValue": v["StringValue"]}
                 for k, v in (letter.get("MessageAttributes") or {}).items()}  # fmt: skip
        h.clients.sqs.send_message(QueueUrl=h.queue_url, MessageBody=letter["Body"], MessageAttributes=attrs)
    return letters


def by_marker(standin: GraphStandIn) -> dict[str, set[tuple[str, int]]]:
    seen: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for item in standin.received:
        event = item["event"]
        seen[event["custom_data"]["order_id"]].add((str(event["event_id"]), int(event["event_time"])))
    return seen


# ------------------------------------------------------------------------------------------- hostile bytes
def test_a_batch_of_lone_surrogates_fails_nothing_and_loses_nothing(harness: Any) -> None:
    h: Harness = harness()
    # Given "\ud800" (a valid JSON escape SQS stores) in request-level fields and in an event's value
    ids = h.send([
        json.dumps({"data": [ev("s-0")], "upload_tag": "tag\ud800"}),
        json.dumps({"data": [ev("s-1")], "test_event_code": "TEST\ud800"}),
        json.dumps({"data": [ev("s-bad", custom_data={"note": "x\ud800"}), ev("s-2")], "namespace_id": "ns\uffff"}),
        json.dumps({"data": [ev("s-bad-2", event_name="Lead\ud800"), ev("s-3")]}),
        json.dumps(ev("s-4")),
    ])  # fmt: skip
    # When the relay drains the queue
    outcomes = h.esm(h.relay()).run_until_drained(30)
    # Then no record failed; the readable events were delivered once, the rest quarantined with a reason
    assert [o.failed for o in outcomes] == [[]]
    fates = h.fates()
    assert_partition(fates, {(ids[0], None): "Q", (ids[1], None): "Q", (ids[2], None): "Q",
                             (ids[3], 0): "Q", (ids[3], 1): "s-3", (ids[4], 0): "s-4"})  # fmt: skip
    reasons = {k: a["rejection_reason"] for k, a in fates.quarantined.items()}
    assert reasons[(ids[0], None)] == "invalid_request_field"
    assert reasons[(ids[1], None)] == "invalid_routing"
    assert reasons[(ids[2], None)] == "invalid_request_field"  # U+FFFF: SQS could never store it in a letter
    assert reasons[(ids[3], 0)] == "invalid_unicode"
    # ... and the event letter reads back as the event received, escapes and all
    assert json.loads(fates.quarantined_bodies[(ids[3], 0)])["data"][0]["event_name"] == "Lead\ud800"


def test_a_record_with_an_unreadable_receive_count_is_read_and_its_neighbours_are_not_acknowledged_unsent(
    harness: Any,
) -> None:
    h: Harness = harness()
    ids = h.send([json.dumps(ev(f"u-{i}")) for i in range(6)])

    def unreadable(event: dict[str, Any]) -> None:  # what a test event or a future attribute format might hold
        first = event["Records"][0]["attributes"]
        first["ApproximateReceiveCount"] = "²"  # str.isdigit() is True, int() raises
        first["SentTimestamp"] = "١٧٠٠"  # Arabic-Indic digits

    outcomes = h.esm_with(invoker(h, h.relay(), 8.0, unreadable)).run_until_drained(30)
    assert all(o.failed == [] for o in outcomes)
    assert_partition(h.fates(), {(m, 0): f"u-{i}" for i, m in enumerate(ids)})


# ------------------------------------------------------------------------------ a hanging Meta, slow SQS
def test_meta_hanging_with_500_records_and_sqs_at_50_ms_every_record_that_goes_back_is_parked(
    harness: Any, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the template's defaults: BatchSize 500, Timeout 30 s, FATE_RESERVE 3 s, SQS_TIMEOUT 2 s, the
    # default park schedule; Meta accepting connections and never answering; every SQS call of the relay
    # taking 50 ms more (a loopback proxy in front of moto)
    h: Harness = harness(visibility_timeout_s=40)
    sqs = h.clients.sqs
    for start in range(0, 500, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(ev(f"h-{start + i}"))} for i in range(10)]
        assert not sqs.send_message_batch(QueueUrl=h.queue_url, Entries=entries).get("Failed")  # type: ignore[arg-type]
    with BlackHole() as meta, LatencyProxy(moto_server.endpoint_url, 0.05) as slow_sqs:
        # boto3 reads the endpoint from the process environment when the relay creates its clients (lazily,
        # in the invocation); the emulator's own client keeps talking to moto directly
        monkeypatch.setenv("AWS_ENDPOINT_URL", slow_sqs.url)
        env = h.env(GRAPH_API_URL=meta.url, AWS_ENDPOINT_URL=slow_sqs.url, DEADLINE_MARGIN="2", FATE_RESERVE="3",
                    SQS_TIMEOUT="2", GRAPH_READ_TIMEOUT="5", MAX_ATTEMPTS="5",
                    PARK_SCHEDULE="300,1800,7200,21600,43200")  # fmt: skip
        relay = build_relay(settings_from_env(env))
        invoked_at: list[float] = []
        invoke = invoker(h, relay, 30.0, lambda _: invoked_at.append(time.monotonic()))
        esm = h.esm_with(invoke, batch_size=500, window_s=60)  # collect all 500 (moto is slow on a busy machine)
        outcome = esm.poll_once()
        finished = time.monotonic()
    # Then every record went back, and every one of them was parked (ChangeMessageVisibilityBatch succeeded)
    assert outcome is not None
    assert len(outcome.message_ids) == 500
    assert len(outcome.failed) == 500
    summary: BatchSummary = h.summaries[-1]
    assert summary.records_parked == 500, dict(summary.failures)
    assert slow_sqs.calls >= 50  # the relay's parking calls went through the 50 ms proxy
    assert finished - invoked_at[0] < 30  # the invocation ended inside its budget
    # ... so none comes back after the queue's own 40 s visibility timeout (every one was received before the
    # invocation started): they wait for the schedule's 5 minutes
    time.sleep(max(0.0, invoked_at[0] + 42 - time.monotonic()))
    assert sqs.receive_message(QueueUrl=h.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages") is None
    assert drain_queue(sqs, h.dlq_url, timeout_s=1) == []


# --------------------------------------------------------------------------------------------- identity
def test_redrive_round_trip_sends_the_same_ids_and_times(harness: Any) -> None:
    # Given Meta taking every request but answering too late (the relay's read timeout is 1 s): the events
    # are taken, the answers lost; the record fails on receive 1 and on its last receive (2)
    h: Harness = harness(max_receive_count=2)
    h.standin.add_fault(delay_ms=2500, times=-1)
    untimed = no_id("r-untimed")
    del untimed["event_time"]
    own = ev("r-own", custom_data={"value": 1, "currency": "USD", "order_id": "r-own"})
    (mid,) = h.send([json.dumps({"data": [no_id("r-timed"), untimed, own], "upload_tag": "round-trip"})])
    relay = h.relay(GRAPH_READ_TIMEOUT="1", GRAPH_CONNECT_TIMEOUT="1")
    outcomes = h.esm(relay).run_until_drained(40)
    # Then the relay dead-lettered it itself on the last receive (nothing moved by SQS), one letter per event
    assert [o.receive_counts[mid] for o in outcomes] == [1, 2]
    assert outcomes[-1].failed == []
    time.sleep(3)  # the stand-in finishes the requests it was still holding
    first_attempts = by_marker(h.standin)
    # When Meta is healthy and the DLQ is redriven (new messageIds, new SentTimestamps, receive count 1)
    with h.standin.state.lock:
        h.standin.state.faults.clear()
    letters = redrive(h)
    assert sorted(int(m["MessageAttributes"]["event_index"]["StringValue"]) for m in letters) == [0, 1, 2]
    assert {m["MessageAttributes"]["source_message_id"]["StringValue"] for m in letters} == {mid}
    before = len(h.standin.received)
    assert all(o.failed == [] for o in h.esm(h.relay()).run_until_drained(30))
    # Then Meta received every event again under the same event_id and event_time as the first attempt
    after = by_marker(h.standin)
    assert len(h.standin.received) == before + 3
    for marker in ("r-timed", "r-untimed", "r-own"):
        assert len(first_attempts[marker]) == 1, first_attempts[marker]
        assert after[marker] == first_attempts[marker], marker
    assert all(item["request"] == {"upload_tag": "round-trip"} for item in h.standin.received)
    assert drain_queue(h.clients.sqs, h.dlq_url, timeout_s=1) == []


def test_a_producers_duplicate_send_message_reaches_meta_under_one_identity(harness: Any) -> None:
    h: Harness = harness()
    timed = json.dumps(no_id("dup-timed"))
    untimed_doc = no_id("dup-untimed")
    del untimed_doc["event_time"]
    untimed = json.dumps(untimed_doc)
    # Given a producer whose SendMessage timed out but had succeeded: it sends the same body again, later
    first = h.send([timed, untimed])
    time.sleep(1.1)
    second = h.send([timed, untimed])
    assert set(first).isdisjoint(second)
    h.esm(h.relay()).run_until_drained(30)
    seen = by_marker(h.standin)
    # Then both copies carry one event_id (Meta keeps one); with its own event_time, one time as well
    assert len(seen["dup-timed"]) == 1
    assert len({event_id for event_id, _ in seen["dup-untimed"]}) == 1  # its defaulted time may differ (limit)


# ------------------------------------------------------------------------------------ the last chance
def test_a_record_near_its_retention_end_is_dead_lettered_on_its_first_receive(harness: Any) -> None:
    # Given a queue keeping messages 60 s (QUEUE_RETENTION says so) and Meta unavailable
    h: Harness = harness(max_receive_count=5)
    h.clients.sqs.set_queue_attributes(QueueUrl=h.queue_url, Attributes={"MessageRetentionPeriod": "60"})
    h.standin.add_fault(status=503, code=2, times=-1)
    (mid,) = h.send([json.dumps({"data": [ev("near-0"), ev("near-1")]})])
    outcomes = h.esm(h.relay(QUEUE_RETENTION="60")).run_until_drained(30)
    # Then it is not returned to SQS to expire unseen: the relay dead-letters its events with the reason
    assert [o.failed for o in outcomes] == [[]]
    fates = h.fates()
    assert set(fates.quarantined) == {(mid, 0), (mid, 1)}
    assert {a["rejection_reason"] for a in fates.quarantined.values()} == {"graph_transient_2"}
    assert {a["event_id"] for a in fates.quarantined.values()} == {"near-0", "near-1"}


def test_wrapped_letters_are_redriven_with_every_request_level_field(harness: Any) -> None:
    h: Harness = harness()
    resources = h.resources
    if resources.topic_arn is None:
        pytest.skip("SNS -> SQS could not be set up in this moto")
    # Given {"data": [...], upload_tag, namespace_id} inside an SNS notification and an EventBridge event;
    # Meta rejects one event of each
    h.standin.state.reject_event_ids = {"w-sns-bad", "w-eb-bad"}

    def inner(tag: str) -> dict[str, Any]:
        return {"data": [ev(f"w-{tag}-ok"), ev(f"w-{tag}-bad")], "upload_tag": f"tag-{tag}", "namespace_id": "ns-1"}

    h.clients.sns.publish(TopicArn=resources.topic_arn, Message=json.dumps(inner("sns")))
    entry = {"Source": resources.event_source, "DetailType": "capi.event", "Detail": json.dumps(inner("eb")),
             "EventBusName": resources.event_bus_name}  # fmt: skip
    h.clients.events.put_events(Entries=[entry])  # type: ignore[list-item]
    h.esm(h.relay()).run_until_drained(30)
    # When the cause is fixed and the DLQ redriven
    h.standin.state.reject_event_ids = set()
    letters = redrive(h)
    assert len(letters) == 2
    for letter in letters:
        body = json.loads(letter["Body"])
        assert body["namespace_id"] == "ns-1"
        assert body["upload_tag"] in {"tag-sns", "tag-eb"}
    h.esm(h.relay()).run_until_drained(30)
    # Then the redriven events reach Meta with the fields of their first attempt
    got = {item["event"]["event_id"]: item["request"] for item in h.standin.received}
    assert got["w-sns-bad"] == got["w-sns-ok"] == {"namespace_id": "ns-1", "upload_tag": "tag-sns"}
    assert got["w-eb-bad"] == got["w-eb-ok"] == {"namespace_id": "ns-1", "upload_tag": "tag-eb"}
