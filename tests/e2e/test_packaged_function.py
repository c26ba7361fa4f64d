"""End to end: the packaged function (``make build``) under the Lambda Runtime Interface Emulator, fed by
the SQS event-source emulator from a moto queue, posting to the Graph API stand-in.

Needs ``make build`` first (``make e2e`` depends on it); a missing artifact FAILS these tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local.esm import BatchOutcome, EventSourceEmulator, emulator_invoker
from local.graph_standin import GraphStandIn, RequestLog
from local.samples import (
    SAMPLES,
    SAMPLES_BY_NAME,
    RecordResult,
    find_raw_pii,
    load_sample,
    mismatches,
    publish,
    resolve,
    sent_event_id,
)
from local.stack import MotoServer, Resources, drain_queue, dummy_token, function_env, provision

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
MAX_RECEIVE_COUNT = 2
VISIBILITY_TIMEOUT_S = 3  # > one invocation under the emulator, so a batch is never redelivered mid-flight
DRAIN_TIMEOUT_S = 90.0


def _require_artifact() -> None:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        pytest.fail(
            f"the packaged function is missing: {ARTIFACT_DIR.relative_to(ROOT)} (run `make build`; `make e2e` does)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def e2e_token() -> str:
    return dummy_token()


@pytest.fixture(scope="module")
def e2e_standin(e2e_token: str) -> Iterator[GraphStandIn]:
    with GraphStandIn(tokens={e2e_token}) as server:
        yield server


@pytest.fixture(scope="module")
def e2e_resources(moto_server: MotoServer, e2e_token: str) -> Resources:
    return provision(
        moto_server.endpoint_url,
        token=e2e_token,
        prefix=f"e2e{uuid.uuid4().hex[:8]}",
        max_receive_count=MAX_RECEIVE_COUNT,
        visibility_timeout_s=VISIBILITY_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def function(e2e_resources: Resources, e2e_standin: GraphStandIn) -> Iterator[Any]:
    _require_artifact()
    from local.rie import LambdaEmulator

    emulator = LambdaEmulator(str(ARTIFACT_DIR), function_env(e2e_resources, e2e_standin.url))
    try:
        emulator.start()
        emulator.invoke({"Records": []})  # INIT now, so the first batch stays well inside the visibility timeout
        yield emulator
    finally:
        emulator.stop()


def _esm(function: Any, resources: Resources) -> EventSourceEmulator:
    return EventSourceEmulator(
        resources.clients().sqs,
        resources.queue_url,
        emulator_invoker(function),
        batch_size=10,
        window_s=1.0,
        queue_arn=resources.queue_arn,
    )


@dataclass
class Run:
    outcomes: list[BatchOutcome]
    results: list[RecordResult]
    received: list[dict[str, Any]]
    requests: list[RequestLog]
    logs: str


@pytest.fixture(scope="module")
def all_samples(function: Any, e2e_resources: Resources, e2e_standin: GraphStandIn) -> Run:
    """Every sample published through its real API (SQS, EventBridge, SNS), the queue drained once."""
    e2e_standin.state.reset()
    clients = e2e_resources.clients()
    for sample in SAMPLES:
        publish(sample, clients, e2e_resources)
    outcomes = _esm(function, e2e_resources).run_until_drained(DRAIN_TIMEOUT_S)
    dlq = drain_queue(clients.sqs, e2e_resources.dlq_url)
    return Run(
        outcomes=outcomes,
        results=resolve(outcomes, dlq),
        received=e2e_standin.received,
        requests=e2e_standin.requests,
        logs="\n".join(o.result.logs for o in outcomes),
    )


def test_every_message_shape_ends_delivered_or_in_the_dlq_as_expected(all_samples: Run) -> None:
    # Given every sample, When the packaged function drained the queue, Then the outcome table matches
    assert mismatches(all_samples.results) == []
    for result in all_samples.results:
        # delivered on the first receive; failed records retried until SQS moved them to the DLQ
        assert result.receives == (1 if result.expected == "delivered" else MAX_RECEIVE_COUNT), result


def test_each_delivered_event_reached_graph_once_with_its_pixel_and_test_code(all_samples: Run) -> None:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for item in all_samples.received:
        by_id.setdefault(str(item["event"].get("event_id")), []).append(item)
    expected_total = 0
    for sample in SAMPLES:
        for expected in sample.records:
            if expected.outcome != "delivered":
                assert expected.marker not in by_id
                continue
            for position in range(len(expected.event_ids)):
                key = sent_event_id(sample, expected, position)
                (item,) = by_id[key]
                assert (item["pixel_id"], item["test_event_code"]) == (expected.pixel_id, expected.test_event_code)
                expected_total += 1
    assert len(all_samples.received) == expected_total


def test_graph_never_receives_a_raw_sample_pii_value(all_samples: Run) -> None:
    # The scanner finds the raw values where they are (the sample bodies) ...
    bodies = "\n".join(r["body"] for s in SAMPLES for r in load_sample(s.name)["Records"])
    assert {"jane.doe@example.com", "Jane", "Doe", "Springfield"} <= set(find_raw_pii(bodies))
    # ... and none of them in what the stand-in received, in any field
    sent = json.dumps([item["event"] for item in all_samples.received], ensure_ascii=False)
    assert all_samples.received
    assert find_raw_pii(sent) == []
    for item in all_samples.received:
        for key in ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "external_id"):
            values = item["event"]["user_data"].get(key)
            for value in values if isinstance(values, list) else [values] if values is not None else []:
                assert len(value) == 64, (key, item["event"]["event_id"])
                assert all(c in "0123456789abcdef" for c in value), (key, item["event"]["event_id"])


def test_no_log_line_and_no_request_url_contains_the_token(all_samples: Run, e2e_token: str) -> None:
    # The function's own log lines were captured (the failure lines name the malformed records) ...
    assert '"record failed"' in all_samples.logs
    # ... and neither they nor any request URL contain the token; no raw PII in the logs either
    assert e2e_token not in all_samples.logs
    assert all_samples.requests
    assert all(r.authorized for r in all_samples.requests)
    assert not any(r.token_in_url or e2e_token in r.path for r in all_samples.requests)
    assert find_raw_pii(all_samples.logs) == []


def test_malformed_record_lands_in_the_dlq_and_its_batch_neighbours_are_delivered_once(
    all_samples: Run, function: Any, e2e_resources: Resources, e2e_standin: GraphStandIn
) -> None:
    # Given (after the shared run, on the now-empty queue) good records with one malformed neighbour
    e2e_standin.state.reset()
    clients = e2e_resources.clients()
    publish(SAMPLES_BY_NAME["mixed_batch"], clients, e2e_resources)

    # When the packaged function drains the queue
    outcomes = _esm(function, e2e_resources).run_until_drained(DRAIN_TIMEOUT_S)
    dlq = drain_queue(clients.sqs, e2e_resources.dlq_url)

    # Then the first batch held all four and only the malformed record was reported
    bad = {r["messageId"] for o in outcomes for r in o.event["Records"] if "sample-mixed-0003" in r["body"]}
    assert len(bad) == 1
    assert len(outcomes[0].message_ids) == 4
    assert outcomes[0].failed == list(bad)
    # ... it alone was retried until SQS moved it to the DLQ after maxReceiveCount receives
    assert [o.message_ids for o in outcomes[1:]] == [list(bad)] * (MAX_RECEIVE_COUNT - 1)
    assert {m["MessageId"] for m in dlq} == bad
    # ... and each neighbour reached Graph exactly once
    assert sorted(item["event"]["event_id"] for item in e2e_standin.received) == [
        "sample-mixed-0001",
        "sample-mixed-0002",
        "sample-mixed-0004",
    ]
