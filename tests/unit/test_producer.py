"""Producer kit, pure parts: reading JSON Lines or a message body, packing into <= 256 KiB messages, planning
SendMessageBatch calls, and the retry rules of the sender (against an in-process fake of SQS's answers)."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.tools.producer import (
    MAX_CALL_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    InputError,
    Message,
    Routing,
    Sender,
    pack,
    plan_calls,
    read_input,
)
from tests.factories import make_event

ROUTING = Routing("123", "TEST1", (("upload_tag", "t"),))


# ------------------------------------------------------------------------------------------------ input
def test_json_lines_one_event_per_line_blank_lines_ignored() -> None:
    text = json.dumps(make_event()) + "\n\n" + json.dumps(make_event(event_id="b")) + "\n"
    source = read_input(text)
    assert [e["event_id"] for e in source.events] == ["order-1001", "b"]
    assert source.routing == Routing()


def test_one_message_body_keeps_its_routing_and_request_fields() -> None:
    body = {"data": [make_event()], "pixel_id": "9", "test_event_code": "T", "partner_agent": "kit"}
    source = read_input(json.dumps(body, indent=2))  # pretty-printed: one document over several lines
    assert source.routing == Routing("9", "T", (("partner_agent", "kit"),))
    assert len(source.events) == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [(json.dumps(make_event()) + "\n{oops}\n", "line 2 column 2"), ('{"a": 1}\n{"b": 2,}', "line 2 column 8")],
)
def test_an_unreadable_line_is_named_by_line_and_column(text: str, where: str) -> None:
    with pytest.raises(InputError) as caught:
        read_input(text)
    assert where in str(caught.value)


@pytest.mark.parametrize("text", ["", "  \n", '{"no": "event"}', "[1, 2]"])
def test_an_unusable_input_is_refused(text: str) -> None:
    with pytest.raises(InputError):
        read_input(text)


# ---------------------------------------------------------------------------------------------- packing
def sized_event(i: int, pad: int) -> dict[str, Any]:
    return make_event(event_id=f"e-{i}", custom_data={"value": 1, "currency": "USD", "note": "x" * pad})


@settings(max_examples=60, deadline=None)
@given(
    pads=st.lists(st.integers(0, 3000), min_size=0, max_size=60),
    max_bytes=st.integers(2000, 20_000),
    max_events=st.integers(1, 12),
)
def test_pack_keeps_every_event_once_in_order_within_both_limits(
    pads: list[int], max_bytes: int, max_events: int
) -> None:
    events = [(i, sized_event(i, pad)) for i, pad in enumerate(pads)]
    messages, unsendable = pack(events, ROUTING, max_bytes=max_bytes, max_events=max_events)
    packed = [i for m in messages for i in m.indexes]
    too_large = [u["index"] for u in unsendable]
    assert sorted(packed + too_large) == list(range(len(pads)))  # every event exactly once
    assert packed == sorted(packed)  # order kept
    for message in messages:
        assert message.size == len(message.body.encode()) <= max_bytes
        assert 1 <= len(message.indexes) <= max_events
        body = json.loads(message.body)
        assert body["pixel_id"] == "123"
        assert body["test_event_code"] == "TEST1"
        assert body["upload_tag"] == "t"
        assert [e["event_id"] for e in body["data"]] == [f"e-{i}" for i in message.indexes]
    for u in unsendable:  # only events that really cannot fit alone
        assert u["reason"] == "event_too_large"
        assert len(pack([(0, sized_event(0, pads[u["index"]]))], ROUTING, max_bytes=max_bytes)[0]) == 0


def test_pack_fills_messages_up_to_the_size_limit() -> None:
    events = [(i, sized_event(i, 900)) for i in range(1000)]
    messages, unsendable = pack(events, Routing())
    assert unsendable == []
    assert all(m.size <= SQS_MAX_MESSAGE_BYTES for m in messages)
    one = len(json.dumps(events[0][1], separators=(",", ":")).encode()) + 1
    assert all(m.size > SQS_MAX_MESSAGE_BYTES - one for m in messages[:-1])  # no room for one more event
    assert len(messages) == -(
        -sum(len(json.dumps(e, separators=(",", ":"))) + 1 for _, e in events) // SQS_MAX_MESSAGE_BYTES
    )


def test_pack_caps_events_per_message_at_1000() -> None:
    tiny = {"event_name": "Lead", "action_source": "other", "user_data": {"external_id": "1"}}
    messages, _ = pack([(i, tiny) for i in range(2500)], Routing())
    assert [len(m.indexes) for m in messages] == [1000, 1000, 500]


def test_events_that_cannot_be_written_are_reported_not_sent() -> None:
    events: list[tuple[int, dict[str, Any]]] = [
        (0, {"a": float("nan")}),
        (1, {"b": "\ud800"}),
        (2, {"c": "y" * SQS_MAX_MESSAGE_BYTES}),
        (3, {"d": 1}),
    ]
    messages, unsendable = pack(events, Routing())
    assert [m.indexes for m in messages] == [(3,)]
    assert unsendable == [{"index": 0, "reason": "non_finite_number"}, {"index": 1, "reason": "invalid_unicode"},
                          {"index": 2, "reason": "event_too_large"}]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, MAX_CALL_BYTES), max_size=40))
def test_plan_calls_respects_ten_entries_and_256_kib(sizes: list[int]) -> None:
    messages = [Message("x", (i,), size) for i, size in enumerate(sizes)]
    calls = plan_calls(messages)
    assert [m for call in calls for m in call] == messages
    for call in calls:
        assert 1 <= len(call) <= 10
        assert sum(m.size for m in call) <= MAX_CALL_BYTES
    for first, second in itertools.pairwise(calls):  # greedy: the next message did not fit
        assert len(first) == 10 or sum(m.size for m in first) + second[0].size > MAX_CALL_BYTES


# ---------------------------------------------------------------------------------------------- sending
class ScriptedSQS:
    """Answers SendMessageBatch like SQS: Successful / Failed entries (SenderFault true or false), or raises.
    ``script`` is consumed one answer per call: "ok", "fail-first" (first entry fails server-side),
    "sender-fault-first", or an exception to raise."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[list[dict[str, Any]]] = []
        self.accepted: list[str] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls.append(Entries)
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, Exception):
            raise step
        failed: list[dict[str, Any]] = []
        ok: list[dict[str, Any]] = []
        for n, entry in enumerate(Entries):
            if n == 0 and step == "fail-first":
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError"})
            elif n == 0 and step == "sender-fault-first":
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "InvalidParameterValue"})
            else:
                self.accepted.append(entry["MessageBody"])
                ok.append({"Id": entry["Id"], "MessageId": f"mid-{len(self.accepted)}"})
        return {"Successful": ok, "Failed": failed}


