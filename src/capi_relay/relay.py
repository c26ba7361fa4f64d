"""One SQS batch -> partial batch response: a straight sequence, each step bounded by the deadline; never raises.

    parse -> prepare -> deliver -> decide -> persist fates -> respond

1. **parse** every record (contained per record): messageId, SQS attributes, the body into events and
   routing, and each event's identity, fixed at first sight (``validate.resolve_identity``: the producer's
   ``event_id`` or one derived from the pixel and the event's content; a defaulted ``event_time``);
2. **prepare** each readable record's events (normalize, hash, validate, encode) until the preparation
   deadline; a record not reached fails (``deadline_preparing``); an error fails that record only;
3. **deliver** the prepared events (deliver/engine.py), leaving a reserve for the fate I/O the batch needs
   (:func:`fate.fate_io_reserve_s`: scaled to the records, the letters and the calls' concurrency);
4. **decide** every record from its events in the :class:`fate.Ledger` (delivered, quarantined,
   dead-lettered by the relay on its last chance, failed and maybe parked); FIFO order by one rule
   (:class:`fate.FifoGate`);
5. **persist fates**: store the letters (SendMessageBatch to ``DLQ_URL``), then park the failing records
   (ChangeMessageVisibilityBatch), the calls run concurrently (``SQS_CONCURRENCY``) and bounded;
6. **respond** from the ledger: every input messageId not *proven* settled is listed in
   ``batchItemFailures`` -- including records never reached and any record an unexpected error touched.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from capi_relay.aws.sqs import QueueIO
from capi_relay.deliver.engine import Accepted, Deliverer, DeliveryReport, Failure
from capi_relay.fate.ledger import (
    FIFO_BLOCKED,
    FifoGate,
    Ledger,
    Outcome,
    ParkInput,
    block_fifo_groups,
    calls_for,
    fate_io_reserve_s,
    is_parkable,
    last_chance,
    park_seconds,
)
from capi_relay.fate.letters import DeadLetter, Source, batches, dead_letter
from capi_relay.ingest.envelope import EnvelopeError, parse_body
from capi_relay.ingest.model import Identity, InboundMessage, Outbound, Prepared, Rejection
from capi_relay.prepare.events import REQUEST_OVERHEAD_BYTES, derived_event_id, prepare_event, resolve_identity
from capi_relay.prepare.normalize import clear_memo
from capi_relay.settings import Settings

__all__ = ["BatchSummary", "Relay", "derived_event_id"]

logger = logging.getLogger(__name__)

DEFAULT_REMAINING_MS = 60_000
MAX_VISIBILITY_BATCH = 10  # ChangeMessageVisibilityBatch
IO_GRACE_S = 0.2  # a fate call started in time is waited for this much past io_end before it counts as failed
T = TypeVar("T")


class _Record:
    """One input record and what the relay read from it (its fate lives in the ledger). A plain slotted class:
    one is built per record, and a dataclass's ``__init__`` (keyword defaults, a default factory) costs more."""

    __slots__ = ("events_released", "failure", "group_id", "identities", "message", "message_id", "oldest_event_time",
                 "outbound", "park_s", "pixel_id", "raw", "receive_count", "sent", "test_event_code")  # fmt: skip

    def __init__(self, message_id: str, raw: dict[str, Any]) -> None:
        self.message_id = message_id
        self.raw = raw
        self.group_id: str | None = None
        self.receive_count: int | None = None  # ApproximateReceiveCount (None: absent or unreadable)
        self.sent: int | None = None  # SentTimestamp, seconds
        self.message: InboundMessage | None = None
        self.events_released = False  # message.events freed after preparation: a letter parses the body again
        self.pixel_id: str | None = None
        self.test_event_code: str | None = None
        self.identities: tuple[Identity, ...] = ()
        self.outbound: Sequence[Outbound] = ()  # its prepared events (a list once prepared)
        self.oldest_event_time: int | None = None
        self.failure: Failure | None = None  # the delivery failure, for logs
        self.park_s: int | None = None  # the visibility to set if it fails and is parked


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
    records_quarantined: int = 0  # records settled with at least one letter (quarantined or dead-lettered)
    records_parked: int = 0
    # Events of records on their last chance: dead-lettered by the relay, or (their letters failing, or
    # no DLQ_URL) moved by SQS's redrive policy on their next receive.
    events_dead_lettered: int = 0
    records_dead_lettered: int = 0  # records the relay dead-lettered itself (last receive, retention ending)
    fate_reserve_s: float = 0.0  # time kept back after delivery for letters and parking
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    response: dict[str, list[dict[str, str]]] = field(default_factory=dict)


