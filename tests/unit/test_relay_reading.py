"""What the relay reads from an SQS record before any decision (relay.py's parse step): the SQS timestamp and
receive-count attributes as SQS writes them (strings of ASCII digits), FIFO detection, and the messageIds the
response must cover -- each at its edges (issue 17, mutation testing of the decision sequence)."""

from __future__ import annotations

from typing import Any

from capi_relay.relay import _input_ids, _is_fifo, _receive_count, _seconds


def test_sqs_timestamps_are_epoch_milliseconds_as_ascii_digit_strings() -> None:
    assert _seconds({"SentTimestamp": "1700000000999"}, "SentTimestamp") == 1_700_000_000
    assert _seconds({"SentTimestamp": "9" * 16}, "SentTimestamp") == int("9" * 16) // 1000
    for bad in ("9" * 17, "", "17e11", "-1700000000000", "１７００", " 1700000000000"):
        assert _seconds({"SentTimestamp": bad}, "SentTimestamp") is None, bad
    assert _seconds({"SentTimestamp": 1_700_000_000_000}, "SentTimestamp") is None  # not as SQS writes it
    assert _seconds({}, "SentTimestamp") is None
    assert _seconds({"Other": "1000"}, "SentTimestamp") is None


def test_a_receive_count_is_read_only_from_ascii_digits() -> None:
    assert _receive_count({"ApproximateReceiveCount": "3"}) == 3
    assert _receive_count({"ApproximateReceiveCount": "999999999"}) == 999_999_999
    for bad in ("²", "", "1000000000", "3 ", "-1", "0x3"):
        assert _receive_count({"ApproximateReceiveCount": bad}) is None, bad
    assert _receive_count({"ApproximateReceiveCount": 3}) is None
    assert _receive_count({}) is None


def test_a_batch_is_fifo_by_its_queue_arn_or_a_message_group_in_any_record() -> None:
    standard: dict[str, Any] = {"eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:events", "attributes": {}}
    fifo_arn: dict[str, Any] = {"eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:events.fifo"}
    grouped: dict[str, Any] = {"attributes": {"MessageGroupId": "g"}}
    assert _is_fifo([standard]) is False
    assert _is_fifo([standard, fifo_arn]) is True
    assert _is_fifo(["not a record", standard, grouped]) is True
    assert _is_fifo([{"attributes": {"MessageGroupId": ""}}, {"eventSourceARN": 7, "attributes": "x"}]) is False
    assert _is_fifo([]) is False


def test_the_ids_to_answer_for_are_every_usable_message_id_in_order() -> None:
    event = {"Records": [{"messageId": "b"}, "junk", {"messageId": ""}, {"messageId": 5}, {}, {"messageId": "a"}]}
    assert _input_ids(event) == ["b", "a"]
    assert _input_ids({"Records": {"messageId": "a"}}) == []
    assert _input_ids(["not", "an", "event"]) == []
    assert _input_ids({}) == []
