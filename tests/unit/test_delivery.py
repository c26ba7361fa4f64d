"""Delivery scheduler: chunking, concurrency, retry/backoff, throttle hold, auth refresh, config/request-level
errors, the bad-event search driven end to end, per-event outcomes, FIFO order, bounded waits.

In-process fakes only (no sockets): a fake sender decides each request's outcome; a fake clock advances
when the scheduler sleeps, so backoffs and deadlines cost no wall time.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capi_relay.aws.secrets import Credentials, SecretError
from capi_relay.deliver.chunking import chunk, request_overhead
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import (
    Deliverer,
    DeliveryConfig,
    DeliveryReport,
)
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.deliver.search import SEARCH_POOLED_FROM, search_request_bound, valve_request_bound
from capi_relay.ingest.envelope import MAX_REQUEST_FIELD_CHARS, REQUEST_FIELDS
from capi_relay.ingest.model import Outbound, encode_event
from capi_relay.prepare.events import REQUEST_OVERHEAD_BYTES

PIXEL = "111"
OTHER = "222"


class Clock:
    """Monotonic fake: ``sleep`` advances it; ``tick`` per read models a little CPU time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        with self._lock:
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Tokens:
    """Token provider fake: a list of tokens handed out in turn on forced refresh."""

    def __init__(self, *tokens: str, fail: bool = False, fail_on_refresh: bool = False) -> None:
        self.tokens = list(tokens) or ["t1"]
        self.current = 0
        self.fail = fail
        self.fail_on_refresh = fail_on_refresh
        self.calls: list[tuple[str, bool]] = []

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        self.calls.append((pixel_id, force_refresh))
        if self.fail or (force_refresh and self.fail_on_refresh):
            raise SecretError("secret_unavailable", "unreachable")
        if force_refresh and self.current + 1 < len(self.tokens):
            self.current += 1
        return Credentials(self.tokens[self.current])


Behaviour = Callable[[str, list[dict[str, Any]], Credentials, float | None], GraphReply | Exception]


class Sender:
    """Records requests (pixel, event ids, token, timeout, clock at send) and answers via ``behaviour``."""

    def __init__(self, behaviour: Behaviour | None = None, clock: Clock | None = None) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, pixel_id: str, body: bytes, credentials: Credentials, timeout_s: float | None = None) -> GraphReply:
        import json

        doc = json.loads(body)
        with self._lock:
            self.requests.append(
                {
                    "pixel": pixel_id,
                    "ids": [e["event_id"] for e in doc["data"]],
                    "token": credentials.access_token,
                    "timeout": timeout_s,
                    "at": self.clock() if self.clock else None,
                    "doc": doc,
                }
            )
        result = self.behaviour(pixel_id, doc["data"], credentials, timeout_s) if self.behaviour else None
        if isinstance(result, Exception):
            raise result
        return result or GraphReply(len(doc["data"]), "trace", 1.0)


def events(n: int, pixel: str = PIXEL, test_code: str | None = None, prefix: str = "m") -> list[Outbound]:
    return [
        Outbound(
            f"{prefix}{i}", 0, pixel, test_code, encode_event({"event_name": "Purchase", "event_id": f"{prefix}{i}"})
        )
        for i in range(n)
    ]


def event_id(o: Outbound) -> str:
    """The ``event_id`` of an outbound event (as it is POSTed)."""
    return str(json.loads(o.encoded)["event_id"])


def cfg(**kw: Any) -> DeliveryConfig:
    base: dict[str, Any] = {
        "concurrency": 4,
        "max_attempts": 5,
        "base_backoff_s": 0.2,
        "max_backoff_s": 1.0,
        "throttle_backoff_s": 2.0,
        "request_timeout_s": 3.0,
        "min_request_s": 0.5,
    }
    base.update(kw)
    return DeliveryConfig(**base)


def run(
    sender: Sender,
    outbound: list[Outbound],
    *,
    clock: Clock,
    tokens: Tokens | None = None,
    budget_s: float = 60.0,
    fifo: bool = False,
    quarantine: bool = False,
    **config: Any,
) -> DeliveryReport:
    deliverer = make_deliverer(sender, clock, tokens, **config)
    try:
        return deliverer.deliver(outbound, clock() + budget_s, fifo=fifo, quarantine=quarantine)
    finally:
        deliverer.close()


def make_deliverer(sender: Sender, clock: Clock, tokens: Tokens | None = None, **config: Any) -> Deliverer:
    return Deliverer(sender, tokens or Tokens(), cfg(**config), clock=clock, wall_clock=clock, sleep=clock.sleep,
                     rng=random.Random(7))  # fmt: skip


