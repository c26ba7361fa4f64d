"""Dead letters (fate/letters.py), parking (fate.park_seconds) and throttle holds (throttle.py) at their edges
(issue 17, mutation testing): the SendMessageBatch entry shape, the byte count SQS applies, batch boundaries,
FIFO group/dedup fallbacks, the request-level fields and body routing a letter carries whatever the wrapper
(``Source.request_fields`` / ``body_routing``, the parsed fields, never the body's top-level keys), the resolved
identity, the first-receive branch of the park cap, a zero park, and a throttle hold that ties with the one
already known."""

from __future__ import annotations

import json
from typing import Any

from capi_relay.deliver.throttle import Hold, HoldBook
from capi_relay.fate.ledger import (
    META_WINDOW_S,
    RECEIVE_MARGIN_S,
    SQS_MAX_VISIBILITY_S,
    WINDOW_MARGIN_S,
    ParkInput,
    park_seconds,
)
from capi_relay.fate.letters import (
    EMPTY_BODY_PLACEHOLDER_KEY,
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    DeadLetter,
    Source,
    attribute,
    batches,
    dead_letter,
    sqs_safe,
    sqs_valid,
)
from capi_relay.ingest.model import Identity

NOW = 1_790_000_000.0


# ---------------------------------------------------------------------------------- the SQS entry
def test_the_send_message_batch_entry_is_exactly_what_sqs_takes() -> None:
    letter = DeadLetter("m-1", '{"event_name":"A"}', (("event_index", "0"), ("rejection_reason", "r")))
    assert letter.entry("7") == {
        "Id": "7",
        "MessageBody": '{"event_name":"A"}',
        "MessageAttributes": {
            "event_index": {"DataType": "String", "StringValue": "0"},
            "rejection_reason": {"DataType": "String", "StringValue": "r"},
        },
    }


def test_a_fifo_entry_carries_group_and_deduplication_ids() -> None:
    entry = DeadLetter("m-1", "b", (), "g-1", "m-1-0").entry("0")
    assert entry["MessageGroupId"] == "g-1"
    assert entry["MessageDeduplicationId"] == "m-1-0"
    only_group = DeadLetter("m-1", "b", (), "g-1").entry("0")
    assert "MessageDeduplicationId" not in only_group


def test_the_size_counts_utf8_bytes_of_body_and_every_attribute_name_type_and_value() -> None:
    letter = DeadLetter("m", "é" * 10, (("ab", "ü"), ("c", "xyz")))
    assert letter.size == 20 + (2 + 6 + 2) + (1 + 6 + 3)