# An attribute is read when it is 1 to 16 (a count: 9) ASCII digits. ``isascii() and isdigit()`` is that test
# without a regex: among ASCII characters only 0-9 are digits ("²".isdigit() is True and int("²") raises).
def _seconds(attributes: dict[str, Any], name: str) -> int | None:
    """An SQS timestamp attribute (epoch milliseconds, a string) in seconds; None when absent or unreadable."""
    raw = attributes.get(name)
    if isinstance(raw, str) and len(raw) <= 16 and raw.isascii() and raw.isdigit():
        return int(raw) // 1000
    return None


def _first_receive(raw: dict[str, Any]) -> int | None:
    """ApproximateFirstReceiveTimestamp in seconds: read only for a record that is parked."""
    attrs = raw.get("attributes")
    return _seconds(attrs if isinstance(attrs, dict) else {}, "ApproximateFirstReceiveTimestamp")


def _receive_count(attributes: dict[str, Any]) -> int | None:
    raw = attributes.get("ApproximateReceiveCount")
    if isinstance(raw, str) and len(raw) <= 9 and raw.isascii() and raw.isdigit():
        return int(raw)
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


def _input_ids(event: Any) -> list[str]:
    """Every reportable messageId of the event, in order (what fails when nothing is proven)."""
    records = event.get("Records") if isinstance(event, dict) else None
    ids: list[str] = []
    for raw in records if isinstance(records, list) else []:
        message_id = raw.get("messageId") if isinstance(raw, dict) else None
        if isinstance(message_id, str) and message_id:
            ids.append(message_id)
    return ids


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
        """``queues``: the relay's own SQS calls (letters, parking); None disables both (unit tests)."""
        self._settings = settings
        self._deliverer = deliverer
        self._queues = queues
        self._wall = wall_clock
        self._mono = monotonic
        self._io = (
            ThreadPoolExecutor(max_workers=settings.sqs_concurrency, thread_name_prefix="sqs")
            if queues is not None
            else None
        )
        # What every event's preparation is given, read once.
        self._normalization = settings.normalization
        self._max_event_bytes = settings.max_request_bytes - REQUEST_OVERHEAD_BYTES

    @property
    def quarantine_enabled(self) -> bool:
        return self._queues is not None and self._settings.dlq_url is not None

    @property
    def parking_enabled(self) -> bool:
        return self._queues is not None and bool(self._settings.park_schedule_s)

    # ------------------------------------------------------------------------------------ the sequence
    def process(self, event: Any, remaining_ms: Callable[[], int] | None = None) -> BatchSummary:
        """Never raises. The response is built from proofs: an unexpected error anywhere fails every record
        not proven settled by then (SQS receives them again)."""
        collecting = gc.isenabled()
        # No cyclic garbage collection while the batch is processed: what a batch builds (parsed bodies, records,
        # prepared events, the ledger) lives until its end and is freed by reference counting, so the collector's
        # young-generation passes (about one per 2,000 objects kept) would traverse it again and again and free
        # nothing -- ~10 % of the relay's CPU outside normalization for 10,000 records (bench/ab_relay.py). Any
        # cycle made meanwhile is collected by the first automatic pass after the batch.
        gc.disable()
        try:
            return self._process(event, remaining_ms)
        finally:
            if collecting:
                gc.enable()

    def _process(self, event: Any, remaining_ms: Callable[[], int] | None) -> BatchSummary:
        clear_memo()  # the normalization memo holds raw values: never past one invocation
        summary = BatchSummary()
        ledger = Ledger()
        records: list[_Record] = []
        try:
            self._run(event, remaining_ms, summary, ledger, records)
            every_id_read = True  # _run reads every record it is given, or finds no Records list: none to add
        except Exception:
            every_id_read = False
            logger.exception("unexpected error; failing every record not proven settled so SQS retries it")
            for message_id in ledger:
                if not ledger.settled(message_id):
                    ledger.fail(message_id, "internal_error")
        finally:
            clear_memo()
        for message_id in () if every_id_read else _input_ids(event):
            if ledger.add(message_id):  # never registered (the error came first): not proven
                ledger.fail(message_id, "internal_error")
        self._respond(records, ledger, summary)
        return summary

    def _run(self, event: Any, remaining_ms: Callable[[], int] | None, summary: BatchSummary, ledger: Ledger,
             records: list[_Record]) -> None:  # fmt: skip
        started, started_wall = self._mono(), self._wall()
        budget_ms = remaining_ms() if remaining_ms is not None else DEFAULT_REMAINING_MS
        io_end = started + budget_ms / 1000 - self._settings.deadline_margin_s  # the fate calls end by then
        raw_records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(raw_records, list):
            logger.error("not an SQS event: no Records list; nothing to do")
            return
        fifo, now = _is_fifo(raw_records), int(started_wall)
        self._parse(raw_records, now, ledger, records)  # 1
        summary.records = len(records)
        self._prepare_all(records, now, summary, ledger, io_end)  # 2
        self._deliver(records, ledger, summary, fifo=fifo, now=now, io_end=io_end)  # 3
        undelivered = self._decide(records, ledger, started_wall)  # 4
        if fifo:
            block_fifo_groups(ledger, [(r.message_id, r.group_id) for r in records])
        # 5: a delivered record has no letter to store and nothing to park (a FIFO block only fails a record)
        if self.quarantine_enabled:
            self._store_letters(undelivered, ledger, fifo, io_end, summary)
            if fifo:
                block_fifo_groups(ledger, [(r.message_id, r.group_id) for r in records])
        self._park(undelivered, ledger, io_end)

    # ------------------------------------------------------------------------------------- 1. parse
    def _parse(self, raw_records: list[Any], now: int, ledger: Ledger, records: list[_Record]) -> None:
        """Every record read (in order) into ``records``; one that cannot be reported individually is skipped."""
        for raw in raw_records:
            record = self._read(raw, now, ledger)
            if record is not None:
                records.append(record)

    def _read(self, raw: Any, now: int, ledger: Ledger) -> _Record | None:
        """One record's metadata, body and identities. Any error is contained: the record fails."""
        if not isinstance(raw, dict):
            logger.error("SQS record is not an object; it cannot be reported individually")
            return None
        message_id = raw.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            logger.error("SQS record without messageId; it cannot be reported individually")
            return None
        if not ledger.add(message_id):
            logger.warning("duplicate messageId in batch", extra={"message_id": message_id})
            return None
        record = _Record(message_id, raw)
        try:
            self._read_unsafe(record, now, ledger)
        except Exception as exc:
            logger.warning("record could not be read", extra={"message_id": message_id, "error": type(exc).__name__})
            ledger.fail(message_id, "unprocessable_record")
        return record

    def _read_unsafe(self, record: _Record, now: int, ledger: Ledger) -> None:
        raw, message_id = record.raw, record.message_id
        attrs = raw.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        group_id = attrs.get("MessageGroupId")
        record.group_id = group_id if isinstance(group_id, str) else None
        record.receive_count = _receive_count(attrs)
        record.sent = _seconds(attrs, "SentTimestamp")
        try:
            message = parse_body(raw.get("body"), raw.get("messageAttributes"))
        except EnvelopeError as exc:
            ledger.reject(message_id, None, exc.reason)
            logger.warning("unreadable message body", extra={"message_id": message_id, "reason": exc.reason,
                                                             "detail": exc.detail})  # fmt: skip
            return
        record.message = message
        record.pixel_id = pixel_id = message.pixel_id or self._settings.pixel_id
        record.test_event_code = message.test_event_code or self._settings.test_event_code
        if pixel_id is None:
            ledger.reject(message_id, None, "no_pixel_id")
            return
        default_time = record.sent or now  # fixed at first sight: every letter carries it from then on
        events = message.events
        record.identities = (
            (resolve_identity(pixel_id, events[0], default_time),)  # the one-event record: no list to build
            if len(events) == 1
            else tuple([resolve_identity(pixel_id, event, default_time) for event in events])
        )
        ledger.expect(message_id, len(events))

    # ----------------------------------------------------------------------------------- 2. prepare
    def _prepare_all(self, records: list[_Record], now: int, summary: BatchSummary, ledger: Ledger,
                     io_end: float) -> None:  # fmt: skip
        """Prepare every readable record until the preparation deadline; a record not reached by then fails. The
        deadline keeps back the fate reserve (one letter per record assumed until the rejections are known) and
        the shortest request. An unexpected error preparing a record fails that record only (nothing of it is
        sent)."""
        prepare_until = io_end - self._reserve(len(records), len(records)) - self._deliverer.config.min_request_s
        mono, late, failing = self._mono, False, ledger.failing()
        match_keys: list[int] = []  # counted into the summary at once: a Counter's += costs ~100 ns an event
        try:
            for record in records:
                if record.message is None or not record.identities or record.message_id in failing:
                    continue
                late = late or mono() >= prepare_until
                if late:
                    ledger.fail(record.message_id, "deadline_preparing")
                    continue
                try:
                    summary.events_prepared += self._prepare(record, now, summary, ledger, match_keys)
                except Exception as exc:
                    record.outbound = ()
                    logger.warning("record could not be prepared", extra={"message_id": record.message_id,
                                                                          "error": type(exc).__name__})  # fmt: skip
                    ledger.fail(record.message_id, "unprocessable_record")
        finally:
            summary.match_keys.update(match_keys)

    def _prepare(self, record: _Record, now: int, summary: BatchSummary, ledger: Ledger,
                 match_keys: list[int]) -> int:  # fmt: skip
        """Prepare one record's events (their number of match keys appended to ``match_keys``); the number
        prepared. May raise: the caller fails the record."""
        message, message_id, pixel_id = record.message, record.message_id, record.pixel_id
        assert message is not None
        assert pixel_id is not None
        normalization, max_event_bytes = self._normalization, self._max_event_bytes
        outbound: list[Outbound] = []
        identities, test_event_code, request_fields, group_id = (
            record.identities, record.test_event_code, message.request_fields, record.group_id)  # fmt: skip
        oldest = record.oldest_event_time
        for position, raw_event in enumerate(message.events):
            identity = identities[position]
            result = prepare_event(
                raw_event,
                normalization,
                now,
                default_event_time=identity.default_event_time,
                default_event_id=identity.event_id if identity.derived else None,
                max_event_bytes=max_event_bytes,
            )
            if isinstance(result, Rejection):
                self._rejected(message_id, position, result, summary, ledger)
                continue
            if result.drops or result.notes:
                self._noted(message_id, position, result, summary)
            match_keys.append(result.match_keys)
            event_time = result.event.get("event_time")
            if isinstance(event_time, int) and (oldest is None or event_time < oldest):
                record.oldest_event_time = oldest = event_time
            # Only the encoded bytes travel on (a letter is built from the event as received).
            outbound.append(Outbound(message_id, position, pixel_id, test_event_code, result.encoded,
                                     request_fields, group_id))  # fmt: skip
        record.outbound = outbound
        # The parsed events are read again only for a letter (rare): freed now, while they are in the CPU's cache,
        # not all at the batch's end (~27 MB for 10,000 records); _source parses the body again, the same events.
        message.events = []
        record.events_released = True
        return len(outbound)

    @staticmethod
    def _rejected(message_id: str, position: int, rejection: Rejection, summary: BatchSummary,
                  ledger: Ledger) -> None:  # fmt: skip
        summary.events_rejected[rejection.reason] += 1
        ledger.reject(message_id, position, rejection.reason)
        logger.warning(
            "event rejected before sending",
            extra={"message_id": message_id, "event_index": position, "reason": rejection.reason,
                   "detail": rejection.detail},
        )  # fmt: skip

    @staticmethod
    def _noted(message_id: str, position: int, result: Prepared, summary: BatchSummary) -> None:
        """Count (and at DEBUG log) the values dropped from a prepared event, and its notes."""
        if result.drops:
            if logger.isEnabledFor(logging.DEBUG):  # what `capi-relay check` shows as "dropped"
                dropped = [{"field": d.field, "reason": d.reason} for d in result.drops]
                extra = {"message_id": message_id, "event_index": position, "dropped": dropped}
                logger.debug("values dropped", extra=extra)
            for drop in result.drops:
                summary.fields_dropped[(drop.field, drop.reason)] += 1
        for note in result.notes:
            summary.notes[note] += 1

    # ----------------------------------------------------------------------------------- 3. deliver
    def _deliver(self, records: list[_Record], ledger: Ledger, summary: BatchSummary, *, fifo: bool, now: int,
                 io_end: float) -> None:  # fmt: skip
        """Send what may be sent (FIFO: nothing after a failing record of its group) until the fate reserve, and
        enter Meta's answers in the ledger."""
        outbound = self._sendable(records, ledger, fifo)
        letters = self._letters_known(records, ledger, now) if self.quarantine_enabled else 0  # else none stored
        summary.fate_reserve_s = reserve = self._reserve(len(records), letters)
        report = self._deliverer.deliver(outbound, io_end - reserve, fifo=fifo, quarantine=self.quarantine_enabled)
        summary.delivery = report
        accepted = report.accepted
        if isinstance(accepted, Accepted):  # the engine's: its events, no pair per event
            ledger.accept_events(accepted.events())
        else:
            ledger.accept_all(accepted)
        for (message_id, position), rejected in report.rejected.items():
            ledger.reject(message_id, position, rejected.reason)
        if report.failed:
            by_id = {record.message_id: record for record in records}
            for message_id, failure in report.failed.items():
                ledger.fail(message_id, failure.reason, failure.retry_after_s)
                if message_id in by_id:
                    by_id[message_id].failure = failure

    def _sendable(self, records: list[_Record], ledger: Ledger, fifo: bool) -> list[Outbound]:
        """The events to send: those of records not already failing; FIFO: a failing record (or one whose
        rejection fails it, without a DLQ) blocks the later records of its group."""
        gate, quarantine, failing = FifoGate(), self.quarantine_enabled, ledger.failing()
        out: list[Outbound] = []
        for record in records:
            message_id = record.message_id
            if fifo and gate.blocks(record.group_id):
                ledger.fail(message_id, FIFO_BLOCKED)
            fails = message_id in failing
            if fifo and (fails or (not quarantine and ledger.rejected(message_id))):
                gate.failed(record.group_id)
            if not fails:
                out.extend(record.outbound)
        return out

    def _reserve(self, records: int, letters: int) -> float:
        """Time kept back after delivery for the batch's fate calls (0 when the relay makes none)."""
        settings = self._settings
        park_calls = calls_for(records) if self.parking_enabled else 0
        letter_calls = calls_for(letters) if self.quarantine_enabled else 0
        if not park_calls and not letter_calls:
            return 0.0
        reserve = fate_io_reserve_s(
            park_calls=park_calls,
            letter_calls=letter_calls,
            concurrency=settings.sqs_concurrency,
            call_timeout_s=settings.sqs_timeout_s,
        )
        return max(settings.fate_reserve_s, reserve)

    def _letters_known(self, records: list[_Record], ledger: Ledger, now: int) -> int:
        """Letters the batch needs as far as known before delivery: its rejections, and every event of a
        record on its last receive or near its retention's end (it may be dead-lettered)."""
        settings, count = self._settings, ledger.rejections()
        for record in records:
            if last_chance(receive_count=record.receive_count, max_receive_count=settings.max_receive_count,
                           sent=record.sent, retention_s=settings.queue_retention_s, now=now,
                           next_receive_s=settings.queue_visibility_timeout_s):  # fmt: skip
                count += len(record.identities) or 1
        return count

    # ------------------------------------------------------------------------------------ 4. decide
    def _decide(self, records: list[_Record], ledger: Ledger, started_wall: float) -> list[_Record]:
        """Decide every record; the records not delivered (in input order). The usual record (every event
        accepted) is decided delivered by the ledger in one pass: nothing to park, its last chance does not matter."""
        settings, now = self._settings, self._wall()
        quarantine = self.quarantine_enabled
        undelivered = [self._at(records, index, message_id) for index, message_id in ledger.decide_delivered()]
        for record in undelivered:
            message_id = record.message_id
            record.park_s = None
            reason = ledger.failure(message_id)
            if reason is not None and is_parkable(reason) and self.parking_enabled:
                record.park_s = park_seconds(ParkInput(
                    receive_count=record.receive_count or 1, now=now, invocation_started=started_wall, sent=record.sent,
                    first_receive=_first_receive(record.raw), oldest_event_time=record.oldest_event_time,
                    retry_after_s=ledger.retry_after_s(message_id), schedule_s=settings.park_schedule_s,
                    retention_s=settings.queue_retention_s,
                ))  # fmt: skip
            next_receive = record.park_s if record.park_s is not None else settings.queue_visibility_timeout_s
            final = last_chance(receive_count=record.receive_count, max_receive_count=settings.max_receive_count,
                                sent=record.sent, retention_s=settings.queue_retention_s, now=now,
                                next_receive_s=next_receive)  # fmt: skip
            decision = ledger.decide(message_id, quarantine=quarantine, last_chance=final)
            if decision.outcome is Outcome.FAILED and (
                final or (record.receive_count or 1) >= settings.max_receive_count
            ):
                ledger.unpark(message_id)  # SQS moves it on its next receive: parking would only delay that
        return undelivered

    @staticmethod
    def _at(records: list[_Record], index: int, message_id: str) -> _Record:
        """The record at ``index``: the ledger has one entry per record, in the same order (:meth:`_parse`). A
        mismatch is a bug: it raises, and every record not proven settled fails."""
        record = records[index] if index < len(records) else None
        if record is None or record.message_id != message_id:
            raise RuntimeError(f"the ledger and the records disagree at {index}")
        return record

    # ------------------------------------------------------------------------------ 5. persist fates
    def _store_letters(self, records: list[_Record], ledger: Ledger, fifo: bool, io_end: float,
                       summary: BatchSummary) -> None:  # fmt: skip
        """Store every letter the decisions ask for; a record any of whose letters is not stored fails
        instead (nothing is lost). Entries SQS refused are tried once more while there is time."""
        assert self._queues is not None
        assert self._settings.dlq_url is not None
        dlq_url = self._settings.dlq_url
        fifo_dlq = dlq_url.endswith(".fifo")  # SQS requires a FIFO DLQ for a FIFO queue; a standard one refuses ids
        letters: list[DeadLetter] = []
        with_letters: list[_Record] = []
        for record in records:
            decision = ledger.decision(record.message_id)
            if decision is not None and decision.letters:
                source = self._source(record)
                letters.extend(dead_letter(source, r.index, r.reason, fifo=fifo_dlq) for r in decision.quarantine)
                with_letters.append(record)
        queues = self._queues
        pending = letters
        for _ in range(2):  # a refused entry is tried once more (throttled, a transient SQS error)
            calls = list(batches(pending))
            sends: list[Callable[[], set[int] | None]] = [partial(queues.send_dead_letters, dlq_url, b) for b in calls]
            results = self._concurrently(sends, io_end, None)
            pending = [b[i] for b, failed in zip(calls, results, strict=True)
                       for i in (range(len(b)) if failed is None else sorted(failed))]  # fmt: skip
            if not pending:
                break
        not_stored = {letter.source for letter in pending}
        for record in with_letters:
            message_id = record.message_id
            decision = ledger.decision(message_id)
            assert decision is not None
            if message_id in not_stored:
                ledger.not_stored(message_id)
                continue
            ledger.stored(message_id)
            dead = decision.outcome is Outcome.DEAD_LETTER
            if dead:
                summary.records_dead_lettered += 1
            for rejected in decision.quarantine:
                if not dead:  # dead letters are counted in events_dead_lettered
                    summary.quarantined[rejected.reason] += 1
                logger.warning(
                    "event dead-lettered" if dead else "event quarantined",
                    extra={"message_id": message_id, "event_index": rejected.index,
                           "pixel_id": record.pixel_id, "reason": rejected.reason},
                )  # fmt: skip

    def _source(self, record: _Record) -> Source:
        body = record.raw.get("body")
        message = record.message
        if message is None or record.pixel_id is None:
            return Source(record.message_id, body if isinstance(body, str) else None, record.group_id,
                          record.pixel_id, record.test_event_code)  # fmt: skip
        routing = tuple((k, v) for k, v in (("pixel_id", message.pixel_id),
                                            ("test_event_code", message.test_event_code)) if v)  # fmt: skip
        events = message.events
        if record.events_released:  # the same body and attributes read into the same events as at first sight
            events = parse_body(body, record.raw.get("messageAttributes")).events
        return Source(record.message_id, body if isinstance(body, str) else None, record.group_id, record.pixel_id,
                      record.test_event_code, tuple(events), message.request_fields, routing,
                      record.identities)  # fmt: skip

    def _park(self, records: list[_Record], ledger: Ledger, io_end: float) -> None:
        """Extend the visibility of failing records parked for a throttle or transient reason; a record whose
        visibility could not be changed is not parked."""
        if self._queues is None or not self._settings.park_schedule_s:
            for record in records:
                ledger.unpark(record.message_id)
            return
        calls = self._park_calls(records, ledger)
        for _ in range(2):  # a failed call (a timeout, a throttle) is made once more while there is time
            calls = self._change_visibility(calls, io_end)
            if not calls:
                break
        for _, batch in calls:
            for record, _ in batch:
                ledger.unpark(record.message_id)

    def _park_calls(self, records: list[_Record], ledger: Ledger) -> list[tuple[str, list[tuple[_Record, int]]]]:
        """The ChangeMessageVisibilityBatch calls the parked records need: per queue, at most 10 entries each. A
        record that cannot be parked (no park time, no queue ARN or receipt handle) is unparked."""
        by_queue: dict[str, list[tuple[_Record, int]]] = {}
        for record in records:
            decision = ledger.decision(record.message_id)
            if decision is None or not decision.park or decision.outcome is not Outcome.FAILED:
                continue
            arn, handle = record.raw.get("eventSourceARN"), record.raw.get("receiptHandle")
            if record.park_s is None or not isinstance(arn, str) or not isinstance(handle, str):
                ledger.unpark(record.message_id)
                continue
            by_queue.setdefault(arn, []).append((record, record.park_s))
        return [
            (arn, items[i : i + MAX_VISIBILITY_BATCH])
            for arn, items in by_queue.items()
            for i in range(0, len(items), MAX_VISIBILITY_BATCH)
        ]

    def _change_visibility(self, calls: list[tuple[str, list[tuple[_Record, int]]]],
                           io_end: float) -> list[tuple[str, list[tuple[_Record, int]]]]:  # fmt: skip
        """Make ``calls`` concurrently; the calls that failed (or any of whose entries did) are returned."""
        queues = self._queues
        assert queues is not None
        changes: list[Callable[[], int]] = [
            partial(queues.change_visibility, arn, [(str(r.raw["receiptHandle"]), s) for r, s in batch])
            for arn, batch in calls
        ]
        results = self._concurrently(changes, io_end, 0)
        failed_calls = []
        for (arn, batch), ok in zip(calls, results, strict=True):
            if ok is None or ok < len(batch):  # which entry failed is not worth tracking: count none
                failed_calls.append((arn, batch))
                continue
            for record, seconds in batch:
                logger.info("record parked", extra={"message_id": record.message_id, "visibility_s": seconds,
                                                    "receive_count": record.receive_count})  # fmt: skip
        return failed_calls

    def _concurrently(self, calls: Sequence[Callable[[], T]], io_end: float, failed: T) -> list[T | None]:
        """Run ``calls`` on the SQS pool, at most ``SQS_CONCURRENCY`` at once. A call that cannot start
        early enough to finish by ``io_end`` (each is bounded by ``SQS_TIMEOUT``) is not made; a call not
        finished by then counts as ``failed`` (None: it raised or never ran)."""
        timeout = self._settings.sqs_timeout_s

        def guarded(call: Callable[[], T]) -> T | None:
            if self._mono() + timeout > io_end:
                return None
            return call()

        if self._io is None or not calls:
            return [guarded(call) for call in calls]
        futures: list[Future[T | None]] = [self._io.submit(guarded, call) for call in calls]
        wait(futures, timeout=max(0.0, io_end - self._mono()) + IO_GRACE_S)
        out: list[T | None] = []
        for future in futures:
            if future.done() and future.exception() is None:
                out.append(future.result())
            else:
                future.cancel()
                out.append(failed if future.done() else None)
        return out

    # ------------------------------------------------------------------------------------ 6. respond
    def _respond(self, records: list[_Record], ledger: Ledger, summary: BatchSummary) -> None:
        failed = ledger.unsettled()
        debug = logger.isEnabledFor(logging.DEBUG)
        # A record is looked up only to log it: failed, or delivered at DEBUG (the healthy batch: none).
        by_id = {record.message_id: record for record in records} if failed or debug else {}
        settings = self._settings
        summary.records_delivered = len(ledger) - len(failed)
        # A plainly delivered record adds nothing more (every record at DEBUG: each is logged).
        for message_id, decision, settled in ledger.outcomes(delivered=debug):
            record = by_id.get(message_id)
            if settled:
                letters = 0
                if decision is not None and decision.letters:
                    letters = len(decision.quarantine)
                    summary.records_quarantined += 1
                    if decision.outcome is Outcome.DEAD_LETTER:
                        summary.events_dead_lettered += letters
                if debug:
                    logger.debug("record delivered", extra={"message_id": message_id,
                                                            "pixel_id": record.pixel_id if record else None,
                                                            "events": len(record.outbound) if record else 0,
                                                            "quarantined": letters})  # fmt: skip
                continue
            reason = (decision.reason if decision is not None and decision.outcome is Outcome.FAILED else None) or (
                ledger.failure(message_id) or "internal_error"
            )
            summary.records_failed += 1
            summary.failures[reason] += 1
            count = record.receive_count if record is not None else None
            final = count is not None and count >= settings.max_receive_count
            if final and record is not None:
                summary.events_dead_lettered += len(record.identities) or 1
            failure = (record.failure if record is not None else None) or Failure(reason)
            logger.warning(
                "record failed",
                extra={"message_id": message_id, "receive_count": count,
                       "pixel_id": record.pixel_id if record is not None else None, "reason": reason,
                       "code": failure.code, "error_subcode": failure.subcode, "fbtrace_id": failure.fbtrace_id,
                       "dead_letter_next": final},
            )  # fmt: skip
        summary.records = max(summary.records, len(failed) + summary.records_delivered)
        summary.records_parked = sum(
            1 for m in failed if (d := ledger.decision(m)) is not None and d.park and d.outcome is Outcome.FAILED
        )
        summary.response = {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}