def assert_accounted(report: DeliveryReport, outbound: list[Outbound], sender: Sender) -> None:
    """Every event is exactly one of: accepted in some 2xx request, rejected, or its message failed."""
    accepted: set[str] = set()
    for req in sender.requests:
        if req.get("ok"):
            accepted.update(req["ids"])
    for o in outbound:
        outcomes = [event_id(o) in accepted, (o.message_id, o.position) in report.rejected]
        assert sum(outcomes) <= 1, o
        if not any(outcomes):
            assert o.message_id in report.failed, o


def invalid_if(bad: set[str], subcode: Callable[[str], int] = lambda _: 2804036) -> Behaviour:
    def behaviour(
        pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None
    ) -> GraphReply | Exception:
        hits = [e["event_id"] for e in data if e["event_id"] in bad]
        if hits:
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=subcode(hits[0]))
        return GraphReply(len(data), "ok", 1.0)

    return behaviour


def rejected_ids(report: DeliveryReport) -> set[str]:
    return {message_id for message_id, _ in report.rejected}


def marking(sender: Sender, behaviour: Behaviour) -> Behaviour:
    """Wrap ``behaviour`` so the sender's last request records whether it was accepted."""

    def wrapped(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> GraphReply | Exception:
        result = behaviour(pixel, data, creds, t)
        ids = [e["event_id"] for e in data]
        with sender._lock:
            for req in reversed(sender.requests):
                if req["ids"] == ids and "ok" not in req:
                    req["ok"] = isinstance(result, GraphReply) and result.events_received == len(data)
                    break
        return result

    return wrapped


# ------------------------------------------------------------------------------------------- chunking
def test_chunks_group_by_pixel_and_test_code_and_cap_events_and_bytes() -> None:
    # Given 2,500 events for one pixel, 3 for another, 2 with a test code
    outbound = events(2500) + events(3, OTHER, prefix="o") + events(2, PIXEL, "TEST1", prefix="t")
    # When chunked at 1,000 events
    chunks = chunk(outbound, 1000, 2 * 1024 * 1024)
    # Then each group is cut separately, in input order
    assert [(c.pixel_id, c.test_event_code, len(c.items)) for c in chunks] == [
        (PIXEL, None, 1000), (PIXEL, None, 1000), (PIXEL, None, 500), (OTHER, None, 3), (PIXEL, "TEST1", 2)
    ]  # fmt: skip
    assert [i.outbound.message_id for i in chunks[0].items][:3] == ["m0", "m1", "m2"]
    # And a byte cap cuts earlier, every body staying under it
    small = chunk(events(100), 1000, 1024)
    assert len(small) > 1
    assert all(len(c.body(Credentials("t", "s"))) <= 1024 for c in small)
    assert sum(len(c.items) for c in small) == 100


def test_every_body_stays_under_the_byte_cap_with_the_largest_test_code_and_request_fields() -> None:
    # Given events whose test code and four request fields are at their caps, each character a 6-byte escape
    longest = "\x01" * MAX_REQUEST_FIELD_CHARS
    fields = tuple((key, longest) for key in REQUEST_FIELDS)
    outbound = [
        Outbound(o.message_id, 0, PIXEL, longest, o.encoded, fields) for o in events(300)
    ]  # fmt: skip
    # When chunked at 16 KiB
    chunks = chunk(outbound, 1000, 16 * 1024)
    # Then every body, with an appsecret_proof, stays under the cap
    assert len(chunks) > 1
    assert all(len(c.body(Credentials("t", "s"))) <= 16 * 1024 for c in chunks)
    assert sum(len(c.items) for c in chunks) == 300
    # And the room validate keeps for the body around one event is enough for the worst case
    assert request_overhead(chunks[0].key) <= REQUEST_OVERHEAD_BYTES


def test_body_carries_test_event_code_and_appsecret_proof_but_never_the_token() -> None:
    c = chunk(events(2, test_code="TEST9"), 1000, 10**6)[0]
    body = c.body(Credentials("secret-token", "app-secret"))
    assert b"TEST9" in body
    assert b"appsecret_proof" in body
    assert b"secret-token" not in body


# ------------------------------------------------------------------------------------- concurrency
def test_chunks_are_sent_concurrently_up_to_the_limit() -> None:
    # Given 10 chunks and a sender that holds every request until 4 are in flight together
    clock = Clock()
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    four = threading.Barrier(4, timeout=10)

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> GraphReply:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            if len(data) == 100:  # the 8 first full chunks meet in two groups of four
                four.wait()
        finally:
            with lock:
                in_flight -= 1
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    # When 850 events go out in chunks of 100 with concurrency 4
    report = run(sender, events(850), clock=clock, concurrency=4, max_events_per_request=100)
    # Then 9 requests were made, 4 at a time at most, and everything was delivered
    assert report.requests == 9
    assert peak == 4
    assert report.failed == {}
    assert report.delivered_events == 850


def test_fifo_mode_sends_one_request_at_a_time_in_input_order() -> None:
    clock = Clock()
    in_flight = peak = 0
    lock = threading.Lock()

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> GraphReply:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)  # a real wait, so that a second request sent alongside would overlap this one
        with lock:
            in_flight -= 1
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    report = run(sender, events(30), clock=clock, fifo=True, max_events_per_request=10, concurrency=4)
    assert [r["ids"][0] for r in sender.requests] == ["m0", "m10", "m20"]
    assert peak == 1
    assert report.failed == {}


