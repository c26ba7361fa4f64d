"""Delivery engine: chunk, send concurrently, retry, search for bad events, report every event's outcome.

Input is an iterable of :class:`Outbound` events (each bound to its SQS ``messageId`` and position; a
generator that prepares them lazily is fine: full chunks are sent while the rest is prepared). Output is a
:class:`DeliveryReport`: events Meta rejected as invalid in ``rejected`` (per event), message ids with an
event that could not be decided in ``failed``; an event in neither was accepted.

Data flow, top to bottom: chunking (``chunking.py``) -> one ``deliver`` call (:class:`Deliverer`, and the
:class:`_Context` every part of the call shares: config, deadline, mode, report, the Deliverer's ports) -> the
scheduler (:class:`_Run`: intake, dispatch, bounded waits) -> outcomes (:class:`_Outcomes`: what a finished
attempt means; the next step after a failure is graph_policy's pure :func:`after_failure`) -> bad-event
searches (:class:`_Searches`) -> the per-invocation state they write (:class:`_Pixels`, :class:`_Ledger`).
The bad-event search itself is the pure state machine in ``search.py``; throttle holds that outlive an
invocation are in ``throttle.py``.

Policy (../shared/design/architecture.md, failure policy):

* events are grouped by (pixel, test_event_code, request_fields) and chunked to <= ``max_events_per_request``
  and <= ``max_request_bytes``; at most ``concurrency`` requests at once over the one pooled client;
* TRANSIENT: retried with full-jitter exponential backoff while attempts and time allow;
* THROTTLED: the whole pixel is held until Meta's estimate (``retry_after_s``: Retry-After or the usage
  headers) or a growing jittered backoff; the hold is kept in the Deliverer across invocations (wall
  clock); a hold that ends too late fails the records at once, without a request, with ``retry_after_s``;
* AUTH: one forced refresh of the pixel's token per invocation; a request that left with the old token is
  retried with the new one; a rejection of the refreshed token fails the pixel's records;
* CONFIG (permission, wrong pixel, 2635 retired version) and REQUEST (code 100 without subcode): fail every
  record of that pixel without sending more, one error log per pixel per invocation;
* INVALID (2804xxx): a single event is rejected; a multi-event chunk is searched (search.py);
* FIFO (``fifo=True``): chunks are contiguous runs of the input and go one request at a time in input
  order (groups are not sent concurrently); a rejected chunk is searched by prefixes; a failed event
  blocks the rest of its group in this invocation (``fifo_group_blocked``, never sent), and so does a
  rejected one unless ``quarantine``.

Every wait is bounded: no attempt starts unless ``min_request_s`` is left, each attempt's ``timeout_s`` is
cut to the time left, the scheduler sleeps or waits only up to the deadline, and an attempt still running
past the deadline is abandoned (its records fail; counted in ``unknown_outcomes``).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter

from capi_relay.aws.secrets import Credentials, InvocationScoped, SecretError, TokenProvider
from capi_relay.deliver.chunking import Chunk, Chunker, ChunkKey, Item, chunk, request_body, request_stream
from capi_relay.deliver.client import GraphReply, GraphSender, StreamingGraphSender
from capi_relay.deliver.policy import Action, ErrorKind, GraphError, after_failure, unknown_outcome
from capi_relay.deliver.search import Probe, Search, search_request_bound
from capi_relay.deliver.throttle import Hold, HoldBook
from capi_relay.fate.ledger import FIFO_BLOCKED, FifoGate
from capi_relay.ingest.model import Outbound
from capi_relay.settings import Settings, default_of

__all__ = ["Accepted", "Deliverer", "DeliveryConfig", "DeliveryReport", "Failure", "chunk", "search_request_bound"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
ABANDON_GRACE_S = 0.1  # an attempt still running this long after the deadline is abandoned


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    # The relay's settings' defaults (app.delivery_config passes the configured values).
    max_events_per_request: int = default_of(Settings, "max_events_per_request")
    max_request_bytes: int = default_of(Settings, "max_request_bytes")
    concurrency: int = default_of(Settings, "http_concurrency")
    max_attempts: int = default_of(Settings, "max_attempts")
    base_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    throttle_backoff_s: float = 2.0
    # wall-clock cap of one attempt (cut to the time left; deliver/client.py enforces it): connect + read
    request_timeout_s: float = default_of(Settings, "connect_timeout_s") + default_of(Settings, "read_timeout_s")
    min_request_s: float = 1.0  # no attempt starts with less than this left before the deadline


@dataclass(slots=True)
class Failure:
    reason: str
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    retry_after_s: float | None = None  # Meta's estimate (Retry-After / usage headers) for parking the record


_OUTBOUND = attrgetter("outbound")


class Accepted(AbstractSet[tuple[str, int]]):
    """The (messageId, position) of every event Meta accepted: the proof, as a read-only set of pairs.

    Recorded per accepted request (its items, which carry the events: one list append per request, no pair
    built per event); the set of pairs is built only when something reads it as a set. :meth:`events` walks
    the accepted events themselves, for the ledger (``Ledger.accept_events``)."""

    __slots__ = ("_pairs", "_requests")

    def __init__(self) -> None:
        self._requests: list[list[Item]] = []
        self._pairs: frozenset[tuple[str, int]] | None = None

    def add_request(self, items: list[Item]) -> None:
        """Every event of ``items`` was accepted (the list is kept, not copied: it is not changed after)."""
        self._requests.append(items)
        self._pairs = None

    def events(self) -> Iterator[Outbound]:
        """Each accepted event, request by request (an event accepted by two requests appears twice)."""
        return map(_OUTBOUND, chain.from_iterable(self._requests))

    def _set(self) -> frozenset[tuple[str, int]]:
        if self._pairs is None:
            self._pairs = frozenset([(o.message_id, o.position) for o in self.events()])
        return self._pairs

    def __contains__(self, pair: object) -> bool:
        return pair in self._set()

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._set())

    def __len__(self) -> int:
        return len(self._set())

    def __repr__(self) -> str:
        return f"Accepted({set(self._set())!r})"


@dataclass(slots=True)
class DeliveryReport:
    failed: dict[str, Failure] = field(default_factory=dict)  # messageId -> first failure of an undecided event
    rejected: dict[tuple[str, int], Failure] = field(default_factory=dict)  # (messageId, position) Meta rejected
    # (messageId, position) Meta accepted: the proof. The engine's report holds an :class:`Accepted`.
    accepted: AbstractSet[tuple[str, int]] = field(default_factory=Accepted)
    delivered_events: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    auth_refreshes: int = 0
    splits: int = 0  # requests made by bad-event searches
    resent_events: int = 0  # events POSTed again after an attempt whose outcome was unknown
    unknown_outcomes: int = 0  # attempts that ended without an answer after the request may have left
    # 2xx answers whose events_received was short or whose body was unreadable (retried while attempts and
    # time allow: the same event_ids, Meta deduplicates), and events accepted on such an answer at the end
    anomalous_2xx: int = 0
    accepted_on_anomaly: int = 0
    graph_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def isolated_events(self) -> int:
        """Events found bad by a search or rejected alone."""
        return len(self.rejected)


# ------------------------------------------------------------------------------------ one deliver call
class Deliverer:
    """Sends prepared events; one instance per execution environment (keeps only throttle holds)."""

    def __init__(
        self,
        sender: GraphSender,
        tokens: TokenProvider,
        config: DeliveryConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.sender = sender
        self.tokens = tokens
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.holds = HoldBook()
        self.pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="graph")

    def deliver(
        self, outbound: Iterable[Outbound], deadline: float, *, fifo: bool = False, quarantine: bool = False
    ) -> DeliveryReport:
        """Deliver ``outbound`` before ``deadline`` (a ``clock()`` value). ``outbound`` may be a generator
        that prepares events lazily: it is always consumed to the end. ``fifo`` keeps group order (see the
        module docstring); ``quarantine``: a rejected event does not block its group. Never raises."""
        accepted = Accepted()
        report = DeliveryReport(accepted=accepted)
        if isinstance(self.tokens, InvocationScoped):
            self.tokens.begin_invocation(deadline)
        ctx = _Context(config=self.config, deadline=deadline, fifo=fifo, quarantine=quarantine, report=report,
                       accepted=accepted, sender=self.sender, tokens=self.tokens, holds=self.holds, pool=self.pool,
                       clock=self.clock, wall_clock=self.wall_clock, sleep=self.sleep, rng=self.rng)  # fmt: skip
        run = _Run(ctx)
        try:
            run.run(outbound)
        except Exception:  # a bug here must not lose records: fail everything not proven delivered
            logger.exception("delivery engine error; failing the batch's records so SQS retries them")
            for message_id in [*run.seen, *(event.message_id for event in outbound)]:
                report.failed.setdefault(message_id, Failure("internal_error"))
        return report

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every part of one ``deliver`` call shares: the config, the deadline (a ``clock`` value), the mode,
    the report being written (and its ``accepted``, typed), and the Deliverer's ports (the sender, the tokens,
    the hold book that outlives the call, the pool, the clocks, sleep and the random source)."""

    config: DeliveryConfig
    deadline: float
    fifo: bool
    quarantine: bool
    report: DeliveryReport
    accepted: Accepted
    sender: GraphSender
    tokens: TokenProvider
    holds: HoldBook
    pool: ThreadPoolExecutor
    clock: Clock
    wall_clock: Clock
    sleep: Callable[[float], None]
    rng: random.Random


