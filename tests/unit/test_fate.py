"""The pure parts of each record's fate: the decision, the park schedule, the DLQ messages and their batching."""

from __future__ import annotations

import json

import pytest

from capi_relay.fate.ledger import (
    META_WINDOW_S,
    SQS_MAX_VISIBILITY_S,
    Decision,
    LetterDue,
    Outcome,
    ParkInput,
    decide,
    is_parkable,
    park_seconds,
)
from capi_relay.fate.letters import MAX_BATCH_BYTES, DeadLetter, Source, batches, dead_letter, sqs_valid
from capi_relay.ingest.model import Identity
from capi_relay.settings import DEFAULT_PARK_SCHEDULE_S

NOW = 1_800_000_000.0


# ------------------------------------------------------------------------------------------ decide
def test_a_record_with_nothing_rejected_and_no_failure_is_delivered() -> None:
    assert decide(None, [], quarantine=True) == Decision(Outcome.DELIVERED)
    assert decide(None, [], quarantine=False) == Decision(Outcome.DELIVERED)


def test_rejections_are_quarantined_with_a_dlq_and_fail_the_record_without_one() -> None:
    rejected = [LetterDue(1, "event_too_old"), LetterDue(3, "graph_invalid_100_2804003")]
    assert decide(None, rejected, quarantine=True) == Decision(Outcome.QUARANTINE, quarantine=tuple(rejected))
    assert decide(None, rejected, quarantine=False) == Decision(Outcome.FAILED, "event_too_old")


def test_a_record_going_back_to_sqs_quarantines_nothing_now() -> None:
    # Given a record with a rejected event whose other events failed transiently
    decision = decide("graph_transient_http503", [LetterDue(0, "event_too_old")], quarantine=True)
    # Then it fails (parked) and nothing is quarantined: the next receive decides the rejected event again
    assert decision == Decision(Outcome.FAILED, "graph_transient_http503", park=True)


@pytest.mark.parametrize(
    ("reason", "parked"),
    [("graph_throttled_4", True), ("graph_throttled_http429", True), ("graph_transient_http502", True),
     ("secret_unavailable", True), ("graph_auth_190", False), ("graph_config_10", False),
     ("graph_request_100", False), ("deadline", False), ("fifo_group_blocked", False),
     ("deadline_preparing", False), ("internal_error", False), ("quarantine_failed", False)],
)  # fmt: skip
def test_only_throttle_and_transient_failures_are_parked(reason: str, parked: bool) -> None:
    assert is_parkable(reason) is parked
    assert decide(reason, [], quarantine=True).park is parked


# ------------------------------------------------------------------------------------------ park
def park(**kw: object) -> int | None:
    args: dict[str, object] = {"receive_count": 1, "now": NOW, "invocation_started": NOW - 10,
                               "schedule_s": DEFAULT_PARK_SCHEDULE_S}  # fmt: skip
    args.update(kw)
    return park_seconds(ParkInput(**args))  # type: ignore[arg-type]


def test_schedule_grows_with_the_receive_count_and_repeats_its_last_step() -> None:
    got = [park(receive_count=n) for n in range(1, 8)]
    assert got[:3] == [300, 1800, 7200]
    assert got[3] == 21600
    # 12 h is capped to what SQS allows counted from this receive (before the invocation started)
    assert got[4] == got[5] == got[6]
    assert SQS_MAX_VISIBILITY_S - 400 < got[4] < SQS_MAX_VISIBILITY_S  # type: ignore[operator]


def test_metas_estimate_wins_when_longer_and_never_shortens_the_step() -> None:
    assert park(retry_after_s=3600.0) == 3600
    assert park(retry_after_s=10.0) == 300
    assert park(receive_count=3, retry_after_s=60.0) == 7200


def test_twelve_hours_are_counted_from_the_receive() -> None:
    # Given an invocation that started 2 h ago (a long batch) and a huge estimate
    seconds = park(invocation_started=NOW - 7200, retry_after_s=10 * 86_400.0)
    assert seconds is not None
    assert seconds <= SQS_MAX_VISIBILITY_S - 7200


def test_a_parked_event_comes_back_inside_metas_7_day_window_and_the_retention() -> None:
    event_time = int(NOW) - META_WINDOW_S + 2 * 3600  # 2 h left in the window
    assert park(receive_count=4, oldest_event_time=event_time) == 3600  # 2 h minus the 1 h margin
    assert park(receive_count=4, oldest_event_time=int(NOW) - META_WINDOW_S + 1800) is None  # no time left
    assert park(receive_count=4, sent=NOW - 345_600 + 5 * 3600, retention_s=345_600) == 4 * 3600


def test_the_default_schedule_outlives_a_six_hour_outage_with_five_receives() -> None:
    # The template's arithmetic: with MaxReceiveCount 5 the 5th receive comes after the first 4 parks.
    parks = [park(receive_count=n) for n in range(1, 5)]
    assert all(p is not None for p in parks)
    assert sum(p or 0 for p in parks) > 6 * 3600