# ------------------------------------------------------------------------------------- transient
def test_transient_errors_are_retried_with_backoff_then_succeed() -> None:
    clock = Clock()
    calls = 0

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        nonlocal calls
        calls += 1
        return GraphError(ErrorKind.TRANSIENT, http_status=500) if calls <= 2 else GraphReply(len(data), None, 1)

    sender = Sender(behaviour, clock)
    report = run(sender, events(5), clock=clock)
    assert report.failed == {}
    assert report.requests == 3
    assert report.retries == 2
    assert sum(clock.sleeps) > 0  # backed off (on the fake clock), did not spin
    assert sender.requests[1]["at"] > sender.requests[0]["at"]


def test_transient_errors_give_up_after_max_attempts() -> None:
    clock = Clock()
    sender = Sender(lambda *_: GraphError(ErrorKind.TRANSIENT, detail="ReadTimeoutError"), clock)
    report = run(sender, events(3), clock=clock, max_attempts=3)
    assert report.requests == 3
    assert set(report.failed) == {"m0", "m1", "m2"}
    assert report.failed["m0"].reason == "graph_transient"


def test_short_events_received_is_a_failure_of_those_records_and_is_retried() -> None:
    clock = Clock()
    answers = iter([GraphReply(4, None, 1.0), GraphReply(5, None, 1.0)])
    sender = Sender(lambda *_: next(answers), clock)
    report = run(sender, events(5), clock=clock)
    assert report.requests == 2
    assert report.failed == {}
    assert report.graph_errors["graph_transient_events_received_short"] == 1


def test_short_events_received_is_resent_then_accepted_and_counted_never_failed() -> None:
    # Policy (issue 17, docs/failure-policy.md): a 2xx is Meta taking the request. A short events_received is
    # resent while attempts allow (same event_ids: Meta deduplicates), then the events are accepted and the
    # anomaly counted -- failing them would send every neighbour in the request back, into the DLQ at last.
    clock = Clock()
    sender = Sender(lambda *_: GraphReply(0, None, 1.0), clock)
    report = run(sender, events(2), clock=clock, max_attempts=2)
    assert report.failed == {}
    assert report.requests == 2
    assert len(report.accepted) == 2
    assert (report.anomalous_2xx, report.accepted_on_anomaly) == (2, 2)
    assert report.graph_errors == {"graph_transient_events_received_short": 2}


def test_a_sender_bug_becomes_a_transient_failure_not_an_exception() -> None:
    clock = Clock()
    sender = Sender(lambda *_: RuntimeError("boom"), clock)
    report = run(sender, events(2), clock=clock, max_attempts=2)
    assert set(report.failed) == {"m0", "m1"}


# ------------------------------------------------------------------------------------- deadline
def test_no_attempt_starts_without_min_request_s_left_and_timeouts_are_cut_to_the_time_left() -> None:
    # Given a sender that always times out, and 4.2 s of budget with a 3 s request timeout
    clock = Clock()

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        assert t is not None
        clock.advance(t)  # the attempt uses its whole timeout
        return GraphError(ErrorKind.TRANSIENT, detail="ReadTimeoutError")

    sender = Sender(behaviour, clock)
    start = clock()
    report = run(sender, events(3), clock=clock, budget_s=4.2, max_attempts=10, min_request_s=0.5)
    # Then every attempt's timeout ended by the deadline, none started with < 0.5 s left
    deadline = start + 4.2
    for req in sender.requests:
        assert req["at"] + req["timeout"] <= deadline + 1e-9
        assert deadline - req["at"] >= 0.5
    assert len(sender.requests) == 2  # 3 s, then the 1.2 s that were left minus backoff
    # And the records fail with the last real error, not a generic one
    assert report.failed["m0"].reason == "graph_transient"
    assert clock() <= deadline + 1e-9


def test_an_invocation_with_no_time_left_sends_nothing_and_fails_everything() -> None:
    clock = Clock()
    sender = Sender(clock=clock)
    report = run(sender, events(3), clock=clock, budget_s=0.2, min_request_s=0.5)
    assert sender.requests == []
    assert {f.reason for f in report.failed.values()} == {"deadline"}


