"""Delivery engine: group, chunk, send concurrently, retry, bisect, and map every outcome to a record.

Input is a list of :class:`Outbound` events (each bound to its SQS ``messageId``); output is a
:class:`DeliveryReport` saying, for every message id that had events, whether all of them were accepted.

Policy (../shared/design/architecture.md, failure policy):

* events are grouped by (pixel, test_event_code) and chunked to <= ``max_events_per_request`` and
  <= ``max_request_bytes``; chunks are sent concurrently over the one pooled client;
* TRANSIENT errors are retried with full-jitter exponential backoff while the invocation has time;
* THROTTLED errors hold the whole pixel until ``Retry-After`` (or a growing backoff); if that is past the
  deadline the chunk fails at once and SQS's visibility timeout becomes the backoff (never spin);
* AUTH errors force one refresh of the pixel's token per invocation, then fail;
* CONFIG errors fail every chunk of the pixel without sending more;
* INVALID errors on a multi-event chunk split it in halves until the bad events stand alone.

The scheduler runs in the calling thread; only the HTTP calls run on the worker threads.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from capi_relay.graph import ErrorKind, GraphError, GraphReply, GraphSender
from capi_relay.model import Outbound
from capi_relay.secrets import Credentials, SecretError, TokenProvider

logger = Logger(child=True)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_events_per_request: int = 1000
    max_request_bytes: int = 2 * 1024 * 1024
    concurrency: int = 8
    max_attempts: int = 5
    base_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    throttle_backoff_s: float = 2.0
    request_timeout_s: float = 6.0  # connect + read: no attempt starts unless this much time is left


@dataclass(slots=True)
class Failure:
    reason: str
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None


@dataclass(slots=True)
class DeliveryReport:
    failed: dict[str, Failure] = field(default_factory=dict)  # messageId -> first failure
    delivered_events: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    auth_refreshes: int = 0
    splits: int = 0
    graph_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    rejected_events: Counter[str] = field(default_factory=Counter)  # reason -> events
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    outbound: Outbound
    encoded: bytes


@dataclass(slots=True)
class _Chunk:
    pixel_id: str
    test_event_code: str | None
    items: list[_Item]
    attempt: int = 0
    ready_at: float = 0.0
    credentials: Credentials | None = None
    last_failure: Failure | None = None

    def body(self, credentials: Credentials) -> bytes:
        tail: dict[str, str] = {}
        if self.test_event_code:
            tail["test_event_code"] = self.test_event_code
        proof = credentials.appsecret_proof
        if proof:
            tail["appsecret_proof"] = proof
        parts = [b'{"data":[', b",".join(item.encoded for item in self.items), b"]"]
        if tail:
            parts.append(b"," + json.dumps(tail, separators=(",", ":")).encode()[1:-1])
        parts.append(b"}")
        return b"".join(parts)


@dataclass(slots=True)
class _PixelState:
    credentials: Credentials | None = None
    refreshed: bool = False
    hold_until: float = 0.0
    broken: Failure | None = None


def encode_event(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chunk(outbound: Iterable[Outbound], max_events: int, max_bytes: int) -> list[_Chunk]:
    """Group by (pixel, test_event_code), keep input order, cut at the event and byte caps."""
    groups: dict[tuple[str, str | None], list[_Chunk]] = {}
    overhead = 256  # '{"data":[', the tail with test_event_code and appsecret_proof
    for event in outbound:
        item = _Item(event, event.encoded if event.encoded is not None else encode_event(event.event))
        key = (event.pixel_id, event.test_event_code)
        chunks = groups.setdefault(key, [])
        current = chunks[-1] if chunks else None
        size = len(item.encoded) + 1
        if (
            current is None
            or len(current.items) >= max_events
            or (current.items and _size(current) + size + overhead > max_bytes)
        ):
            current = _Chunk(event.pixel_id, event.test_event_code, [])
            chunks.append(current)
        current.items.append(item)
    return [c for chunks in groups.values() for c in chunks]


def _size(c: _Chunk) -> int:
    return sum(len(i.encoded) + 1 for i in c.items)


class Deliverer:
    """Sends prepared events; one instance per execution environment (holds no per-batch state)."""

    def __init__(
        self,
        sender: GraphSender,
        tokens: TokenProvider,
        config: DeliveryConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._sender = sender
        self._tokens = tokens
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="graph")

    def deliver(self, outbound: list[Outbound], deadline: float, *, sequential: bool = False) -> DeliveryReport:
        """Deliver ``outbound`` before ``deadline`` (a ``clock()`` value). ``sequential`` keeps FIFO order."""
        report = DeliveryReport()
        if not outbound:
            return report
        cfg = self._config
        pending = chunk(outbound, cfg.max_events_per_request, cfg.max_request_bytes)
        pixels: dict[str, _PixelState] = {}
        for c in pending:
            if c.pixel_id not in pixels:
                pixels[c.pixel_id] = self._load_credentials(c.pixel_id)
        limit = 1 if sequential else cfg.concurrency
        running: dict[Future[GraphReply], _Chunk] = {}

        while pending or running:
            now = self._clock()
            pending.sort(key=lambda c: c.ready_at)
            still_waiting: list[_Chunk] = []
            for c in pending:
                state = pixels[c.pixel_id]
                if state.broken is not None:
                    self._fail(report, c, state.broken)
                    continue
                start_at = max(c.ready_at, state.hold_until)
                if start_at + cfg.request_timeout_s > deadline:
                    self._fail(report, c, c.last_failure or Failure("deadline"))
                    continue
                if start_at > now or len(running) >= limit:
                    still_waiting.append(c)
                    continue
                creds = state.credentials
                assert creds is not None
                c.credentials = creds
                c.attempt += 1
                report.requests += 1
                timeout = max(0.1, min(cfg.request_timeout_s, deadline - now))
                running[self._pool.submit(self._sender.send, c.pixel_id, c.body(creds), creds, timeout)] = c
            pending = still_waiting
            if not running:
                if pending:
                    nxt = min(max(c.ready_at, pixels[c.pixel_id].hold_until) for c in pending)
                    self._sleep(max(0.0, nxt - self._clock()))
                continue
            timeout_wait = None
            if pending and len(running) < limit:
                nxt = min(max(c.ready_at, pixels[c.pixel_id].hold_until) for c in pending)
                timeout_wait = max(0.0, nxt - self._clock())
            done, _ = wait(running, timeout=timeout_wait, return_when=FIRST_COMPLETED)
            for future in done:
                c = running.pop(future)
                pending.extend(self._settle(report, c, future, pixels[c.pixel_id]))
        return report

    # ------------------------------------------------------------------------------------ internals
    def _load_credentials(self, pixel_id: str) -> _PixelState:
        try:
            return _PixelState(credentials=self._tokens.get(pixel_id))
        except SecretError as exc:
            logger.error("access token unavailable", extra={"pixel_id": pixel_id, "reason": exc.reason})
            return _PixelState(broken=Failure(exc.reason))

    def _fail(self, report: DeliveryReport, c: _Chunk, failure: Failure) -> None:
        report.rejected_events[failure.reason] += len(c.items)
        for item in c.items:
            report.failed.setdefault(item.outbound.message_id, failure)

    def _backoff(self, attempt: int) -> float:
        cfg = self._config
        return self._rng.uniform(0, min(cfg.max_backoff_s, cfg.base_backoff_s * 2 ** (attempt - 1)))

    def _settle(
        self, report: DeliveryReport, c: _Chunk, future: Future[GraphReply], state: _PixelState
    ) -> list[_Chunk]:
        """Handle one finished request; return the chunks to schedule next."""
        now = self._clock()
        try:
            reply = future.result()
        except GraphError as exc:
            error = exc
        except Exception as exc:  # a bug in the sender must not lose records
            error = GraphError(ErrorKind.TRANSIENT, detail=f"unexpected {type(exc).__name__}")
        else:
            report.latencies_ms.append(reply.latency_ms)
            if reply.events_received == len(c.items):
                report.delivered_events += len(c.items)
                return []
            error = GraphError(
                ErrorKind.TRANSIENT,
                http_status=200,
                fbtrace_id=reply.fbtrace_id,
                detail=f"events_received {reply.events_received} != {len(c.items)} sent",
            )
        report.graph_errors[error.reason] += 1
        failure = Failure(error.reason, error.code, error.subcode, error.fbtrace_id)
        log_extra = {
            "pixel_id": c.pixel_id,
            "events": len(c.items),
            "attempt": c.attempt,
            "reason": error.reason,
            "code": error.code,
            "error_subcode": error.subcode,
            "fbtrace_id": error.fbtrace_id,
            "http_status": error.http_status,
        }
        cfg = self._config

        if error.kind is ErrorKind.INVALID:
            if len(c.items) > 1:
                report.splits += 1
                mid = len(c.items) // 2
                logger.info("Meta rejected a multi-event request; splitting", extra=log_extra)
                return [
                    _Chunk(c.pixel_id, c.test_event_code, c.items[:mid], ready_at=now),
                    _Chunk(c.pixel_id, c.test_event_code, c.items[mid:], ready_at=now),
                ]
            logger.warning("Meta rejected an event", extra=log_extra)
            self._fail(report, c, failure)
            return []

        if error.kind is ErrorKind.CONFIG:
            logger.error("Graph permission/configuration error; failing the pixel's records", extra=log_extra)
            state.broken = failure
            self._fail(report, c, failure)
            return []

        if error.kind is ErrorKind.AUTH:
            if c.credentials is not state.credentials:
                c.ready_at = now  # a refresh already happened since this request left
                return [c]
            if not state.refreshed:
                state.refreshed = True
                report.auth_refreshes += 1
                logger.warning("access token rejected; refreshing it once", extra=log_extra)
                try:
                    state.credentials = self._tokens.get(c.pixel_id, force_refresh=True)
                except SecretError as exc:
                    state.broken = Failure(exc.reason)
                    self._fail(report, c, state.broken)
                    return []
                c.ready_at = now
                return [c]
            logger.error("access token rejected after a refresh", extra=log_extra)
            state.broken = failure
            self._fail(report, c, failure)
            return []

        # TRANSIENT or THROTTLED: retry later, if attempts and time allow.
        c.last_failure = failure
        if c.attempt >= cfg.max_attempts:
            logger.warning("giving up after retries; records go back to SQS", extra=log_extra)
            self._fail(report, c, failure)
            return []
        report.retries += 1
        if error.kind is ErrorKind.THROTTLED:
            report.throttles += 1
            wait_s = error.retry_after_s
            if wait_s is None:
                wait_s = cfg.throttle_backoff_s * 2 ** (c.attempt - 1) * (0.5 + self._rng.random() / 2)
            state.hold_until = max(state.hold_until, now + wait_s)
            logger.warning("throttled by Meta; holding the pixel", extra={**log_extra, "hold_s": wait_s})
            c.ready_at = state.hold_until
        else:
            c.ready_at = now + self._backoff(c.attempt)
        return [c]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
