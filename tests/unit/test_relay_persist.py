"""The relay's persist step (relay.py: letters, then parking): a refused letter is tried once more, a record
whose letter is not stored fails alone, the counts and the log lines of stored letters, the letter's routing
and FIFO group when the body was not read, and what happens when a visibility change cannot be made (issue 17,
mutation testing of the decision sequence)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from capi_relay.app import delivery_config
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.fate.letters import DeadLetter
from capi_relay.relay import BatchSummary, Relay
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens
from tests.unit.test_relay import DLQ, FIFO_DLQ, FakeQueues, event, failed_ids, record


class PickyQueues(FakeQueues):
    """Refuses the letters of ``refuse_sources``; a visibility change returns ``visibility_ok`` entries, or
    raises (the call did not complete: what the relay sees of a call cut off by a timeout) when None."""

    def __init__(self, refuse_sources: set[str] = frozenset(), visibility_ok: int | None = -1,  # type: ignore[assignment]
                 send_raises: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.refuse_sources = refuse_sources
        self.visibility_ok = visibility_ok
        self.send_raises = send_raises
        self.visibility_calls = 0

    def send_dead_letters(self, queue_url: str, letters: Sequence[DeadLetter]) -> set[int]:
        if self.send_raises:
            self.calls.append(len(letters))
            raise TimeoutError("the call did not complete")
        assert queue_url in {DLQ, FIFO_DLQ}
        assert 1 <= len(letters) <= 10
        self.calls.append(len(letters))
        refused = {i for i, letter in enumerate(letters) if letter.source in self.refuse_sources}
        self.letters.extend(x for i, x in enumerate(letters) if i not in refused)
        return refused

    def change_visibility(self, queue_arn: str, changes: Sequence[tuple[str, int]]) -> int:
        self.visibility_calls += 1
        if self.visibility_ok is None:
            raise TimeoutError("the call did not complete")
        if self.visibility_ok >= 0:
            return self.visibility_ok
        return super().change_visibility(queue_arn, changes)


def transient_for_503(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
    if pixel == "503":
        return GraphError(ErrorKind.TRANSIENT, http_status=503)
    return GraphReply(len(events), None, 1.0)


def run(records: list[dict[str, Any]], queues: FakeQueues, *, dlq: str = DLQ, **env: str) -> BatchSummary:
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "1",
                                  "MAX_RECEIVE_COUNT": "3", "DLQ_URL": dlq} | env)  # fmt: skip
    deliverer = Deliverer(FakeSender(transient_for_503), FakeTokens(), delivery_config(settings), sleep=lambda _: None)
    return Relay(settings, deliverer, queues).process({"Records": records})


def last_receive(message_id: str, pixel: str = "503", events: int = 1) -> dict[str, Any]:
    raw = record(message_id, {"data": [event(event_id=f"{message_id}-{i}") for i in range(events)], "pixel_id": pixel})
    raw["attributes"]["ApproximateReceiveCount"] = "3"
    return raw


# --------------------------------------------------------------------------------------------- letters
def test_a_refused_letter_is_tried_exactly_once_more_then_its_record_fails_alone() -> None:
    queues = PickyQueues(refuse_sources={"bad1"})
    records = [record("bad1", "{not json"), record("bad2", "{not json"), record("bad3", "{nope")]
    summary = run(records, queues)
    assert queues.calls == [3, 1]  # one call for the three letters, then the refused one once more
    assert sorted(letter.source for letter in queues.letters) == ["bad2", "bad3"]
    assert failed_ids(summary.response) == ["bad1"]
    assert summary.failures == {"quarantine_failed": 1}
    assert summary.records_quarantined == 2
    assert summary.quarantined == {"body_not_json": 2}


def test_a_letter_refused_every_time_is_sent_twice_in_all() -> None:
    queues = FakeQueues(refuse=True)
    summary = run([record("bad", "{not json")], queues)
    assert queues.calls == [1, 1]
    assert failed_ids(summary.response) == ["bad"]


def test_a_letter_call_that_does_not_complete_fails_its_record_as_not_stored() -> None:
    queues = PickyQueues(send_raises=True)
    summary = run([record("bad", "{not json")], queues)
    assert queues.calls == [1, 1]
    assert failed_ids(summary.response) == ["bad"]
    assert summary.failures == {"quarantine_failed": 1}


def test_stored_letters_are_counted_per_record_and_per_event_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    queues = FakeQueues()
    records = [last_receive("d1", events=2), last_receive("d2"), record("q1", "{not json"), record("q2", "{x")]
    with caplog.at_level(logging.WARNING, logger="capi_relay.relay"):
        summary = run(records, queues)
    assert failed_ids(summary.response) == []
    assert (summary.records_dead_lettered, summary.events_dead_lettered) == (2, 3)
    assert summary.quarantined == {"body_not_json": 2}
    assert summary.records_quarantined == 4
    lines = [(r.getMessage(), r.__dict__.get("message_id"), r.__dict__.get("event_index"), r.__dict__.get("pixel_id"),
              r.__dict__.get("reason")) for r in caplog.records if r.getMessage().startswith("event ")]  # fmt: skip
    assert sorted(lines, key=str) == sorted([
        ("event dead-lettered", "d1", 0, "503", "graph_transient_http503"),
        ("event dead-lettered", "d1", 1, "503", "graph_transient_http503"),
        ("event dead-lettered", "d2", 0, "503", "graph_transient_http503"),
        ("event quarantined", "q1", None, None, "body_not_json"),
        ("event quarantined", "q2", None, None, "body_not_json"),
    ], key=str)  # fmt: skip


def test_a_body_letter_keeps_the_fifo_group_and_the_routing_known_before_the_pixel_was_missing() -> None:
    queues = FakeQueues()
    unreadable = record("u", "{not json", group="g-1")
    no_pixel = record("n", {"data": [event(event_id="e")]}, group="g-2", test_event_code="T9")
    summary = run([unreadable, no_pixel], queues, dlq=FIFO_DLQ, PIXEL_ID="")
    assert failed_ids(summary.response) == []
    by_source = {letter.source: letter for letter in queues.letters}
    assert (by_source["u"].group_id, by_source["u"].dedup_id) == ("g-1", "u-body")
    assert by_source["n"].group_id == "g-2"
    assert dict(by_source["n"].attributes)["test_event_code"] == "T9"
    assert dict(by_source["n"].attributes)["rejection_reason"] == "no_pixel_id"


# --------------------------------------------------------------------------------------------- parking
def test_a_record_without_a_receipt_handle_or_queue_arn_is_not_parked_and_its_neighbours_are() -> None:
    queues = FakeQueues()
    no_handle = record("h", {"data": [event()], "pixel_id": "503"})
    del no_handle["receiptHandle"]
    no_arn = record("a", {"data": [event(event_id="x")], "pixel_id": "503"})
    del no_arn["eventSourceARN"]
    fine = record("f", {"data": [event(event_id="y")], "pixel_id": "503"})
    fine["receiptHandle"] = "rh-f"
    summary = run([no_handle, no_arn, fine], queues)
    assert [handle for _, handle, _ in queues.visibility] == ["rh-f"]
    assert summary.records_parked == 1
    assert failed_ids(summary.response) == ["h", "a", "f"]


@pytest.mark.parametrize("visibility_ok", [0, None])
def test_a_visibility_change_that_fails_is_made_once_more_then_the_record_counts_as_not_parked(
    visibility_ok: int | None,
) -> None:
    queues = PickyQueues(visibility_ok=visibility_ok)
    summary = run([record("m", {"data": [event()], "pixel_id": "503"})], queues)
    assert queues.visibility_calls == 2
    assert summary.records_parked == 0
    assert failed_ids(summary.response) == ["m"]


def test_fifo_a_record_whose_letter_is_not_stored_blocks_the_later_records_of_its_group() -> None:
    # Given a FIFO batch: g-1's first record has an unreadable body, its letter is refused; the next is fine
    queues = PickyQueues(refuse_sources={"a"})
    first = record("a", "{not json", group="g-1")
    second = record("b", {"data": [event(event_id="b")]}, group="g-1")
    other = record("c", {"data": [event(event_id="c")]}, group="g-2")
    summary = run([first, second, other], queues, dlq=FIFO_DLQ)
    # Then the first fails (quarantine_failed) and the second fails behind it; the other group is delivered
    assert failed_ids(summary.response) == ["a", "b"]
    assert summary.failures == {"quarantine_failed": 1, "fifo_group_blocked": 1}
