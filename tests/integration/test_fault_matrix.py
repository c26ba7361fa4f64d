"""Fault matrix (issue 4): every scenario runs through the relay against the Graph stand-in on real sockets,
with moto SQS (redrive to a DLQ), moto Secrets Manager and the event-source emulator re-delivering failed
records until they succeed or reach maxReceiveCount.

In every scenario: delivered ∪ DLQ = every input record and nothing is in both; the stand-in saw every
delivered event and any event it saw twice carried the same event_id; the number of Graph requests stays
within the scenario's bound; no exception escaped the handler.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from capi_relay.app import build_relay
from capi_relay.deliver.engine import search_request_bound
from capi_relay.deliver.throttle import HoldBook
from capi_relay.relay import BatchSummary, Relay
from capi_relay.settings import settings_from_env
from local.esm import BatchOutcome, EventSourceEmulator, InvokeResult, in_process_invoker
from local.graph_standin import GraphStandIn
from local.stack import Clients, MotoServer, Resources, drain_queue, free_port, function_env, provision
from tests.factories import FakeLambdaContext, make_event

pytestmark = pytest.mark.integration

PIXEL_A = "100000000000001"  # the function's default PIXEL_ID
PIXEL_B = "200000000000002"
MAX_ATTEMPTS = 3
BUDGET_S = 8.0  # remaining time the fake Lambda context reports at the start of each invocation
SETTLE_S = 15.0  # how long a drain keeps polling until every sent record is delivered or in the DLQ


# --------------------------------------------------------------------------------------------- harness
@dataclass
class Sent:
    message_id: str
    marker: str  # custom_data.order_id of the record's events: identifies copies of one event
    pixel_id: str
    events: int
    group: str | None = None


@dataclass
class Run:
    sent: dict[str, Sent]
    outcomes: list[BatchOutcome]
    summaries: list[BatchSummary]
    dlq: set[str]
    standin: GraphStandIn

    @property
    def deleted(self) -> set[str]:
        return {m for o in self.outcomes for m in o.deleted}


@dataclass
class Matrix:
    """One scenario's world: stand-in, moto resources, relay settings; sends, drains, checks."""

    moto: MotoServer
    standin: GraphStandIn
    token: str
    max_receive_count: int = 4
    visibility_timeout_s: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    fifo: bool = False
    resources: Resources = field(init=False)
    clients: Clients = field(init=False)
    queue_url: str = field(init=False)
    dlq_url: str = field(init=False)
    sent: dict[str, Sent] = field(default_factory=dict)
    summaries: list[BatchSummary] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resources = provision(
            self.moto.endpoint_url,
            token=self.token,
            prefix=f"fm{uuid.uuid4().hex[:10]}",
            max_receive_count=self.max_receive_count,
            visibility_timeout_s=self.visibility_timeout_s,
        )
        self.clients = self.resources.clients()
        self.queue_url, self.dlq_url = self.resources.queue_url, self.resources.dlq_url
        if self.fifo:
            sqs = self.clients.sqs
            prefix = f"fmf{uuid.uuid4().hex[:10]}"
            self.dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq.fifo", Attributes={"FifoQueue": "true"})[
                "QueueUrl"
            ]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receive_count)}
            self.queue_url = sqs.create_queue(
                QueueName=f"{prefix}-events.fifo",
                Attributes={
                    "FifoQueue": "true",
                    "VisibilityTimeout": str(self.visibility_timeout_s),
                    "RedrivePolicy": json.dumps(redrive),
                },
            )["QueueUrl"]

    @property
    def env(self) -> dict[str, str]:
        extra = {"MAX_ATTEMPTS": str(MAX_ATTEMPTS), "GRAPH_READ_TIMEOUT": "1", **self.extra_env}
        return function_env(self.resources, self.standin.url, pixel_id=PIXEL_A, extra=extra)

    def relay(self) -> Relay:
        return build_relay(settings_from_env(self.env))

    # ----------------------------------------------------------------------------------- producing
    def send(
        self,
        records: int,
        *,
        events_per_record: int = 1,
        pixel_id: str | None = None,
        group: str | None = None,
        with_event_id: bool | None = None,
    ) -> list[Sent]:
        """Send ``records`` messages of ``{"data": [...]}``; half the events carry no event_id (derived)."""
        now = int(time.time())
        out: list[Sent] = []
        entries: list[tuple[Sent, dict[str, Any]]] = []
        for _ in range(records):
            marker = uuid.uuid4().hex[:16]
            data = []
            for position in range(events_per_record):
                keep_id = with_event_id if with_event_id is not None else (len(self.sent) + len(entries)) % 2 == 0
                # Distinct content per position: two events of one record without event_id are two events
                # only if they differ (a derived id is the pixel + the content).
                event = make_event(now=now, custom_data={"value": 1.0, "currency": "USD", "order_id": marker,
                                                         "content_name": str(position)})  # fmt: skip
                if keep_id:
                    event["event_id"] = f"{marker}-{position}"
                else:
                    event.pop("event_id")
                data.append(event)
            body: dict[str, Any] = {"data": data}
            if pixel_id:
                body["pixel_id"] = pixel_id
            entries.append((Sent("", marker, pixel_id or PIXEL_A, events_per_record, group), body))
        sqs = self.clients.sqs
        for start in range(0, len(entries), 10):
            part = entries[start : start + 10]
            batch: list[dict[str, Any]] = []
            for i, (_, body) in enumerate(part):
                entry: dict[str, Any] = {"Id": str(i), "MessageBody": json.dumps(body)}
                if group is not None:
                    entry["MessageGroupId"] = group
                    entry["MessageDeduplicationId"] = uuid.uuid4().hex
                batch.append(entry)
            resp = sqs.send_message_batch(QueueUrl=self.queue_url, Entries=batch)  # type: ignore[arg-type]
            assert not resp.get("Failed"), resp.get("Failed")
            for ok in resp["Successful"]:
                sent = part[int(ok["Id"])][0]
                sent.message_id = ok["MessageId"]
                self.sent[sent.message_id] = sent
                out.append(sent)
        return out

    # ----------------------------------------------------------------------------------- consuming
    def invoker(self, relay: Relay, budget_s: float = BUDGET_S) -> Callable[[dict[str, Any]], InvokeResult]:
        def handler(event: dict[str, Any]) -> Any:
            started = time.monotonic()
            summary = relay.process(event, lambda: int((started + budget_s - time.monotonic()) * 1000))
            self.summaries.append(summary)
            return summary.response

        return in_process_invoker(handler)

    def esm(self, invoke: Callable[[dict[str, Any]], InvokeResult], batch_size: int = 10,
            window_s: float = 0.0) -> EventSourceEmulator:  # fmt: skip
        return EventSourceEmulator(self.clients.sqs, self.queue_url, invoke, batch_size, window_s, wait_time_s=0)

    def drain(self, esm: EventSourceEmulator, outcomes: list[BatchOutcome] | None = None,
              timeout_s: float = 60.0) -> Run:  # fmt: skip
        outcomes = list(outcomes or [])
        outcomes += esm.run_until_drained(timeout_s)
        dlq = {m["MessageId"] for m in drain_queue(self.clients.sqs, self.dlq_url)}
        # SQS's queue counts are approximate (moto's too, between a receive and a redrive move): confirm the drain
        # by accounting for every sent record, polling on for a bounded time. A record really lost still fails
        # the invariants once this ends.
        settle_until = time.monotonic() + SETTLE_S
        while time.monotonic() < settle_until:
            deleted = {m for o in outcomes for m in o.deleted}
            if set(self.sent) <= deleted | dlq:
                break
            outcome = esm.poll_once()
            if outcome is not None:
                outcomes.append(outcome)
            dlq |= {m["MessageId"] for m in drain_queue(self.clients.sqs, self.dlq_url)}
            time.sleep(0.2)
        return Run(dict(self.sent), outcomes, list(self.summaries), dlq, self.standin)


