"""Delivery scheduler: chunking, concurrency, retry/backoff, throttle hold, auth refresh, config, search.

In-process fakes only (no sockets): a fake sender decides each request's outcome; a fake clock advances
when the scheduler sleeps, so backoffs and deadlines cost no wall time.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from capi_relay.delivery import (
    SEARCH_POOLED_FROM,
    Deliverer,
    DeliveryConfig,
    DeliveryReport,
    Failure,
    chunk,
    search_request_bound,
)
from capi_relay.graph import ErrorKind, GraphError, GraphReply
from capi_relay.model import Outbound
from capi_relay.secrets import Credentials, SecretError

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
        Outbound(f"{prefix}{i}", 0, pixel, test_code, {"event_name": "Purchase", "event_id": f"{prefix}{i}"})
        for i in range(n)
    ]


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
    sequential: bool = False,
    **config: Any,
) -> DeliveryReport:
    deliverer = Deliverer(sender, tokens or Tokens(), cfg(**config), clock=clock, sleep=clock.sleep,
                          rng=random.Random(7))  # fmt: skip
    try:
        return deliverer.deliver(outbound, clock() + budget_s, sequential=sequential)
    finally:
        deliverer.close()


def failed_or_rejected(report: DeliveryReport) -> dict[str, Failure]:
    """Message ids with an undecided (failed) or Meta-rejected event (h3 shim: rejected is reported apart)."""
    return {**report.failed, **{m: f for (m, _), f in report.rejected.items()}}


def assert_accounted(report: DeliveryReport, outbound: list[Outbound], sender: Sender) -> None:
    """Every message either failed or had all of its events accepted in some 2xx request."""
    accepted: set[str] = set()
    for req in sender.requests:
        if req.get("ok"):
            accepted.update(req["ids"])
    for o in outbound:
        assert (o.message_id in failed_or_rejected(report)) != (o.event["event_id"] in accepted), o.message_id


def invalid_if(bad: set[str]) -> Behaviour:
    def behaviour(
        pixel: str, data: list[dict[str, Any]], creds: Credentials, t: float | None
    ) -> GraphReply | Exception:
        if any(e["event_id"] in bad for e in data):
            return GraphError(ErrorKind.INVALID, http_status=400, code=100, subcode=2804036)
        return GraphReply(len(data), "ok", 1.0)

    return behaviour


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


def test_sequential_mode_sends_one_request_at_a_time_in_input_order() -> None:
    clock = Clock()
    sender = Sender(clock=clock)
    report = run(sender, events(30), clock=clock, sequential=True, max_events_per_request=10)
    assert [r["ids"][0] for r in sender.requests] == ["m0", "m10", "m20"]
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


def test_short_events_received_until_the_end_fails_the_records() -> None:
    clock = Clock()
    sender = Sender(lambda *_: GraphReply(0, None, 1.0), clock)
    report = run(sender, events(2), clock=clock, max_attempts=2)
    assert set(report.failed) == {"m0", "m1"}
    assert report.failed["m0"].reason == "graph_transient_events_received_short"


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
    assert report.failed["m25"].reason == "deadline"  # never sent
    assert report.failed["m0"].reason == "graph_throttled_4"
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
    assert set(failed_or_rejected(report)) == bad
    assert report.delivered_events == n - k
    assert report.isolated_events == k
    assert report.requests <= search_request_bound(k, n), (report.requests, search_request_bound(k, n))
    assert_accounted(report, outbound, sender)
    assert failed_or_rejected(report)[next(iter(bad))].reason == "graph_invalid_100_2804036"


@pytest.mark.parametrize("k", [SEARCH_POOLED_FROM, 10, 30])
def test_search_with_many_bad_events_stays_near_the_bound(k: int) -> None:
    n = 1000
    for seed in range(5):
        clock = Clock()
        bad = {f"m{i}" for i in random.Random(100 + seed).sample(range(n), k)}
        sender = Sender()
        sender.behaviour = marking(sender, invalid_if(bad))
        report = run(sender, events(n), clock=clock)
        assert set(failed_or_rejected(report)) == bad
        assert report.requests <= search_request_bound(k, n) * 1.1, (k, report.requests)


def test_search_when_every_event_is_bad_costs_about_2n_requests() -> None:
    clock = Clock()
    n = 200
    sender = Sender(invalid_if({f"m{i}" for i in range(n)}), clock)
    report = run(sender, events(n), clock=clock)
    assert len(failed_or_rejected(report)) == n
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
    assert set(failed_or_rejected(report)) == bad
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
    # Then every record is accounted for: accepted probes delivered, the rest failed
    assert "m90" in failed_or_rejected(report)
    assert report.delivered_events == 87  # m0-49, m50-74, m75-86 accepted in the 3 s after the first try
    assert {f.reason for f in failed_or_rejected(report).values()} == {"graph_invalid_100_2804036"}
    assert_accounted(report, outbound, sender)


def test_one_record_with_several_events_fails_if_any_of_its_events_is_bad() -> None:
    clock = Clock()
    outbound = [Outbound("msg", i, PIXEL, None, {"event_id": f"e{i}"}) for i in range(4)] + events(4)
    sender = Sender(invalid_if({"e2"}), clock)
    report = run(sender, outbound, clock=clock)
    assert set(failed_or_rejected(report)) == {"msg"}


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
    deliverer = Deliverer(sender, Tokens(), cfg(), clock=counting, sleep=clock.sleep)
    try:
        report = deliverer.deliver(events(3), clock() + 60)
    finally:
        deliverer.close()
    assert report.failed == {}
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] == pytest.approx(20.0)
    assert reads < 20
