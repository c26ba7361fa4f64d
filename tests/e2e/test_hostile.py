"""Issue 11, "Done when": hostile inputs and slow dependencies through the packaged function (``make build``)
under the Lambda Runtime Interface Emulator, fed by the SQS event-source emulator from moto SQS, posting to
the Graph stand-in. The function's timeout is 10 s, so every invocation starts with 10 s or less left, and
the RIE ends an invocation that outlives it with a function error (a Lambda timeout: the whole batch
fails, neighbours included).

"Returned in time" is therefore not a timing assert: it is the invocation's outcome (no function error,
no ``Task timed out``), which is what Lambda would decide. A missing artifact FAILS these tests.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from local.blackhole import BlackHole
from local.esm import BatchOutcome, EventSourceEmulator, emulator_invoker
from local.graph_standin import GraphStandIn
from local.hostile import good_event, large_distinct_event, pixel_message, spaced_phone_event
from local.rie import LambdaEmulator
from local.stack import MotoServer, Resources, drain_queue, function_env, provision

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
FUNCTION_TIMEOUT_S = 10  # the time left when each invocation starts
VISIBILITY_TIMEOUT_S = 12  # > the function timeout: a batch is never redelivered while it is in flight
MAX_RECEIVE_COUNT = 3
RSS_GROWTH_BOUND_KB = 20 * 1024


def _require_artifact() -> None:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        pytest.fail(
            f"the packaged function is missing: {ARTIFACT_DIR.relative_to(ROOT)} (run `make build`; `make e2e` does)",
            pytrace=False,
        )


@dataclass
class World:
    """One queue + DLQ + secret, the packaged function under the RIE, and an event-source emulator."""

    resources: Resources
    function: LambdaEmulator
    standin: GraphStandIn
    sent: dict[str, str] = field(default_factory=dict)  # message id -> event id

    def send(self, bodies: list[dict[str, Any]]) -> list[str]:
        sqs = self.resources.clients().sqs
        ids = []
        for doc in bodies:
            message_id = sqs.send_message(QueueUrl=self.resources.queue_url, MessageBody=json.dumps(doc))["MessageId"]
            events = doc.get("data", [doc])
            self.sent[message_id] = str(events[0]["event_id"])
            ids.append(message_id)
        return ids

    def esm(self, batch_size: int, window_s: float = 1.0) -> EventSourceEmulator:
        return EventSourceEmulator(
            self.resources.clients().sqs,
            self.resources.queue_url,
            emulator_invoker(self.function),
            batch_size=batch_size,
            window_s=window_s,
            wait_time_s=1,
            queue_arn=self.resources.queue_arn,
        )

    def poll(self, batch_size: int, expect: int, window_s: float = 1.0) -> BatchOutcome:
        """One invocation holding the ``expect`` messages just sent."""
        outcome = self.esm(batch_size, window_s).poll_once()
        assert outcome is not None
        assert len(outcome.message_ids) == expect, "the batch did not hold every message sent"
        return outcome

    def dlq(self) -> set[str]:
        return {m["MessageId"] for m in drain_queue(self.resources.clients().sqs, self.resources.dlq_url)}

    def received_event_ids(self) -> list[str]:
        return [str(item["event"].get("event_id")) for item in self.standin.received]


@pytest.fixture
def world(moto_server: MotoServer, standin: GraphStandIn, token: str) -> Iterator[Callable[..., World]]:
    _require_artifact()
    started: list[LambdaEmulator] = []

    def make(extra_env: dict[str, str] | None = None) -> World:
        resources = provision(
            moto_server.endpoint_url,
            token=token,
            prefix=f"h{uuid.uuid4().hex[:10]}",
            max_receive_count=MAX_RECEIVE_COUNT,
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
        )
        env = function_env(resources, standin.url, extra=extra_env)
        function = LambdaEmulator(str(ARTIFACT_DIR), env, timeout_s=FUNCTION_TIMEOUT_S)
        started.append(function)
        function.start()
        _, error, logs = function.invoke({"Records": []})  # INIT now: the batches below are warm invocations
        assert not error, logs
        return World(resources, function, standin)

    yield make
    for function in started:
        function.stop()


def assert_returned_in_time(outcome: BatchOutcome) -> None:
    logs, response = outcome.result.logs, outcome.result.response
    timed_out = "Reset initiated: Timeout" in logs  # the emulator's "Task timed out" answer is a function error
    assert not timed_out, f"the invocation outlived its {FUNCTION_TIMEOUT_S} s: a Lambda timeout fails the whole batch"
    assert not outcome.result.function_error, f"function error (the whole batch fails): {response!r}\n{logs[-3000:]}"
    assert outcome.invalid_response is None, outcome.invalid_response


def failure_lines(logs: str) -> list[dict[str, Any]]:
    """The function's ``record failed`` log lines (Powertools JSON)."""
    out = []
    for line in logs.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("message") == "record failed":
            out.append(doc)
    return out


