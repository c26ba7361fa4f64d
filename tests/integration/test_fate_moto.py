"""Each event's fate (issue 10) through the in-process relay, moto SQS (a DLQ with redrive), the Graph stand-in
and the event-source emulator.

In every case: delivered ∪ quarantined ∪ DLQ-by-redrive = every input event, and no event is in two of them
(an event delivered twice carried the same event_id both times).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from local.esm import BatchOutcome
from local.graph_standin import GraphStandIn
from local.stack import MotoServer, drain_queue
from tests.fate_harness import Harness, assert_partition, ev

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(moto_server: MotoServer, token: str, standin: GraphStandIn) -> Any:
    def make(**kw: Any) -> Harness:
        return Harness(moto_server, token, standin, **kw)

    return make


# ------------------------------------------------------------------------------------------- cases
def test_multi_event_message_sends_its_valid_events_and_quarantines_the_rest(harness: Any) -> None:
    h: Harness = harness()
    # Given one message: two good events, one too old (local), one Meta rejects (stand-in), test code in body
    data = [ev("good-1"), ev("old", event_time=int(time.time()) - 8 * 86_400), ev("meta-bad"), ev("good-2")]
    h.standin.state.reject_event_ids = {"meta-bad"}
    (mid,) = h.send([json.dumps({"data": data, "test_event_code": "TEST77"})])

    # When the relay drains the queue
    outcomes = h.esm(h.relay()).run_until_drained(30)

    # Then the record was received once and not failed; the good events were delivered on that receive
    assert [o.failed for o in outcomes] == [[]]
    fates = h.fates()
    assert_partition(fates, {(mid, 0): "good-1", (mid, 1): "Q", (mid, 2): "Q", (mid, 3): "good-2"})
    # ... and each rejected event is one DLQ message with its reason and routing, redrivable as is
    assert fates.quarantined[(mid, 1)] == {"rejection_reason": "event_too_old", "source_message_id": mid,
                                           "event_index": "1", "pixel_id": "100000000000001",
                                           "test_event_code": "TEST77", "event_id": "old"}  # fmt: skip
    assert fates.quarantined[(mid, 2)]["rejection_reason"].startswith("graph_invalid_")
    assert json.loads(fates.quarantined_bodies[(mid, 2)]) == {"data": [data[2]], "test_event_code": "TEST77"}
    assert h.summaries[0].quarantined.total() == 2


def test_unreadable_bodies_are_quarantined_at_once(harness: Any) -> None:
    h: Harness = harness()
    ids = h.send(["{not json", "   ", json.dumps({"something": "else"}), json.dumps(ev("fine"))])
    outcomes = h.esm(h.relay()).run_until_drained(30)
    assert [o.failed for o in outcomes] == [[]]
    fates = h.fates()
    assert_partition(fates, {(ids[0], None): "Q", (ids[1], None): "Q", (ids[2], None): "Q", (ids[3], 0): "fine"})
    reasons = {k[0]: a["rejection_reason"] for k, a in fates.quarantined.items()}
    assert reasons == {ids[0]: "body_not_json", ids[1]: "empty_body", ids[2]: "unknown_shape"}
    assert fates.quarantined_bodies[(ids[0], None)] == "{not json"  # as received
    assert fates.quarantined_bodies[(ids[1], None)] == "   "


def test_a_failed_quarantine_send_fails_the_records_and_sqs_redrives_them(harness: Any) -> None:
    h: Harness = harness()
    # Given DLQ_URL naming a queue that does not exist
    missing = h.dlq_url.rsplit("/", 1)[0] + "/no-such-queue"
    ids = h.send([json.dumps({"data": [ev("ok"), ev("old", event_time=1)]}), "{bad"])
    outcomes = h.esm(h.relay(DLQ_URL=missing)).run_until_drained(30)
    # Then both records failed (nothing lost) until SQS moved them to the real DLQ
    assert sorted(outcomes[0].failed) == sorted(ids)
    assert all(s.failures.keys() <= {"quarantine_failed"} for s in h.summaries)
    fates = h.fates()
    assert set(fates.redriven) == set(ids)
    assert fates.quarantined == {}
    assert set(fates.delivered) == {"ok"}  # sent on each receive, same event_id: Meta deduplicates
    assert fates.delivered["ok"] == 2


def test_without_a_dlq_url_rejected_events_fail_the_record_after_its_valid_events_were_sent(harness: Any) -> None:
    h: Harness = harness()
    (mid,) = h.send([json.dumps({"data": [ev("ok"), ev("old", event_time=1)]})])
    h.esm(h.relay(quarantine=False)).run_until_drained(30)
    fates = h.fates()
    assert set(fates.redriven) == {mid}
    assert set(fates.delivered) == {"ok"}


def test_fifo_poison_is_quarantined_and_its_group_keeps_order(harness: Any) -> None:
    h: Harness = harness(fifo=True)
    # Given group A: a1 a2 POISON a3 a4 (one message each) and group B: b1 b2
    h.standin.state.reject_event_ids = {"a-poison"}
    a_ids = h.send([json.dumps(ev(e)) for e in ("a-1", "a-2", "a-poison", "a-3", "a-4")], group="A")
    b_ids = h.send([json.dumps(ev(e)) for e in ("b-1", "b-2")], group="B")
    outcomes = h.esm(h.relay(), batch_size=10).run_until_drained(40)
    assert all(o.failed == [] for o in outcomes)
    fates = h.fates()
    expected: dict[tuple[str, int | None], str] = {(a_ids[i], 0): e for i, e in enumerate(["a-1", "a-2", "Q", "a-3",
                                                                                           "a-4"])}  # fmt: skip
    expected.update({(b_ids[i], 0): e for i, e in enumerate(["b-1", "b-2"])})
    assert_partition(fates, expected)
    letter = fates.quarantined[(a_ids[2], 0)]
    assert letter["rejection_reason"].startswith("graph_invalid_")
    # Order: group A's accepted events in order, and no event after the poison accepted before the poison was
    # decided (a rejected request accepts nothing: Meta rejects the whole request)
    accepted = [(i, r) for i, r in enumerate(h.standin.requests) if r.status == 200]
    assert [e for _, r in accepted for e in r.event_ids if e.startswith("a-")] == ["a-1", "a-2", "a-3", "a-4"]
    last_poison_test = max(i for i, r in enumerate(h.standin.requests) if "a-poison" in r.event_ids)
    for i, r in accepted:
        if any(e in ("a-3", "a-4") for e in r.event_ids):
            assert i > last_poison_test, "an event after the poison was accepted before the poison was decided"


def test_a_throttle_with_a_60_minute_estimate_parks_the_records(harness: Any) -> None:
    h: Harness = harness(max_receive_count=2)
    # Given Meta throttling with a 60-minute estimate (usage headers: estimated_time_to_regain_access)
    h.standin.add_fault(status=400, code=80004, subcode=2446079, usage_minutes=60, times=-1)
    ids = h.send([json.dumps(ev(f"t-{i}")) for i in range(3)])
    esm = h.esm(h.relay(PARK_SCHEDULE="1,1,1"))
    first = esm.poll_once()
    assert first is not None
    assert sorted(first.failed) == sorted(ids)
    assert h.summaries[-1].records_parked == 3
    # Then they are not received again meanwhile (the queue's own visibility timeout is 1 s)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert esm.poll_once() is None
    attrs = h.clients.sqs.get_queue_attributes(
        QueueUrl=h.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "3"
    # When the hour has passed (the messages made visible now, a new execution environment: the relay's own
    # memory of the throttle is an hour old too) and Meta accepts again, every event is delivered once
    h.standin.state.reset()
    for record in first.event["Records"]:
        h.clients.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=record["receiptHandle"],
                                                VisibilityTimeout=0)  # fmt: skip
    h.esm(h.relay(PARK_SCHEDULE="1,1,1")).run_until_drained(30)
    fates = h.fates()
    assert_partition(fates, {(m, 0): f"t-{i}" for i, m in enumerate(ids)})


def test_a_six_hour_outage_over_several_receives_ends_with_nothing_in_the_dlq(harness: Any) -> None:
    # Given the template's MaxReceiveCount (5) and the default schedule scaled down 1 h -> 1 s
    # (5 min, 30 min, 2 h, 6 h -> 1, 1, 2, 6 s): receives at 0, 1, 2, 4 and 10 s
    h: Harness = harness(max_receive_count=5)
    h.standin.add_fault(status=503, code=2, times=-1)  # Meta down
    ids = h.send([json.dumps({"data": [ev(f"o-{i}-0"), ev(f"o-{i}-1")]}) for i in range(4)])
    esm = h.esm(h.relay(PARK_SCHEDULE="1,1,2,6,12"))
    outage_ends = time.monotonic() + 6  # "6 hours"
    outcomes: list[BatchOutcome] = []
    while time.monotonic() < outage_ends:
        outcome = esm.poll_once()
        if outcome is not None:
            outcomes.append(outcome)
            assert outcome.deleted == []
    # When Meta is back
    with h.standin.state.lock:
        h.standin.state.faults.clear()
    outcomes += esm.run_until_drained(40)
    # Then each record was received several times, parked in between, and nothing reached the DLQ
    receives = max(max(o.receive_counts.values()) for o in outcomes)
    assert 3 <= receives <= 5  # the 5th receive is the last one before SQS would move the record
    assert sum(s.records_parked for s in h.summaries) >= 8
    fates = h.fates()
    assert fates.redriven == {}
    assert_partition(fates, {(m, j): f"o-{i}-{j}" for i, m in enumerate(ids) for j in (0, 1)})


def test_dlq_command_summarizes_by_reason_deletes_nothing_and_prints_the_redrive(harness: Any) -> None:
    import io

    from capi_relay.tools import cli

    h: Harness = harness()
    # Given quarantined events and one record moved by SQS (no reason attribute)
    h.send([json.dumps({"data": [ev("k1"), ev("old1", event_time=1), ev("old2", event_time=2)]}), "{bad"])
    h.esm(h.relay()).run_until_drained(30)
    h.clients.sqs.send_message(QueueUrl=h.dlq_url, MessageBody=json.dumps(ev("moved")))

    # When an operator runs the command
    out = io.StringIO()
    assert cli.main(["dlq", "--queue-url", h.dlq_url], stdout=out) == 0
    text = out.getvalue()

    # Then it counts by reason, names the SQS-moved one apart, and prints the redrive to the events queue
    assert "~4 messages, 4 scanned (nothing deleted)" in text
    assert any(line.split()[:2] == ["1", "body_not_json"] for line in text.splitlines())
    assert sum(1 for line in text.splitlines() if "moved by SQS" in line) == 1
    dlq_arn = h.clients.sqs.get_queue_attributes(QueueUrl=h.dlq_url, AttributeNames=["QueueArn"])["Attributes"]
    assert f"--source-arn {dlq_arn['QueueArn']} --destination-arn {h.queue_arn}" in text
    # ... and every message is still there, visible at once
    assert len(drain_queue(h.clients.sqs, h.dlq_url)) == 4
