"""graph_policy: error classification on error.code / error_subcode / is_transient (never on status or text),
Meta's hold estimate, and the pure next step after a failed attempt (after_failure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from capi_relay.deliver.engine import DeliveryConfig
from capi_relay.deliver.policy import (
    Action,
    ErrorKind,
    GraphError,
    NextStep,
    _hold_s,
    _retry_after,
    after_failure,
    classify,
    usage_percent,
    usage_regain_s,
)


def body(code: int | None, subcode: int | None = None, transient: bool | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": "Paramètre non valide", "type": "OAuthException", **extra}
    if code is not None:
        error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient is not None:
        error["is_transient"] = transient
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "payload", "kind"),
    [
        # transient: codes 1, 2, 341, 368, is_transient, 5xx and unknown bodies
        (500, body(1), ErrorKind.TRANSIENT),
        (400, body(2), ErrorKind.TRANSIENT),
        (400, body(341), ErrorKind.TRANSIENT),
        (400, body(368), ErrorKind.TRANSIENT),
        (400, body(100, 2804003, transient=True), ErrorKind.TRANSIENT),
        (500, None, ErrorKind.TRANSIENT),
        (502, "<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
        (400, None, ErrorKind.TRANSIENT),
        (200, {"error": "not an object"}, ErrorKind.TRANSIENT),
        (400, body(9999), ErrorKind.TRANSIENT),  # unknown code: retried, never bisected
        (500, body(None), ErrorKind.TRANSIENT),
        # throttling: 4, 17, 32, 613, 80000-80014, HTTP 429 -- whatever the status
        (400, body(4), ErrorKind.THROTTLED),
        (400, body(17, 2446079), ErrorKind.THROTTLED),
        (400, body(32), ErrorKind.THROTTLED),
        (400, body(613, 1487742), ErrorKind.THROTTLED),
        (400, body(80000), ErrorKind.THROTTLED),
        (400, body(80004), ErrorKind.THROTTLED),
        (400, body(80014), ErrorKind.THROTTLED),
        (429, None, ErrorKind.THROTTLED),
        (429, body(9999), ErrorKind.THROTTLED),
        (200, body(4, transient=True), ErrorKind.THROTTLED),
        # auth
        (401, body(190, 463), ErrorKind.AUTH),
        (400, body(190, 467), ErrorKind.AUTH),
        (400, body(102), ErrorKind.AUTH),
        (400, body(104), ErrorKind.AUTH),  # no token reached Meta
        # configuration: 3, 10, 200-299, 100/33
        (403, body(10), ErrorKind.CONFIG),
        (400, body(3), ErrorKind.CONFIG),
        (403, body(200), ErrorKind.CONFIG),
        (403, body(299), ErrorKind.CONFIG),
        (400, body(100, 33), ErrorKind.CONFIG),
        (400, body(2635), ErrorKind.CONFIG),  # Graph API version retired
        # request-level: code 100 without a 2804xxx subcode (appsecret_proof, unreadable body): no search
        (400, body(100), ErrorKind.REQUEST),
        (400, body(100, 1234567), ErrorKind.REQUEST),
        # invalid events: 2804xxx subcodes only
        (400, body(100, 2804003), ErrorKind.INVALID),
        (400, body(100, 2804050, transient=False), ErrorKind.INVALID),
        (500, body(100, 2804036), ErrorKind.INVALID),  # status does not matter
        (400, body(12345, 2804019), ErrorKind.INVALID),
    ],
)
def test_classification_follows_code_subcode_and_is_transient(status: int, payload: Any, kind: ErrorKind) -> None:
    assert classify(status, payload, None).kind is kind


def test_code_as_string_or_bool_is_not_trusted() -> None:
    assert classify(400, body("190"), None).kind is ErrorKind.TRANSIENT  # type: ignore[arg-type]
    assert classify(400, {"error": {"code": True}}, None).kind is ErrorKind.TRANSIENT


def test_reason_codes_are_stable_and_carry_no_message_text() -> None:
    error = classify(400, body(100, 2804003, fbtrace_id="Atrace"), None)
    assert error.reason == "graph_invalid_100_2804003"
    assert error.fbtrace_id == "Atrace"
    assert "Paramètre" not in error.reason
    assert classify(503, None, None).reason == "graph_transient_http503"
    assert GraphError(ErrorKind.TRANSIENT, reason="custom").reason == "custom"
    assert classify(400, body(100), None).reason == "graph_request_100"
    assert classify(400, body(2635), None).reason == "graph_config_2635"
    assert classify(400, body(104), None).reason == "graph_auth_104"


def test_usage_header_estimate_is_the_largest_over_entries_in_seconds() -> None:
    usage = json.dumps(
        {
            "111": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 2}],
            "222": [
                {"type": "custom_audience", "call_count": 40, "estimated_time_to_regain_access": 0},
                {"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 7},
            ],
        }
    )
    assert usage_regain_s({"X-Business-Use-Case-Usage": usage}) == 420.0
    zero = json.dumps({"1": [{"type": "ads_management", "estimated_time_to_regain_access": 0}]})
    assert usage_regain_s({"X-Business-Use-Case-Usage": zero}) is None
    assert usage_regain_s({"X-Business-Use-Case-Usage": "{not json"}) is None
    assert usage_regain_s({"X-Business-Use-Case-Usage": '{"1": [{"estimated_time_to_regain_access": true}]}'}) is None
    assert usage_regain_s({}) is None
    app = json.dumps({"call_count": 28, "total_time": 25, "total_cputime": 95})
    assert usage_percent({"X-App-Usage": app, "X-Business-Use-Case-Usage": usage}) == 100
    assert usage_percent({"X-App-Usage": app}) == 95


def test_the_longer_of_retry_after_and_the_usage_estimate_holds() -> None:
    usage = json.dumps({"1": [{"type": "ads_management", "estimated_time_to_regain_access": 1}]})
    assert _hold_s({"Retry-After": "5", "X-Business-Use-Case-Usage": usage}) == 60.0
    assert _hold_s({"Retry-After": "90", "X-Business-Use-Case-Usage": usage}) == 90.0
    assert _hold_s({}) is None


def test_retry_after_seconds_date_and_garbage() -> None:
    assert _retry_after({"Retry-After": "7"}) == 7.0
    assert _retry_after({"Retry-After": "-3"}) == 0.0
    assert _retry_after({}) is None
    assert _retry_after({"Retry-After": "soon"}) is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = _retry_after({"Retry-After": future})
    assert value is not None
    assert 25 <= value <= 31
    assert classify(429, None, 4.0).retry_after_s == 4.0


# ------------------------------------------------------------------------ after a failed attempt (pure)
LIMITS = DeliveryConfig(max_attempts=3, base_backoff_s=0.2, max_backoff_s=1.0, throttle_backoff_s=2.0,
                        min_request_s=0.5)  # fmt: skip


def step(kind: ErrorKind, *, attempt: int = 1, stale: bool = False, refreshed: bool = False,
         retry_after_s: float | None = None, jitter: float = 0.5, deadline: float = 160.0) -> NextStep:  # fmt: skip
    error = GraphError(kind, retry_after_s=retry_after_s)
    return after_failure(error, attempt=attempt, stale_token=stale, refreshed=refreshed, now=100.0,
                         deadline=deadline, config=LIMITS, jitter=jitter)  # fmt: skip


def test_invalid_is_searched_and_config_or_request_errors_fail_the_pixel() -> None:
    assert step(ErrorKind.INVALID) == NextStep(Action.INVALID)
    assert step(ErrorKind.CONFIG) == NextStep(Action.FAIL_PIXEL)
    assert step(ErrorKind.REQUEST, attempt=3) == NextStep(Action.FAIL_PIXEL)


def test_auth_refreshes_once_retries_a_request_that_left_with_the_old_token_and_then_fails_the_pixel() -> None:
    assert step(ErrorKind.AUTH) == NextStep(Action.REFRESH, at=100.0)
    assert step(ErrorKind.AUTH, stale=True, refreshed=True) == NextStep(Action.RETRY, at=100.0)
    assert step(ErrorKind.AUTH, refreshed=True) == NextStep(Action.FAIL_PIXEL)


def test_transient_backs_off_with_capped_full_jitter_until_the_attempts_run_out() -> None:
    assert step(ErrorKind.TRANSIENT, attempt=1, jitter=0.5) == NextStep(Action.RETRY, at=100.1)  # 0.5 * 0.2
    assert step(ErrorKind.TRANSIENT, attempt=2, jitter=0.5) == NextStep(Action.RETRY, at=100.2)  # 0.5 * 0.4
    assert step(ErrorKind.TRANSIENT, attempt=2, jitter=0.0) == NextStep(Action.RETRY, at=100.0)
    assert step(ErrorKind.TRANSIENT, attempt=2, jitter=0.99).at == pytest.approx(100.396)
    assert step(ErrorKind.TRANSIENT, attempt=3) == NextStep(Action.FAIL)
    capped = after_failure(GraphError(ErrorKind.TRANSIENT), attempt=6, stale_token=False, refreshed=False, now=0.0,
                           deadline=60.0, config=DeliveryConfig(max_attempts=9, base_backoff_s=0.2, max_backoff_s=1.0),
                           jitter=0.5)  # fmt: skip
    assert capped == NextStep(Action.RETRY, at=0.5)  # 0.2 * 2**5 = 6.4, capped at 1.0, times the jitter


def test_throttle_holds_for_metas_estimate_or_a_growing_backoff_and_fails_when_the_hold_outlives_the_deadline() -> None:
    assert step(ErrorKind.THROTTLED, retry_after_s=30.0) == NextStep(Action.HOLD, at=130.0, retry_after_s=30.0)
    # no estimate: throttle_backoff_s * 2**(attempt-1) * (0.5 + jitter/2)
    assert step(ErrorKind.THROTTLED, attempt=2, jitter=0.5) == NextStep(Action.HOLD, at=103.0, retry_after_s=3.0)
    # a hold that leaves less than min_request_s before the deadline: fail now, with the hold for parking
    assert step(ErrorKind.THROTTLED, retry_after_s=59.6) == NextStep(Action.FAIL, retry_after_s=59.6)
    assert step(ErrorKind.THROTTLED, retry_after_s=59.5).action is Action.HOLD
    assert step(ErrorKind.THROTTLED, attempt=3, retry_after_s=1.0) == NextStep(Action.FAIL, retry_after_s=1.0)