def now() -> int:
    return int(time.time())


# ------------------------------------------------------------------------------------ (a) quadratic regex
def test_a_phone_with_60k_inner_spaces_does_not_sink_its_neighbours(world: Callable[..., World]) -> None:
    # Given 20 good records and one whose phone number holds 60,000 inner spaces, in one batch
    w = world()
    good = w.send([good_event(now(), f"good-{i}") for i in range(20)])
    (hostile,) = w.send([spaced_phone_event(now(), "hostile-phone")])

    # When the packaged function gets them in one invocation with 10 s left
    outcome = w.poll(batch_size=50, expect=21)

    # Then it returned in time and every neighbour was delivered, once
    assert_returned_in_time(outcome)
    assert set(good) <= set(outcome.deleted)
    received = w.received_event_ids()
    assert sorted(e for e in received if e.startswith("good-")) == sorted(f"good-{i}" for i in range(20))
    # ... and the hostile record is either delivered (its phone dropped) or back in SQS: never lost
    delivered = "hostile-phone" in received
    assert (hostile in outcome.deleted) == delivered
    assert (hostile in outcome.failed) != delivered


# ------------------------------------------------------------------------------------- (b) dripping body
def test_b_a_graph_answer_dripping_one_byte_per_half_second_loses_nothing(
    world: Callable[..., World], standin: GraphStandIn
) -> None:
    # Given ten good records and a Graph answer that trickles in one byte every 0.5 s (once)
    w = world()
    ids = w.send([good_event(now(), f"drip-{i}") for i in range(10)])
    standin.add_fault(drip_s=0.5, times=1)

    # When the packaged function gets them with 10 s left
    first = w.poll(batch_size=20, expect=10)

    # Then it returned in time; whatever it could not decide went back to SQS and was delivered later,
    # nothing reached the DLQ
    assert_returned_in_time(first)
    assert sorted(first.deleted + first.failed) == sorted(ids)
    later = w.esm(batch_size=20).run_until_drained(90) if first.failed else []
    for outcome in later:
        assert_returned_in_time(outcome)
    assert w.dlq() == set()
    assert sorted({i for o in [first, *later] for i in o.deleted}) == sorted(ids)
    assert set(w.received_event_ids()) == {f"drip-{i}" for i in range(10)}


# ------------------------------------------------------------------------------ (c) Secrets Manager hangs
def test_c_a_secrets_manager_that_never_answers_fails_each_record_once_not_per_pixel(
    world: Callable[..., World], standin: GraphStandIn
) -> None:
    pixels = [f"10000000000000{i}" for i in range(1, 7)]
    with BlackHole() as hole:
        # Given Secrets Manager accepting connections and never answering, and six records of six pixels
        w = world({"AWS_ENDPOINT_URL_SECRETS_MANAGER": hole.url})
        ids = w.send([pixel_message(good_event(now(), f"px-{p}"), p) for p in pixels])

        # When the packaged function gets them with 10 s left
        outcome = w.poll(batch_size=20, expect=6)
        connections = hole.connections

    # Then it returned in time, every record failed (back to SQS), each once, with a secret reason
    assert_returned_in_time(outcome)
    assert sorted(outcome.failed) == sorted(ids)
    lines = failure_lines(outcome.result.logs)
    assert sorted(line["message_id"] for line in lines) == sorted(ids)
    assert all(str(line["reason"]).startswith("secret") for line in lines), lines
    # ... the secret was fetched once for all pixels (with botocore's few retries), not once per pixel
    assert 1 <= connections < len(pixels)
    # ... and nothing went to Graph without a token
    assert standin.requests == []


# --------------------------------------------------------------------------------- (d) bounded memory
def test_d_ten_warm_invocations_of_large_distinct_values_keep_memory_bounded(world: Callable[..., World]) -> None:
    # Given a warm function and ten batches of 120 events whose hashed fields hold 4 KiB random values
    w = world()
    rng = random.Random(11)
    rss_kb: list[int] = []
    for batch in range(10):
        ids = w.send([large_distinct_event(now(), f"big-{batch}-{i}", rng) for i in range(120)])
        # When each batch is one warm invocation with 10 s left
        outcome = w.poll(batch_size=120, expect=120, window_s=10)
        assert_returned_in_time(outcome)
        assert sorted(outcome.deleted + outcome.failed) == sorted(ids)
        rss = w.function.runtime_status_kb("VmRSS")
        assert rss is not None, "the function's runtime process is gone"
        rss_kb.append(rss)

    # Then the runtime's resident memory after the first batch grows by no more than a small bound
    growth = max(rss_kb[1:]) - rss_kb[0]
    assert growth <= RSS_GROWTH_BOUND_KB, f"VmRSS per invocation (KiB): {rss_kb}"