# ------------------------------------------------------------------------------------------- batches
def test_a_batch_fills_to_exactly_the_byte_limit() -> None:
    half = DeadLetter("a", "x" * (MAX_BATCH_BYTES // 2), ())
    assert [len(b) for b in batches([half, half, half])] == [2, 1]
    assert [len(b) for b in batches([half, half, half, half])] == [2, 2]  # the second batch starts from 0 bytes
    one_over = DeadLetter("b", "x" * (MAX_BATCH_BYTES // 2 + 1), ())
    assert [len(b) for b in batches([half, one_over])] == [1, 1]


def test_batches_keep_the_input_order_and_lose_nothing() -> None:
    letters = [DeadLetter(f"m{i}", "x" * (i * 5_000), ()) for i in range(40)]
    out = list(batches(letters))
    assert [letter for batch in out for letter in batch] == letters
    assert all(len(b) <= MAX_BATCH_ENTRIES for b in out)
    assert all(sum(x.size for x in b) <= MAX_BATCH_BYTES for b in out if len(b) > 1)


def test_exactly_ten_letters_make_one_batch_and_no_letters_none() -> None:
    assert [len(b) for b in batches([DeadLetter("m", "x", ())] * MAX_BATCH_ENTRIES)] == [MAX_BATCH_ENTRIES]
    assert list(batches([])) == []


# ----------------------------------------------------------------------------------- letter bodies
def test_a_letter_carries_the_parsed_request_fields_and_routing_never_the_bodys_top_level_keys() -> None:
    # Given an SNS-wrapped {"data"} message: the request-level fields are not top-level keys of the SQS body
    events = ({"event_name": "A"}, {"event_name": "B"})
    inner = {"data": list(events), "pixel_id": "1", "upload_tag": "u", "namespace_id": 7}
    body = json.dumps({"Type": "Notification", "Message": json.dumps(inner)})
    source = Source("m", body, None, "1", "T", events, (("namespace_id", "7"), ("upload_tag", "u")),
                    (("pixel_id", "1"), ("test_event_code", "T")))  # fmt: skip
    # Then the letter is a plain {"data"} body with the routing and every request-level field the message held
    doc = json.loads(dead_letter(source, 1, "r", fifo=False).body)
    assert doc == {"data": [{"event_name": "B"}], "pixel_id": "1", "test_event_code": "T", "namespace_id": "7",
                   "upload_tag": "u"}  # fmt: skip
    # and a body's own top-level keys are not copied when the parser found no such fields (plain event body)
    plain = Source("m", '{"event_name":"A","upload_tag":"u","pixel_id":"9"}', None, "1", None, ({"event_name": "A"},))
    assert json.loads(dead_letter(plain, 0, "r", fifo=False).body) == {"data": [{"event_name": "A"}]}
    # routing that came from message attributes only (body_routing empty) stays in the attributes
    attr_only = dead_letter(Source("m", "{}", None, "1", "T", events, (("upload_tag", "u"),)), 0, "r", fifo=False)
    assert json.loads(attr_only.body) == {"data": [{"event_name": "A"}], "upload_tag": "u"}
    assert dict(attr_only.attributes)["pixel_id"] == "1"


def test_a_letter_body_is_compact_ascii_json_and_its_data_is_the_event_alone() -> None:
    events = ({"event_name": "A", "city": "Zürich"}, {"event_name": "B"})
    source = Source("m", json.dumps({"data": list(events)}), None, "1", None, events, (("upload_tag", "ü"),))
    letter = dead_letter(source, 0, "r", fifo=False)
    assert letter.body == '{"data":[{"event_name":"A","city":"Z\\u00fcrich"}],"upload_tag":"\\u00fc"}'
    assert json.loads(letter.body) == {"data": [events[0]], "upload_tag": "ü"}


def test_the_resolved_identity_goes_into_the_event_only_where_the_relay_resolved_it() -> None:
    event = {"event_name": "A", "event_id": "own"}
    # the producer's id: kept, and named in the attribute
    own = dead_letter(Source("m", "{}", None, "1", None, (event,), identities=(Identity("own"),)), 0, "r",
                      fifo=False)  # fmt: skip
    assert json.loads(own.body)["data"] == [event]
    assert dict(own.attributes)["event_id"] == "own"
    # a derived id is written into the event; a derived flag without an id writes nothing
    derived = dead_letter(Source("m", "{}", None, "1", None, ({"event_name": "A"},),
                                 identities=(Identity("cr1-x", True),)), 0, "r", fifo=False)  # fmt: skip
    assert json.loads(derived.body)["data"] == [{"event_name": "A", "event_id": "cr1-x"}]
    no_id = dead_letter(Source("m", "{}", None, "1", None, ({"event_name": "A"},),
                               identities=(Identity(None, True, 5),)), 0, "r", fifo=False)  # fmt: skip
    assert json.loads(no_id.body)["data"] == [{"event_name": "A", "event_time": 5}]
    assert "event_id" not in dict(no_id.attributes)
    # an event that is not an object travels as received; its identity still names the event_id attribute
    odd = dead_letter(Source("m", "{}", None, "1", None, ("x",), identities=(Identity("cr1-y", True, 5),)), 0, "r",
                      fifo=False)  # fmt: skip
    assert json.loads(odd.body) == {"data": ["x"]}
    assert dict(odd.attributes)["event_id"] == "cr1-y"
    # fewer identities than events (a record prepared in part): the event is stored without one
    short = Source("m", "{}", None, "1", None, ({"event_name": "A"}, {"event_name": "B"}),
                   identities=(Identity("cr1-a", True),))  # fmt: skip
    late = dead_letter(short, 1, "r", fifo=False)
    assert json.loads(late.body)["data"] == [{"event_name": "B"}]
    assert "event_id" not in dict(late.attributes)
    # the source event is never modified
    src = {"event_name": "A"}
    dead_letter(Source("m", "{}", None, "1", None, (src,), identities=(Identity("cr1-z", True, 9),)), 0, "r",
                fifo=False)  # fmt: skip
    assert src == {"event_name": "A"}


def test_a_multi_event_letter_without_request_fields_holds_only_its_event() -> None:
    events = ({"event_name": "A"}, {"event_name": "B"})
    source = Source("m", json.dumps({"data": list(events)}), None, "1", None, events)
    assert json.loads(dead_letter(source, 1, "r", fifo=False).body) == {"data": [{"event_name": "B"}]}


def test_a_body_level_letter_of_a_readable_message_is_the_body_as_received() -> None:
    body = '{"data": [{"event_name": "A"}, {"event_name": "B"}]}'
    source = Source("m", body, None, None, None, ({"event_name": "A"}, {"event_name": "B"}))
    letter = dead_letter(source, None, "no_pixel_id", fifo=False)
    assert letter.body == body
    assert "event_index" not in dict(letter.attributes)


def test_an_event_letter_of_an_unreadable_record_falls_back_to_the_body_without_an_index() -> None:
    letter = dead_letter(Source("m", "{broken", events=None), 3, "body_not_json", fifo=True)
    assert letter.body == "{broken"
    assert "event_index" not in dict(letter.attributes)
    assert letter.dedup_id == "m-body"


def test_the_placeholder_of_an_empty_body_names_the_reason_and_is_json() -> None:
    for body in ("", None):
        letter = dead_letter(Source("m", body), None, "empty_body", fifo=False)
        doc = json.loads(letter.body)
        assert doc == {EMPTY_BODY_PLACEHOLDER_KEY: {"reason": "empty_body",
                                                    "note": "the source message body was empty"}}  # fmt: skip


def test_a_body_sqs_refuses_becomes_a_placeholder_holding_it_escaped() -> None:
    # Given a non-empty body SQS could not store (U+FFFF: an envelope-level refusal keeps the body, not events)
    letter = dead_letter(Source("m", '{"a":"\uffff"}'), None, "body_not_json", fifo=False)
    # Then the placeholder names the reason, says why, and keeps the body (JSON-escaped, so SQS stores it)
    assert sqs_valid(letter.body)
    assert json.loads(letter.body) == {
        EMPTY_BODY_PLACEHOLDER_KEY: {
            "reason": "body_not_json",
            "note": "the source body, escaped (SQS refused it)",
            "body": '{"a":"\uffff"}',
        }
    }


def test_an_index_past_the_last_event_is_a_body_letter() -> None:
    events = ({"event_name": "A"}, {"event_name": "B"})
    body = json.dumps({"data": list(events)})
    for index in (2, -1):
        letter = dead_letter(Source("m", body, None, "1", None, events), index, "r", fifo=True)
        assert letter.body == body
        assert "event_index" not in dict(letter.attributes)
        assert letter.dedup_id == "m-body"
    assert json.loads(dead_letter(Source("m", body, None, "1", None, events), 1, "r", fifo=False).body) == {
        "data": [{"event_name": "B"}]
    }


def test_sqs_safe_writes_each_refused_character_as_its_escape_and_keeps_the_rest() -> None:
    assert sqs_safe("a\ud800b\uffffc\x00é\U0001f600") == "a\\ud800b\\uffffc\\u0000é\U0001f600"
    assert sqs_safe("plain\ttext") == "plain\ttext"
    assert sqs_valid(sqs_safe("\ufffe"))


def test_attributes_are_sorted_and_routing_is_left_out_when_unknown() -> None:
    letter = dead_letter(Source("m-2", "{}", None, "", ""), None, "unknown_shape", fifo=False)
    assert letter.attributes == (("rejection_reason", "unknown_shape"), ("source_message_id", "m-2"))
    full = dead_letter(Source("m-2", "{}", None, "9", "T"), None, "unknown_shape", fifo=False)
    assert [k for k, _ in full.attributes] == ["pixel_id", "rejection_reason", "source_message_id", "test_event_code"]
    assert full.source == "m-2"


def test_a_fifo_letter_without_a_source_group_uses_the_message_id_as_its_group() -> None:
    letter = dead_letter(Source("m-3", "x"), None, "body_not_json", fifo=True)
    assert (letter.group_id, letter.dedup_id) == ("m-3", "m-3-body")


def test_attribute_reads_only_string_values() -> None:
    attrs: dict[str, Any] = {"a": {"StringValue": "v", "DataType": "String"}, "b": {"BinaryValue": b"\x00"},
                             "c": "not a mapping", "d": {"StringValue": 5}}  # fmt: skip
    assert attribute(attrs, "a") == "v"
    assert attribute(attrs, "b") is None
    assert attribute(attrs, "c") is None
    assert attribute(attrs, "d") is None
    assert attribute(attrs, "missing") is None


# ------------------------------------------------------------------------------------------- parking
def park(**kw: Any) -> int | None:
    args: dict[str, Any] = {"receive_count": 1, "now": NOW, "invocation_started": NOW - 10}
    args.update(kw)
    return park_seconds(ParkInput(**args))


def test_on_the_first_receive_the_12_hours_count_from_sqs_first_receive_timestamp() -> None:
    # Given the first receive 3 hours before the invocation (a long batching window, a slow poller)
    first = NOW - 3 * 3600
    got = park(receive_count=1, first_receive=first, retry_after_s=86_400.0)
    assert got == int(SQS_MAX_VISIBILITY_S - (NOW - first))
    # a first-receive time after the invocation started does not extend the cap
    late = park(receive_count=1, first_receive=NOW, retry_after_s=86_400.0)
    assert late == int(SQS_MAX_VISIBILITY_S - (NOW - (NOW - 10 - RECEIVE_MARGIN_S)))


def test_on_later_receives_the_first_receive_timestamp_is_not_this_receive() -> None:
    first = NOW - 3 * 3600
    got = park(receive_count=2, first_receive=first, retry_after_s=86_400.0)
    assert got == int(SQS_MAX_VISIBILITY_S - (10 + RECEIVE_MARGIN_S))


def test_a_receive_count_of_zero_is_treated_as_the_first_receive() -> None:
    assert park(receive_count=0, schedule_s=(7, 8)) == 7
    assert park(receive_count=0, first_receive=NOW - 3 * 3600, retry_after_s=86_400.0) == int(
        SQS_MAX_VISIBILITY_S - 3 * 3600
    )


def test_a_zero_park_is_no_park() -> None:
    assert park(schedule_s=(0,)) is None
    assert park(schedule_s=(0, 5), receive_count=2) == 5
    # exactly no time left inside Meta's window: None, one second left: 1
    edge = int(NOW) - META_WINDOW_S + WINDOW_MARGIN_S
    assert park(oldest_event_time=edge) is None
    assert park(oldest_event_time=edge + 1) == 1


def test_the_retention_cap_counts_from_the_sent_time() -> None:
    assert park(sent=NOW - 1000, retention_s=1000 + WINDOW_MARGIN_S + 60, schedule_s=(3600,)) == 60
    assert park(sent=NOW - 1000, retention_s=1000 + WINDOW_MARGIN_S, schedule_s=(3600,)) is None


# ------------------------------------------------------------------------------------ throttle holds
def test_an_equal_hold_keeps_the_first_reason() -> None:
    book = HoldBook()
    book.hold("1", Hold(200.0, "graph_throttled_4", 4))
    book.hold("1", Hold(200.0, "graph_throttled_613", 613))
    assert book.get("1", now=100.0) == Hold(200.0, "graph_throttled_4", 4)


def test_a_hold_of_a_known_pixel_never_evicts_another_pixel() -> None:
    book = HoldBook(max_pixels=2)
    book.hold("a", Hold(100.0, "r"))
    book.hold("b", Hold(300.0, "r"))
    book.hold("a", Hold(400.0, "r"))  # the book is full, but "a" is already in it
    assert book.get("b", now=0.0) == Hold(300.0, "r")
    assert book.get("a", now=0.0) == Hold(400.0, "r")
