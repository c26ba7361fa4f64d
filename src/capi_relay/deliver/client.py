"""Graph API client (transport): one pooled urllib3 connection set, Bearer auth, bounded attempts.

This is the relay's only outbound HTTP. It never retries by itself (deliver/engine.py owns retry policy), with
one exception that costs no attempt: a kept-alive connection that the server closed while idle (a stale
socket after a Lambda freeze) is retried once at once on a fresh connection. A 2xx answer becomes a
:class:`GraphReply`; every failure a :class:`~capi_relay.deliver.policy.GraphError`: a non-2xx answer as
deliver/policy.py classifies it (Meta's error codes, its hold estimate), a failure to get an answer as TRANSIENT.

Bounds: each attempt has one wall-clock cap (connect + request + every read), enforced by a watchdog that
shuts the socket down when the cap passes, so a body trickling in byte by byte cannot hold the caller; a
response body is read up to ``max_response_bytes`` and a larger one drops the connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlencode

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from capi_relay import __version__
from capi_relay.aws.secrets import Credentials, header_value_ok
from capi_relay.deliver.policy import ErrorKind, GraphError, classify_answer

USER_AGENT = f"capi-relay/{__version__}"
BASE_HEADERS: dict[str, str] = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 64 * 1024


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


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A request body written to the socket block by block as it is built, never whole in memory:
    ``length`` bytes, sent as ``Content-Length`` (the same framing and bytes as the whole body would have);
    ``blocks()`` is a fresh iterator over them for each attempt."""

    length: int
    blocks: Callable[[], Iterator[bytes]]


@runtime_checkable
class StreamingGraphSender(GraphSender, Protocol):
    """A sender that can also stream a body (:class:`GraphClient`): the delivery engine then never holds a
    whole request body per request in flight."""

    def send_streamed(
        self, pixel_id: str, body: StreamedBody, credentials: Credentials, timeout_s: float | None = None
    ) -> GraphReply: ...


# --------------------------------------------------------------------------------------- the watchdog
class _Attempt:
    """One HTTP attempt's wall-clock cap. The connection that carries it registers here (in ``request``);
    when the cap passes, the watchdog shuts that socket down so any blocked read returns at once."""

    __slots__ = ("conn", "done", "expired", "lock", "reused")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: HTTPConnection | None = None
        self.done = False
        self.expired = False
        self.reused = False

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            sock = getattr(self.conn, "sock", None)
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self.lock:
            self.done = True
            self.conn = None


_current = threading.local()


class _WatchedMixin:
    """Connection side of the watchdog: register with the current attempt; tell whether the socket already
    carried a request (a kept-alive socket is the one that can be stale); on demand, drop a kept-alive
    socket to force a fresh connection."""

    sock: Any
    _last_sock: Any = None

    def _watch(self) -> None:
        attempt: _Attempt | None = getattr(_current, "attempt", None)
        if getattr(_current, "fresh", False) and self.sock is not None:
            with suppress(OSError):
                self.sock.close()
            self.sock = None
        if attempt is not None:
            with attempt.lock:
                attempt.conn = self  # type: ignore[assignment]
                attempt.reused = self.sock is not None and self.sock is self._last_sock

    def _sent(self) -> None:
        self._last_sock = self.sock


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watch()
        super().request(*args, **kwargs)
        self._sent()


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watch()
        super().request(*args, **kwargs)
        self._sent()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Stale(Exception):
    """The server closed a reused keep-alive connection before answering (retry once, fresh)."""


