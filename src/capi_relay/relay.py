"""One SQS batch -> partial batch response. Parse, prepare, deliver, account; never raise for a record.

Every record whose ``messageId`` is in the input ends exactly once: delivered (not listed) or failed
(listed in ``batchItemFailures``).
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
from capi_relay.model import Outbound, Prepared, Rejection
from capi_relay.settings import Settings
from capi_relay.validate import prepare_event

logger = logging.getLogger(__name__)

DEFAULT_REMAINING_MS = 60_000


@dataclass(slots=True)
class _Record:
    message_id: str
    group_id: str | None
    failure: Failure | None = None
    outbound: list[Outbound] = field(default_factory=list)
    pixel_id: str | None = None
    receive_count: int | None = None  # ApproximateReceiveCount: correlates the retries of one message


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
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    response: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def derived_event_id(message_id: str, position: int) -> str:
    """Deterministic event_id for an event without one: a redelivered message is deduplicated by Meta."""
    return f"sqs-{message_id}-{position}"


def _sent_seconds(attributes: Any) -> int | None:
    """The SQS ``SentTimestamp`` attribute (epoch milliseconds, a string) in seconds."""
    raw = attributes.get("SentTimestamp") if isinstance(attributes, dict) else None
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
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._deliverer = deliverer
        self._wall = wall_clock
        self._mono = monotonic

    def process(self, event: Any, remaining_ms: Callable[[], int] | None = None) -> BatchSummary:
        """Never raises: an unexpected error fails every record of the batch (SQS retries them)."""
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

    def _process(self, event: Any, remaining_ms: Callable[[], int] | None) -> BatchSummary:
        summary = BatchSummary()
        started = self._mono()
        budget_ms = remaining_ms() if remaining_ms is not None else DEFAULT_REMAINING_MS
        deadline = started + budget_ms / 1000 - self._settings.deadline_margin_s

        raw_records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(raw_records, list):
            logger.error("not an SQS event: no Records list; nothing to do")
            summary.response = {"batchItemFailures": []}
            return summary
        fifo = _is_fifo(raw_records)
        now = int(self._wall())

        records: list[_Record] = []
        produced = False

        def produce() -> Iterator[Outbound]:
            """Prepare records one by one, yielding their events: delivery sends full chunks while the rest
            is still being prepared."""
            nonlocal produced
            seen: set[str] = set()
            blocked_groups: set[str] = set()
            for raw in raw_records:
                record = self._prepare_record(raw, now, summary)
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
                    if record.failure is not None:
                        blocked_groups.add(record.group_id)
                if record.failure is None:
                    yield from record.outbound
            produced = True

        events = produce()
        summary.delivery = self._deliverer.deliver(events, deadline, fifo=fifo)
        if not produced:  # the deliverer must consume everything; never count unsent records as delivered
            unsent = {o.message_id for o in events}
            for record in records:
                if record.failure is None and record.message_id in unsent:
                    record.failure = Failure("internal_error")
        summary.records = len(records)

        rejected_by_id: dict[str, Failure] = {}  # per-event rejections: without quarantine, the record fails
        for (message_id, _), failure in sorted(summary.delivery.rejected.items()):
            rejected_by_id.setdefault(message_id, failure)
        for record in records:
            if record.failure is None:
                record.failure = summary.delivery.failed.get(record.message_id) or rejected_by_id.get(record.message_id)
        if fifo:
            failed_groups: set[str] = set()
            for record in records:
                if record.group_id is None:
                    continue
                if record.group_id in failed_groups and record.failure is None:
                    record.failure = Failure("fifo_group_blocked")
                if record.failure is not None:
                    failed_groups.add(record.group_id)

        failures: list[dict[str, str]] = []
        for record in records:
            if record.failure is None:
                summary.records_delivered += 1
                logger.debug("record delivered", extra={"message_id": record.message_id,
                                                        "pixel_id": record.pixel_id,
                                                        "events": len(record.outbound)})  # fmt: skip
                continue
            summary.records_failed += 1
            summary.failures[record.failure.reason] += 1
            failures.append({"itemIdentifier": record.message_id})
            logger.warning(
                "record failed",
                extra={
                    "message_id": record.message_id,
                    "receive_count": record.receive_count,
                    "pixel_id": record.pixel_id,
                    "reason": record.failure.reason,
                    "code": record.failure.code,
                    "error_subcode": record.failure.subcode,
                    "fbtrace_id": record.failure.fbtrace_id,
                },
            )
        summary.response = {"batchItemFailures": failures}
        return summary

    def _prepare_record(self, raw: Any, now: int, summary: BatchSummary) -> _Record | None:
        """Parse and prepare one record; any unexpected error fails this record only."""
        try:
            return self._prepare_record_unsafe(raw, now, summary)
        except Exception as exc:
            message_id = raw.get("messageId") if isinstance(raw, dict) else None
            if not isinstance(message_id, str) or not message_id:
                return None
            logger.warning("record could not be prepared", extra={"message_id": message_id,
                                                                  "error": type(exc).__name__})  # fmt: skip
            attrs = raw.get("attributes")
            group_id = attrs.get("MessageGroupId") if isinstance(attrs, dict) else None
            return _Record(message_id, group_id if isinstance(group_id, str) else None,
                           failure=Failure("unprocessable_record"))  # fmt: skip

    def _prepare_record_unsafe(self, raw: Any, now: int, summary: BatchSummary) -> _Record | None:
        if not isinstance(raw, dict):
            logger.error("SQS record is not an object; it cannot be reported individually")
            return None
        message_id = raw.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            logger.error("SQS record without messageId; it cannot be reported individually")
            return None
        attrs = raw.get("attributes")
        group_id = attrs.get("MessageGroupId") if isinstance(attrs, dict) else None
        record = _Record(message_id, group_id if isinstance(group_id, str) else None)
        receives = attrs.get("ApproximateReceiveCount") if isinstance(attrs, dict) else None
        record.receive_count = int(receives) if isinstance(receives, str) and receives.isdigit() else None
        try:
            message = parse_body(raw.get("body"), raw.get("messageAttributes"))
        except EnvelopeError as exc:
            record.failure = Failure(exc.reason)
            logger.warning("unreadable message body", extra={"message_id": message_id, "reason": exc.reason,
                                                             "detail": exc.detail})  # fmt: skip
            return record
        pixel_id = message.pixel_id or self._settings.pixel_id
        record.pixel_id = pixel_id
        if pixel_id is None:
            record.failure = Failure("no_pixel_id")
            return record
        test_event_code = message.test_event_code or self._settings.test_event_code
        default_time = _sent_seconds(attrs) or now
        prepared: list[Prepared] = []
        rejection: tuple[int, Rejection] | None = None
        for position, raw_event in enumerate(message.events):
            result = prepare_event(
                raw_event,
                self._settings.normalization,
                now,
                default_event_time=default_time,
                default_event_id=derived_event_id(message_id, position),
            )
            if isinstance(result, Rejection):
                summary.events_rejected[result.reason] += 1
                if rejection is None:
                    rejection = (position, result)
                continue
            prepared.append(result)
            if result.drops and logger.isEnabledFor(logging.DEBUG):  # what `capi-relay check` shows as "dropped"
                logger.debug("values dropped", extra={"message_id": message_id, "event_index": position,
                             "dropped": [{"field": d.field, "reason": d.reason} for d in result.drops]})  # fmt: skip
            for drop in result.drops:
                summary.fields_dropped[(drop.field, drop.reason)] += 1
            for note in result.notes:
                summary.notes[note] += 1
        if rejection is not None:
            position, why = rejection
            record.failure = Failure(why.reason)
            logger.warning(
                "event rejected before sending",
                extra={"message_id": message_id, "event_index": position, "reason": why.reason,
                       "detail": why.detail},
            )  # fmt: skip
            return record
        for position, item in enumerate(prepared):
            summary.match_keys[item.match_keys] += 1
            record.outbound.append(Outbound(message_id, position, pixel_id, test_event_code, item.event, item.encoded,
                                            request_fields=message.request_fields,
                                            group_id=record.group_id))  # fmt: skip
        summary.events_prepared += len(prepared)
        return record