def check_invariants(run: Run, *, expect_dlq: set[str] | None = None) -> None:
    """The invariants every scenario must keep."""
    every = set(run.sent)
    delivered = run.deleted
    # No exception escaped the handler and no response was invalid
    for outcome in run.outcomes:
        assert not outcome.result.function_error, outcome.result.logs[-2000:]
        assert outcome.invalid_response is None, outcome.invalid_response
    # Per invocation, per event: accepted, rejected (a real position) or undecided -- never two of them
    for summary in run.summaries:
        d = summary.delivery
        assert d.delivered_events + len(d.rejected) <= summary.events_prepared
        assert all(0 <= position < run.sent[m].events for m, position in d.rejected if m in run.sent)
    # delivered ∪ DLQ = every input record, nothing in both, nothing dropped
    assert delivered & run.dlq == set()
    assert delivered | run.dlq == every, f"missing: {sorted(every - delivered - run.dlq)[:5]}"
    if expect_dlq is not None:
        assert run.dlq == expect_dlq
    # The stand-in saw every delivered event; copies of one event always carried the same event_id
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    for got in run.standin.received:
        event = got["event"]
        order_id = event["custom_data"]["order_id"]
        event_id = str(event["event_id"])
        position = int(event["custom_data"]["content_name"])
        seen[(order_id, position)].add(event_id)
    for (order_id, position), ids in seen.items():
        assert len(ids) == 1, (order_id, position, ids)
    markers = {(s.marker, p) for s in run.sent.values() if s.message_id in delivered for p in range(s.events)}
    assert markers <= set(seen), f"delivered but never seen: {sorted(markers - set(seen))[:5]}"
    # Derived event ids come from the event (pixel + content), never from the messageId (issue 17)
    by_marker = {s.marker: s for s in run.sent.values()}
    for (order_id, _position), ids in seen.items():
        (event_id,) = ids
        if not event_id.startswith(order_id):
            assert event_id.startswith("cr1-")
            assert by_marker[order_id].message_id not in event_id