# ------------------------------------------------------------------------------------------- scheduler
@dataclass(slots=True)
class _Request:
    """One request to make (a chunk, or a probe of a search), with its retry state."""

    key: ChunkKey
    items: list[Item]
    seq: int  # input order of its first item: FIFO sends strictly in this order
    attempt: int = 0
    ready_at: float = 0.0  # not before (a retry's backoff); its pixel's hold may push the start later
    credentials: Credentials | None = None
    last_failure: Failure | None = None
    unknown: bool = False  # the last attempt's outcome is unknown: sending again is a resend
    anomalies: int = 0  # attempts answered 2xx with a short events_received or an unreadable body
    search: _SearchRun | None = None
    probe: Probe | None = None

    @property
    def pixel_id(self) -> str:
        return self.key[0]


class _Run:
    """The loop of one ``deliver`` call: intake (lazily), dispatch what is ready, wait (bounded), settle."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.limit = 1 if ctx.fifo else max(1, ctx.config.concurrency)
        self.seen: list[str] = []  # message ids taken so far from a one-shot input (see _source)
        self.pixels = _Pixels(ctx)
        ledger = _Ledger(ctx)
        self.out = _Outcomes(ctx, self.pixels, ledger, _Searches(ctx, self.pixels, ledger))

    def run(self, outbound: Iterable[Outbound]) -> None:
        """Send while the input is still being produced: every chunk that fills up is scheduled at once, so
        preparing the next events (CPU, this thread) overlaps the requests in flight (I/O, the pool)."""
        ctx = self.ctx
        source: Iterator[Outbound] | None = self._source(outbound)
        chunker = Chunker(ctx.config.max_events_per_request, ctx.config.max_request_bytes, contiguous=ctx.fifo)
        pending: list[_Request] = []
        running: dict[Future[GraphReply], _Request] = {}
        while source is not None or pending or running:
            if source is not None:
                filled = chunker.fill(source)  # until a chunk fills; None: the input is exhausted
                if filled is None:
                    source, filled = None, chunker.flush()
                pending.extend(self._request(c) for c in filled)
            pending = self._dispatch(pending, running)
            if source is not None:  # more input to prepare: only collect what has finished, never block
                done = {f for f in running if f.done()}
            elif running:
                done = self._wait(pending, running)
            else:
                if pending:
                    ctx.sleep(max(0.0, self._next_start(pending) - ctx.clock()))
                continue
            for future in done:
                pending.extend(self.out.settle(running.pop(future), future))

    def _source(self, outbound: Iterable[Outbound]) -> Iterator[Outbound]:
        """The input as an iterator. A one-shot input (an iterator: a generator) notes in ``seen`` each message
        id it yields: after an engine error those and the ones still in it are all that can be named. A
        collection (the relay's list) needs no note: iterated again it names every one."""
        source = iter(outbound)
        return self._noted(source) if source is outbound else source

    def _noted(self, source: Iterator[Outbound]) -> Iterator[Outbound]:
        for event in source:
            self.seen.append(event.message_id)
            yield event

    def _request(self, c: Chunk) -> _Request:
        self.pixels.get(c.pixel_id)  # load the token (and a known hold) on first sight of the pixel
        return _Request(c.key, c.items, c.items[0].index)

    def _dispatch(self, pending: list[_Request], running: dict[Future[GraphReply], _Request]) -> list[_Request]:
        """Start every request that is ready (within the concurrency limit); give up those that cannot
        start before the deadline. FIFO: only the earliest request, and only when nothing is running."""
        now = self.ctx.clock()
        if self.ctx.fifo:
            pending.sort(key=lambda r: r.seq)
            while pending and not running:
                gone = self.out.before_send(pending[0], now)
                if gone is not None:  # given up or emptied; a search may have new probes to send first
                    pending = sorted(gone + pending[1:], key=lambda r: r.seq)
                    continue
                if self.pixels.start_at(pending[0]) <= now:
                    req = pending.pop(0)
                    running[self._send(req, now)] = req
                break
            return pending
        pending.sort(key=lambda r: r.ready_at)  # stable: input order among equals
        waiting: list[_Request] = []
        while pending:
            req = pending.pop(0)
            gone = self.out.before_send(req, now)
            if gone is not None:
                pending.extend(gone)
            elif self.pixels.start_at(req) <= now and len(running) < self.limit:
                running[self._send(req, now)] = req
            else:
                waiting.append(req)
        return waiting

    def _send(self, req: _Request, now: float) -> Future[GraphReply]:
        ctx = self.ctx
        creds = self.pixels.get(req.pixel_id).credentials
        assert creds is not None
        req.credentials = creds
        req.attempt += 1
        report = ctx.report
        report.requests += 1
        if req.search is not None:
            report.splits += 1
        if req.unknown:
            report.resent_events += len(req.items)
        timeout = min(ctx.config.request_timeout_s, ctx.deadline - now)
        sender = ctx.sender
        if isinstance(sender, StreamingGraphSender):  # no whole body held per request in flight (peak RSS)
            return ctx.pool.submit(sender.send_streamed, req.pixel_id, request_stream(req.key, req.items, creds),
                                   creds, timeout)  # fmt: skip
        return ctx.pool.submit(sender.send, req.pixel_id, request_body(req.key, req.items, creds), creds, timeout)

    def _wait(self, pending: list[_Request], running: dict[Future[GraphReply], _Request]) -> set[Future[GraphReply]]:
        """Wait for a request to finish, or for the next one to be ready -- never past the deadline."""
        now = self.ctx.clock()
        left = self.ctx.deadline + ABANDON_GRACE_S - now
        if left <= 0:
            for future in list(running):
                self.out.abandon(running.pop(future))
            return set()
        timeout = left
        if pending and len(running) < self.limit:
            timeout = min(timeout, max(0.0, self._next_start(pending) - now))
        done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        return done

    def _next_start(self, pending: list[_Request]) -> float:
        heads = [min(pending, key=lambda r: r.seq)] if self.ctx.fifo else pending  # FIFO: only the head can go
        nxt = min(self.pixels.start_at(r) for r in heads)
        # A request that can never start fails on the next pass: wake up by then, not later.
        return min(nxt, self.ctx.deadline - self.ctx.config.min_request_s)


# ------------------------------------------------------------------------------------------- outcomes
def failure_of(error: GraphError, retry_after_s: float | None = None) -> Failure:
    return Failure(error.reason, error.code, error.subcode, error.fbtrace_id, retry_after_s)


class _Outcomes:
    """What becomes of a request: whether it may still start, then what its finished attempt means --
    accepted, retried, held, refreshed, given up, or searched for bad events -- written onto the report."""

    def __init__(self, ctx: _Context, pixels: _Pixels, ledger: _Ledger, searches: _Searches) -> None:
        self.ctx = ctx
        self.pixels = pixels
        self.ledger = ledger
        self.searches = searches

    def before_send(self, req: _Request, now: float) -> list[_Request] | None:
        """None: ``req`` may be sent (if ready). Else it was given up or emptied: what to schedule instead."""
        if self.ctx.fifo and req.search is None and req.attempt == 0:  # a search's probes are already filtered
            gate = self.ledger.gate
            blocked = [i for i in req.items if gate.blocks(i.outbound.group_id)]
            if blocked:
                self.ledger.fail(blocked, Failure(FIFO_BLOCKED))
                req.items = [i for i in req.items if not gate.blocks(i.outbound.group_id)]
                if not req.items:
                    return []
        state = self.pixels.get(req.pixel_id)
        if state.broken is not None:
            return self.give_up(req, state.broken)
        if self.ctx.deadline - max(self.pixels.start_at(req), now) >= self.ctx.config.min_request_s:
            return None
        if state.hold_until > now and state.hold is not None:  # a hold that outlives the deadline
            h = state.hold
            return self.give_up(req, Failure(h.reason, h.code, h.subcode, None, state.hold_until - now))
        return self.give_up(req, req.last_failure or Failure("deadline"))

    def settle(self, req: _Request, future: Future[GraphReply]) -> list[_Request]:
        """Handle one finished attempt; return the requests to schedule next."""
        try:
            reply = future.result()
        except GraphError as exc:
            error = exc
        except Exception as exc:  # a bug in the sender must not lose records
            error = GraphError(ErrorKind.TRANSIENT, detail=f"unexpected {type(exc).__name__}")
        else:
            self.ctx.report.latencies_ms.append(reply.latency_ms)
            if reply.events_received == len(req.items):
                return self._accepted(req)
            error = GraphError(
                ErrorKind.TRANSIENT,
                http_status=200,
                fbtrace_id=reply.fbtrace_id,
                detail=f"events_received {reply.events_received} != {len(req.items)} sent",
                reason="graph_transient_events_received_short",
            )
        return self._attempt_failed(req, error)

    def abandon(self, req: _Request) -> None:
        """An attempt still running past the deadline: its outcome is unknown; its records fail."""
        self.ctx.report.unknown_outcomes += 1
        logger.warning("request still running at the deadline; abandoned", extra={"pixel_id": req.pixel_id,
                                                                                 "events": len(req.items)})  # fmt: skip
        self.give_up(req, Failure("deadline_in_flight"))

    def _attempt_failed(self, req: _Request, error: GraphError) -> list[_Request]:
        ctx, report = self.ctx, self.ctx.report
        report.graph_errors[error.reason] += 1
        state = self.pixels.get(req.pixel_id)
        now = ctx.clock()
        if error.http_status is not None and 200 <= error.http_status < 300 and self._anomaly_is_final(req, now):
            return self._accepted_on_anomaly(req, error)  # every attempt was answered 2xx, oddly
        req.unknown = unknown_outcome(error)
        report.unknown_outcomes += req.unknown
        step = after_failure(error, attempt=req.attempt, stale_token=req.credentials != state.credentials,
                             refreshed=state.refreshed, now=now, deadline=ctx.deadline, config=ctx.config,
                             jitter=ctx.rng.random())  # fmt: skip
        extra = {"pixel_id": req.pixel_id, "events": len(req.items), "attempt": req.attempt, "reason": error.reason,
                 "code": error.code, "error_subcode": error.subcode, "fbtrace_id": error.fbtrace_id,
                 "http_status": error.http_status}  # fmt: skip
        action = step.action
        if action is Action.INVALID:
            return self._invalid(req, error)
        if action is Action.FAIL_PIXEL:
            if state.broken is None:  # one error log per pixel per invocation
                logger.error("Graph refused the pixel's requests (%s); failing its records", error.kind, extra=extra)
                state.broken = failure_of(error)
            return self.give_up(req, state.broken)
        if action is Action.REFRESH:
            logger.warning("access token rejected; refreshing it once", extra=extra)
            if not self.pixels.refresh(req.pixel_id, state):
                assert state.broken is not None
                return self.give_up(req, state.broken)
            req.ready_at = now
            return [req]
        failure = failure_of(error, step.retry_after_s)
        if error.kind is ErrorKind.THROTTLED:
            report.throttles += 1
            assert step.retry_after_s is not None
            self.pixels.hold(req.pixel_id, state, now + step.retry_after_s, failure,
                             remember=error.retry_after_s is not None)  # fmt: skip
            logger.warning("throttled by Meta; holding the pixel", extra={**extra, "hold_s": step.retry_after_s})
        if action is Action.FAIL:
            logger.warning("giving up; records go back to SQS", extra=extra)
            return self.give_up(req, failure, stop=error.kind is ErrorKind.THROTTLED)
        report.retries += 1
        req.last_failure = failure
        req.ready_at = step.at
        return [req]

    def _anomaly_is_final(self, req: _Request, now: float) -> bool:
        """A 2xx with a short ``events_received`` or an unreadable body. Final when no other attempt is possible
        and every attempt of the request was answered so (a systematic anomaly of Meta's answer; a sporadic
        one among other failures is a transient failure like them)."""
        self.ctx.report.anomalous_2xx += 1
        req.anomalies += 1
        config = self.ctx.config
        last = req.attempt >= config.max_attempts or self.ctx.deadline - now < 2 * config.min_request_s
        return last and req.anomalies == req.attempt

    def _accepted_on_anomaly(self, req: _Request, error: GraphError) -> list[_Request]:
        """Policy for a request Meta answered 2xx, oddly, on every attempt: Meta took the request, so its
        events are accepted -- never failed, which would send 1,000 neighbours back (and on their last
        receive into the DLQ) for an answer that is not an error -- and the anomaly is counted
        (``GraphAnomalousSuccess``) and logged as an error with its fbtrace_id."""
        self.ctx.report.accepted_on_anomaly += len(req.items)
        extra = {"pixel_id": req.pixel_id, "events": len(req.items), "attempt": req.attempt, "reason": error.reason,
                 "fbtrace_id": error.fbtrace_id, "detail": error.detail}  # fmt: skip
        logger.error("Meta answered 2xx without a readable full events_received; accepting the events", extra=extra)
        return self._accepted(req)

    def _accepted(self, req: _Request) -> list[_Request]:
        self.ctx.report.delivered_events += len(req.items)
        self.ctx.accepted.add_request(req.items)
        if req.search is None or req.probe is None:
            return []
        return self.searches.accepted(req.search, req.probe)

    def _invalid(self, req: _Request, error: GraphError) -> list[_Request]:
        failure = failure_of(error)
        signature = (error.kind, error.code, error.subcode)
        if req.search is not None and req.probe is not None:
            return self.searches.rejected(req.search, req.probe, failure, signature)
        if len(req.items) == 1:
            self.ledger.reject(req.items, failure)
            return []
        return self.searches.start(req, failure, signature)

    def give_up(self, req: _Request, failure: Failure, *, stop: bool = True) -> list[_Request]:
        """The request's records fail (for SQS to retry). A search it belonged to goes on with the rest,
        unless ``stop`` (no time, or the pixel cannot be sent to): then the search stops too."""
        if req.search is None or req.probe is None:
            self.ledger.fail(req.items, failure)
            return []
        return self.searches.undecided(req.search, req.probe, failure, stop=stop)


# ------------------------------------------------------------------------------------- bad-event search
@dataclass(slots=True)
class _SearchRun:
    search: Search[Failure]
    chunk: Chunk


class _Searches:
    """The bad-event searches of one ``deliver`` call: a rejected multi-event request becomes a
    :class:`~capi_relay.deliver.search.Search`; each probe's outcome moves it on (its next probes are new requests);
    a finished search's verdicts go to the ledger."""

    def __init__(self, ctx: _Context, pixels: _Pixels, ledger: _Ledger) -> None:
        self.ctx = ctx
        self.pixels = pixels
        self.ledger = ledger

    def start(self, req: _Request, failure: Failure, signature: Hashable) -> list[_Request]:
        logger.info("Meta rejected a multi-event request; searching for the bad events",
                    extra={"pixel_id": req.pixel_id, "events": len(req.items), "reason": failure.reason})  # fmt: skip
        groups = {n: item.outbound.group_id for n, item in enumerate(req.items)} if self.ctx.fifo else None
        search = Search(range(len(req.items)), failure, signature, groups=groups, block_on_bad=not self.ctx.quarantine)
        return self._step(_SearchRun(search, Chunk(req.key, req.items)))

    def accepted(self, run: _SearchRun, probe: Probe) -> list[_Request]:
        run.search.accepted(probe)
        return self._step(run)

    def rejected(self, run: _SearchRun, probe: Probe, failure: Failure, signature: Hashable) -> list[_Request]:
        run.search.rejected(probe, failure, signature)
        return self._step(run)

    def undecided(self, run: _SearchRun, probe: Probe, failure: Failure, *, stop: bool) -> list[_Request]:
        """The probe's records could not be decided; ``stop``: neither can the rest of the search."""
        if stop:
            run.search.abandon(failure)
        run.search.undecided(probe, failure)
        return self._step(run)

    def _step(self, run: _SearchRun) -> list[_Request]:
        items, now = run.chunk.items, self.ctx.clock()
        new = [_Request(run.chunk.key, [items[i] for i in p.items], items[p.items[0]].index, ready_at=now,
                        search=run, probe=p) for p in run.search.probes()]  # fmt: skip
        if run.search.done:
            self._done(run)
        return new

    def _done(self, run: _SearchRun) -> None:
        r, items = run.search.result, run.chunk.items
        state = self.pixels.get(run.chunk.pixel_id)
        for i, failure in sorted(r.bad.items()):
            valve = state.request_level
            if valve is not None and (valve.code, valve.subcode) == (failure.code, failure.subcode):
                self.ledger.fail([items[i]], failure)  # another search of this pixel tripped the valve on it
            else:
                self.ledger.reject([items[i]], failure)
        for i, maybe in sorted(r.undecided.items()):
            self.ledger.fail([items[i]], maybe or Failure("deadline"))
        self.ledger.fail([items[i] for i in sorted(r.blocked)], Failure("fifo_group_blocked"))
        if r.request_level:
            failure = next(iter(r.request_level.values()))
            state.request_level = failure
            if state.broken is None:
                logger.error("single events rejected identically: treated as a request-level error; failing the "
                             "pixel's records, nothing blamed", extra={"pixel_id": run.chunk.pixel_id,
                                                                       "reason": failure.reason})  # fmt: skip
                state.broken = failure
            for i, f in sorted(r.request_level.items()):
                self.ledger.fail([items[i]], f)


# --------------------------------------------------------------------------------- per-invocation state
@dataclass(slots=True)
class _Pixel:
    credentials: Credentials | None = None
    refreshed: bool = False
    hold_until: float = 0.0  # monotonic
    hold: Failure | None = None  # the throttle that set hold_until
    broken: Failure | None = None
    request_level: Failure | None = None  # the safety valve tripped on this error: it blames no event


class _Pixels:
    """Per-pixel state of one invocation: the token (loaded on first sight), the refresh, hold, breakage."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.state: dict[str, _Pixel] = {}

    def get(self, pixel_id: str) -> _Pixel:
        state = self.state.get(pixel_id)
        if state is None:
            state = self.state[pixel_id] = self._load(pixel_id)
        return state

    def start_at(self, req: _Request) -> float:
        """When ``req`` may start (a ``clock`` value): not before its own ``ready_at`` (a retry's backoff)
        nor before its pixel's hold ends."""
        return max(req.ready_at, self.get(req.pixel_id).hold_until)

    def _load(self, pixel_id: str) -> _Pixel:
        ctx = self.ctx
        state = _Pixel()
        hold = ctx.holds.get(pixel_id, ctx.wall_clock())
        if hold is not None:  # a block this environment already knows: do not post into it
            state.hold_until = ctx.clock() + (hold.until - ctx.wall_clock())
            state.hold = Failure(hold.reason, hold.code, hold.subcode)
        try:
            state.credentials = ctx.tokens.get(pixel_id)
        except SecretError as exc:
            logger.error("access token unavailable", extra={"pixel_id": pixel_id, "reason": exc.reason})
            state.broken = Failure(exc.reason)
        except Exception as exc:  # a provider bug must not escape: the records go back to SQS
            logger.error("access token provider error", extra={"pixel_id": pixel_id, "error": type(exc).__name__})
            state.broken = Failure("secret_unavailable")
        return state

    def refresh(self, pixel_id: str, state: _Pixel) -> bool:
        """The one forced refresh of this pixel's token in this invocation."""
        state.refreshed = True
        self.ctx.report.auth_refreshes += 1
        try:
            state.credentials = self.ctx.tokens.get(pixel_id, force_refresh=True)
        except Exception as exc:
            state.broken = Failure(exc.reason if isinstance(exc, SecretError) else "secret_unavailable")
            return False
        return True

    def hold(self, pixel_id: str, state: _Pixel, until: float, failure: Failure, *, remember: bool) -> None:
        """Hold the pixel until ``until`` (clock); ``remember``: Meta's estimate, kept across invocations."""
        if until > state.hold_until:
            state.hold_until, state.hold = until, failure
        if remember:
            wall_until = self.ctx.wall_clock() + (until - self.ctx.clock())
            self.ctx.holds.hold(pixel_id, Hold(wall_until, failure.reason, failure.code, failure.subcode))


class _Ledger:
    """Writes event outcomes into the report; in FIFO mode, remembers the groups they block."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.gate = FifoGate()  # fate's one FIFO rule: a failed event blocks the rest of its group

    def fail(self, items: list[Item], failure: Failure) -> None:
        failed, fifo = self.ctx.report.failed, self.ctx.fifo
        for item in items:
            failed.setdefault(item.outbound.message_id, failure)
            if fifo:
                self.gate.failed(item.outbound.group_id)

    def reject(self, items: list[Item], failure: Failure) -> None:
        for item in items:
            o = item.outbound
            self.ctx.report.rejected[(o.message_id, o.position)] = failure
            logger.warning(
                "Meta rejected an event",
                extra={"message_id": o.message_id, "event_position": o.position, "pixel_id": o.pixel_id,
                       "reason": failure.reason, "code": failure.code, "error_subcode": failure.subcode,
                       "fbtrace_id": failure.fbtrace_id},
            )  # fmt: skip
            if self.ctx.fifo and not self.ctx.quarantine:
                self.gate.failed(o.group_id)