# ------------------------------------------------------------------------------------- throttling
def test_throttle_holds_every_chunk_of_the_pixel_until_retry_after_but_not_other_pixels() -> None:
    # Given pixel 111's first request is throttled with Retry-After 5 s
    clock = Clock()
    throttled = False

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        nonlocal throttled
        if pixel == PIXEL and not throttled:
            throttled = True
            return GraphError(ErrorKind.THROTTLED, http_status=429, retry_after_s=5.0)
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    start = clock()
    # When two chunks of 111 and one of 222 go out one at a time
    report = run(sender, events(20) + events(5, OTHER, prefix="o"), clock=clock, concurrency=1,
                 max_events_per_request=10)  # fmt: skip
    # Then after the throttle no request for 111 left before the hold ended, 222 was not held
    assert report.failed == {}
    first, *rest = sender.requests
    assert first["pixel"] == PIXEL
    later_111 = [r for r in rest if r["pixel"] == PIXEL]
    assert len(later_111) == 2
    assert all(r["at"] >= start + 5.0 for r in later_111)
    other = next(r for r in rest if r["pixel"] == OTHER)
    assert other["at"] < start + 5.0
    assert report.throttles == 1


def test_throttle_beyond_the_deadline_fails_at_once_without_spinning() -> None:
    clock = Clock()
    sender = Sender(lambda *_: GraphError(ErrorKind.THROTTLED, code=4, retry_after_s=3600.0), clock)
    report = run(sender, events(30), clock=clock, max_events_per_request=10, concurrency=1, budget_s=30)
    # Then one request found out, and the two other chunks of that pixel never went
    assert report.requests == 1
    assert set(report.failed) == {f"m{i}" for i in range(30)}
    assert report.failed["m25"].reason == "graph_throttled_4"  # never sent: failed by the known hold
    assert report.failed["m0"].reason == "graph_throttled_4"
    # And every record carries Meta's estimate so the relay can park it
    assert report.failed["m0"].retry_after_s == pytest.approx(3600.0)
    assert report.failed["m25"].retry_after_s == pytest.approx(3600.0)
    assert sum(clock.sleeps) == 0  # no waiting for a hold that cannot end in time


def test_throttle_without_retry_after_backs_off_growing_and_gives_up_by_attempts() -> None:
    clock = Clock()
    sender = Sender(lambda *_: GraphError(ErrorKind.THROTTLED, code=613), clock)
    report = run(sender, events(2), clock=clock, max_attempts=4, budget_s=600, throttle_backoff_s=2.0)
    assert report.requests == 4
    gaps = [b["at"] - a["at"] for a, b in zip(sender.requests, sender.requests[1:], strict=False)]
    assert all(g >= 1.0 for g in gaps)  # >= half of 2 s * 2^(attempt-1)
    assert gaps[-1] > gaps[0]
    assert set(report.failed) == {"m0", "m1"}


