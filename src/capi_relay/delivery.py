"""Delivery engine: group, chunk, send concurrently, retry, isolate bad events, map every outcome to a record.

Input is a list of :class:`Outbound` events (each bound to its SQS ``messageId``); output is a
:class:`DeliveryReport` naming, for every message id that had events, the first failure of any of them
(a message id not in ``failed`` had every event accepted).

Policy (../shared/design/architecture.md, failure policy):

* events are grouped by (pixel, test_event_code) -- the token is chosen per pixel -- and chunked to
  <= ``max_events_per_request`` and <= ``max_request_bytes``; chunks are sent concurrently (at most
  ``concurrency`` at once) over the one pooled client;
* TRANSIENT errors are retried with full-jitter exponential backoff while attempts and time allow;
* THROTTLED errors hold the whole pixel until ``Retry-After`` (or a growing jittered backoff); a hold that
  ends too late for another attempt fails the chunk at once: SQS's visibility timeout becomes the backoff;
* AUTH errors force one refresh of the pixel's token per invocation; a request that left with the old
  token is retried with the new one; a rejection of the refreshed token fails the pixel's records;
* CONFIG errors fail every chunk of that pixel without sending more (other pixels are unaffected);
* INVALID errors on a multi-event chunk start a search for the bad events (see :class:`_Search`); only
  the records of the isolated events fail.

No attempt starts unless ``min_request_s`` is left before the deadline, and each attempt's timeout is cut
to the time that is left, so ``deliver`` returns by the deadline (plus scheduling noise). The scheduler
runs in the calling thread and only blocks (on a finished request or on the next ready time); only the
HTTP calls run on the worker threads.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum

from capi_relay.graph import ErrorKind, GraphError, GraphReply, GraphSender
from capi_relay.model import Outbound, encode_event
from capi_relay.secrets import Credentials, SecretError, TokenProvider

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# Bad-event search: binary splitting with inference while few bad events have been found (fewest
# requests), then rounds that pool the undecided halves (fewer round trips), then plain halving once the
# chunk has proved to be full of bad events (fewest round trips; every event ends up tested anyway).
SEARCH_POOLED_FROM = 4
SEARCH_PLAIN_FROM = 16
SEARCH_PLAIN_DENSITY = 0.25  # ... or as soon as a quarter of the decided events were bad


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_events_per_request: int = 1000
    max_request_bytes: int = 2 * 1024 * 1024
    concurrency: int = 10
    max_attempts: int = 5
    base_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    throttle_backoff_s: float = 2.0
    request_timeout_s: float = 6.0  # connect + read of one attempt (cut to the time left)
    min_request_s: float = 1.0  # no attempt starts with less than this left before the deadline


@dataclass(slots=True)
class Failure:
    reason: str
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    retry_after_s: float | None = None  # Meta's estimate (Retry-After / usage headers) for parking the record


@dataclass(slots=True)
class DeliveryReport:
    failed: dict[str, Failure] = field(default_factory=dict)  # messageId -> first failure
    delivered_events: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    auth_refreshes: int = 0
    splits: int = 0
    isolated_events: int = 0  # events found bad by the search
    graph_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    outbound: Outbound
    encoded: bytes
    index: int  # position in the invocation's input: keeps order when undecided halves are pooled


class _Mode(Enum):
    BINARY = "binary"
    POOLED = "pooled"
    PLAIN = "plain"


@dataclass(slots=True)
class _Search:
    """The search for the bad events of one chunk that Meta rejected as invalid.

    Meta rejects a whole request when any event in it is invalid and does not say which one. A set that
    was rejected is *known bad* (it holds at least one bad event). To split a known-bad set, only its
    first half is sent: if Meta accepts it, the second half is known bad without sending it; if not, the
    second half is *undecided* and waits in ``pool``. A known-bad set of one event is isolated.

    Requests are made in rounds: the next round starts when every request of this round has an outcome.
    In BINARY mode the pool is sent (as one request) only when no known-bad set is left to split --
    Hwang's binary splitting, at most ``k * (ceil(log2 n) + 1) + 1`` requests for k bad events among n,
    at the cost of one round trip per request. POOLED mode sends the pool every round; PLAIN mode sends
    both halves of every split (for a chunk full of bad events, where inference gains nothing).
    """

    pixel_id: str
    test_event_code: str | None
    found: int = 0
    good: int = 0
    inflight: int = 0
    known: list[tuple[list[_Item], Failure]] = field(default_factory=list)
    pool: list[_Item] = field(default_factory=list)

    @property
    def mode(self) -> _Mode:
        if self.found >= SEARCH_PLAIN_FROM or (
            self.found >= SEARCH_POOLED_FROM and self.found >= SEARCH_PLAIN_DENSITY * (self.found + self.good)
        ):
            return _Mode.PLAIN
        if self.found >= SEARCH_POOLED_FROM:
            return _Mode.POOLED
        return _Mode.BINARY


@dataclass(slots=True)
class _Chunk:
    pixel_id: str
    test_event_code: str | None
    items: list[_Item]
    size: int = 0  # encoded bytes of the events, with separators
    attempt: int = 0
    ready_at: float = 0.0
    credentials: Credentials | None = None
    last_failure: Failure | None = None
    search: _Search | None = None
    sibling: list[_Item] | None = None  # known bad if this chunk is accepted, undecided if not
    sibling_failure: Failure | None = None

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


class _Chunker:
    """Groups events by (pixel, test_event_code) in input order and cuts at the event and byte caps."""

    OVERHEAD = 256  # '{"data":[', the tail with test_event_code and appsecret_proof

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.open: dict[tuple[str, str | None], _Chunk] = {}
        self.index = 0

    def add(self, event: Outbound) -> list[_Chunk]:
        """Add one event; return the chunks it closed (full ones)."""
        encoded = event.encoded if event.encoded is not None else encode_event(event.event)
        item = _Item(event, encoded, self.index)
        self.index += 1
        key = (event.pixel_id, event.test_event_code)
        size = len(encoded) + 1
        closed: list[_Chunk] = []
        current = self.open.get(key)
        if current is not None and current.items and current.size + size + self.OVERHEAD > self.max_bytes:
            closed.append(self.open.pop(key))
            current = None
        if current is None:
            current = self.open[key] = _Chunk(event.pixel_id, event.test_event_code, [])
        current.items.append(item)
        current.size += size
        if len(current.items) >= self.max_events:
            closed.append(self.open.pop(key))
        return closed

    def flush(self) -> list[_Chunk]:
        closed, self.open = list(self.open.values()), {}
        return closed


def chunk(outbound: Iterable[Outbound], max_events: int, max_bytes: int) -> list[_Chunk]:
    """All chunks of ``outbound`` (full ones in the order they filled, then the open ones)."""
    chunker = _Chunker(max_events, max_bytes)
    chunks = [c for event in outbound for c in chunker.add(event)]
    return chunks + chunker.flush()


def search_request_bound(bad: int, events: int) -> int:
    """Upper bound on the requests spent on one rejected chunk of ``events`` events holding ``bad`` bad ones
    (the first request included), as long as no request fails for another reason and ``bad`` stays below
    SEARCH_POOLED_FROM. Documented and tested; larger ``bad`` stays close to it (see the unit tests)."""
    if events <= 1 or bad <= 0:
        return 1
    return bad * (math.ceil(math.log2(events)) + 1) + 1


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

    @property
    def config(self) -> DeliveryConfig:
        return self._config

    def deliver(self, outbound: Iterable[Outbound], deadline: float, *, sequential: bool = False) -> DeliveryReport:
        """Deliver ``outbound`` before ``deadline`` (a ``clock()`` value). ``outbound`` may be a generator
        that prepares events lazily: it is always consumed to the end. ``sequential`` keeps FIFO order (one
        request at a time, chunks in input order). Never raises."""
        report = DeliveryReport()
        run = _Run(self, report, deadline, sequential)
        try:
            run.run(outbound)
        except Exception:  # a bug here must not lose records: fail everything not proven delivered
            logger.exception("delivery engine error; failing the batch's records so SQS retries them")
            for message_id in [*run.seen, *(event.message_id for event in outbound)]:
                report.failed.setdefault(message_id, Failure("internal_error"))
        return report

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Run:
    """The state of one ``deliver`` call."""

    def __init__(self, owner: Deliverer, report: DeliveryReport, deadline: float, sequential: bool) -> None:
        self.d = owner
        self.cfg = owner._config
        self.report = report
        self.deadline = deadline
        self.limit = 1 if sequential else max(1, self.cfg.concurrency)
        self.pixels: dict[str, _PixelState] = {}
        self.seen: list[str] = []  # message ids of the events taken from the input so far

    # ---------------------------------------------------------------------------------------- loop
    def run(self, outbound: Iterable[Outbound]) -> None:
        """Send while the input is still being produced: every chunk that fills up is scheduled at once, so
        preparing the next events (CPU, this thread) overlaps the requests in flight (I/O, the pool)."""
        cfg, d = self.cfg, self.d
        source = iter(outbound)
        chunker = _Chunker(cfg.max_events_per_request, cfg.max_request_bytes)
        exhausted = False
        pending: list[_Chunk] = []
        running: dict[Future[GraphReply], _Chunk] = {}

        while not exhausted or pending or running:
            if not exhausted:
                filled: list[_Chunk] = []
                for event in source:
                    self.seen.append(event.message_id)
                    filled = chunker.add(event)
                    if filled:
                        break
                else:
                    exhausted = True
                    filled = chunker.flush()
                for c in filled:
                    if c.pixel_id not in self.pixels:
                        self.pixels[c.pixel_id] = self._load_credentials(c.pixel_id)
                pending.extend(filled)
            now = d._clock()
            pending.sort(key=lambda c: c.ready_at)  # stable: input order among equals (FIFO)
            waiting: list[_Chunk] = []
            for c in pending:
                state = self.pixels[c.pixel_id]
                if state.broken is not None:
                    waiting.extend(self._give_up(c, state.broken))
                    continue
                start_at = max(c.ready_at, state.hold_until, now)
                if self.deadline - start_at < cfg.min_request_s:
                    waiting.extend(self._give_up(c, c.last_failure or Failure("deadline")))
                    continue
                if start_at > now or len(running) >= self.limit:
                    waiting.append(c)
                    continue
                creds = state.credentials
                assert creds is not None
                c.credentials = creds
                c.attempt += 1
                self.report.requests += 1
                timeout = min(cfg.request_timeout_s, self.deadline - now)
                running[d._pool.submit(d._sender.send, c.pixel_id, c.body(creds), creds, timeout)] = c
            pending = waiting
            if not exhausted:
                # More input to prepare: only collect what has already finished, never block.
                done = {f for f in running if f.done()}
            elif not running:
                if pending:
                    d._sleep(max(0.0, self._next_start(pending) - d._clock()))
                continue
            else:
                timeout_wait = None
                if pending and len(running) < self.limit:
                    timeout_wait = max(0.0, self._next_start(pending) - d._clock())
                done, _ = wait(running, timeout=timeout_wait, return_when=FIRST_COMPLETED)
            for future in done:
                c = running.pop(future)
                pending.extend(self._settle(c, future))

    def _next_start(self, pending: list[_Chunk]) -> float:
        nxt = min(max(c.ready_at, self.pixels[c.pixel_id].hold_until) for c in pending)
        # A chunk that can never start fails on the next pass: wake up by then, not later.
        return min(nxt, self.deadline - self.cfg.min_request_s)

    # ----------------------------------------------------------------------------------- outcomes
    def _load_credentials(self, pixel_id: str) -> _PixelState:
        try:
            return _PixelState(credentials=self.d._tokens.get(pixel_id))
        except SecretError as exc:
            logger.error("access token unavailable", extra={"pixel_id": pixel_id, "reason": exc.reason})
            return _PixelState(broken=Failure(exc.reason))
        except Exception as exc:  # a provider bug must not escape: the records go back to SQS
            logger.error("access token provider error", extra={"pixel_id": pixel_id, "error": type(exc).__name__})
            return _PixelState(broken=Failure("secret_unavailable"))

    def _fail_items(self, items: list[_Item], failure: Failure) -> None:
        for item in items:
            self.report.failed.setdefault(item.outbound.message_id, failure)

    def _delivered(self, c: _Chunk) -> list[_Chunk]:
        self.report.delivered_events += len(c.items)
        s = c.search
        if s is None:
            return []
        s.good += len(c.items)
        if c.sibling:
            assert c.sibling_failure is not None
            s.known.append((c.sibling, c.sibling_failure))  # the rejected parent's bad events are there
        return self._round_done(s)

    def _invalid(self, c: _Chunk, failure: Failure) -> list[_Chunk]:
        s = c.search
        if s is None:
            if len(c.items) == 1:
                self._isolated(c.items, failure)
                return []
            s = _Search(c.pixel_id, c.test_event_code, known=[(c.items, failure)])
            return self._next_round(s)
        if len(c.items) == 1:
            s.found += 1
            self._isolated(c.items, failure)
        else:
            s.known.append((c.items, failure))
        if c.sibling:
            s.pool.extend(c.sibling)
        return self._round_done(s)

    def _give_up(self, c: _Chunk, failure: Failure) -> list[_Chunk]:
        """The chunk's records fail (for SQS to retry); a search it belonged to goes on with the rest."""
        self._fail_items(c.items, failure)
        s = c.search
        if s is None:
            return []
        if c.sibling:
            s.pool.extend(c.sibling)  # undecided: it could not be inferred from this chunk
        return self._round_done(s)

    def _isolated(self, items: list[_Item], failure: Failure) -> None:
        self.report.isolated_events += len(items)
        for item in items:
            logger.warning(
                "Meta rejected an event",
                extra={"message_id": item.outbound.message_id, "event_position": item.outbound.position,
                       "pixel_id": item.outbound.pixel_id, "reason": failure.reason, "code": failure.code,
                       "error_subcode": failure.subcode, "fbtrace_id": failure.fbtrace_id},
            )  # fmt: skip
        self._fail_items(items, failure)

    def _round_done(self, s: _Search) -> list[_Chunk]:
        s.inflight -= 1
        return self._next_round(s) if s.inflight == 0 else []

    def _next_round(self, s: _Search) -> list[_Chunk]:
        now = self.d._clock()
        known, s.known = s.known, []
        if self.deadline - now < self.cfg.min_request_s:
            for items, failure in known:
                self._fail_items(items, failure)
            if s.pool:
                self._fail_items(s.pool, Failure("deadline"))
                s.pool = []
            return []
        splittable: list[tuple[list[_Item], Failure]] = []
        for items, failure in known:
            if len(items) == 1:
                s.found += 1
                self._isolated(items, failure)
            else:
                splittable.append((items, failure))
        mode = s.mode
        new: list[_Chunk] = []
        for items, failure in splittable:
            self.report.splits += 1
            mid = len(items) // 2
            first, second = items[:mid], items[mid:]
            if mode is _Mode.PLAIN:
                new.append(self._search_chunk(s, first, now))
                new.append(self._search_chunk(s, second, now))
            else:
                probe = self._search_chunk(s, first, now)
                probe.sibling, probe.sibling_failure = second, failure
                new.append(probe)
        if s.pool and (mode is not _Mode.BINARY or not new):
            pool, s.pool = sorted(s.pool, key=lambda i: i.index), []
            new.append(self._search_chunk(s, pool, now))
        s.inflight = len(new)
        return new

    def _search_chunk(self, s: _Search, items: list[_Item], now: float) -> _Chunk:
        return _Chunk(s.pixel_id, s.test_event_code, items, sum(len(i.encoded) + 1 for i in items), ready_at=now,
                      search=s)  # fmt: skip

    def _backoff(self, attempt: int) -> float:
        cfg = self.cfg
        return self.d._rng.uniform(0, min(cfg.max_backoff_s, cfg.base_backoff_s * 2 ** (attempt - 1)))

    def _settle(self, c: _Chunk, future: Future[GraphReply]) -> list[_Chunk]:
        """Handle one finished request; return the chunks to schedule next."""
        report, cfg = self.report, self.cfg
        state = self.pixels[c.pixel_id]
        now = self.d._clock()
        try:
            reply = future.result()
        except GraphError as exc:
            error = exc
        except Exception as exc:  # a bug in the sender must not lose records
            error = GraphError(ErrorKind.TRANSIENT, detail=f"unexpected {type(exc).__name__}")
        else:
            report.latencies_ms.append(reply.latency_ms)
            if reply.events_received == len(c.items):
                return self._delivered(c)
            error = GraphError(
                ErrorKind.TRANSIENT,
                http_status=200,
                fbtrace_id=reply.fbtrace_id,
                detail=f"events_received {reply.events_received} != {len(c.items)} sent",
                reason="graph_transient_events_received_short",
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

        if error.kind is ErrorKind.INVALID:
            if len(c.items) > 1:
                logger.info("Meta rejected a multi-event request; searching for the bad events", extra=log_extra)
            return self._invalid(c, failure)

        if error.kind in (ErrorKind.CONFIG, ErrorKind.REQUEST):  # REQUEST: code 100 about the request
            logger.error("Graph permission/configuration error; failing the pixel's records", extra=log_extra)
            state.broken = failure
            return self._give_up(c, failure)

        if error.kind is ErrorKind.AUTH:
            if c.credentials != state.credentials:
                c.ready_at = now  # the token was refreshed after this request left: retry with the new one
                return [c]
            if not state.refreshed:
                state.refreshed = True
                report.auth_refreshes += 1
                logger.warning("access token rejected; refreshing it once", extra=log_extra)
                try:
                    state.credentials = self.d._tokens.get(c.pixel_id, force_refresh=True)
                except Exception as exc:
                    reason = exc.reason if isinstance(exc, SecretError) else "secret_unavailable"
                    state.broken = Failure(reason)
                    return self._give_up(c, state.broken)
                c.ready_at = now
                return [c]
            logger.error("access token rejected after a refresh; failing the pixel's records", extra=log_extra)
            state.broken = failure
            return self._give_up(c, failure)

        # TRANSIENT or THROTTLED: retry later, if attempts and time allow.
        c.last_failure = failure
        if c.attempt >= cfg.max_attempts:
            logger.warning("giving up after retries; records go back to SQS", extra=log_extra)
            return self._give_up(c, failure)
        report.retries += 1
        if error.kind is ErrorKind.THROTTLED:
            report.throttles += 1
            wait_s = error.retry_after_s
            if wait_s is None:
                wait_s = cfg.throttle_backoff_s * 2 ** (c.attempt - 1) * (0.5 + self.d._rng.random() / 2)
            state.hold_until = max(state.hold_until, now + wait_s)
            logger.warning("throttled by Meta; holding the pixel", extra={**log_extra, "hold_s": wait_s})
            c.ready_at = state.hold_until
        else:
            c.ready_at = now + self._backoff(c.attempt)
        return [c]