@pytest.fixture
def matrix(moto_server: MotoServer, standin: GraphStandIn, token: str) -> Callable[..., Matrix]:
    def make(**kw: Any) -> Matrix:
        return Matrix(moto_server, standin, token, **kw)

    return make


# ------------------------------------------------------------------------------------------ scenarios
@pytest.mark.pure_only  # wraps Relay.process to record the summaries: a compiled Relay's methods are fixed
def test_1_random_500s_and_timeouts_through_the_handler_module(
    matrix: Callable[..., Matrix], standin: GraphStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 30% of requests answer 500 or time out (the read timeout is 1 s, the delay 1.5 s)
    m = matrix(max_receive_count=6, extra_env={"MAX_EVENTS_PER_REQUEST": "10"})
    standin.add_fault(status=500, code=1, probability=0.15, times=-1)
    standin.add_fault(delay_ms=1500, status=500, code=2, probability=0.18, times=-1)
    m.send(60)
    # When the handler module itself (Powertools decorators included) is invoked by the ESM
    for key, value in m.env.items():
        monkeypatch.setenv(key, value)
    import capi_relay.handler as handler_module
    import capi_relay.settings as settings_module

    handler_module.start()  # what INIT does in a fresh execution environment: read and validate the settings
    summaries = m.summaries
    relay = handler_module.function().relay
    original = relay.process

    def recording(event: Any, remaining: Any = None) -> BatchSummary:
        summary = original(event, remaining)
        summaries.append(summary)
        return summary

    monkeypatch.setattr(relay, "process", recording)

    def invoke(event: dict[str, Any]) -> Any:
        return handler_module.lambda_handler(event, FakeLambdaContext(BUDGET_S))

    run = m.drain(m.esm(in_process_invoker(invoke), batch_size=30))
    settings_module.get_settings.cache_clear()
    # Then everything was delivered, duplicates (timeouts Meta processed) carry one event_id
    check_invariants(run, expect_dlq=set())
    assert any(s.delivery.retries for s in run.summaries)
    for summary in run.summaries:  # 3 chunks of 10 per invocation, MAX_ATTEMPTS each at most
        assert summary.delivery.requests <= math.ceil(summary.events_prepared / 10) * MAX_ATTEMPTS


def test_2_throttling_then_recovery(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    # Given Meta throttles with code 4, then 613, then HTTP 429 + Retry-After, then recovers
    m = matrix(max_receive_count=5)
    standin.add_fault(code=4, status=400, times=2)
    standin.add_fault(code=613, status=400, subcode=1487742, times=2)
    standin.add_fault(status=429, proxy=True, retry_after=1, times=2)  # a proxy's 429 (Graph sends no Retry-After)
    m.send(30)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    check_invariants(run, expect_dlq=set())
    # Then every throttled answer cost exactly one request (no spinning), and each invocation sent its
    # chunk at most MAX_ATTEMPTS times
    statuses = [r.status for r in standin.requests]
    assert sum(1 for s in statuses if s != 200) == 6
    assert sum(s.delivery.throttles for s in run.summaries) <= 6
    for summary in run.summaries:
        assert summary.delivery.requests <= MAX_ATTEMPTS


@pytest.mark.parametrize("bad", [1, 2, 10])
def test_3_invalid_events_in_a_1000_event_request_are_isolated(
    matrix: Callable[..., Matrix], standin: GraphStandIn, bad: int
) -> None:
    # Given 100 records of 10 events (one 1,000-event request) with `bad` invalid events at random positions
    # (visibility 5 s > the 3 s batching window: under load a 1 s visibility can let SQS hand a message out twice
    # within one batch, which then holds fewer than 100 distinct records)
    m = matrix(max_receive_count=2, visibility_timeout_s=5)
    sent = m.send(100, events_per_record=10, with_event_id=True)
    rng = random.Random(bad)
    poisoned = rng.sample(range(1000), bad)
    bad_ids = {f"{sent[p // 10].marker}-{p % 10}" for p in poisoned}
    standin.state.reject_event_ids = bad_ids
    bad_records = {sent[p // 10].message_id for p in poisoned}
    # When the whole queue is one batch
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=100, window_s=3))
    # Then the first request carried 1,000 events, and only the poisoned records ended in the DLQ
    assert len(run.outcomes[0].message_ids) == 100
    assert standin.requests[0].events == 1000
    check_invariants(run, expect_dlq=bad_records)
    # And each invocation stayed within the search bound for its own bad events
    for summary in run.summaries:
        n = summary.events_prepared
        d = summary.delivery
        k = sum(1 for p in poisoned if (sent[p // 10].message_id, p % 10) in d.rejected
                or sent[p // 10].message_id in d.failed)  # fmt: skip
        assert summary.delivery.requests <= search_request_bound(k, n), (k, n, summary.delivery.requests)
    first = run.summaries[0].delivery
    assert first.requests <= bad * (math.ceil(math.log2(1000)) + 1) + 1
    assert first.isolated_events == bad
    # And the engine named exactly the poisoned events (per event), nothing undecided
    assert set(first.rejected) == {(sent[p // 10].message_id, p % 10) for p in poisoned}
    assert first.failed == {}


def test_4_token_expires_mid_run_and_is_rotated_in_secrets_manager(
    matrix: Callable[..., Matrix], standin: GraphStandIn, token: str
) -> None:
    m = matrix(max_receive_count=4)
    relay = m.relay()  # one execution environment for the whole run: no redeploy
    esm = m.esm(m.invoker(relay), batch_size=10)
    m.send(20)
    outcomes = [o for o in (esm.poll_once(), esm.poll_once()) if o is not None]
    assert sum(len(o.deleted) for o in outcomes) == 20
    # When the token expires at Meta (the relay still has it cached) ...
    new_token = token + "-rotated"
    with standin.state.lock:
        standin.state.tokens = {new_token}
    m.send(10)
    outcome = esm.poll_once()
    assert outcome is not None
    outcomes.append(outcome)
    # ... the one forced refresh still finds the old token: the records fail and are counted
    assert len(outcome.failed) == 10
    assert m.summaries[-1].delivery.auth_refreshes == 1
    assert all(r.startswith("graph_auth_190") for r in m.summaries[-1].failures)
    # And once the secret is rotated, the same relay picks it up (forced refresh on the next 190)
    m.clients.secretsmanager.put_secret_value(
        SecretId=m.resources.secret_id, SecretString=json.dumps({"access_token": new_token})
    )
    m.send(20)
    run = m.drain(esm, outcomes)
    check_invariants(run, expect_dlq=set())
    for summary in run.summaries:
        assert summary.delivery.auth_refreshes <= 1
        assert summary.delivery.requests <= 2  # one chunk, once more with the refreshed token
    assert any(r.authorized for r in standin.requests[-3:])


def test_5_connection_resets_and_truncated_responses(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    m = matrix(max_receive_count=6, extra_env={"MAX_EVENTS_PER_REQUEST": "10"})
    standin.add_fault(drop=True, probability=0.15, times=-1)
    standin.add_fault(truncate=True, probability=0.15, times=-1)
    standin.add_fault(html=True, status=502, probability=0.1, times=-1)
    standin.add_fault(events_received_delta=-1, probability=0.05, times=-1)
    m.send(60)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=30))
    check_invariants(run, expect_dlq=set())
    assert {r.status for r in standin.requests} & {-1, -2}
    for summary in run.summaries:
        assert summary.delivery.requests <= math.ceil(summary.events_prepared / 10) * MAX_ATTEMPTS


def test_6_permission_error_for_one_pixel_while_another_works(
    matrix: Callable[..., Matrix], standin: GraphStandIn
) -> None:
    m = matrix(max_receive_count=2)
    standin.add_fault(pixel_id=PIXEL_B, status=403, code=10, times=-1)
    good = m.send(15)
    denied = m.send(15, pixel_id=PIXEL_B)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    check_invariants(run, expect_dlq={s.message_id for s in denied})
    assert {s.message_id for s in good} <= run.deleted
    # Then each invocation asked about pixel B once (no bisect, no retries), pixel A was unaffected
    requests_b = [r for r in standin.requests if r.pixel_id == PIXEL_B]
    invocations_with_b = sum(1 for s in run.summaries if any(r.startswith("graph_config_10") for r in s.failures))
    assert len(requests_b) == invocations_with_b
    assert all(r.status == 200 for r in standin.requests if r.pixel_id == PIXEL_A)


def test_7_secrets_manager_unreachable(
    matrix: Callable[..., Matrix], standin: GraphStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = matrix(max_receive_count=2)
    closed = f"http://127.0.0.1:{free_port()}"
    relay = build_relay(settings_from_env({**m.env, "AWS_ENDPOINT_URL": closed}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)  # what the token provider's boto3 client will use
    sent = m.send(12)
    run = m.drain(m.esm(m.invoker(relay), batch_size=10))
    check_invariants(run, expect_dlq={s.message_id for s in sent})
    assert standin.requests == []
    assert all(set(s.failures) == {"secret_unavailable"} for s in run.summaries)


def test_8_fifo_queue_with_failures_in_two_message_groups(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    m = matrix(max_receive_count=2, fifo=True)
    groups = {g: m.send(4, group=g, with_event_id=True) for g in ("g1", "g2", "g3")}
    poison = [groups["g1"][1], groups["g2"][2]]
    standin.state.reject_event_ids = {f"{s.marker}-0" for s in poison}
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    check_invariants(run)
    # Then per invocation, after the first failed record of a group, every later record of it failed
    for outcome in run.outcomes:
        failed_groups: set[str] = set()
        for record in outcome.event["Records"]:
            group = record["attributes"]["MessageGroupId"]
            if group in failed_groups:
                assert record["messageId"] in outcome.failed
            if record["messageId"] in outcome.failed:
                failed_groups.add(group)
    # And the poison records are in the DLQ, g3 was delivered in full, records before the poison delivered
    assert {s.message_id for s in poison} <= run.dlq
    assert {s.message_id for s in groups["g3"]} <= run.deleted
    assert groups["g1"][0].message_id in run.deleted
    assert {s.message_id for s in groups["g2"][:2]} <= run.deleted
    # And order within a group was kept at Meta (first sighting of each delivered record)
    first_seen: list[str] = []
    for got in standin.received:
        marker = got["event"]["custom_data"]["order_id"]
        if marker not in first_seen:
            first_seen.append(marker)
    for members in groups.values():
        markers = [s.marker for s in members if s.message_id in run.deleted]
        assert [x for x in first_seen if x in markers] == markers


def test_9_remaining_time_runs_out_mid_retry(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    # Given an invocation with 5 s left (1 s margin, so the last attempt starts by 3 s: room for a slow
    # machine's setup before the first one), Meta answering slow 500s for longer than one invocation can
    # retry (at most ~8 attempts of 0.4 s fit in it), many attempts allowed
    m = matrix(max_receive_count=10, extra_env={"MAX_ATTEMPTS": "20", "DEADLINE_MARGIN": "1"})
    standin.add_fault(status=500, code=2, delay_ms=400, times=10)
    m.send(10)
    relay = m.relay()
    run = m.drain(m.esm(m.invoker(relay, budget_s=5.0), batch_size=10))
    check_invariants(run, expect_dlq=set())
    first = run.summaries[0]
    # Then the first invocation stopped retrying when its time ran out and handed the records back with
    # the real error (not a generic one); a later delivery succeeded
    assert first.records_failed == 10
    assert set(first.failures) == {"graph_transient_2"}
    assert first.delivery.requests < 20
    assert len(run.outcomes) >= 2


# ------------------------------------------------------------------- Meta's protocol (issue 9 cases)
APP_SECRET = "fault-matrix-app-secret"  # fake


def test_10_appsecret_proof_required(matrix: Callable[..., Matrix], standin: GraphStandIn, token: str) -> None:
    # Given an app with "Require App Secret" on
    with standin.state.lock:
        standin.state.app_secret, standin.state.require_appsecret_proof = APP_SECRET, True
    # When the secret carries the app_secret, the relay sends the proof and everything is delivered
    m = matrix(max_receive_count=2)
    m.clients.secretsmanager.put_secret_value(
        SecretId=m.resources.secret_id, SecretString=json.dumps({"access_token": token, "app_secret": APP_SECRET})
    )
    m.send(12)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    check_invariants(run, expect_dlq=set())
    assert all(r.status == 200 and r.appsecret_proof for r in standin.requests)


def test_11_appsecret_proof_required_but_no_app_secret_is_request_level(
    matrix: Callable[..., Matrix], standin: GraphStandIn
) -> None:
    with standin.state.lock:
        standin.state.app_secret, standin.state.require_appsecret_proof = APP_SECRET, True
    m = matrix(max_receive_count=2)
    sent = m.send(10, events_per_record=3)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    # Then every record failed request-level until the DLQ: one request per invocation, no search, no
    # event blamed
    check_invariants(run, expect_dlq={s.message_id for s in sent})
    asked = [s for s in run.summaries if s.delivery.requests]
    assert len(standin.requests) == len(asked) >= 1
    assert all(r.status == 400 for r in standin.requests)
    for summary in asked:
        assert set(summary.failures) == {"graph_request_100"}
        assert summary.delivery.requests == 1
        assert summary.delivery.splits == 0
        assert summary.delivery.isolated_events == 0


def test_12_retired_graph_version_fails_fast(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    m = matrix(max_receive_count=2, extra_env={"GRAPH_API_VERSION": "v19.0"})
    sent = m.send(25)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=30))
    check_invariants(run, expect_dlq={s.message_id for s in sent})
    # Then each invocation made exactly one request (no retry, no search) and named the cause (an
    # invocation whose secret read timed out on this loaded machine made none)
    asked = [s for s in run.summaries if s.delivery.requests]
    assert asked
    assert [r.status for r in standin.requests] == [400] * len(asked)
    for summary in asked:
        assert summary.delivery.requests == 1
        assert set(summary.failures) == {"graph_config_2635"}


def test_13_usage_header_throttle_holds_without_posting_into_the_block(
    matrix: Callable[..., Matrix], standin: GraphStandIn
) -> None:
    # Given Meta throttles once with code 80004 and a 2-minute estimate in X-Business-Use-Case-Usage
    m = matrix(max_receive_count=4, extra_env={"MAX_EVENTS_PER_REQUEST": "10"})
    standin.add_fault(status=400, code=80004, subcode=2446079, usage_minutes=2, times=1)
    m.send(30)
    relay = m.relay()  # one execution environment: it remembers the block across invocations
    esm = m.esm(m.invoker(relay), batch_size=30)
    outcomes = [o for o in (esm.poll_once(), poll_until(esm)) if o is not None]
    first, second = m.summaries[0], m.summaries[1]
    # Then the first invocation sent nothing more for that pixel once it knew the block (which outlasts the
    # invocation): each chunk went at most once, the throttled one was not retried
    throttled = [r for r in standin.requests if r.status == 400]
    assert len(throttled) == 1
    assert first.delivery.requests <= math.ceil(first.events_prepared / 10)
    assert first.records_failed > 0
    assert set(first.failures) == {"graph_throttled_80004_2446079"}
    # And every failed record carries Meta's estimate (for parking); the next invocation of the same
    # environment posts nothing into the known block and hands the remaining hold on
    assert all(60 < (f.retry_after_s or 0) <= 120 for f in first.delivery.failed.values())
    assert second.delivery.requests == 0
    assert second.records_failed == second.records > 0
    assert all(0 < (f.retry_after_s or 0) < 120 for f in second.delivery.failed.values())
    # When the block is over (this environment's clock passes Meta's estimate), everything is delivered
    relay._deliverer.holds = HoldBook()
    run = m.drain(esm, outcomes)
    check_invariants(run, expect_dlq=set())
    assert len([r for r in standin.requests if r.status == 400]) == 1


def poll_until(esm: EventSourceEmulator, timeout_s: float = 10.0) -> BatchOutcome | None:
    """The next batch, once failed records are visible again (visibility timeout 1 s)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        outcome = esm.poll_once()
        if outcome is not None:
            return outcome
        time.sleep(0.2)
    return None


def test_14_no_token_at_meta_is_auth(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    # Given something between the relay and Meta strips the token: Meta answers 104 to every request
    standin.add_fault(status=400, code=104, times=-1)
    m = matrix(max_receive_count=2)
    sent = m.send(5)
    run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
    check_invariants(run, expect_dlq={s.message_id for s in sent})
    # Then it is an auth failure: one forced refresh and one more request per invocation, then fail fast
    for summary in run.summaries:
        assert summary.delivery.auth_refreshes == 1
        assert summary.delivery.requests == 2
        assert set(summary.failures) == {"graph_auth_104"}


def test_15_connection_closed_while_idle_costs_no_attempt(matrix: Callable[..., Matrix], standin: GraphStandIn) -> None:
    # Given Meta's side closes keep-alive connections idle for 0.3 s (a Lambda freeze between invocations)
    with standin.state.lock:
        standin.state.idle_timeout_s = 0.3
    m = matrix(max_receive_count=2)
    relay = m.relay()  # one execution environment: its pooled connection outlives the first invocation
    esm = m.esm(m.invoker(relay), batch_size=10)
    m.send(5)
    first = esm.poll_once()
    assert first is not None
    time.sleep(1.0)  # the server closes the idle connection
    m.send(5)
    second = esm.poll_once()
    assert second is not None
    run = m.drain(esm, [first, second])
    check_invariants(run, expect_dlq=set())
    # Then the second invocation succeeded with one request, no failed attempt, on a new connection
    assert [r.status for r in standin.requests] == [200, 200]
    assert run.summaries[1].delivery.requests == 1
    assert run.summaries[1].delivery.retries == 0
    assert standin.requests[0].connection != standin.requests[1].connection


def test_16_delivers_over_https_with_certificate_verification(
    moto_server: MotoServer, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Graph behind HTTPS with a certificate from a test CA, and the production TLS path (urllib3's
    # default context: verification on, the process trust store -- here SSL_CERT_FILE names the test CA)
    with GraphStandIn(tokens={token}, tls=True) as tls:
        assert tls.ca_pem is not None
        m = Matrix(moto_server, tls, token, max_receive_count=2)
        assert m.env["GRAPH_API_URL"].startswith("https://127.0.0.1:")
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_pem))
        m.send(10)
        run = m.drain(m.esm(m.invoker(m.relay()), batch_size=10))
        check_invariants(run, expect_dlq=set())
        assert [r.status for r in tls.requests] == [200]
        # And without the CA in the trust store the same relay refuses the server's certificate
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusting = build_relay(settings_from_env(m.env))
        event = {"Records": [{"messageId": "m1", "body": json.dumps(make_event()), "attributes": {},
                              "messageAttributes": {}, "eventSource": "aws:sqs"}]}  # fmt: skip
        summary = untrusting.process(event, lambda: 5000)
        assert summary.records_failed == 1
        assert len(tls.requests) == 1


# ------------------------------------------------------------------------------------------ helpers