# ------------------------------------------------------------------------------------- auth
def test_auth_error_refreshes_once_and_retries_with_the_new_token() -> None:
    clock = Clock()
    tokens = Tokens("old", "new")

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        if creds.access_token == "old":
            return GraphError(ErrorKind.AUTH, http_status=401, code=190, subcode=463)
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    # When 4 chunks are all in flight with the old token
    barrier = threading.Barrier(4, timeout=10)
    original = sender.behaviour
    assert original is not None

    def together(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        if creds.access_token == "old":
            barrier.wait()
        return original(pixel, data, creds, t)

    sender.behaviour = together
    report = run(sender, events(40), clock=clock, tokens=tokens, concurrency=4, max_events_per_request=10)
    # Then one forced refresh, each chunk retried once with the new token, all delivered
    assert tokens.calls.count((PIXEL, True)) == 1
    assert report.auth_refreshes == 1
    assert report.failed == {}
    assert [r["token"] for r in sender.requests].count("old") == 4
    assert [r["token"] for r in sender.requests].count("new") == 4


def test_auth_error_after_the_refresh_fails_the_pixel_and_counts_it() -> None:
    clock = Clock()
    tokens = Tokens("old", "still-bad")
    sender = Sender(lambda *_: GraphError(ErrorKind.AUTH, code=190), clock)
    report = run(sender, events(30), clock=clock, tokens=tokens, concurrency=1, max_events_per_request=10)
    assert tokens.calls.count((PIXEL, True)) == 1
    assert report.requests == 2  # the first chunk, then it again with the refreshed token
    assert set(report.failed) == {f"m{i}" for i in range(30)}
    assert report.failed["m0"].reason == "graph_auth_190"


def test_auth_refresh_that_cannot_reach_the_secret_fails_the_pixel() -> None:
    clock = Clock()
    tokens = Tokens("old", fail_on_refresh=True)
    sender = Sender(lambda *_: GraphError(ErrorKind.AUTH, code=102), clock)
    report = run(sender, events(3), clock=clock, tokens=tokens)
    assert report.requests == 1
    assert {f.reason for f in report.failed.values()} == {"secret_unavailable"}


def test_secret_unavailable_fails_every_record_without_a_request() -> None:
    clock = Clock()
    sender = Sender(clock=clock)
    report = run(sender, events(3) + events(2, OTHER, prefix="o"), clock=clock, tokens=Tokens(fail=True))
    assert sender.requests == []
    assert set(report.failed) == {"m0", "m1", "m2", "o0", "o1"}


# ------------------------------------------------------------------------------------- config
def test_config_error_fails_only_that_pixel_and_stops_sending_for_it() -> None:
    clock = Clock()

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        if pixel == PIXEL:
            return GraphError(ErrorKind.CONFIG, http_status=403, code=10)
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    report = run(sender, events(30) + events(25, OTHER, prefix="o"), clock=clock, concurrency=1,
                 max_events_per_request=10)  # fmt: skip
    assert [r["pixel"] for r in sender.requests].count(PIXEL) == 1  # no bisect, no more chunks
    assert set(report.failed) == {f"m{i}" for i in range(30)}
    assert report.delivered_events == 25
    assert report.failed["m29"].reason == "graph_config_10"


# ------------------------------------------------------------------------------------- isolation
@pytest.mark.parametrize(
    ("n", "k", "seed"),
    [(1000, 1, 1), (1000, 1, 2), (1000, 2, 3), (1000, 3, 4), (37, 1, 5), (37, 3, 6), (2, 1, 7), (2, 2, 8),
     (1, 1, 9), (500, 2, 10)],
)  # fmt: skip
def test_search_isolates_only_the_bad_events_within_the_request_bound(n: int, k: int, seed: int) -> None:
    clock = Clock()
    outbound = events(n)
    bad = {f"m{i}" for i in random.Random(seed).sample(range(n), k)}
    sender = Sender()
    sender.behaviour = marking(sender, invalid_if(bad))
    report = run(sender, outbound, clock=clock, concurrency=8)
    assert report.failed == {}
    assert rejected_ids(report) == bad
    assert report.delivered_events == n - k
    assert report.isolated_events == k
    assert report.requests <= search_request_bound(k, n), (report.requests, search_request_bound(k, n))
    assert_accounted(report, outbound, sender)
    assert report.rejected[(next(iter(bad)), 0)].reason == "graph_invalid_100_2804036"


@pytest.mark.parametrize("k", [SEARCH_POOLED_FROM, 10, 30])
def test_search_with_many_bad_events_stays_near_the_bound(k: int) -> None:
    n = 1000
    for seed in range(5):
        clock = Clock()
        bad = {f"m{i}" for i in random.Random(100 + seed).sample(range(n), k)}
        sender = Sender()
        sender.behaviour = marking(sender, invalid_if(bad))
        report = run(sender, events(n), clock=clock)
        assert rejected_ids(report) == bad
        assert report.requests <= search_request_bound(k, n) * 1.1, (k, report.requests)


def test_search_when_every_event_is_bad_costs_about_2n_requests() -> None:
    # Given every event is bad, each for its own reason (identical errors would trip the safety valve)
    clock = Clock()
    n = 200
    sender = Sender(invalid_if({f"m{i}" for i in range(n)}, lambda eid: 2804000 + int(eid[1:])), clock)
    report = run(sender, events(n), clock=clock)
    assert len(report.rejected) == n
    assert report.requests <= 2.2 * n  # plain halving costs 2n - 1 once the density is clear


def test_search_keeps_retrying_transient_failures_of_its_probes() -> None:
    clock = Clock()
    bad = {"m7"}
    flaky = iter([True, False, True])

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        if len(data) < 64 and next(flaky, False):
            return GraphError(ErrorKind.TRANSIENT, http_status=503)
        return invalid_if(bad)(pixel, data, creds, t)

    sender = Sender(behaviour, clock)
    report = run(sender, events(64), clock=clock)
    assert rejected_ids(report) == bad
    assert report.failed == {}
    assert report.delivered_events == 63


def test_search_out_of_time_fails_the_undecided_records_for_sqs_to_retry() -> None:
    # Given every request takes 1 s and only 4 s are left: the search cannot finish
    clock = Clock()
    bad = {"m90"}

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        clock.advance(1.0)
        return invalid_if(bad)(pixel, data, creds, t)

    sender = Sender(behaviour, clock)
    outbound = events(100)
    sender.behaviour = marking(sender, behaviour)
    report = run(sender, outbound, clock=clock, budget_s=4.0, min_request_s=0.5, concurrency=1)
    # Then every record is accounted for: accepted probes delivered, the undecided rest failed
    assert "m90" in report.failed
    assert report.rejected == {}
    assert report.delivered_events == 87  # m0-49, m50-74, m75-86 accepted in the 3 s after the first try
    assert {f.reason for f in report.failed.values()} == {"graph_invalid_100_2804036"}
    assert_accounted(report, outbound, sender)


def test_a_bad_event_is_reported_alone_and_its_record_neighbours_are_delivered() -> None:
    clock = Clock()
    outbound = [Outbound("msg", i, PIXEL, None, encode_event({"event_id": f"e{i}"})) for i in range(4)] + events(4)
    sender = Sender(invalid_if({"e2"}), clock)
    report = run(sender, outbound, clock=clock)
    assert set(report.rejected) == {("msg", 2)}
    assert report.failed == {}
    assert report.delivered_events == 7


def test_does_not_busy_wait_while_holding_for_a_throttle() -> None:
    # Given a 20 s hold and a 60 s budget, the scheduler sleeps once per wait, it does not poll
    clock = Clock()
    answers = iter([GraphError(ErrorKind.THROTTLED, code=17, retry_after_s=20.0)])
    reads = 0

    def counting() -> float:
        nonlocal reads
        reads += 1
        return clock()

    sender = Sender(lambda *_: next(answers, GraphReply(3, None, 1.0)), clock)
    deliverer = Deliverer(sender, Tokens(), cfg(), clock=counting, wall_clock=clock, sleep=clock.sleep)
    try:
        report = deliverer.deliver(events(3), clock() + 60)
    finally:
        deliverer.close()
    assert report.failed == {}
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] == pytest.approx(20.0)
    assert reads < 20