# ------------------------------------------------------------------------------------------ the client
class GraphClient:
    """POSTs ``{"data": [...]}`` JSON bodies to ``{base}/{version}/{pixel}/events`` with a Bearer token.

    Every request carries ``Content-Type: application/json``, ``User-Agent: capi-relay/<version>`` and
    ``Authorization: Bearer``: urllib3 2.x replaces (does not merge) pool default headers when a request
    passes its own, so the full set is built per request. HTTPS uses urllib3's default context
    (certificate and host verification on, the system trust store).
    """

    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 5.0,
        max_connections: int = 8,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._prefix = f"{base_url.rstrip('/')}/{version}"
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_response_bytes = max_response_bytes
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        )
        self._pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def url(self, pixel_id: str) -> str:
        return f"{self._prefix}/{pixel_id}/events"

    def headers(self, credentials: Credentials) -> dict[str, str]:
        """Every header of one POST. A token that cannot be a header value (CR/LF, control or non-Latin-1
        characters, empty) is an AUTH error with reason ``secret_malformed``, never sent."""
        token = credentials.access_token
        if not isinstance(token, str) or not header_value_ok(token):
            raise GraphError(ErrorKind.AUTH, detail="access token unusable in a header", reason="secret_malformed")
        return {**BASE_HEADERS, "Authorization": f"Bearer {token}"}

    def send(self, pixel_id: str, body: bytes, credentials: Credentials, timeout_s: float | None = None) -> GraphReply:
        """POST one request. ``timeout_s`` caps the whole attempt (the caller's time left): connect, send and
        every read of the answer together, however slowly the bytes come."""
        return self._post(pixel_id, body, credentials, timeout_s)

    def send_streamed(
        self, pixel_id: str, body: StreamedBody, credentials: Credentials, timeout_s: float | None = None
    ) -> GraphReply:
        """:meth:`send` with a body built block by block while it is written (same bytes, same framing)."""
        return self._post(pixel_id, body, credentials, timeout_s)

    def _post(
        self, pixel_id: str, body: bytes | StreamedBody, credentials: Credentials, timeout_s: float | None
    ) -> GraphReply:
        headers = self.headers(credentials)
        cap = self._connect_timeout_s + self._read_timeout_s
        if timeout_s is not None:
            cap = max(0.05, min(cap, timeout_s))
        started = time.perf_counter()
        try:
            status, data, response_headers = self._attempt(self.url(pixel_id), body, headers, cap, fresh=False)
        except _Stale:
            remaining = cap - (time.perf_counter() - started)
            if remaining < 0.05:
                raise GraphError(ErrorKind.TRANSIENT, detail="stale connection, no time left") from None
            try:
                status, data, response_headers = self._attempt(self.url(pixel_id), body, headers, remaining, fresh=True)
            except _Stale:
                raise GraphError(ErrorKind.TRANSIENT, detail="connection closed before an answer") from None
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            payload: Any = json.loads(data) if data else None
        except ValueError:
            payload = None
        if 200 <= status < 300:
            received = payload.get("events_received") if isinstance(payload, dict) else None
            if not isinstance(received, int) or isinstance(received, bool):
                raise GraphError(ErrorKind.TRANSIENT, http_status=status, detail="unreadable 2xx body")
            trace = payload.get("fbtrace_id")
            return GraphReply(received, trace if isinstance(trace, str) else None, latency_ms)
        raise classify_answer(status, payload, response_headers)

    def get_json(
        self, path: str, query: dict[str, str], credentials: Credentials, timeout_s: float | None = None
    ) -> Any:
        """GET ``{base}/{version}/{path}?{query}`` with the Bearer token (never in the URL) and return the
        parsed 2xx JSON body; a non-2xx answer raises the same typed :class:`GraphError` as :meth:`send`.
        Same bounds as :meth:`send`: one wall-clock cap for the whole attempt, the body read up to
        ``max_response_bytes``; a stale kept-alive connection is retried once at once. An ``app_secret`` in
        the credentials adds ``appsecret_proof`` to the query (an HMAC of the token, not the token)."""
        headers = {k: v for k, v in self.headers(credentials).items() if k != "Content-Type"}
        params = dict(query)
        proof = credentials.appsecret_proof
        if proof:
            params["appsecret_proof"] = proof
        url = f"{self._prefix}/{path.lstrip('/')}?{urlencode(params)}"
        cap = self._connect_timeout_s + self._read_timeout_s
        if timeout_s is not None:
            cap = max(0.05, min(cap, timeout_s))
        started = time.perf_counter()
        try:
            status, data, response_headers = self._attempt(url, None, headers, cap, fresh=False, method="GET")
        except _Stale:
            remaining = cap - (time.perf_counter() - started)
            if remaining < 0.05:
                raise GraphError(ErrorKind.TRANSIENT, detail="stale connection, no time left") from None
            try:
                status, data, response_headers = self._attempt(url, None, headers, remaining, fresh=True, method="GET")
            except _Stale:
                raise GraphError(ErrorKind.TRANSIENT, detail="connection closed before an answer") from None
        try:
            payload: Any = json.loads(data) if data else None
        except ValueError:
            payload = None
        if 200 <= status < 300:
            if not isinstance(payload, dict):
                raise GraphError(ErrorKind.TRANSIENT, http_status=status, detail="unreadable 2xx body")
            return payload
        raise classify_answer(status, payload, response_headers)

    def _attempt(
        self,
        url: str,
        body: bytes | StreamedBody | None,
        headers: dict[str, str],
        cap: float,
        *,
        fresh: bool,
        method: str = "POST",
    ) -> tuple[int, bytes, Any]:
        """One bounded exchange: (status, body, headers). Raises :class:`_Stale` for a reused connection the
        server closed before any answer, :class:`GraphError` for everything else."""
        payload: bytes | Iterator[bytes] | None
        if isinstance(body, StreamedBody):  # an explicit Content-Length: urllib3 does not switch to chunked
            payload, headers = body.blocks(), {**headers, "Content-Length": str(body.length)}
        else:
            payload = body
        attempt = _Attempt()
        timer = threading.Timer(cap, attempt.expire)
        timer.daemon = True
        timeout = urllib3.Timeout(connect=min(self._connect_timeout_s, cap), read=min(self._read_timeout_s, cap))
        _current.attempt, _current.fresh = attempt, fresh
        timer.start()
        response: Any = None
        try:
            try:
                response = self._pool.request(
                    method, url, body=payload, headers=headers, timeout=timeout, retries=False, preload_content=False
                )
            finally:
                _current.attempt, _current.fresh = None, False
            data = self._read_capped(response, attempt)
            status, response_headers = response.status, response.headers
        except GraphError:
            self._drop(response)
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Timeouts, refused/reset connections, truncated responses (ProtocolError; a bare OSError on some
            # platforms): the request may or may not have reached Meta; a retry is safe because every event
            # carries an event_id.
            self._drop(response)
            # No connection was made (refused, name not resolved, connect timeout): Meta cannot have the events.
            unsent = isinstance(exc, urllib3.exceptions.ConnectTimeoutError)  # NewConnectionError is one
            if attempt.expired:
                raise GraphError(ErrorKind.TRANSIENT, detail="attempt time cap passed", unsent=unsent) from None
            if response is None and attempt.reused and _closed_before_answer(exc):
                raise _Stale from None
            raise GraphError(ErrorKind.TRANSIENT, detail=type(exc).__name__, unsent=unsent) from None
        finally:
            timer.cancel()
            attempt.finish()
        response.release_conn()
        return status, data, response_headers

    def _read_capped(self, response: Any, attempt: _Attempt) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_response_bytes:
            raise GraphError(ErrorKind.TRANSIENT, http_status=response.status, detail="response body too large",
                             reason="graph_transient_body_too_large")  # fmt: skip
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(_READ_CHUNK)
            if attempt.expired:
                raise GraphError(ErrorKind.TRANSIENT, detail="attempt time cap passed")
            if not chunk:
                break
            size += len(chunk)
            if size > self._max_response_bytes:
                raise GraphError(ErrorKind.TRANSIENT, http_status=response.status, detail="response body too large",
                                 reason="graph_transient_body_too_large")  # fmt: skip
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    def _drop(response: Any) -> None:
        """Close the connection of an abandoned response (never reuse a half-read socket)."""
        if response is None:
            return
        with suppress(Exception):
            conn = response.connection
            response.close()
            if conn is not None:
                conn.close()
            response.release_conn()


def _closed_before_answer(exc: BaseException) -> bool:
    """The server hung up on a request without answering it (RemoteDisconnected, reset, broken pipe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError):  # RemoteDisconnected, ConnectionResetError, BrokenPipeError
            return True
        current = current.__cause__ or current.__context__ or (current.args[1] if _nested(current) else None)
    return False


def _nested(exc: BaseException) -> bool:
    return (
        isinstance(exc, urllib3.exceptions.ProtocolError)
        and len(exc.args) > 1
        and isinstance(exc.args[1], BaseException)
    )
