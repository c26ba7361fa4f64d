"""One SQS batch -> partial batch response. Parse, prepare, deliver, decide each record's fate; never raise.

Every record whose ``messageId`` is in the input ends exactly once: delivered (not listed) or failed
(listed in ``batchItemFailures``). Each event has its own fate (../shared/design/architecture.md, failure
policy): a record's valid events are sent whatever its other events do, and the record ends delivered when
every event was accepted by Meta or quarantined (sent to the DLQ by the relay, with its reason: fate.py,
quarantine.py). A record failing for a throttle or transient reason is parked (its visibility extended).

Order of work in :meth:`Relay.process`, each step bounded by the invocation's deadline:

1. prepare records one by one (``produce``), feeding the delivery engine while it sends; records not
   prepared before the preparation deadline fail (``deadline_preparing``);
2. deliver (delivery.py), which reports per message id (``failed``) and per event (``rejected``);
3. decide each record's fate (fate.decide) -- FIFO: a failing record fails the later records of its group;
4. quarantine (SendMessageBatch to ``DLQ_URL``); a record whose quarantine fails is failed instead;
5. park the failing records (ChangeMessageVisibilityBatch); a failed change costs nothing but the parking.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from capi_relay.delivery import Deliverer, DeliveryReport, Failure
from capi_relay.envelope import EnvelopeError, parse_body
from capi_relay.fate import Decision, Outcome, ParkInput, Rejected, decide, park_seconds
from capi_relay.model import Outbound, Prepared, Rejection
from capi_relay.normalize import clear_memo
from capi_relay.quarantine import DeadLetter, Source, batches, body_fields, dead_letter
from capi_relay.queues import QueueIO
from capi_relay.settings import Settings
from capi_relay.validate import REQUEST_OVERHEAD_BYTES, prepare_event

logger = logging.getLogger(__name__)

DEFAULT_REMAINING_MS = 60_000
MAX_VISIBILITY_BATCH = 10  # ChangeMessageVisibilityBatch
_NO_EVENT: dict[str, Any] = {}  # Outbound.event of a prepared event: ``encoded`` is what is sent


@dataclass(slots=True)
class _Record:
    message_id: str
    group_id: str | None
    raw: dict[str, Any] = field(default_factory=dict)  # the Lambda record (body, receipt handle, attributes)
    failure: Failure | None = None  # the record cannot be decided now: it goes back to SQS
    rejected: list[Rejected] = field(default_factory=list)  # permanent rejections (events, or the body)
    outbound: list[Outbound] = field(default_factory=list)
    pixel_id: str | None = None
    test_event_code: str | None = None
    receive_count: int | None = None  # ApproximateReceiveCount: correlates the retries of one message
    events: int = 1  # events in the message (1 for an unreadable body): what a dead-lettered record holds
    oldest_event_time: int | None = None
    decision: Decision | None = None


@dataclass(slots=True)
class BatchSummary:
    """What one invocation did; turned into metrics and one summary log line by the caller."""

    records: int = 0
    records_delivered: int = 0
    records_failed: int = 0
    events_prepared: int = 0
    events_rejected: Counter[str] = field(default_factory=Counter)  # local rejections by reason
    fields_dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (field, reason)
    notes: Counter[str] = field(default_factory=Counter)  # event_time_ms, event_time_clamped, fbc_derived
    match_keys: Counter[int] = field(default_factory=Counter)  # number of match keys -> events
    failures: Counter[str] = field(default_factory=Counter)  # record failure reason -> records
    quarantined: Counter[str] = field(default_factory=Counter)  # events (or bodies) sent to the DLQ, by reason
    records_quarantined: int = 0  # records delivered with at least one quarantined event (or body)
    records_parked: int = 0
    events_dead_lettered: int = 0  # events of failing records that SQS moves to the DLQ on their next receive
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    response: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def derived_event_id(message_id: str, position: int) -> str:
    """Deterministic event_id for an event without one: a redelivered message is deduplicated by Meta."""
    return f"sqs-{message_id}-{position}"


def _sent_seconds(attributes: Any, name: str = "SentTimestamp") -> int | None:
    """An SQS timestamp attribute (``SentTimestamp``, ``ApproximateFirstReceiveTimestamp``: epoch
    milliseconds, a string) in seconds."""
    raw = attributes.get(name) if isinstance(attributes, dict) else None
    try:
        return int(raw) // 1000 if raw is not None else None
    except (TypeError, ValueError):
        return None


def _is_fifo(records: list[Any]) -> bool:
    for record in records:
        if isinstance(record, dict):
            arn = record.get("eventSourceARN")
            if isinstance(arn, str) and arn.endswith(".fifo"):
                return True
            attrs = record.get("attributes")
            if isinstance(attrs, dict) and attrs.get("MessageGroupId"):
                return True
    return False


class Relay:
    def __init__(
        self,
        settings: Settings,
        deliverer: Deliverer,
        queues: QueueIO | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queues``: the relay's own SQS calls (quarantine, parking); None disables both (unit tests)."""
        self._settings = settings
        self._deliverer = deliverer
        self._queues = queues
        self._wall = wall_clock
        self._mono = monotonic

    @property
    def quarantine_enabled(self) -> bool:
        return self._queues is not None and self._settings.dlq_url is not None

    def process(self, event: Any, remaining_ms: Callable[[], int] | None = None) -> BatchSummary:
        """Never raises: an unexpected error fails every record of the batch (SQS retries them)."""
        clear_memo()  # the normalization memo holds raw values: never past one invocation
        try:
            return self._process(event, remaining_ms)
        except Exception:
            logger.exception("unexpected error; failing the whole batch so SQS retries it")
            summary = BatchSummary()
            ids: list[str] = []
            records = event.get("Records") if isinstance(event, dict) else None
            for raw in records if isinstance(records, list) else []:
                message_id = raw.get("messageId") if isinstance(raw, dict) else None
                if isinstance(message_id, str) and message_id and message_id not in ids:
                    ids.append(message_id)
            summary.records = summary.records_failed = len(ids)
            summary.failures["internal_error"] = len(ids)
            summary.response = {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}
            return summary

    # --------------------------------------------------------------------------------------- batch
    def _process(self, event: Any, remaining_ms: Callable[[], int] | None) -> BatchSummary:
        summary = BatchSummary()
        started = self._mono()
        started_wall = self._wall()
        budget_ms = remaining_ms() if remaining_ms is not None else DEFAULT_REMAINING_MS
        # The SQS calls after delivery (quarantine, parking) end by ``io_end``; delivery leaves them a reserve.
        io_end = started + budget_ms / 1000 - self._settings.deadline_margin_s
        sqs_calls = self._queues is not None and (self.quarantine_enabled or bool(self._settings.park_schedule_s))
        deadline = io_end - (self._settings.fate_reserve_s if sqs_calls else 0.0)
        prepare_until = deadline - self._deliverer.config.min_request_s

        raw_records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(raw_records, list):
            logger.error("not an SQS event: no Records list; nothing to do")
            summary.response = {"batchItemFailures": []}
            return summary
        fifo = _is_fifo(raw_records)
        quarantine = self.quarantine_enabled
        now = int(started_wall)

        records: list[_Record] = []
        produced = False

        def produce() -> Iterator[Outbound]:
            """Prepare records one by one, yielding their events: delivery sends full chunks while the rest
            is still being prepared. Records reached after ``prepare_until`` are not prepared: they fail."""
            nonlocal produced
            seen: set[str] = set()
            blocked_groups: set[str] = set()
            late = False
            for raw in raw_records:
                late = late or self._mono() >= prepare_until
                record = _unprepared(raw, "deadline_preparing") if late else self._prepare_record(raw, now, summary)
                if record is None:
                    continue
                if record.message_id in seen:
                    # Duplicate messageId inside one batch: one outcome per id; the first copy's events.
                    logger.warning("duplicate messageId in batch", extra={"message_id": record.message_id})
                    continue
                seen.add(record.message_id)
                records.append(record)
                if fifo and record.group_id is not None:
                    if record.group_id in blocked_groups and record.failure is None:
                        record.failure = Failure("fifo_group_blocked")
                        record.outbound = []
                    # Without a DLQ a rejected event fails its record: the group's later records wait.
                    if record.failure is not None or (record.rejected and not quarantine):
                        blocked_groups.add(record.group_id)
                if record.failure is None:
                    yield from record.outbound
            produced = True

        events = produce()
        summary.delivery = self._deliverer.deliver(events, deadline, fifo=fifo, quarantine=quarantine)
        if not produced:  # the deliverer must consume everything; never count unsent records as delivered
            unsent = {o.message_id for o in events}
            for record in records:
                if record.failure is None and record.message_id in unsent:
                    record.failure = Failure("internal_error")
        summary.records = len(records)

        by_id = {record.message_id: record for record in records}
        for (message_id, position), failure in summary.delivery.rejected.items():  # sorted per record below
            if message_id in by_id:
                by_id[message_id].rejected.append(Rejected(position, failure.reason))
        for record in records:
            if record.failure is None and record.message_id in summary.delivery.failed:
                record.failure = summary.delivery.failed[record.message_id]
            record.rejected.sort(key=lambda r: -1 if r.index is None else r.index)
            reason = record.failure.reason if record.failure is not None else None
            record.decision = decide(reason, record.rejected, quarantine=quarantine)
        if fifo:
            _block_fifo_groups(records)
        if quarantine:
            self._quarantine(records, fifo, io_end, summary)
            if fifo:
                _block_fifo_groups(records)
        self._park(records, started_wall, io_end)
        return self._account(records, summary)

    def _account(self, records: list[_Record], summary: BatchSummary) -> BatchSummary:
        failures: list[dict[str, str]] = []
        for record in records:
            decision = record.decision
            assert decision is not None
            if decision.outcome is not Outcome.FAILED:
                summary.records_delivered += 1
                if decision.outcome is Outcome.QUARANTINE:
                    summary.records_quarantined += 1
                logger.debug("record delivered", extra={"message_id": record.message_id,
                                                        "pixel_id": record.pixel_id,
                                                        "events": len(record.outbound),
                                                        "quarantined": len(decision.quarantine)})  # fmt: skip
                continue
            reason = decision.reason or "unknown"
            summary.records_failed += 1
            summary.failures[reason] += 1
            failures.append({"itemIdentifier": record.message_id})
            final = record.receive_count is not None and record.receive_count >= self._settings.max_receive_count
            if final:
                summary.events_dead_lettered += record.events
            failure = record.failure or Failure(reason)
            logger.warning(
                "record failed",
                extra={
                    "message_id": record.message_id,
                    "receive_count": record.receive_count,
                    "pixel_id": record.pixel_id,
                    "reason": reason,
                    "code": failure.code,
                    "error_subcode": failure.subcode,
                    "fbtrace_id": failure.fbtrace_id,
                    "dead_letter_next": final,
                },
            )
        summary.records_parked = sum(1 for r in records if r.decision is not None and r.decision.park)
        summary.response = {"batchItemFailures": failures}
        return summary

    # ---------------------------------------------------------------------------------- quarantine
    def _quarantine(self, records: list[_Record], fifo: bool, io_end: float, summary: BatchSummary) -> None:
        """Send each QUARANTINE record's rejected events (or body) to the DLQ; a record any of whose letters
        could not be stored fails instead (the redrive path: nothing is lost)."""
        assert self._queues is not None
        assert self._settings.dlq_url is not None
        dlq_url = self._settings.dlq_url
        fifo_dlq = dlq_url.endswith(".fifo")  # SQS requires a FIFO DLQ for a FIFO queue; a standard one refuses ids
        letters: list[DeadLetter] = []
        for record in records:
            if record.decision is not None and record.decision.outcome is Outcome.QUARANTINE:
                source = self._source(record)
                letters.extend(
                    dead_letter(source, r.index, r.reason, fifo=fifo_dlq) for r in record.decision.quarantine
                )
        failed: set[str] = set()
        for batch in batches(letters):
            if self._mono() + self._settings.sqs_timeout_s > io_end:
                failed.update(letter.source for letter in batch)
                continue
            for i in self._queues.send_dead_letters(dlq_url, batch):
                failed.add(batch[i].source)
        for record in records:
            decision = record.decision
            if decision is None or decision.outcome is not Outcome.QUARANTINE:
                continue
            if record.message_id in failed:
                record.decision = Decision(Outcome.FAILED, "quarantine_failed")
                continue
            for rejected in decision.quarantine:
                summary.quarantined[rejected.reason] += 1
                logger.warning(
                    "event quarantined",
                    extra={"message_id": record.message_id, "event_index": rejected.index,
                           "pixel_id": record.pixel_id, "reason": rejected.reason},
                )  # fmt: skip

    def _source(self, record: _Record) -> Source:
        body = record.raw.get("body")
        body = body if isinstance(body, str) else None
        events: tuple[Any, ...] | None = None
        if record.pixel_id is not None:
            try:  # the events as received (the body was readable once already: parsing it again is pure)
                events = tuple(parse_body(body, record.raw.get("messageAttributes")).events)
            except EnvelopeError:
                events = None
        return Source(record.message_id, body, record.group_id, record.pixel_id, record.test_event_code, events,
                      body_fields(body) if events is not None and len(events) > 1 else ())  # fmt: skip

    # ------------------------------------------------------------------------------------- parking
    def _park(self, records: list[_Record], started_wall: float, io_end: float) -> None:
        """Extend the visibility of records failing for a throttle or transient reason (when parking is on)."""
        settings = self._settings
        if self._queues is None or not settings.park_schedule_s:
            for record in records:
                if record.decision is not None and record.decision.park:
                    record.decision = Decision(record.decision.outcome, record.decision.reason, park=False)
            return
        by_queue: dict[str, list[tuple[_Record, int]]] = {}
        now = self._wall()
        for record in records:
            decision = record.decision
            if decision is None or not decision.park:
                continue
            arn, handle = record.raw.get("eventSourceARN"), record.raw.get("receiptHandle")
            count = record.receive_count or 1
            seconds = None
            if isinstance(arn, str) and isinstance(handle, str) and count < settings.max_receive_count:
                attrs = record.raw.get("attributes")
                first = _sent_seconds(attrs, "ApproximateFirstReceiveTimestamp")
                sent = _sent_seconds(attrs)
                seconds = park_seconds(ParkInput(
                    receive_count=count, now=now, invocation_started=started_wall,
                    first_receive=float(first) if first is not None else None,
                    sent=float(sent) if sent is not None else None, oldest_event_time=record.oldest_event_time,
                    retry_after_s=record.failure.retry_after_s if record.failure is not None else None,
                    schedule_s=settings.park_schedule_s, retention_s=settings.queue_retention_s,
                ))  # fmt: skip
            if seconds is None:  # last receive (SQS moves it to the DLQ next), or nothing to gain
                record.decision = Decision(decision.outcome, decision.reason, park=False)
                continue
            by_queue.setdefault(arn, []).append((record, seconds))  # type: ignore[arg-type]
        for arn, items in by_queue.items():
            for start in range(0, len(items), MAX_VISIBILITY_BATCH):
                batch = items[start : start + MAX_VISIBILITY_BATCH]
                ok = 0
                if self._mono() + settings.sqs_timeout_s <= io_end:
                    ok = self._queues.change_visibility(arn, [(str(r.raw["receiptHandle"]), s) for r, s in batch])
                for record, seconds in batch:
                    decision = record.decision
                    assert decision is not None
                    if ok < len(batch):  # which entry failed is not worth tracking: count none of the call
                        record.decision = Decision(decision.outcome, decision.reason, park=False)
                    else:
                        extra = {"message_id": record.message_id, "receive_count": record.receive_count,
                                 "reason": decision.reason, "visibility_s": seconds}  # fmt: skip
                        logger.info("record parked", extra=extra)

    # --------------------------------------------------------------------------------- preparation
    def _prepare_record(self, raw: Any, now: int, summary: BatchSummary) -> _Record | None:
        """Parse and prepare one record; any unexpected error fails this record only."""
        try:
            return self._prepare_record_unsafe(raw, now, summary)
        except Exception as exc:
            record = _unprepared(raw, "unprocessable_record")
            if record is not None:
                logger.warning("record could not be prepared", extra={"message_id": record.message_id,
                                                                      "error": type(exc).__name__})  # fmt: skip
            return record

    def _prepare_record_unsafe(self, raw: Any, now: int, summary: BatchSummary) -> _Record | None:
        record = _unprepared(raw, None)
        if record is None:
            return None
        message_id = record.message_id
        attrs = raw.get("attributes")
        try:
            message = parse_body(raw.get("body"), raw.get("messageAttributes"))
        except EnvelopeError as exc:
            record.rejected.append(Rejected(None, exc.reason))
            logger.warning("unreadable message body", extra={"message_id": message_id, "reason": exc.reason,
                                                             "detail": exc.detail})  # fmt: skip
            return record
        pixel_id = message.pixel_id or self._settings.pixel_id
        record.pixel_id = pixel_id
        record.test_event_code = test_event_code = message.test_event_code or self._settings.test_event_code
        record.events = len(message.events)
        if pixel_id is None:
            record.rejected.append(Rejected(None, "no_pixel_id"))
            return record
        default_time = _sent_seconds(attrs) or now
        normalization = self._settings.normalization
        max_event_bytes = self._settings.max_request_bytes - REQUEST_OVERHEAD_BYTES
        prepared: list[tuple[int, Prepared]] = []
        for position, raw_event in enumerate(message.events):
            # The derived id only where prepare_event can use it (no event_id, or null): most events carry one.
            has_id = isinstance(raw_event, dict) and raw_event.get("event_id") is not None
            result = prepare_event(
                raw_event,
                normalization,
                now,
                default_event_time=default_time,
                default_event_id=None if has_id else derived_event_id(message_id, position),
                max_event_bytes=max_event_bytes,
            )
            if isinstance(result, Rejection):
                summary.events_rejected[result.reason] += 1
                record.rejected.append(Rejected(position, result.reason))
                logger.warning(
                    "event rejected before sending",
                    extra={"message_id": message_id, "event_index": position, "reason": result.reason,
                           "detail": result.detail},
                )  # fmt: skip
                continue
            prepared.append((position, result))
            if result.drops and logger.isEnabledFor(logging.DEBUG):  # what `capi-relay check` shows as "dropped"
                logger.debug("values dropped", extra={"message_id": message_id, "event_index": position,
                             "dropped": [{"field": d.field, "reason": d.reason} for d in result.drops]})  # fmt: skip
            for drop in result.drops:
                summary.fields_dropped[(drop.field, drop.reason)] += 1
            for note in result.notes:
                summary.notes[note] += 1
        request_fields, group_id, outbound = message.request_fields, record.group_id, record.outbound
        match_keys = summary.match_keys
        for position, item in prepared:
            match_keys[item.match_keys] += 1
            event_time = item.event.get("event_time")
            if isinstance(event_time, int) and (
                record.oldest_event_time is None or event_time < record.oldest_event_time
            ):
                record.oldest_event_time = event_time
            # Only the encoded bytes travel on: delivery sends them, and a quarantined event is the one
            # received (re-read from the body). Dropping the dict here frees it while the batch is still
            # being prepared (peak RSS) and spares the end-of-invocation teardown.
            outbound.append(
                Outbound(message_id, position, pixel_id, test_event_code, _NO_EVENT, item.encoded, request_fields,
                         group_id)
            )  # fmt: skip
        summary.events_prepared += len(prepared)
        return record