# ------------------------------------------------------------------------------------- request-level
@pytest.mark.parametrize(
    ("error", "reason"),
    [(GraphError(ErrorKind.REQUEST, http_status=400, code=100), "graph_request_100"),
     (GraphError(ErrorKind.CONFIG, http_status=400, code=2635), "graph_config_2635")],
)  # fmt: skip
def test_request_level_and_retired_version_fail_the_pixel_with_one_request_and_one_error_log(
    error: GraphError, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given every request for pixel 111 is refused for a request-level reason, 222 works
    clock = Clock()
    sender = Sender(lambda pixel, *_: error if pixel == PIXEL else GraphReply(5, None, 1.0), clock)
    outbound = events(30) + events(5, OTHER, prefix="o")
    with caplog.at_level("ERROR", logger="capi_relay.deliver.engine"):
        report = run(sender, outbound, clock=clock, concurrency=1, max_events_per_request=10)
    # Then one request for 111 (no search, no more chunks), nothing blamed, 222 delivered
    assert [r["pixel"] for r in sender.requests].count(PIXEL) == 1
    assert report.rejected == {}
    assert set(report.failed) == {f"m{i}" for i in range(30)}
    assert {f.reason for f in report.failed.values()} == {reason}
    assert report.delivered_events == 5
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_safety_valve_single_events_rejected_identically_fail_the_pixel_and_blame_nothing() -> None:
    # Given Meta answers every request with the same 2804xxx error, whatever the events
    clock = Clock()
    sender = Sender(lambda *_: GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804050), clock)
    report = run(sender, events(64) + events(10, prefix="x"), clock=clock, max_events_per_request=64)
    # Then the search stopped after a few single-event probes: nothing rejected, every record failed
    assert report.rejected == {}
    assert len(report.failed) == 74
    assert report.requests <= valve_request_bound(64) + valve_request_bound(10)  # two chunks searched
    assert {f.reason for f in report.failed.values()} == {"graph_invalid_100_2804050"}


@pytest.mark.parametrize("fifo", [False, True])
def test_bad_events_searched_first_do_not_trip_the_valve_for_their_valid_neighbours(fifo: bool) -> None:
    # Given a redriven DLQ of one pixel: four letters Meta rejects with one identical error (2804036) come
    # first, then 12 valid events (soak finding 5: the valve failed every record of the pixel, every receive)
    clock = Clock()
    bad = {f"m{i}" for i in range(4)}
    sender = Sender(invalid_if(bad), clock)
    outbound = events(16)
    sender.behaviour = marking(sender, invalid_if(bad))
    report = run(sender, outbound, clock=clock, fifo=fifo, quarantine=True)
    # Then only the bad are rejected; the valid ones are delivered; nothing fails for SQS to retry
    assert rejected_ids(report) == bad
    assert report.failed == {}
    assert report.delivered_events == 12
    assert_accounted(report, outbound, sender)


