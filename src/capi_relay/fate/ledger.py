"""The fate of every (record, event) of one invocation, and the pure rules that decide it. No I/O, no clock.

A record ends in one of four ways (docs/failure-policy.md):

* **delivered** -- every event was accepted by Meta;
* **quarantined** -- every event was accepted or permanently rejected, and the rejected ones (or the
  unreadable body) are stored in the DLQ by the relay; once those sends succeed the record is settled;
* **dead-lettered** -- the record would fail on its last receive (``ApproximateReceiveCount`` >=
  ``MAX_RECEIVE_COUNT``) or its retention ends before its next receive: the relay itself stores every event
  not accepted (with its reason, resolved ``event_id`` / ``event_time`` and routing) in the DLQ;
* **failed** -- listed in ``batchItemFailures``: SQS receives it again. A record failing for a throttle or
  transient reason is also *parked*: its visibility is extended (:func:`park_seconds`).

:class:`Ledger` is the one place these fates live. It fails closed: a record is *settled* (left out of
``batchItemFailures``) only when it is proven -- every event accepted, or every letter stored. The batch
response is built from those proofs (:meth:`Ledger.unsettled`), never from the failures someone noticed.

Why a record that fails (and is not on its last chance) is never quarantined in the same invocation:
failing sends the whole record back to SQS, and on the next receive its rejected events are rejected again
-- quarantining them now as well would store each one twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Protocol

from capi_relay.settings import Settings, default_of

# Failure reasons worth parking: Meta is throttling or unavailable (or the token store is), so an immediate
# retry after the queue's visibility timeout is likely to fail again. Other failures (configuration, auth,
# request-level, deadline, FIFO order) return after the visibility timeout as before.
PARKED_PREFIXES = ("graph_throttled", "graph_transient")
PARKED_REASONS = frozenset({"secret_unavailable"})  # a read that failed or timed out
META_WINDOW_S = 7 * 86_400  # Meta rejects events older than 7 days
WINDOW_MARGIN_S = 3_600  # a parked event comes back at least this long before it is too old or expires
SQS_MAX_VISIBILITY_S = 43_200  # 12 hours, counted from the receive
RECEIVE_MARGIN_S = 300  # the receive happened before the invocation started (batching window, polling)
MAX_ENTRIES_PER_CALL = 10  # SendMessageBatch, ChangeMessageVisibilityBatch
FIFO_BLOCKED = "fifo_group_blocked"


class Outcome(Enum):
    DELIVERED = "delivered"
    QUARANTINE = "quarantine"
    DEAD_LETTER = "dead_letter"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LetterDue:
    """A letter due (named apart from ingest.model.Rejection, why an event cannot be sent): one part of a
    record that goes to the DLQ: an event (``index`` = its position in the message) or the
    whole body (``index`` None: unreadable, no pixel, or never read)."""

    index: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str | None = None  # why the record fails (FAILED) or was dead-lettered (DEAD_LETTER)
    quarantine: tuple[LetterDue, ...] = ()  # the letters to store (QUARANTINE, DEAD_LETTER)
    park: bool = False  # FAILED for a throttle/transient reason: extend the visibility

    @property
    def letters(self) -> bool:
        return self.outcome in (Outcome.QUARANTINE, Outcome.DEAD_LETTER)


_DELIVERED = Decision(Outcome.DELIVERED)  # immutable: one instance serves every delivered record


def is_parkable(reason: str) -> bool:
    return reason.startswith(PARKED_PREFIXES) or reason in PARKED_REASONS


def decide(
    failure: str | None,
    rejected: Sequence[LetterDue],
    *,
    quarantine: bool,
    last_chance: bool = False,
    unsettled: Sequence[LetterDue] = (),
) -> Decision:
    """The record's fate.

    ``failure``: why the record cannot be decided now (transient, throttle, auth, config, request-level,
    deadline, FIFO blocked, an internal error), or None. ``rejected``: its permanent rejections (local
    validation, Meta's 2804xxx, or the body itself). ``quarantine``: a DLQ is configured. ``last_chance``:
    the record would not come back (its last receive, or its retention ends first). ``unsettled``: its events
    neither accepted nor rejected, each with the reason it is undecided (what a dead letter says).
    """
    if failure is not None:
        if quarantine and last_chance:
            letters = sorted((*rejected, *unsettled), key=_letter_order)
            return Decision(Outcome.DEAD_LETTER, failure, tuple(letters) or (LetterDue(None, failure),))
        return Decision(Outcome.FAILED, failure, park=is_parkable(failure))
    if not rejected:
        return _DELIVERED
    if quarantine:
        return Decision(Outcome.QUARANTINE, quarantine=tuple(sorted(rejected, key=_letter_order)))
    return Decision(Outcome.FAILED, sorted(rejected, key=_letter_order)[0].reason)


def _letter_order(r: LetterDue) -> int:
    return -1 if r.index is None else r.index


def last_chance(
    *,
    receive_count: int | None,
    max_receive_count: int,
    sent: float | None,
    retention_s: int,
    now: float,
    next_receive_s: float,
) -> bool:
    """Would a failing record not be received again? Its last receive (SQS moves it to the DLQ when it comes
    back), or its retention ends before its next receive plus a margin (it would expire in neither queue).
    An unreadable receive count is not a last receive: SQS's redrive policy stays the backstop."""
    if receive_count is not None and receive_count >= max_receive_count:
        return True
    return sent is not None and sent + retention_s - now < next_receive_s + WINDOW_MARGIN_S


# --------------------------------------------------------------------------------------------- the ledger
class AcceptedEvent(Protocol):
    """An event Meta accepted, as the ledger reads it (``ingest.model.Outbound`` is one)."""

    @property
    def message_id(self) -> str: ...

    @property
    def position(self) -> int: ...


# The rejections and undecided reasons of a record that has none (the usual one): one shared, read-only empty
# mapping instead of two dicts built and freed per record; the first write gives the entry its own dict.
_NONE: Mapping[Any, str] = MappingProxyType({})


class _Entry:
    """One record's fate so far. A plain slotted class: one is built per record, and a dataclass's
    ``__init__`` with default factories costs about twice this one."""

    __slots__ = ("accepted", "decision", "failure", "positions", "rejected", "retry_after_s", "settled", "undecided")

    def __init__(self) -> None:
        self.positions: int | None = None  # events expected (None: the body was never read into events)
        self.accepted: set[int] = set()
        self.rejected: Mapping[int | None, str] = _NONE  # permanent: goes to the DLQ
        self.undecided: Mapping[int, str] = _NONE  # why an event is neither accepted nor rejected
        self.failure: str | None = None  # the record cannot be decided now
        self.retry_after_s: float | None = None
        self.decision: Decision | None = None
        self.settled = False


def _all_accepted(entry: _Entry) -> bool:
    """Every event of the record accepted, none rejected, no failure: the usual record, delivered. A one-event
    record (the usual one) is one set lookup, not a range and a superset test (~70 ns less)."""
    positions = entry.positions
    if entry.failure is not None or entry.rejected or positions is None:
        return False
    return 0 in entry.accepted if positions == 1 else entry.accepted.issuperset(range(positions))


def _first_reason(entry: _Entry, which: str, position: int | None, reason: str) -> bool:
    """Note ``reason`` for ``position`` in the entry's ``rejected`` or ``undecided`` (the first reason wins: True
    when it is noted); the shared read-only empty mapping is replaced by the entry's own dict on the first write."""
    reasons = getattr(entry, which)
    if not isinstance(reasons, dict):
        reasons = {}
        setattr(entry, which, reasons)
    if position in reasons:
        return False
    reasons[position] = reason
    return True


class Ledger:
    """(record, event) -> fate for one invocation, in input order. Fails closed: :meth:`unsettled` is every
    input messageId not proven settled, whatever was (or was not) written here."""

    def __init__(self, message_ids: Iterable[str] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        # Across the records, for the checks of every record before delivery without reading each entry:
        self._failing: set[str] = set()  # the messageIds whose failure is set
        self._rejections = 0  # the (record, event) rejections noted
        for message_id in message_ids:
            self.add(message_id)

    def add(self, message_id: str) -> bool:
        """Register an input record; False for a duplicate messageId (one outcome per id)."""
        if message_id in self._entries:
            return False
        self._entries[message_id] = _Entry()
        return True

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ what happened
    def expect(self, message_id: str, events: int) -> None:
        self._entries[message_id].positions = events

    def accept(self, message_id: str, position: int) -> None:
        entry = self._entries.get(message_id)
        if entry is not None:
            entry.accepted.add(position)

    def accept_all(self, accepted: Iterable[tuple[str, int]]) -> None:
        """:meth:`accept` for each (message_id, position) of a plain set of pairs (a deliverer other than the
        engine); the engine's report goes to :meth:`accept_events`, the hot path."""
        for message_id, position in accepted:
            self.accept(message_id, position)

    def accept_events(self, events: Iterable[AcceptedEvent]) -> None:
        """:meth:`accept` for each event (its ``message_id`` and ``position``): the engine's accepted events as
        they are, without a (message_id, position) pair built per event."""
        entries = self._entries
        for event in events:
            entry = entries.get(event.message_id)
            if entry is not None:
                entry.accepted.add(event.position)

    def reject(self, message_id: str, position: int | None, reason: str) -> None:
        entry = self._entries.get(message_id)
        if entry is not None and _first_reason(entry, "rejected", position, reason):
            self._rejections += 1

    def undecided(self, message_id: str, position: int, reason: str) -> None:
        entry = self._entries.get(message_id)
        if entry is not None:
            _first_reason(entry, "undecided", position, reason)

    def fail(self, message_id: str, reason: str, retry_after_s: float | None = None) -> None:
        """The record cannot be decided now; the first reason wins."""
        entry = self._entries.get(message_id)
        if entry is not None and entry.failure is None:
            self._failed(message_id, entry, reason)
            entry.retry_after_s = retry_after_s

    def _failed(self, message_id: str, entry: _Entry, reason: str) -> None:
        """The one write of a record's failure (its first): the entry and the set of failing records."""
        entry.failure = reason
        self._failing.add(message_id)

    def failure(self, message_id: str) -> str | None:
        return self._entries[message_id].failure

    def failing(self) -> AbstractSet[str]:
        """The messageIds of the records failing so far, as a live read-only view (a record failed later is in it
        too): ``m in ledger.failing()`` is ``ledger.failure(m) is not None`` for a check of every record."""
        return self._failing

    def rejections(self) -> int:
        """The rejections noted so far: ``sum(rejected_count(m) for m in ledger)`` without reading each entry."""
        return self._rejections

    def retry_after_s(self, message_id: str) -> float | None:
        return self._entries[message_id].retry_after_s

    def rejected_count(self, message_id: str) -> int:
        """``len(rejected(message_id))`` without building the list."""
        return len(self._entries[message_id].rejected)

    def rejected(self, message_id: str) -> list[LetterDue]:
        rejected = self._entries[message_id].rejected
        if not rejected:  # the usual record
            return []
        return sorted((LetterDue(i, r) for i, r in self._entries[message_id].rejected.items()), key=_letter_order)

    # ------------------------------------------------------------------ decisions
    def decide(self, message_id: str, *, quarantine: bool, last_chance: bool) -> Decision:
        """Decide the record from its events. An event neither accepted nor rejected makes the record fail
        (``unsettled`` when nobody said why): nothing is acknowledged without proof."""
        entry = self._entries[message_id]
        unsettled: list[LetterDue] = []
        if entry.positions is not None:
            for position in range(entry.positions):
                if position not in entry.accepted and position not in entry.rejected:
                    unsettled.append(LetterDue(position, entry.undecided.get(position, entry.failure or "unsettled")))
        if unsettled and entry.failure is None:
            self._failed(message_id, entry, unsettled[0].reason)
        if entry.positions is None and not entry.rejected and entry.failure is None:
            self._failed(message_id, entry, "unsettled")  # never read, never rejected: not proven
        failure = entry.failure
        if failure is not None and entry.positions is None:
            unsettled = [LetterDue(None, failure)] if None not in entry.rejected else []
        if failure is None and not entry.rejected:  # every event accepted: the usual record
            decision = _DELIVERED
        else:
            decision = decide(failure, self.rejected(message_id), quarantine=quarantine, last_chance=last_chance,
                              unsettled=unsettled)  # fmt: skip
        entry.decision = decision
        entry.settled = decision.outcome is Outcome.DELIVERED
        return decision

    def delivered(self, message_id: str) -> bool:
        """Decide the usual record at once: every event accepted, none rejected, no failure. It is delivered
        whatever its last chance (the same decision :meth:`decide` takes); False: nothing is written."""
        entry = self._entries[message_id]
        if not _all_accepted(entry):
            return False
        entry.decision = _DELIVERED
        entry.settled = True
        return True

    def decide_delivered(self) -> list[tuple[int, str]]:
        """:meth:`delivered` for every record not decided yet, in one pass: (input position 0, 1, ..., messageId)
        of the records it did not decide, for :meth:`decide` -- none in a healthy batch."""
        rest: list[tuple[int, str]] = []
        for index, (message_id, entry) in enumerate(self._entries.items()):
            if entry.decision is not None:
                continue
            if _all_accepted(entry):
                entry.decision = _DELIVERED
                entry.settled = True
            else:
                rest.append((index, message_id))
        return rest

    def decision(self, message_id: str) -> Decision | None:
        return self._entries[message_id].decision

    def block(self, message_id: str) -> None:
        """FIFO: an earlier record of the group failed; this one fails too (never acknowledged)."""
        entry = self._entries[message_id]
        if not entry.failure:
            self._failed(message_id, entry, FIFO_BLOCKED)
        entry.decision = Decision(Outcome.FAILED, FIFO_BLOCKED)
        entry.settled = False

    def stored(self, message_id: str) -> None:
        """Every letter of the record is in the DLQ: it is settled."""
        entry = self._entries[message_id]
        if entry.decision is not None and entry.decision.letters:
            entry.settled = True

    def not_stored(self, message_id: str) -> None:
        """A letter of the record could not be stored: it fails instead (nothing is lost)."""
        entry = self._entries[message_id]
        entry.decision = Decision(Outcome.FAILED, "quarantine_failed")
        entry.settled = False

    def unpark(self, message_id: str) -> None:
        entry = self._entries[message_id]
        if entry.decision is not None and entry.decision.park:
            d = entry.decision
            entry.decision = Decision(d.outcome, d.reason, d.quarantine, park=False)

    def settled(self, message_id: str) -> bool:
        return self._entries[message_id].settled

    # ------------------------------------------------------------------ the response
    def unsettled(self) -> list[str]:
        """Every registered messageId not proven settled, in input order: the batch response."""
        return [message_id for message_id, entry in self._entries.items() if not entry.settled]

    def outcomes(self, *, delivered: bool) -> list[tuple[str, Decision | None, bool]]:
        """(messageId, decision, settled) of every record in input order -- without the plainly delivered ones
        (settled, every event accepted, nothing rejected) unless ``delivered``: what the response logs and counts
        beyond ``len(ledger) - len(unsettled())`` records settled."""
        return [(message_id, entry.decision, entry.settled) for message_id, entry in self._entries.items()
                if delivered or entry.decision is not _DELIVERED or not entry.settled]  # fmt: skip


# ------------------------------------------------------------------------------------------- FIFO order
class FifoGate:
    """FIFO order, the one rule: once a record (or an event) of a message group fails, every later record of
    that group fails too -- acknowledged later records would be deleted ahead of it."""

    def __init__(self) -> None:
        self._failed: set[str] = set()

    def failed(self, group_id: str | None) -> None:
        if group_id is not None:
            self._failed.add(group_id)

    def blocks(self, group_id: str | None) -> bool:
        return group_id is not None and group_id in self._failed


def block_fifo_groups(ledger: Ledger, records: Sequence[tuple[str, str | None]]) -> None:
    """Apply :class:`FifoGate` to decided records (messageId, group) in input order."""
    gate = FifoGate()
    for message_id, group_id in records:
        decision = ledger.decision(message_id)
        if group_id is None or decision is None:
            continue
        if gate.blocks(group_id) and decision.outcome is not Outcome.FAILED:
            ledger.block(message_id)
        elif decision.outcome is Outcome.FAILED:
            gate.failed(group_id)


# --------------------------------------------------------------------------------------- fate I/O budget
def fate_io_reserve_s(*, park_calls: int, letter_calls: int, concurrency: int, call_timeout_s: float) -> float:
    """Time to keep back after delivery for the SQS calls that persist fates: quarantine/dead-letter sends
    first, then the visibility changes, each phase in waves of ``concurrency`` calls of at most
    ``call_timeout_s`` each (every call is bounded by the client's timeouts; no retries)."""
    waves = math.ceil(letter_calls / max(1, concurrency)) + math.ceil(park_calls / max(1, concurrency))
    return waves * call_timeout_s


def calls_for(entries: int) -> int:
    """SQS batch calls (<= 10 entries each) for ``entries`` entries."""
    return math.ceil(entries / MAX_ENTRIES_PER_CALL)


# --------------------------------------------------------------------------------------------- parking
@dataclass(frozen=True, slots=True)
class ParkInput:
    """What :func:`park_seconds` needs about one failing record (times in Unix seconds)."""

    receive_count: int
    now: float
    invocation_started: float  # the receive happened shortly before
    first_receive: float | None = None  # ApproximateFirstReceiveTimestamp
    sent: float | None = None  # SentTimestamp
    oldest_event_time: int | None = None  # the earliest event_time among the record's events
    retry_after_s: float | None = None  # Meta's estimate
    schedule_s: tuple[int, ...] = field(default=default_of(Settings, "park_schedule_s"))
    retention_s: int = default_of(Settings, "queue_retention_s")


def park_seconds(p: ParkInput) -> int | None:
    """The visibility timeout to set for a failing record, or None to leave it to the queue's timeout.

    Meta's estimate when it gave one, never shorter than the schedule's step for this receive (repeated
    short estimates must not use up ``maxReceiveCount``); else the schedule step. Capped at SQS's 12 hours
    counted from this receive, at what keeps the oldest event inside Meta's 7-day window (minus a margin),
    and at the message's retention. A result of 0 or less means parking would be useless: None.
    """
    step = p.schedule_s[min(max(p.receive_count, 1), len(p.schedule_s)) - 1]
    wanted = max(float(step), p.retry_after_s or 0.0)
    # This receive happened before the invocation started; for the first receive SQS says when.
    received = p.invocation_started - RECEIVE_MARGIN_S
    if p.receive_count <= 1 and p.first_receive is not None:
        received = min(received, p.first_receive)
    caps = [SQS_MAX_VISIBILITY_S - (p.now - received)]
    if p.oldest_event_time is not None:
        caps.append(p.oldest_event_time + META_WINDOW_S - WINDOW_MARGIN_S - p.now)
    if p.sent is not None:
        caps.append(p.sent + p.retention_s - WINDOW_MARGIN_S - p.now)
    seconds = int(min(wanted, *caps))
    return seconds if seconds > 0 else None
