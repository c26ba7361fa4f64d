"""The SQS event SAM CLI itself generates (``sam local generate-event sqs receive-message``), a client no one
here wrote, against the relay and against our own doubles of it: the samples in ``events/`` and the
event-source emulator (``local/esm.py``) build records of the same shape, and the relay takes SAM's event
as it is.

Two things a user meets with SAM's generator, pinned here so docs/local-development.md stays true: ``--body`` is
pasted into the template unescaped, so a JSON body must be given JSON-string-escaped; and the record's
``SentTimestamp`` is fixed at 2018-04-09, so an event without its own ``event_time`` takes that time and is
too old for Meta.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from local import esm
from local.samples import SAMPLES, load_sample
from tests.sam_cli import run_sam
from tests.unit.fakes import FakeSender, make_relay

pytestmark = pytest.mark.sam  # needs the SAM CLI: run by `make lint`, deselected by `make unit`


def generate(body: str) -> subprocess.CompletedProcess[str]:
    return run_sam("sam", "local", "generate-event", "sqs", "receive-message", "--body", body, timeout_s=120)


def sam_event(body: str) -> dict[str, Any]:
    out = generate(json.dumps(body)[1:-1])  # the body as the inside of a JSON string: SAM pastes it unescaped
    assert out.returncode == 0, out.stderr[-2000:]
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def purchase(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": "order-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thank-you",
        "user_data": {"em": "Someone@Example.com", "ph": "+1 (650) 555-1212", "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"currency": "USD", "value": 42.5},
    }
    doc.update(overrides)
    return doc


def test_the_relay_takes_sams_generated_sqs_event_as_it_is() -> None:
    # Given SAM CLI's own SQS event carrying a purchase (escaped as SAM needs)
    event = sam_event(json.dumps(purchase()))
    # When the relay processes it
    sender = FakeSender()
    summary = make_relay(sender).process(event)
    # Then the event is delivered, hashed, with nothing failed
    assert summary.response == {"batchItemFailures": []}
    assert [e["event_id"] for e in sender.events] == ["order-1001"]
    assert len(sender.events[0]["user_data"]["em"]) == 64


def test_sams_unescaped_json_body_is_refused_by_sam_itself() -> None:
    # A JSON body given as it is breaks SAM's template (docs/local-development.md says to escape it)
    out = generate(json.dumps(purchase()))
    assert out.returncode != 0
    assert "Expecting" in out.stderr


def test_without_event_time_sams_fixed_sent_timestamp_makes_the_event_too_old() -> None:
    doc = purchase()
    del doc["event_time"]
    event = sam_event(json.dumps(doc))
    assert event["Records"][0]["attributes"]["SentTimestamp"] == "1523232000000"  # 2018-04-09
    sender = FakeSender()
    summary = make_relay(sender).process(event)
    assert sender.events == []
    assert summary.events_rejected == {"event_too_old": 1}


def test_our_samples_and_the_event_source_emulator_build_records_of_sams_shape() -> None:
    sam_record = sam_event("{}")["Records"][0]
    keys = set(sam_record)
    # Every sample record has exactly SAM's keys, with the same types
    for sample in SAMPLES:
        for rec in load_sample(sample.name)["Records"]:
            assert set(rec) == keys, (sample.name, set(rec) ^ keys)
            for key, value in sam_record.items():
                assert type(rec[key]) is type(value), (sample.name, key)
            assert set(rec["attributes"]) <= set(sam_record["attributes"]) | {"MessageGroupId", "SequenceNumber"}
    # The event-source emulator turns an SQS ReceiveMessage answer into the same record
    message = {
        "MessageId": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78",
        "ReceiptHandle": "rh",
        "Body": "{}",
        "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "Attributes": dict(sam_record["attributes"]),
    }
    built = esm.lambda_record(message, sam_record["eventSourceARN"], sam_record["awsRegion"])
    assert set(built) == keys
    for key, value in sam_record.items():
        assert type(built[key]) is type(value), key
    assert built["attributes"] == sam_record["attributes"]
    assert built["eventSource"] == sam_record["eventSource"] == "aws:sqs"