# ------------------------------------------------------------------------------------- throttle memory
def test_a_known_throttle_hold_survives_into_the_next_invocation() -> None:
    # Given an invocation that was throttled with a 600 s estimate
    clock = Clock()
    sender = Sender(lambda *_: GraphError(ErrorKind.THROTTLED, code=80004, retry_after_s=600.0), clock)
    deliverer = make_deliverer(sender, clock)
    try:
        first = deliverer.deliver(events(3), clock() + 30)
        assert first.requests == 1
        assert first.failed["m0"].retry_after_s == pytest.approx(600.0)
        # When the same execution environment is invoked again 100 s later
        clock.advance(100)
        second = deliverer.deliver(events(3, prefix="n"), clock() + 30)
        # Then it does not post into the known block: records fail at once with the remaining hold
        assert second.requests == 0
        assert second.failed["n0"].reason == "graph_throttled_80004"
        assert second.failed["n0"].retry_after_s == pytest.approx(500.0)
        # And once the block has ended, it sends again
        clock.advance(600)
        sender.behaviour = None
        third = deliverer.deliver(events(3, prefix="p"), clock() + 30)
        assert third.failed == {}
        assert third.requests == 1
    finally:
        deliverer.close()


def test_usage_header_estimate_holds_the_pixel_within_the_invocation() -> None:
    clock = Clock()
    answers = iter([GraphError(ErrorKind.THROTTLED, code=4, retry_after_s=12.0)])
    sender = Sender(lambda *_: next(answers, GraphReply(3, None, 1.0)), clock)
    start = clock()
    report = run(sender, events(3), clock=clock, budget_s=60)
    assert report.failed == {}
    assert sender.requests[1]["at"] >= start + 12.0


# ------------------------------------------------------------------------------------- unknown outcomes
def test_events_resent_after_an_unknown_outcome_are_counted() -> None:
    clock = Clock()
    answers = iter([GraphError(ErrorKind.TRANSIENT, detail="ReadTimeoutError"),
                    GraphError(ErrorKind.TRANSIENT, http_status=503)])  # fmt: skip
    sender = Sender(lambda *_: next(answers, GraphReply(4, None, 1.0)), clock)
    report = run(sender, events(4), clock=clock)
    assert report.failed == {}
    assert report.requests == 3
    assert report.unknown_outcomes == 1  # the 503 was an answer
    assert report.resent_events == 4  # only the send after the timeout counts


def test_a_connection_never_made_is_not_an_unknown_outcome() -> None:
    clock = Clock()
    answers = iter([GraphError(ErrorKind.TRANSIENT, detail="NewConnectionError", unsent=True)])
    sender = Sender(lambda *_: next(answers, GraphReply(4, None, 1.0)), clock)
    report = run(sender, events(4), clock=clock)
    assert report.failed == {}
    assert report.requests == 2
    assert report.unknown_outcomes == 0
    assert report.resent_events == 0  # the retry is the first time Meta sees these events


def test_an_attempt_still_running_at_the_deadline_is_abandoned() -> None:
    # Given a sender that never answers (a real clock: the wait itself must be bounded)
    release = threading.Event()
    sender = Sender(lambda *_: (release.wait(10), GraphReply(2, None, 1.0))[1])
    deliverer = Deliverer(sender, Tokens(), cfg(min_request_s=0.05, request_timeout_s=5.0))
    try:
        report = deliverer.deliver(events(2), time.monotonic() + 1.0)  # room for a slow start
        # Then deliver returned without an answer: the records failed, the outcome counted as unknown
        assert not release.is_set()
        assert {f.reason for f in report.failed.values()} == {"deadline_in_flight"}
        assert report.unknown_outcomes == 1
        assert report.delivered_events == 0
    finally:
        release.set()
        deliverer.close()


# ------------------------------------------------------------------------------------- FIFO
def grouped(spec: list[tuple[str, str]]) -> list[Outbound]:
    """Events ``(event_id, group)`` in order, one message each."""
    return [Outbound(eid, 0, PIXEL, None, encode_event({"event_id": eid}), group_id=g) for eid, g in spec]


def assert_group_order(sender: Sender, outbound: list[Outbound], report: DeliveryReport) -> None:
    """No request carried an event while an earlier event of its group was undecided (not in the same
    request, and not yet accepted, rejected alone, or isolated by inference from an accepted probe)."""
    group = {event_id(o): o.group_id for o in outbound}
    order = [event_id(o) for o in outbound]
    bad = {message_id for message_id, _ in report.rejected}
    last_seen = {eid: n for n, req in enumerate(sender.requests) for eid in req["ids"]}
    decided: set[str] = set()
    for n, req in enumerate(sender.requests):
        ids = set(req["ids"])
        for eid in req["ids"]:
            earlier = [e for e in order[: order.index(eid)] if group[e] == group[eid]]
            assert all(e in decided or e in ids for e in earlier), (eid, earlier, decided)
        if req.get("ok") or len(ids) == 1:  # an answered single event is decided either way
            decided |= ids
        if req.get("ok"):  # inference: a bad event last sent before this accepted probe is isolated now
            decided |= {e for e in bad if last_seen[e] < n}


