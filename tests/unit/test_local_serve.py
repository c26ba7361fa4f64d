"""`make local-stack` prints one line per record of each invocation: each event delivered or quarantined with
its reason (from the function's own log lines), or the record back to SQS with its reason and parked."""

from __future__ import annotations

import json

from local.esm import BatchOutcome, InvokeResult
from local.serve import fate_lines


def record(message_id: str, body: str, receive: int = 1) -> dict[str, object]:
    return {"messageId": message_id, "body": body, "attributes": {"ApproximateReceiveCount": str(receive)}}


def log(message: str, **extra: object) -> str:
    return json.dumps({"level": "INFO", "message": message, **extra})


def test_each_event_and_record_gets_its_fate() -> None:
    two = json.dumps({"data": [{"event_id": "order-1"}, {"event_id": "bad-2"}]})
    logs = "\n".join([
        "START RequestId: x",
        log("event quarantined", message_id="m-aaaaaaaa1", event_index=1, reason="event_too_old"),
        log("record parked", message_id="m-bbbbbbbb2"),
        log("record failed", message_id="m-bbbbbbbb2", reason="graph_transient_2"),
        log("event quarantined", message_id="m-cccccccc3", event_index=None, reason="body_not_json"),
        log("event quarantined", message_id="m-dddddddd4", event_index=None, reason="no_pixel_id"),
    ])  # fmt: skip
    outcome = BatchOutcome(
        event={
            "Records": [
                record("m-aaaaaaaa1", two),
                record("m-bbbbbbbb2", two, 2),
                record("m-cccccccc3", "{"),
                record("m-dddddddd4", two),
            ]
        },
        result=InvokeResult({"batchItemFailures": [{"itemIdentifier": "m-bbbbbbbb2"}]}, False, logs),
        message_ids=["m-aaaaaaaa1", "m-bbbbbbbb2", "m-cccccccc3", "m-dddddddd4"],
        failed=["m-bbbbbbbb2"],
    )
    assert fate_lines(outcome) == [
        "message m-aaaaaa (receive 1): event 0 (order-1) delivered; event 1 (bad-2) quarantined (event_too_old)",
        "message m-bbbbbb (receive 2): back to SQS (graph_transient_2), parked",
        "message m-cccccc (receive 1): quarantined (body_not_json)",
        "message m-dddddd (receive 1): quarantined (no_pixel_id)",
    ]


def test_a_function_error_fails_the_whole_batch() -> None:
    outcome = BatchOutcome(event={"Records": [record("m-1", "{}")]}, result=InvokeResult(None, True, ""),
                           message_ids=["m-1"], failed=["m-1"], whole_batch_failed=True)  # fmt: skip
    assert fate_lines(outcome) == [
        "message m-1 (receive 1): back to SQS (function error); it returns after the visibility timeout"
    ]
