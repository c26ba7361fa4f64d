"""What Meta's Graph API answers mean and what the delivery engine does about them. No I/O, no threads (the
transport is deliver/client.py); the one outside input is the wall clock, to read a ``Retry-After`` given as an
HTTP date.

A non-2xx answer becomes a :class:`GraphError` whose :class:`ErrorKind` is decided from Meta's
``error.code`` / ``error_subcode`` / ``is_transient`` -- never from localized message text -- and whose
``retry_after_s`` is the longer of ``Retry-After`` and the usage headers' estimate (capped). The transport
raises :class:`GraphError` too, for what never became an answer (timeouts, resets, oversized bodies).
After a failed attempt, :func:`after_failure` picks the :class:`NextStep`: retry (backoff), hold the pixel
(throttle), refresh the token, search (invalid events), fail the records or the whole pixel.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum, StrEnum
from typing import Any, Protocol

THROTTLE_CODES = frozenset({4, 17, 32, 613}) | frozenset(range(80000, 80015))
TRANSIENT_CODES = frozenset({1, 2, 341, 368})
AUTH_CODES = frozenset({190, 102, 104})  # 104: no token reached Meta
CONFIG_CODES = frozenset({3, 10, 2635})  # 2635: the Graph API version is retired
CODE_PARAM = 100
INVALID_SUBCODES_LO, INVALID_SUBCODES_HI = 2804000, 2804999  # CAPI event validation failures
SUBCODE_OBJECT_MISSING = 33


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # retry with backoff
    THROTTLED = "throttled"  # back off longer, honour Retry-After / the usage headers, never spin
    AUTH = "auth"  # refresh the token once, then fail
    CONFIG = "config"  # permission / wrong pixel / retired version: every request for this pixel would fail
    INVALID = "invalid"  # Meta rejected the request's content (2804xxx): search for the bad events
    REQUEST = "request"  # the request itself is unacceptable (code 100, no subcode): no search, fail the pixel


class GraphError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        *,
        http_status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        retry_after_s: float | None = None,
        detail: str = "",
        reason: str | None = None,
        unsent: bool = False,
    ) -> None:
        super().__init__(f"{kind}: http={http_status} code={code} subcode={subcode} {detail}".strip())
        self.kind = kind
        self.unsent = unsent  # the request never left: no connection was made (refused, DNS, connect timeout)
        self.http_status = http_status
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.retry_after_s = retry_after_s
        self.detail = detail
        self._reason = reason

    @property
    def reason(self) -> str:
        """Stable reason code for metrics and logs, e.g. ``graph_invalid_100_2804003``, ``graph_config_2635``."""
        if self._reason is not None:
            return self._reason
        parts = ["graph", self.kind.value]
        if self.code is not None:
            parts.append(str(self.code))
            if self.subcode is not None:
                parts.append(str(self.subcode))
        elif self.http_status is not None:
            parts.append(f"http{self.http_status}")
        return "_".join(parts)


# ------------------------------------------------------------------------------------- classification
def classify_answer(http_status: int, payload: Any, headers: Any) -> GraphError:
    """A non-2xx answer (its status, parsed JSON body or None, headers) as a typed error with Meta's hold."""
    return classify(http_status, payload, _hold_s(headers))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify(http_status: int, payload: Any, retry_after_s: float | None) -> GraphError:
    """Map a non-2xx Graph response to a typed error, on ``code`` / ``error_subcode`` / ``is_transient``.

    HTTP status only decides when there is no Graph error object (HTML from a proxy, an empty or
    truncated body): 429 is throttling, anything else is transient. Only a 2804xxx subcode says the
    events are bad (INVALID: search for them). Code 100 with no subcode (or one that is neither 33 nor
    2804xxx) is about the request -- appsecret_proof missing or wrong, a body Graph cannot read -- so it
    is REQUEST: no search, no event blamed. A Graph error whose code is not known here is transient: it
    is retried and, if it persists, ends in the DLQ -- never searched (that would cost ~2n requests for
    an error that is not about the events).
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        kind = ErrorKind.THROTTLED if http_status == 429 else ErrorKind.TRANSIENT
        return GraphError(kind, http_status=http_status, retry_after_s=retry_after_s, detail="no Graph error body")

    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    trace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    invalid_subcode = subcode is not None and INVALID_SUBCODES_LO <= subcode <= INVALID_SUBCODES_HI
    if code in THROTTLE_CODES or (code is None and http_status == 429):
        kind = ErrorKind.THROTTLED
    elif error.get("is_transient") is True or code in TRANSIENT_CODES:
        kind = ErrorKind.TRANSIENT
    elif code in AUTH_CODES:
        kind = ErrorKind.AUTH
    elif (
        code in CONFIG_CODES
        or (code is not None and 200 <= code <= 299)
        or (code == CODE_PARAM and subcode == SUBCODE_OBJECT_MISSING)
    ):
        kind = ErrorKind.CONFIG
    elif invalid_subcode:
        kind = ErrorKind.INVALID
    elif code == CODE_PARAM:
        kind = ErrorKind.REQUEST
    elif http_status == 429:
        kind = ErrorKind.THROTTLED
    else:
        kind = ErrorKind.TRANSIENT
    return GraphError(
        kind,
        http_status=http_status,
        code=code,
        subcode=subcode,
        fbtrace_id=trace,
        retry_after_s=retry_after_s,
    )


def unknown_outcome(error: GraphError) -> bool:
    """No HTTP answer although a connection was made: the request may have reached Meta (timeout, connection
    lost mid-answer). A connection that was never made (refused, DNS, connect timeout) is not unknown."""
    return error.kind is ErrorKind.TRANSIENT and error.http_status is None and not error.unsent


# ------------------------------------------------------------------------------------ how long to stay away
def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


_USAGE_HEADERS = ("X-Business-Use-Case-Usage", "X-Ad-Account-Usage", "X-App-Usage")


def usage_regain_s(headers: Any) -> float | None:
    """Meta's own estimate of a block, in seconds: the largest ``estimated_time_to_regain_access`` (minutes)
    over every entry of ``X-Business-Use-Case-Usage`` (``{"<business id>": [{"type", "call_count", ...,
    "estimated_time_to_regain_access"}]}``). None when no header names a positive estimate; unreadable
    headers are ignored (they are advisory)."""
    if headers is None:
        return None
    raw = headers.get("X-Business-Use-Case-Usage")
    if not isinstance(raw, str) or len(raw) > 64 * 1024:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    entries: list[Any] = []
    if isinstance(doc, dict):
        for value in doc.values():
            entries.extend(value if isinstance(value, list) else [value])
    minutes = [
        float(e["estimated_time_to_regain_access"])
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("estimated_time_to_regain_access"), int | float)
        and not isinstance(e.get("estimated_time_to_regain_access"), bool)
    ]
    best = max(minutes, default=0.0)
    return best * 60.0 if best > 0 else None


def usage_percent(headers: Any) -> int | None:
    """The highest usage percentage in ``X-App-Usage`` / ``X-Business-Use-Case-Usage`` (for logs only)."""
    if headers is None:
        return None
    best: int | None = None
    for name in _USAGE_HEADERS:
        raw = headers.get(name)
        if not isinstance(raw, str) or len(raw) > 64 * 1024:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        stack: list[Any] = [doc]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if key in ("call_count", "total_cputime", "total_time", "acc_id_util_pct") and (
                        isinstance(value, int | float) and not isinstance(value, bool)
                    ):
                        best = max(best or 0, int(value))
                    elif isinstance(value, dict | list):
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
    return best


MAX_HOLD_S = 43_200.0  # SQS's longest visibility: a longer hold could not park a record anyway


def _hold_s(headers: Any) -> float | None:
    """How long Meta (or a proxy) asks us to stay away: the larger of Retry-After and the usage estimate,
    capped at 12 hours (``Retry-After: inf`` or a huge estimate must not hold a pixel for the life of the
    execution environment); a value that is not a number (NaN) is ignored."""
    values = [v for v in (_retry_after(headers), usage_regain_s(headers)) if v is not None and not math.isnan(v)]
    return min(max(values), MAX_HOLD_S) if values else None


# ------------------------------------------------------------------------------ after a failed attempt
class RetryLimits(Protocol):
    """What :func:`after_failure` reads of the delivery config (``delivery.DeliveryConfig`` has it)."""

    @property
    def max_attempts(self) -> int: ...
    @property
    def base_backoff_s(self) -> float: ...
    @property
    def max_backoff_s(self) -> float: ...
    @property
    def throttle_backoff_s(self) -> float: ...
    @property
    def min_request_s(self) -> float: ...


class Action(Enum):
    RETRY = "retry"  # send again at ``at``
    HOLD = "hold"  # throttled: hold the pixel until ``at``, then send again
    REFRESH = "refresh"  # force-refresh the token once, then send again
    FAIL = "fail"  # give these records up (SQS retries them)
    FAIL_PIXEL = "fail_pixel"  # give up every record of the pixel for this invocation
    INVALID = "invalid"  # Meta rejected the events: reject a single one, search a chunk


@dataclass(frozen=True, slots=True)
class NextStep:
    """What to do with a request after a failed attempt, and when."""

    action: Action
    at: float = 0.0
    retry_after_s: float | None = None  # FAIL of a throttled request: Meta's estimate / the remaining hold


def after_failure(
    error: GraphError,
    *,
    attempt: int,
    stale_token: bool,
    refreshed: bool,
    now: float,
    deadline: float,
    config: RetryLimits,
    jitter: float,
) -> NextStep:
    """The next step after a failed attempt (pure: ``jitter`` in [0, 1) is the caller's random draw)."""
    kind = error.kind
    if kind is ErrorKind.INVALID:
        return NextStep(Action.INVALID)
    if kind in (ErrorKind.CONFIG, ErrorKind.REQUEST):
        return NextStep(Action.FAIL_PIXEL)
    if kind is ErrorKind.AUTH:
        if stale_token:  # the token was refreshed after this request left: retry with the new one
            return NextStep(Action.RETRY, at=now)
        return NextStep(Action.FAIL_PIXEL) if refreshed else NextStep(Action.REFRESH, at=now)
    if kind is ErrorKind.THROTTLED:
        wait_s = error.retry_after_s
        if wait_s is None:
            wait_s = config.throttle_backoff_s * 2 ** (attempt - 1) * (0.5 + jitter / 2)
        if attempt >= config.max_attempts or deadline - (now + wait_s) < config.min_request_s:
            return NextStep(Action.FAIL, retry_after_s=wait_s)
        return NextStep(Action.HOLD, at=now + wait_s, retry_after_s=wait_s)
    if attempt >= config.max_attempts:
        return NextStep(Action.FAIL)
    backoff = jitter * min(config.max_backoff_s, config.base_backoff_s * 2 ** (attempt - 1))
    return NextStep(Action.RETRY, at=now + backoff)