def test_fifo_poison_blocks_the_rest_of_its_group_and_no_later_event_is_sent_before_it_is_decided() -> None:
    clock = Clock()
    spec = [(f"a{i}", "A") if i % 2 == 0 else (f"b{i}", "B") for i in range(40)]
    outbound = grouped(spec)
    sender = Sender()
    sender.behaviour = marking(sender, invalid_if({"a10"}))
    report = run(sender, outbound, clock=clock, fifo=True, max_events_per_request=16)
    assert_group_order(sender, outbound, report)
    # Then the poison is rejected, later A events failed unsent, every earlier A and every B delivered
    assert set(report.rejected) == {("a10", 0)}
    later_a = {f"a{i}" for i in range(12, 40, 2)}
    assert set(report.failed) == later_a
    assert {f.reason for f in report.failed.values()} == {"fifo_group_blocked"}
    # (a12 and a14 left only inside the first, rejected 16-event request: Meta takes a request whole)
    sent_after_first = {eid for req in sender.requests[1:] for eid in req["ids"]}
    assert not sent_after_first & later_a
    assert report.delivered_events == 40 - 1 - len(later_a)
    assert_accounted(report, outbound, sender)


def test_fifo_with_quarantine_a_rejected_event_does_not_block_its_group() -> None:
    clock = Clock()
    outbound = grouped([(f"a{i}", "A") for i in range(20)])
    sender = Sender()
    sender.behaviour = marking(sender, invalid_if({"a3", "a11"}))
    report = run(sender, outbound, clock=clock, fifo=True, quarantine=True)
    assert_group_order(sender, outbound, report)
    assert set(report.rejected) == {("a3", 0), ("a11", 0)}
    assert report.failed == {}
    assert report.delivered_events == 18
    assert report.requests <= search_request_bound(2, 20)


def test_fifo_a_failed_chunk_blocks_its_groups_in_later_chunks() -> None:
    # Given the first chunk (A and B events) can never be sent, the second holds A and C events
    clock = Clock()
    outbound = grouped([("a0", "A"), ("b0", "B"), ("a1", "A"), ("c0", "C")])

    def behaviour(pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None) -> Any:
        if "a0" in [e["event_id"] for e in data]:
            return GraphError(ErrorKind.TRANSIENT, http_status=500)
        return GraphReply(len(data), None, 1.0)

    sender = Sender(behaviour, clock)
    report = run(sender, outbound, clock=clock, fifo=True, max_events_per_request=2, max_attempts=2)
    # Then a1 is never sent (blocked behind a0), c0 is delivered
    assert report.failed["a0"].reason == "graph_transient_http500"
    assert report.failed["a1"].reason == "fifo_group_blocked"
    assert "a1" not in {eid for req in sender.requests for eid in req["ids"]}
    assert "c0" not in report.failed
    assert report.delivered_events == 1


def test_fifo_retry_of_an_earlier_chunk_goes_before_a_later_chunk() -> None:
    clock = Clock()
    answers = iter([GraphError(ErrorKind.TRANSIENT, http_status=503)])
    sender = Sender(lambda *_: next(answers, GraphReply(5, None, 1.0)), clock)
    report = run(sender, grouped([(f"a{i}", "A") for i in range(10)]), clock=clock, fifo=True,
                 max_events_per_request=5)  # fmt: skip
    assert report.failed == {}
    assert [r["ids"][0] for r in sender.requests] == ["a0", "a0", "a5"]


# ------------------------------------------------------------------------------------- request fields
def test_request_fields_split_chunks_and_go_to_the_top_level_of_the_body() -> None:
    clock = Clock()
    tagged = (("namespace_id", "ns1"), ("upload_tag", "store-42"))
    outbound = [*events(3), Outbound("t0", 0, PIXEL, None, encode_event({"event_id": "t0"}), request_fields=tagged)]
    sender = Sender(clock=clock)
    report = run(sender, outbound, clock=clock)
    assert report.failed == {}
    docs = sorted((r["doc"] for r in sender.requests), key=lambda d: len(d["data"]))
    assert len(docs) == 2
    assert docs[0]["upload_tag"] == "store-42"
    assert docs[0]["namespace_id"] == "ns1"
    assert "upload_tag" not in docs[1]


def test_a_short_events_received_among_other_failures_is_a_transient_failure() -> None:
    # Given a first attempt answered 503 and the last one 200 with a short events_received
    clock = Clock()
    answers: Iterator[GraphReply | Exception] = iter(
        [GraphError(ErrorKind.TRANSIENT, http_status=503), GraphReply(0, None, 1.0)]
    )
    sender = Sender(lambda *_: next(answers), clock)
    report = run(sender, events(1), clock=clock, max_attempts=2)
    # Then nothing was proven: the record fails (retried later), the anomaly is still counted
    assert set(report.failed) == {"m0"}
    assert report.accepted == set()
    assert (report.anomalous_2xx, report.accepted_on_anomaly) == (1, 0)
