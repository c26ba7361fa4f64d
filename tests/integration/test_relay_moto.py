"""The relay built in-process against moto (SQS, Secrets Manager, EventBridge, SNS) and the Graph stand-in,
driven by the SQS event-source emulator: what Lambda + SQS would do, minus the packaging."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from capi_relay.app import build_relay
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env
from local.esm import BatchOutcome, EventSourceEmulator, InvokeResult, in_process_invoker
from local.graph_standin import GraphStandIn
from local.samples import (
    SAMPLES,
    SAMPLES_BY_NAME,
    RecordResult,
    Sample,
    mismatches,
    publish,
    resolve,
    sent_event_id,
)
from local.stack import Clients, Resources, drain_queue
from tests.conftest import MAX_RECEIVE_COUNT

pytestmark = pytest.mark.integration

DRAIN_TIMEOUT_S = 60.0


def _relay(env: dict[str, str]) -> Relay:
    return build_relay(settings_from_env(env))


def _esm(clients: Clients, resources: Resources, relay: Relay, batch_size: int = 10) -> EventSourceEmulator:
    return EventSourceEmulator(
        clients.sqs,
        resources.queue_url,
        in_process_invoker(lambda event: relay.process(event).response),
        batch_size=batch_size,
        queue_arn=resources.queue_arn,
    )


def _events_by_id(standin: GraphStandIn) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in standin.received:
        out.setdefault(str(item["event"].get("event_id")), []).append(item)
    return out


def _message_id_of(outcomes: list[BatchOutcome], marker: str) -> str:
    ids = {r["messageId"] for o in outcomes for r in o.event["Records"] if marker in r["body"]}
    assert len(ids) == 1, f"{marker}: {ids}"
    return str(ids.pop())


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_each_sample_ends_as_expected(
    sample: Sample, resources: Resources, clients: Clients, standin: GraphStandIn, relay_env: dict[str, str]
) -> None:
    # Given the sample published through its real API (SQS, EventBridge or SNS)
    publish(sample, clients, resources)
    esm = _esm(clients, resources, _relay(relay_env))

    # When the event source emulator runs the in-process relay until the queue is empty
    outcomes = esm.run_until_drained(DRAIN_TIMEOUT_S)
    dlq = drain_queue(clients.sqs, resources.dlq_url)

    # Then every record ends delivered or in the DLQ as the sample list says, for the stated reason
    results = resolve(outcomes, dlq)
    assert mismatches(results, [sample]) == []
    received = _events_by_id(standin)
    for expected in sample.records:
        result = next(r for r in results if r.marker == expected.marker)
        if expected.outcome == "dlq":
            assert result.receives == MAX_RECEIVE_COUNT  # the function saw it maxReceiveCount times
            assert expected.marker not in received
            continue
        # ... and each delivered event reached Graph exactly once, for the right pixel and test code
        assert result.receives == 1
        for position in range(len(expected.event_ids)):
            key = sent_event_id(sample, expected, position)
            assert len(received.get(key, [])) == 1, key
            item = received[key][0]
            assert item["pixel_id"] == expected.pixel_id
            assert item["test_event_code"] == expected.test_event_code
    delivered = sum(len(e.event_ids) for e in sample.records if e.outcome == "delivered")
    assert len(standin.received) == delivered


def test_malformed_record_goes_to_dlq_and_its_batch_neighbours_are_delivered_once(
    resources: Resources, clients: Clients, standin: GraphStandIn, relay_env: dict[str, str]
) -> None:
    # Given good records and one malformed neighbour sent in one SendMessageBatch
    sample = SAMPLES_BY_NAME["mixed_batch"]
    publish(sample, clients, resources)
    esm = _esm(clients, resources, _relay(relay_env))

    # When the emulator drains the queue
    outcomes = esm.run_until_drained(DRAIN_TIMEOUT_S)
    dlq = drain_queue(clients.sqs, resources.dlq_url)

    # Then the first batch held all four, and only the malformed one was reported failed
    first = outcomes[0]
    bad = _message_id_of(outcomes, "sample-mixed-0003")
    assert len(first.message_ids) == 4
    assert first.failed == [bad]
    assert sorted(first.deleted) == sorted(set(first.message_ids) - {bad})
    # ... the malformed record was retried alone until SQS moved it to the DLQ
    assert [o.message_ids for o in outcomes[1:]] == [[bad]] * (MAX_RECEIVE_COUNT - 1)
    assert [m["MessageId"] for m in dlq] == [bad]
    # ... and each neighbour's event reached Graph exactly once
    received = _events_by_id(standin)
    assert {k: len(v) for k, v in received.items()} == {
        "sample-mixed-0001": 1,
        "sample-mixed-0002": 1,
        "sample-mixed-0004": 1,
    }


SECRET_FORMATS: dict[str, Callable[[str], str]] = {
    "bare_token": lambda token: token,
    "json_access_token": lambda token: json.dumps({"access_token": token}),
    "json_with_app_secret": lambda token: json.dumps({"access_token": token, "app_secret": "fake-app-secret"}),
    "per_pixel": lambda token: json.dumps({"pixels": {"100000000000001": {"access_token": token}}}),
    "per_pixel_with_default": lambda token: json.dumps(
        {"access_token": token, "pixels": {"100000000000009": {"access_token": "EAAother"}}}
    ),
}


@pytest.mark.parametrize("fmt", sorted(SECRET_FORMATS))
def test_every_secret_format_delivers(
    fmt: str, token: str, resources: Resources, clients: Clients, standin: GraphStandIn, relay_env: dict[str, str]
) -> None:
    # Given the token secret stored in one of the supported formats
    clients.secretsmanager.put_secret_value(SecretId=resources.secret_id, SecretString=SECRET_FORMATS[fmt](token))
    publish(SAMPLES_BY_NAME["website_purchase"], clients, resources)

    # When the relay processes the queue
    outcomes = _esm(clients, resources, _relay(relay_env)).run_until_drained(DRAIN_TIMEOUT_S)

    # Then the event is delivered with the token in the Bearer header (and appsecret_proof when configured)
    assert [o.failed for o in outcomes] == [[]]
    assert [item["event"]["event_id"] for item in standin.received] == ["sample-purchase-0001"]
    (request,) = standin.requests
    assert request.authorized
    assert not request.token_in_url
    expected_proof = (
        hmac.new(b"fake-app-secret", token.encode(), hashlib.sha256).hexdigest()
        if fmt == "json_with_app_secret"
        else None
    )
    assert request.appsecret_proof == expected_proof


def test_function_error_deletes_nothing_and_everything_reaches_the_dlq(resources: Resources, clients: Clients) -> None:
    # Given a function that always raises
    def broken(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    publish(SAMPLES_BY_NAME["mixed_batch"], clients, resources)
    esm = EventSourceEmulator(clients.sqs, resources.queue_url, in_process_invoker(broken))

    # When the emulator drains the queue
    outcomes = esm.run_until_drained(DRAIN_TIMEOUT_S)

    # Then no batch deleted anything and all four messages are in the DLQ
    assert all(o.result.function_error and o.whole_batch_failed and not o.deleted for o in outcomes)
    assert len(drain_queue(clients.sqs, resources.dlq_url)) == 4


def test_unknown_item_identifier_fails_the_whole_batch(resources: Resources, clients: Clients) -> None:
    # Given a function whose partial response names a messageId that is not in the batch
    def wrong_id(event: dict[str, Any]) -> InvokeResult:
        return InvokeResult({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]})

    publish(SAMPLES_BY_NAME["mixed_batch"], clients, resources)
    esm = EventSourceEmulator(clients.sqs, resources.queue_url, wrong_id)

    # When one batch is processed
    outcome = esm.poll_once()

    # Then the response is invalid, so the whole batch failed and nothing was deleted
    assert outcome is not None
    assert outcome.whole_batch_failed
    assert outcome.invalid_response is not None
    assert outcome.deleted == []
    assert sorted(outcome.failed) == sorted(outcome.message_ids)


def test_lambda_event_shape(resources: Resources, clients: Clients) -> None:
    # Given a message with a string attribute
    captured: list[dict[str, Any]] = []

    def capture(event: dict[str, Any]) -> InvokeResult:
        captured.append(event)
        return InvokeResult(None)

    publish(SAMPLES_BY_NAME["message_attributes"], clients, resources)

    # When the emulator builds the event
    EventSourceEmulator(clients.sqs, resources.queue_url, capture).run_until_drained(DRAIN_TIMEOUT_S)

    # Then it has Lambda's SQS record shape
    (record,) = captured[0]["Records"]
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                           "eventSource", "eventSourceARN", "awsRegion"}  # fmt: skip
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == resources.queue_arn
    assert record["awsRegion"] == resources.region
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["attributes"]["SentTimestamp"].isdigit()
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["messageAttributes"]["pixel_id"] == {
        "stringValue": "100000000000003", "stringListValues": [], "binaryListValues": [], "dataType": "String"
    }  # fmt: skip


def test_outcome_check_reports_every_kind_of_difference() -> None:
    # Given results where one record ended in the wrong place, one for the wrong reason, one is missing
    sample = SAMPLES_BY_NAME["mixed_batch"]
    results = [
        RecordResult("mixed_batch", "event", "sample-mixed-0001", "m1", "dlq", "body_not_json", 2, "delivered", None),
        RecordResult("mixed_batch", "event", "sample-mixed-0002", "m2", "delivered", "-", 1, "delivered", None),
        RecordResult("mixed_batch", "not-json", "sample-mixed-0003", "m3", "dlq", "unknown_shape", 2, "dlq",
                     "body_not_json"),
        RecordResult("?", "?", "something else", "m5", "delivered", "-", 1, "delivered", None),
    ]  # fmt: skip

    # When they are compared with the sample list
    problems = mismatches(results, [sample])

    # Then each difference is named
    assert len(problems) == 4
    assert any("sample-mixed-0001" in p and "expected delivered" in p for p in problems)
    assert any("sample-mixed-0003" in p and "reason unknown_shape" in p for p in problems)
    assert any("sample-mixed-0004" in p and "seen as 0" in p for p in problems)
    assert any("unexpected message m5" in p for p in problems)