def _unprepared(raw: Any, failure: str | None) -> _Record | None:
    """The record with only its SQS metadata (None when it has no usable messageId: it cannot be reported)."""
    if not isinstance(raw, dict):
        logger.error("SQS record is not an object; it cannot be reported individually")
        return None
    message_id = raw.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        logger.error("SQS record without messageId; it cannot be reported individually")
        return None
    attrs = raw.get("attributes")
    group_id = attrs.get("MessageGroupId") if isinstance(attrs, dict) else None
    record = _Record(message_id, group_id if isinstance(group_id, str) else None, raw)
    receives = attrs.get("ApproximateReceiveCount") if isinstance(attrs, dict) else None
    record.receive_count = int(receives) if isinstance(receives, str) and receives.isdigit() else None
    if failure is not None:
        record.failure = Failure(failure)
    return record


def _block_fifo_groups(records: list[_Record]) -> None:
    """FIFO: once a record of a group fails, every later record of that group fails too (delivered later
    records would be deleted ahead of it and break the group's order)."""
    failed_groups: set[str] = set()
    for record in records:
        decision = record.decision
        if record.group_id is None or decision is None:
            continue
        if record.group_id in failed_groups and decision.outcome is not Outcome.FAILED:
            record.decision = Decision(Outcome.FAILED, "fifo_group_blocked")
        elif decision.outcome is Outcome.FAILED:
            failed_groups.add(record.group_id)