def messages(n: int) -> list[Message]:
    return [Message(json.dumps({"data": [{"i": i}]}), (i,), 20) for i in range(n)]


def sender(
    sqs: ScriptedSQS, url: str = "https://sqs.eu-west-1.amazonaws.com/1/q", **kw: Any
) -> tuple[Sender, list[float]]:
    sleeps: list[float] = []
    return Sender(sqs, url, sleep=sleeps.append, rng=random.Random(1), **kw), sleeps


def test_partial_batch_failures_are_retried_until_sent_once() -> None:
    sqs = ScriptedSQS(["fail-first", "fail-first", "ok"])
    s, sleeps = sender(sqs)
    report = s.send(plan_calls(messages(3)))
    assert sorted(json.loads(b)["data"][0]["i"] for b in sqs.accepted) == [0, 1, 2]  # each exactly once
    assert [len(c) for c in sqs.calls] == [3, 1, 1]  # only the failed entry is sent again
    assert (report.calls, report.retries, report.failed) == (3, 2, [])
    assert len(sleeps) == 2
    assert all(0 <= d <= 5.0 for d in sleeps)


def test_a_sender_fault_is_reported_not_retried() -> None:
    sqs = ScriptedSQS(["sender-fault-first"])
    report = sender(sqs)[0].send(plan_calls(messages(2)))
    assert len(sqs.calls) == 1
    assert [(m.indexes, code) for m, code in report.failed] == [((0,), "InvalidParameterValue")]
    assert len(report.sent) == 1


def test_attempts_are_bounded_for_entries_and_for_raised_calls() -> None:
    sqs = ScriptedSQS(["fail-first"] * 10)
    report = sender(sqs, attempts=3)[0].send([messages(1)])
    assert len(sqs.calls) == 3
    assert [code for _, code in report.failed] == ["retries_exhausted"]
    sqs = ScriptedSQS([ConnectionError("down")] * 10)
    report = sender(sqs, attempts=2)[0].send([messages(2)])
    assert len(sqs.calls) == 2
    assert [code for _, code in report.failed] == ["ConnectionError", "ConnectionError"]


def test_fifo_entries_carry_group_and_content_deduplication_ids() -> None:
    sqs = ScriptedSQS([])
    sender(sqs, url="https://sqs.eu-west-1.amazonaws.com/1/q.fifo", message_group_id="shop")[0].send([messages(2)])
    entries = sqs.calls[0]
    assert {e["MessageGroupId"] for e in entries} == {"shop"}
    assert len({e["MessageDeduplicationId"] for e in entries}) == 2


def test_bodies_hold_only_characters_sqs_accepts_and_mean_the_same() -> None:
    # SQS allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF in a message body
    event = make_event()
    event["custom_data"] = {"content_name": "a\ufffeb\uffffc\u0001d\ud7ff\ue000\U0001f600"}
    [message], unsendable = pack([(0, event)], Routing())
    assert unsendable == []
    allowed = {0x9, 0xA, 0xD}
    assert all(ord(ch) in allowed or 0x20 <= ord(ch) <= 0xD7FF or 0xE000 <= ord(ch) <= 0xFFFD
               or ord(ch) >= 0x10000 for ch in message.body)  # fmt: skip
    assert json.loads(message.body)["data"] == [event]
    assert message.size == len(message.body.encode())
