"""Fault matrix scenarios 1-4 through the packaged function (``make build``) under the Lambda Runtime
Interface Emulator, fed by the SQS event-source emulator from moto SQS with a DLQ, posting to the stand-in.

Same invariants as tests/integration/test_fault_matrix.py: delivered ∪ DLQ = every input record, nothing in
both; the stand-in saw every delivered event and copies of an event carried one event_id; requests stay
within the bound; the function never failed as a whole. A missing artifact FAILS these tests.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capi_relay.deliver.engine import search_request_bound
from local.esm import BatchOutcome, emulator_invoker
from local.graph_standin import GraphStandIn
from local.stack import MotoServer
from tests.integration.test_fault_matrix import MAX_ATTEMPTS, Matrix, Run, check_invariants

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
VISIBILITY_TIMEOUT_S = 8  # longer than one invocation with retries: a batch is never redelivered mid-flight


def _require_artifact() -> None:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        pytest.fail(
            f"the packaged function is missing: {ARTIFACT_DIR.relative_to(ROOT)} (run `make build`; `make e2e` does)",
            pytrace=False,
        )


@pytest.fixture
def packaged(moto_server: MotoServer, standin: GraphStandIn, token: str) -> Iterator[Callable[..., tuple[Matrix, Any]]]:
    """Builds a scenario world and starts the packaged function under the RIE with its environment."""
    _require_artifact()
    try:
        from local.rie import LambdaEmulator
    except ImportError as exc:  # the emulator wrapper is part of the local stack; never skip
        pytest.fail(f"local.rie is not available: {exc}", pytrace=False)
    started: list[Any] = []

    def make(**kw: Any) -> tuple[Matrix, Any]:
        m = Matrix(moto_server, standin, token, visibility_timeout_s=VISIBILITY_TIMEOUT_S, **kw)
        emulator = LambdaEmulator(str(ARTIFACT_DIR), m.env)
        started.append(emulator)
        emulator.start()
        emulator.invoke({"Records": []})  # INIT before the first batch
        return m, emulator

    yield make
    for emulator in started:
        emulator.stop()


def drain(m: Matrix, emulator: Any, batch_size: int, outcomes: list[BatchOutcome] | None = None) -> Run:
    return m.drain(m.esm(emulator_invoker(emulator), batch_size=batch_size), outcomes, timeout_s=90.0)


def invocation_bound(run: Run, per_request: int) -> int:
    """Requests allowed without invalid events: per invocation, chunks x MAX_ATTEMPTS."""
    total = 0
    for outcome in run.outcomes:
        events = sum(run.sent[mid].events for mid in outcome.message_ids if mid in run.sent)
        total += max(1, math.ceil(events / per_request)) * MAX_ATTEMPTS
    return total


def test_e2e_1_random_500s_and_timeouts(packaged: Callable[..., tuple[Matrix, Any]], standin: GraphStandIn) -> None:
    m, fn = packaged(max_receive_count=6, extra_env={"MAX_EVENTS_PER_REQUEST": "10"})
    standin.add_fault(status=500, code=1, probability=0.15, times=-1)
    standin.add_fault(delay_ms=1500, status=500, code=2, probability=0.18, times=-1)
    m.send(40)
    run = drain(m, fn, batch_size=20)
    check_invariants(run, expect_dlq=set())
    assert len(standin.requests) <= invocation_bound(run, 10)
    assert any(r.status != 200 for r in standin.requests)


def test_e2e_2_throttling_then_recovery(packaged: Callable[..., tuple[Matrix, Any]], standin: GraphStandIn) -> None:
    m, fn = packaged(max_receive_count=5)
    standin.add_fault(code=4, status=400, times=2)
    standin.add_fault(code=613, status=400, subcode=1487742, times=2)
    standin.add_fault(status=429, proxy=True, retry_after=1, times=2)  # a proxy's 429 (Graph sends no Retry-After)
    m.send(20)
    run = drain(m, fn, batch_size=10)
    check_invariants(run, expect_dlq=set())
    statuses = [r.status for r in standin.requests]
    assert sum(1 for s in statuses if s != 200) == 6  # one request per throttled answer: no spinning
    assert len(standin.requests) <= invocation_bound(run, 1000)


@pytest.mark.parametrize("bad", [1, 10])
def test_e2e_3_invalid_events_in_a_1000_event_request(
    packaged: Callable[..., tuple[Matrix, Any]], standin: GraphStandIn, bad: int
) -> None:
    m, fn = packaged(max_receive_count=2)
    sent = m.send(100, events_per_record=10, with_event_id=True)
    poisoned = random.Random(bad).sample(range(1000), bad)
    standin.state.reject_event_ids = {f"{sent[p // 10].marker}-{p % 10}" for p in poisoned}
    run = m.drain(m.esm(emulator_invoker(fn), batch_size=100, window_s=3), timeout_s=90.0)
    assert standin.requests[0].events == 1000
    check_invariants(run, expect_dlq={sent[p // 10].message_id for p in poisoned})
    assert len(run.outcomes[0].message_ids) == 100
    # The first invocation (the 1,000-event request) stayed within k * (ceil(log2 n) + 1) + 1; later ones
    # only carry poisoned records (k' bad among at most 10 k' events each)
    later_bound = sum(search_request_bound(len(o.message_ids), 10 * len(o.message_ids)) for o in run.outcomes[1:])
    assert len(standin.requests) <= search_request_bound(bad, 1000) + later_bound


def test_e2e_4_token_expires_and_is_rotated_in_secrets_manager(
    packaged: Callable[..., tuple[Matrix, Any]], standin: GraphStandIn, token: str
) -> None:
    m, fn = packaged(max_receive_count=4)
    esm = m.esm(emulator_invoker(fn), batch_size=10)
    m.send(10)
    first = esm.poll_once()
    assert first is not None
    assert len(first.deleted) == 10
    # When the token expires at Meta and the new one is put in Secrets Manager (the function caches the old)
    new_token = token + "-rotated"
    with standin.state.lock:
        standin.state.tokens = {new_token}
    m.clients.secretsmanager.put_secret_value(
        SecretId=m.resources.secret_id, SecretString=json.dumps({"access_token": new_token})
    )
    m.send(20)
    run = m.drain(esm, [first], timeout_s=90.0)
    # Then the running function picked the new token up (no redeploy) and nothing was lost
    check_invariants(run, expect_dlq=set())
    unauthorized = [r for r in standin.requests if not r.authorized]
    assert 1 <= len(unauthorized) <= 2  # the first request after the expiry (plus one concurrent at most)
    assert standin.requests[-1].authorized
    assert len(standin.requests) <= invocation_bound(run, 1000) + 1
