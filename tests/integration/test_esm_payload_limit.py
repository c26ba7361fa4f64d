"""The SQS event-source emulator keeps Lambda's 6 MB invocation payload limit (moto SQS over real HTTP).

Lambda passes a batch in one call only up to the synchronous-invoke payload limit and invokes as soon as the
batch reaches it; the emulator must not hand the function (or the RIE) an event Lambda would never send.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from local.esm import MAX_PAYLOAD_BYTES, EventSourceEmulator, InvokeResult, encode_event, split_at_limit
from local.stack import Clients, MotoServer, Resources, provision

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


@pytest.fixture
def queue(moto_server: MotoServer, token: str) -> Resources:
    # a visibility timeout far above the test's run time: no message may come back while carried over
    return provision(moto_server.endpoint_url, token=token, prefix=f"esm{uuid.uuid4().hex[:8]}",
                     max_receive_count=2, visibility_timeout_s=120)  # fmt: skip


class Recorder:
    """An in-process invoker that succeeds and keeps each event's encoded size and message ids."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.ids: list[list[str]] = []

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        self.sizes.append(len(encode_event(event)))
        self.ids.append([r["messageId"] for r in event["Records"]])
        return InvokeResult({"batchItemFailures": []})


def send(clients: Clients, url: str, bodies: list[str]) -> list[str]:
    if any(len(b) > 20_000 for b in bodies):  # a SendMessageBatch carries at most 256 KiB in all
        return [clients.sqs.send_message(QueueUrl=url, MessageBody=b)["MessageId"] for b in bodies]
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
        ]
        resp = clients.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not resp.get("Failed")
        ids += [e["MessageId"] for e in sorted(resp["Successful"], key=lambda e: int(e["Id"]))]
    return ids


def body(size: int, n: int) -> str:
    return json.dumps({"event_name": "Purchase", "n": n, "pad": "x" * size})


def test_split_keeps_the_longest_prefix_that_fits() -> None:
    records = [{"messageId": str(i), "body": "y" * 100} for i in range(5)]
    whole = len(encode_event({"Records": records}))
    assert split_at_limit(records, whole) == (records, [])
    fits, rest = split_at_limit(records, whole - 1)
    assert (len(fits), rest) == (4, records[4:])
    assert len(encode_event({"Records": fits})) <= whole - 1
    assert split_at_limit(records, 50) == ([], records)


def test_a_batch_over_6_mb_is_split_into_invocations_under_it(queue: Resources) -> None:
    # Given 30 messages of ~250 KB (7.5 MB in all) and BatchSize 10,000 with a batching window
    clients = queue.clients()
    sent = send(clients, queue.queue_url, [body(250_000, n) for n in range(30)])
    recorder = Recorder()
    esm = EventSourceEmulator(clients.sqs, queue.queue_url, recorder, batch_size=10_000, window_s=2,
                              wait_time_s=0, queue_arn=queue.queue_arn)  # fmt: skip
    # When the emulator drains the queue
    outcomes = esm.run_until_drained(60)
    # Then no invocation carried more than 6 MB, the first was full up to the limit, and every message was
    # invoked exactly once and deleted
    assert len(outcomes) >= 2
    assert max(recorder.sizes) <= MAX_PAYLOAD_BYTES
    assert recorder.sizes[0] > MAX_PAYLOAD_BYTES - 260_000  # no room for one more record
    invoked = [i for ids in recorder.ids for i in ids]
    assert sorted(invoked) == sorted(sent)
    assert sorted(i for o in outcomes for i in o.deleted) == sorted(sent)
    assert all(count == 1 for o in outcomes for count in o.receive_counts.values())


def test_records_received_beyond_the_limit_start_the_next_batch(queue: Resources) -> None:
    # Given 100 ~1 KiB messages and a 20 KiB payload limit (about 15 records per invocation)
    clients = queue.clients()
    sent = send(clients, queue.queue_url, [body(900, n) for n in range(100)])
    recorder = Recorder()
    limit = 20 * 1024
    esm = EventSourceEmulator(clients.sqs, queue.queue_url, recorder, batch_size=1000, window_s=1,
                              wait_time_s=0, queue_arn=queue.queue_arn, max_payload_bytes=limit)  # fmt: skip
    outcomes = esm.run_until_drained(60)
    assert max(recorder.sizes) <= limit
    assert len(outcomes) >= 100 * 1000 // limit
    assert sorted(i for ids in recorder.ids for i in ids) == sorted(sent)  # each exactly once
    assert sorted(i for o in outcomes for i in o.deleted) == sorted(sent)
    assert all(count == 1 for o in outcomes for count in o.receive_counts.values())  # none received twice


def test_a_record_alone_over_the_limit_is_not_invoked_and_fails(queue: Resources) -> None:
    # Given a small limit, one message larger than it and two small neighbours
    clients = queue.clients()
    big, *small = send(clients, queue.queue_url, [body(8000, 0), body(10, 1), body(10, 2)])
    recorder = Recorder()
    esm = EventSourceEmulator(clients.sqs, queue.queue_url, recorder, batch_size=10, window_s=0,
                              wait_time_s=0, queue_arn=queue.queue_arn, max_payload_bytes=4096)  # fmt: skip
    outcomes = [o for o in (esm.poll_once(), esm.poll_once(), esm.poll_once()) if o is not None]
    # Then the big record failed as a whole batch without an invocation (SQS retries it, then the DLQ)
    refused = [o for o in outcomes if o.message_ids == [big]]
    assert len(refused) == 1
    assert refused[0].whole_batch_failed
    assert refused[0].deleted == []
    assert refused[0].invalid_response is not None
    assert big not in [i for ids in recorder.ids for i in ids]
    # ... and its neighbours were invoked and deleted
    assert sorted(i for o in outcomes for i in o.deleted) == sorted(small)
    assert max(recorder.sizes) <= 4096
