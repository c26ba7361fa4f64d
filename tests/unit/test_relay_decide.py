"""The relay's decide step with a fixed clock: what each failing record's park is computed from (the first
receive, the receive count, the sent time, the oldest event, the schedule, the retention), that the next receive
a last-chance check assumes is the park when there is one, when a failing record is not parked because SQS moves
it next, and the fate reserve the batch keeps back for its letters and parking calls (issue 17, mutation
testing of the decision sequence)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capi_relay.app import delivery_config
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.relay import BatchSummary, Relay, _Record
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens
from tests.unit.test_relay import DLQ, NOW, FakeQueues, event, failed_ids, record

RETENTION = 86_400
WINDOW_MARGIN = 3_600


def by_pixel(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
    if pixel == "503":
        return GraphError(ErrorKind.TRANSIENT, http_status=503)
    if pixel == "190":
        return GraphError(ErrorKind.AUTH, http_status=401, code=190)
    return GraphReply(len(events), None, 1.0)


def run(records: list[dict[str, Any]], *, dlq: bool = True, **env: str) -> tuple[BatchSummary, FakeQueues]:
    base = {"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "1", "MAX_RECEIVE_COUNT": "10",
            "PARK_SCHEDULE": "60,120,180", "QUEUE_VISIBILITY_TIMEOUT": "900",
            "QUEUE_RETENTION": str(RETENTION)}  # fmt: skip
    if dlq:
        base["DLQ_URL"] = DLQ
    settings = settings_from_env(base | env)
    queues = FakeQueues()
    deliverer = Deliverer(FakeSender(by_pixel), FakeTokens(), delivery_config(settings), sleep=lambda _: None)
    relay = Relay(settings, deliverer, queues, wall_clock=lambda: float(NOW))
    return relay.process({"Records": records}), queues


def rec(message_id: str, pixel: str = "503", *, count: str = "1", sent_s: int = NOW, events: int = 1,
        **attributes: str) -> dict[str, Any]:  # fmt: skip
    data = [event(event_id=f"{message_id}-{i}") for i in range(events)]
    raw = record(message_id, {"data": data, "pixel_id": pixel})
    raw["receiptHandle"] = f"rh-{message_id}"
    raw["attributes"].update({"ApproximateReceiveCount": count, "SentTimestamp": str(sent_s * 1000), **attributes})
    return raw


def parks(queues: FakeQueues) -> dict[str, int]:
    return {handle.removeprefix("rh-"): seconds for _, handle, seconds in queues.visibility}


def test_each_park_is_capped_by_what_that_record_says() -> None:
    old = rec("old")
    old_body = {"data": [event(event_id="old-0", event_time=NOW - 7 * 86_400 + WINDOW_MARGIN + 40)], "pixel_id": "503"}
    old["body"] = json.dumps(old_body)
    records = [
        rec("first", ApproximateFirstReceiveTimestamp=str((NOW - 43_150) * 1000)),  # 12 h from SQS's first receive
        rec("count3", count="3"),  # the schedule's third step
        rec("unread", count="x"),  # an unreadable count is the first receive
        old,  # 40 s left inside Meta's window (minus the margin)
        rec("ret", sent_s=NOW - (RETENTION - WINDOW_MARGIN - 30)),  # 30 s of retention left (minus the margin)
        rec("plain"),
    ]
    summary, queues = run(records)
    assert parks(queues) == {"first": 50, "count3": 180, "unread": 60, "old": 40, "ret": 30, "plain": 60}
    assert summary.records_parked == 6
    assert set(failed_ids(summary.response)) == {r["messageId"] for r in records}


def test_the_last_chance_check_assumes_the_park_as_the_next_receive_else_the_visibility_timeout() -> None:
    near = NOW - (RETENTION - WINDOW_MARGIN - 500)  # 500 s of retention left past the margin
    # Given a parkable failure (parked 60 s: it comes back in time) and an auth failure (back after 900 s: too late)
    summary, queues = run([rec("parked", sent_s=near), rec("auth", "190", sent_s=near)])
    # Then the first is parked and failed, the second dead-lettered by the relay with its reason
    assert parks(queues) == {"parked": 60}
    assert failed_ids(summary.response) == ["parked"]
    assert [(letter.source, dict(letter.attributes)["rejection_reason"]) for letter in queues.letters] == [
        ("auth", "graph_auth_190")
    ]
    assert summary.records_dead_lettered == 1


@pytest.mark.parametrize(("max_receive", "parked"), [("1", False), ("2", True)])
def test_an_unreadable_count_is_one_receive_when_deciding_whether_sqs_moves_the_record_next(
    max_receive: str, parked: bool
) -> None:
    summary, queues = run([rec("m", count="x")], dlq=False, MAX_RECEIVE_COUNT=max_receive)
    assert parks(queues) == ({"m": 60} if parked else {})
    assert summary.records_parked == int(parked)
    assert failed_ids(summary.response) == ["m"]
    assert summary.failures == {"graph_transient_http503": 1}


# ------------------------------------------------------------------------------------------ the reserve
def reserve(records: list[dict[str, Any]], **env: str) -> float:
    fast: dict[str, str] = {"SQS_CONCURRENCY": "1", "SQS_TIMEOUT": "1", "FATE_RESERVE": "1"} | env
    summary, _ = run(records, dlq=True, **fast)
    return summary.fate_reserve_s


def bad_bodies(n: int) -> list[dict[str, Any]]:
    return [record(f"bad{i}", "{not json") for i in range(n)]


@pytest.mark.parametrize("why", ["count", "retention"])
def test_the_reserve_counts_known_rejections_and_every_event_of_a_last_chance_record(why: str) -> None:
    last = (
        rec("last", "111", events=3, count="10")
        if why == "count"
        else rec("last", "111", events=3, sent_s=NOW - RETENTION + 100)
    )
    # 8 letters for the bodies + 3 for the last-chance record: 2 SendMessageBatch calls, 1 visibility call
    assert reserve([*bad_bodies(8), last]) == 3.0
    assert reserve([*bad_bodies(8), rec("ok", "111", events=3)]) == 2.0


def test_an_unreadable_last_chance_record_counts_one_letter_for_its_body_and_one_for_its_last_chance() -> None:
    last = record("last", "{not json")
    last["attributes"]["ApproximateReceiveCount"] = "10"
    assert reserve([*bad_bodies(8), last]) == 2.0  # 10 letters: one call
    assert reserve([*bad_bodies(9), last]) == 3.0  # 11 letters: two calls


def test_no_reserve_without_fate_calls_and_no_letter_calls_without_a_dlq() -> None:
    records = [rec(f"m{i}", "111") for i in range(15)]
    assert run(records, dlq=False, PARK_SCHEDULE="off", FATE_RESERVE="1", SQS_TIMEOUT="1")[0].fate_reserve_s == 0.0
    summary, _ = run([*records, *bad_bodies(3)], dlq=False, SQS_CONCURRENCY="1", SQS_TIMEOUT="1", FATE_RESERVE="1")
    assert summary.fate_reserve_s == 2.0  # 18 records: two visibility calls, no letters
    summary, _ = run([*records, *bad_bodies(3)], PARK_SCHEDULE="off", SQS_CONCURRENCY="1", SQS_TIMEOUT="1",
                     FATE_RESERVE="1")  # fmt: skip
    assert summary.fate_reserve_s == 1.0  # parking off: the letter calls alone (three letters: one call)


def test_without_a_sent_timestamp_a_missing_event_time_is_the_invocations_clock() -> None:
    sender = FakeSender()
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"})
    relay = Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings), sleep=lambda _: None),
                  wall_clock=lambda: NOW + 0.75)  # fmt: skip
    timeless = event(event_id="e")
    del timeless["event_time"]
    raw = record("m", {"data": [timeless]})
    del raw["attributes"]["SentTimestamp"]
    summary = relay.process({"Records": [raw]})
    assert failed_ids(summary.response) == []
    assert [e["event_time"] for e in sender.events] == [NOW]
    assert summary.delivery.latencies_ms == [1.0]


def test_a_record_is_taken_from_the_ledgers_position_only_when_its_message_id_agrees() -> None:
    # _decide maps the ledger's undecided entries to records by input position; a mismatch is a bug that must
    # fail closed (it raises, and _process fails every record not proven settled), never decide another record
    records = [_Record("a", {}), _Record("b", {})]
    assert Relay._at(records, 1, "b") is records[1]
    for index, message_id in ((1, "a"), (2, "b")):
        with pytest.raises(RuntimeError):
            Relay._at(records, index, message_id)