# ----------------------------------------------------------------------------------- dead letters
def attrs(letter: DeadLetter) -> dict[str, str]:
    return dict(letter.attributes)


def test_an_event_of_a_multi_event_message_becomes_a_single_event_body_with_the_source_routing() -> None:
    events = ({"event_name": "A"}, {"event_name": "B"})
    source = Source("m-1", "{...}", None, "123", "TEST1", events, (("upload_tag", "u"),), (("pixel_id", "123"),))
    letter = dead_letter(source, 1, "event_too_old", fifo=False)
    assert json.loads(letter.body) == {"data": [{"event_name": "B"}], "pixel_id": "123", "upload_tag": "u"}
    assert attrs(letter) == {"rejection_reason": "event_too_old", "source_message_id": "m-1", "event_index": "1",
                             "pixel_id": "123", "test_event_code": "TEST1"}  # fmt: skip
    assert (letter.group_id, letter.dedup_id) == (None, None)
    entry = letter.entry("0")
    assert entry["MessageAttributes"]["event_index"] == {"DataType": "String", "StringValue": "1"}
    assert "MessageGroupId" not in entry


def test_a_letter_carries_the_resolved_identity_fixed_at_first_sight() -> None:
    # Given an event without event_id and event_time: the relay derived an id and defaulted the time
    event = {"event_name": "Lead", "custom": "kept as sent"}
    identity = Identity("cr1-abc", True, 1_700_000_000)
    letter = dead_letter(Source("m", "{}", None, "1", None, (event,), identities=(identity,)), 0,
                         "graph_transient_503", fifo=False)  # fmt: skip
    # Then the letter's event carries both, so a redrive sends exactly what the first attempt sent
    assert json.loads(letter.body) == {"data": [{**event, "event_id": "cr1-abc", "event_time": 1_700_000_000}]}
    assert attrs(letter)["event_id"] == "cr1-abc"
    assert "test_event_code" not in attrs(letter)
    # ... and a producer's own event_id is never replaced
    own = dead_letter(Source("m", "{}", None, "1", None, ({"event_id": 7},), identities=(Identity("7"),)), 0, "x",
                      fifo=False)  # fmt: skip
    assert json.loads(own.body) == {"data": [{"event_id": 7}]}


def test_every_letter_is_valid_for_sqs_whatever_the_bytes() -> None:
    # Given values SQS refuses in a body (a lone surrogate, U+FFFE, U+FFFF) in an event and in the body
    hostile = {"event_name": "Lead\ud800", "custom_data": {"x": "\ufffe\uffff"}}
    letter = dead_letter(Source("m", "{}", None, "1", "T\ud800", (hostile,)), 0, "invalid_unicode", fifo=False)
    # Then the letter encodes, holds only what SQS stores, and reads back as the event received
    assert letter.size > 0
    assert sqs_valid(letter.body)
    assert all(sqs_valid(v) for _, v in letter.attributes)
    assert json.loads(letter.body)["data"] == [hostile]
    raw = dead_letter(Source("m", '{"x": "\ud800"}\uffff'), None, "body_not_json", fifo=False)
    assert sqs_valid(raw.body)
    assert raw.size > 0


def test_an_unreadable_body_is_kept_as_received_and_an_empty_one_gets_a_placeholder() -> None:
    letter = dead_letter(Source("m", "{not json"), None, "body_not_json", fifo=False)
    assert letter.body == "{not json"
    assert "event_index" not in attrs(letter)
    assert "pixel_id" not in attrs(letter)
    empty = dead_letter(Source("m", ""), None, "empty_body", fifo=False)
    assert empty.body
    assert json.loads(empty.body)["capi_relay_quarantine"]["reason"] == "empty_body"


def test_fifo_letters_keep_the_source_group_and_deduplicate_per_event() -> None:
    source = Source("m-9", '{"data":[1,2]}', "group-a", "1", None, (1, 2))
    first, second = (dead_letter(source, i, "not_an_object", fifo=True) for i in (0, 1))
    assert (first.group_id, first.dedup_id) == ("group-a", "m-9-0")
    assert second.dedup_id == "m-9-1"
    body = dead_letter(Source("m-9", "x", "group-a"), None, "body_not_json", fifo=True)
    assert (body.group_id, body.dedup_id) == ("group-a", "m-9-body")
    assert body.entry("3")["MessageGroupId"] == "group-a"


def test_batches_hold_at_most_10_entries_and_256_kib() -> None:
    small = [DeadLetter(f"m{i}", "x" * 100, ()) for i in range(23)]
    assert [len(b) for b in batches(small)] == [10, 10, 3]
    big = [DeadLetter(f"b{i}", "y" * 100_000, ()) for i in range(5)]
    sizes = [sum(letter.size for letter in b) for b in batches(big)]
    assert sizes == [200_000, 200_000, 100_000]
    assert all(size <= MAX_BATCH_BYTES for size in sizes)
    # a letter over the limit alone still gets its own call (SQS refuses it; its record fails)
    assert [len(b) for b in batches([DeadLetter("h", "z" * (MAX_BATCH_BYTES + 1), ()), *small[:2]])] == [1, 2]
