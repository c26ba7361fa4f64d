"""Quarantine messages: what the relay sends to the DLQ for a permanently rejected event or body. Pure.

One DLQ message per rejected event (or per unreadable body). Its body can be redriven to the events queue
as is once the cause is fixed, and it never carries more than the source message did:

* a rejected event of a multi-event message: ``{"data": [the event as received], <request-level fields of
  the source body>}``; a message that held only that one event: the body as received;
* an unreadable body (not JSON, unknown shape, no pixel ...): the body as received; an empty body (SQS
  refuses to store one) becomes a small JSON placeholder naming the reason.

String message attributes: ``rejection_reason``, ``source_message_id``, ``event_index`` (where there is
one), and the routing ``pixel_id`` / ``test_event_code`` when known (SQS message attributes override the
body, so a redriven event reaches the same pixel). On a FIFO DLQ, ``MessageGroupId`` is the source group
and ``MessageDeduplicationId`` the source messageId plus the index (a retried quarantine is not stored twice).

A record whose letters were only partly stored fails as a whole (nothing is lost); on its next receive all
its letters are sent again, so a standard DLQ may then hold one of them twice (a FIFO DLQ deduplicates it
within SQS's 5-minute window) -- the price of never losing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_BATCH_ENTRIES = 10  # SendMessageBatch
MAX_BATCH_BYTES = 256 * 1024  # SendMessageBatch: sum of bodies and attributes
EMPTY_BODY_PLACEHOLDER_KEY = "capi_relay_quarantine"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message for the DLQ. ``source`` is the messageId it came from (a failed send fails that record)."""

    source: str
    body: str
    attributes: tuple[tuple[str, str], ...]  # String message attributes, sorted by name
    group_id: str | None = None  # FIFO DLQ only
    dedup_id: str | None = None  # FIFO DLQ only

    @property
    def size(self) -> int:
        """Bytes SQS counts against the batch limit: body plus attribute names, types and values."""
        attrs = sum(len(k.encode()) + len(b"String") + len(v.encode()) for k, v in self.attributes)
        return len(self.body.encode()) + attrs

    def entry(self, entry_id: str) -> dict[str, Any]:
        """The SendMessageBatch entry."""
        doc: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": self.body,
            "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in self.attributes},
        }
        if self.group_id is not None:
            doc["MessageGroupId"] = self.group_id
        if self.dedup_id is not None:
            doc["MessageDeduplicationId"] = self.dedup_id
        return doc


@dataclass(frozen=True, slots=True)
class Source:
    """What the relay knows about the record a dead letter comes from."""

    message_id: str
    body: str | None  # as received
    group_id: str | None = None
    pixel_id: str | None = None
    test_event_code: str | None = None
    events: tuple[Any, ...] | None = None  # the message's events as received (None: the body is unreadable)
    body_fields: tuple[tuple[str, Any], ...] = ()  # request-level keys of a {"data": [...]} body


def body_fields(body: str | None) -> tuple[tuple[str, Any], ...]:
    """The top-level keys of a plain ``{"data": [...]}`` body other than ``data`` (routing, upload_tag ...):
    they travel with each quarantined event of that message. Empty for any other shape."""
    try:
        doc = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return ()
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return ()
    return tuple((k, v) for k, v in doc.items() if k != "data")


def dead_letter(source: Source, index: int | None, reason: str, *, fifo: bool) -> DeadLetter:
    """The DLQ message for one rejected event (``index``) or the rejected body (``index`` None)."""
    if index is None or source.events is None:
        body = source.body if isinstance(source.body, str) and source.body else _placeholder(reason)
        index = None
    elif len(source.events) == 1 and isinstance(source.body, str):
        body = source.body
    else:
        doc: dict[str, Any] = {"data": [source.events[index]]}
        doc.update((k, v) for k, v in source.body_fields if k not in doc)
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    attributes: dict[str, str] = {"rejection_reason": reason, "source_message_id": source.message_id}
    if index is not None:
        attributes["event_index"] = str(index)
    if source.pixel_id:
        attributes["pixel_id"] = source.pixel_id
    if source.test_event_code:
        attributes["test_event_code"] = source.test_event_code
    group = dedup = None
    if fifo:
        group = source.group_id or source.message_id  # a FIFO DLQ demands a group
        dedup = f"{source.message_id}-{'body' if index is None else index}"
    return DeadLetter(source.message_id, body, tuple(sorted(attributes.items())), group, dedup)


def _placeholder(reason: str) -> str:
    return json.dumps({EMPTY_BODY_PLACEHOLDER_KEY: {"reason": reason, "note": "the source message body was empty"}})


def batches(letters: Iterable[DeadLetter]) -> Iterator[list[DeadLetter]]:
    """SendMessageBatch calls: at most 10 entries and 256 KiB each, in input order. A letter larger than the
    limit on its own gets a call of its own (SQS refuses it, and its record fails: nothing is lost)."""
    batch: list[DeadLetter] = []
    size = 0
    for letter in letters:
        letter_size = letter.size  # encodes the body: once per letter
        if batch and (len(batch) >= MAX_BATCH_ENTRIES or size + letter_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(letter)
        size += letter_size
    if batch:
        yield batch


def attribute(attributes: Mapping[str, Any], name: str) -> str | None:
    """A String attribute of a received message (``ReceiveMessage`` form)."""
    entry = attributes.get(name)
    value = entry.get("StringValue") if isinstance(entry, Mapping) else None
    return value if isinstance(value, str) else None
