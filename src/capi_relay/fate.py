"""The fate of one SQS record, decided from what happened to its events. Pure: no I/O, no clock.

A record ends in one of three ways (../shared/design/architecture.md, failure policy):

* **delivered** -- every event was accepted by Meta (or the record has no event left to send);
* **quarantined** -- every event was accepted or permanently rejected, and the rejected ones (or the
  unreadable body) are sent to the DLQ by the relay; once those sends succeed the record is delivered;
* **failed** -- listed in ``batchItemFailures``: SQS receives it again, and moves it to the DLQ after
  ``maxReceiveCount`` receives. A record failing for a throttle or transient reason is also *parked*:
  its visibility is extended (:func:`park_seconds`) so that an outage of hours does not use up the receives.

Why a record that fails is never quarantined in the same invocation: failing sends the whole record back
to SQS, and on the next receive its rejected events are rejected again (locally: the same rules; by Meta:
the search finds them again) -- quarantining them now as well would put each one in the DLQ twice. So a
record's rejected events are quarantined only once the record is otherwise finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

# Failure reasons worth parking: Meta is throttling or unavailable (or the token store is), so an immediate
# retry after the queue's visibility timeout is likely to fail again. Other failures (configuration, auth,
# request-level, deadline, FIFO order) return after the visibility timeout as before.
PARKED_PREFIXES = ("graph_throttled", "graph_transient")
PARKED_REASONS = frozenset({"secret_unavailable"})  # a read that failed or timed out
META_WINDOW_S = 7 * 86_400  # Meta rejects events older than 7 days
WINDOW_MARGIN_S = 3_600  # a parked event comes back at least this long before it is too old
SQS_MAX_VISIBILITY_S = 43_200  # 12 hours, counted from the receive
RECEIVE_MARGIN_S = 300  # the receive happened before the invocation started (batching window, polling)


class Outcome(Enum):
    DELIVERED = "delivered"
    QUARANTINE = "quarantine"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Rejected:
    """One permanently rejected part of a record: an event (``index`` = its position in the message) or the
    whole body (``index`` None: unreadable, no pixel)."""

    index: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str | None = None  # why the record fails (FAILED)
    quarantine: tuple[Rejected, ...] = ()  # what goes to the DLQ (QUARANTINE)
    park: bool = False  # FAILED for a throttle/transient reason: extend the visibility


def is_parkable(reason: str) -> bool:
    return reason.startswith(PARKED_PREFIXES) or reason in PARKED_REASONS


def decide(failure: str | None, rejected: Sequence[Rejected], *, quarantine: bool) -> Decision:
    """The record's fate.

    ``failure``: why the record cannot be decided now (transient, throttle, auth, config, request-level,
    deadline, FIFO blocked, an internal error), or None. ``rejected``: its permanent rejections (local
    validation, Meta's 2804xxx, or the body itself). ``quarantine``: a DLQ is configured.
    """
    if failure is not None:
        return Decision(Outcome.FAILED, failure, park=is_parkable(failure))
    if not rejected:
        return Decision(Outcome.DELIVERED)
    if quarantine:
        return Decision(Outcome.QUARANTINE, quarantine=tuple(rejected))
    return Decision(Outcome.FAILED, rejected[0].reason)


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
    schedule_s: tuple[int, ...] = field(default=(300, 1800, 7200, 21600, 43200))
    retention_s: int = 345_600


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
