"""Graph API client: one pooled urllib3 connection set, Bearer auth, explicit timeouts, error classification.

This is the relay's only outbound HTTP. It never retries by itself (delivery.py owns retry policy) and
turns every failure into a :class:`GraphError` with an :class:`ErrorKind` decided from Meta's
``error.code`` / ``error_subcode`` / ``is_transient`` -- never from localized message text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol

import urllib3

from capi_relay import __version__
from capi_relay.secrets import Credentials

USER_AGENT = f"capi-relay/{__version__}"
THROTTLE_CODES = frozenset({4, 17, 32, 613}) | frozenset(range(80000, 80015))
TRANSIENT_CODES = frozenset({1, 2, 341, 368})
AUTH_CODES = frozenset({190, 102})
CONFIG_CODES = frozenset({3, 10})
INVALID_SUBCODES_LO, INVALID_SUBCODES_HI = 2804000, 2804999  # CAPI event validation failures
SUBCODE_OBJECT_MISSING = 33


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # retry with backoff
    THROTTLED = "throttled"  # back off longer, honour Retry-After, never spin
    AUTH = "auth"  # refresh the token once, then fail
    CONFIG = "config"  # permission / wrong pixel: every request for this pixel would fail
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
    ) -> None:
        super().__init__(f"{kind}: http={http_status} code={code} subcode={subcode} {detail}".strip())
        self.kind = kind
        self.http_status = http_status
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.retry_after_s = retry_after_s
        self.detail = detail
        self._reason = reason

    @property
    def reason(self) -> str:
        """Stable reason code for metrics and logs, e.g. ``graph_invalid_100_2804003``."""
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


@dataclass(frozen=True, slots=True)
class GraphReply:
    events_received: int
    fbtrace_id: str | None
    latency_ms: float


class GraphSender(Protocol):
    """The one outbound interface the delivery engine depends on."""

    def send(
        self, pixel_id: str, body: bytes, credentials: Credentials, timeout_s: float | None = None
    ) -> GraphReply: ...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify(http_status: int, payload: Any, retry_after_s: float | None) -> GraphError:
    """Map a non-2xx Graph response to a typed error, on ``code`` / ``error_subcode`` / ``is_transient``.

    HTTP status only decides when there is no Graph error object (HTML from a proxy, an empty or
    truncated body): 429 is throttling, anything else is transient. A Graph error whose code is not
    known here is transient too: it is retried and, if it persists, ends in the DLQ -- never bisected
    (that would cost ~2n requests for an error that is not about the events).
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        kind = ErrorKind.THROTTLED if http_status == 429 else ErrorKind.TRANSIENT
        return GraphError(kind, http_status=http_status, retry_after_s=retry_after_s, detail="no Graph error body")

    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    trace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    if code in THROTTLE_CODES or (code is None and http_status == 429):
        kind = ErrorKind.THROTTLED
    elif error.get("is_transient") is True or code in TRANSIENT_CODES:
        kind = ErrorKind.TRANSIENT
    elif code in AUTH_CODES:
        kind = ErrorKind.AUTH
    elif (
        code in CONFIG_CODES
        or (code is not None and 200 <= code <= 299)
        or (code == 100 and subcode == SUBCODE_OBJECT_MISSING)
    ):
        kind = ErrorKind.CONFIG
    elif code == 100 or (subcode is not None and INVALID_SUBCODES_LO <= subcode <= INVALID_SUBCODES_HI):
        kind = ErrorKind.INVALID
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


def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class GraphClient:
    """POSTs ``{"data": [...]}`` bodies to ``{base}/{version}/{pixel}/events`` with a Bearer token."""

    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self._prefix = f"{base_url.rstrip('/')}/{version}"
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )

    def url(self, pixel_id: str) -> str:
        return f"{self._prefix}/{pixel_id}/events"

    def send(self, pixel_id: str, body: bytes, credentials: Credentials, timeout_s: float | None = None) -> GraphReply:
        """POST one request. ``timeout_s`` caps connect + read together (the caller's time left)."""
        headers = {"Authorization": f"Bearer {credentials.access_token}"}
        total = self._connect_timeout_s + self._read_timeout_s
        if timeout_s is not None:
            total = max(0.05, min(total, timeout_s))
        timeout = urllib3.Timeout(
            connect=min(self._connect_timeout_s, total), read=min(self._read_timeout_s, total), total=total
        )
        started = time.perf_counter()
        try:
            response = self._pool.request(
                "POST",
                self.url(pixel_id),
                body=body,
                headers=headers,
                timeout=timeout,
                retries=False,
                preload_content=True,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Timeouts, refused/reset connections, truncated responses (ProtocolError; a bare OSError on some
            # platforms): the request may or may not have reached Meta; a retry is safe because every event
            # carries an event_id.
            raise GraphError(ErrorKind.TRANSIENT, detail=type(exc).__name__) from None
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            payload: Any = json.loads(response.data) if response.data else None
        except ValueError:
            payload = None
        if 200 <= response.status < 300:
            received = payload.get("events_received") if isinstance(payload, dict) else None
            if not isinstance(received, int) or isinstance(received, bool):
                raise GraphError(ErrorKind.TRANSIENT, http_status=response.status, detail="unreadable 2xx body")
            trace = payload.get("fbtrace_id")
            return GraphReply(received, trace if isinstance(trace, str) else None, latency_ms)
        raise classify(response.status, payload, _retry_after(response.headers))
