"""Letters: what the relay stores in the DLQ for a rejected event, a rejected body, or a record it
dead-letters itself on its last chance. Pure.

One DLQ message per event (or per unreadable body). Its body can be redriven to the events queue as is, and
a redrive sends exactly what the first attempt sent:

* an event: ``{"data": [the event as received, with its resolved event_id and a defaulted event_time filled
  in], <pixel_id / test_event_code the message carried>, <every request-level field>}`` -- whatever wrapper
  the message came in (plain, ``{"data"}``, EventBridge, SNS): the fields are the parsed ones, not the
  top-level keys of the body;
* a body that was never read into events (not JSON, unknown shape, no pixel, or a record the relay could not
  read): the body as received; an empty body (SQS refuses to store one) or one SQS could not store becomes a
  small JSON placeholder naming the reason (and holding the body, escaped).

Every letter is valid for SQS: event letters are ASCII JSON (``ensure_ascii``: a lone surrogate or
U+FFFE/U+FFFF in a value travels as its ``\\uXXXX`` escape, exactly as the producer wrote it); attribute
values are checked against SQS's character set.

String message attributes: ``rejection_reason``, ``source_message_id``, ``event_index`` (where there is
one), ``event_id`` (the resolved one), and the routing ``pixel_id`` / ``test_event_code`` when known. On a
FIFO DLQ, ``MessageGroupId`` is the source group and ``MessageDeduplicationId`` the source messageId plus
the index (a retried letter is not stored twice within SQS's 5-minute window).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from capi_relay.ingest.model import Identity

MAX_BATCH_ENTRIES = 10  # SendMessageBatch
MAX_BATCH_BYTES = 256 * 1024  # SendMessageBatch: sum of bodies and attributes
EMPTY_BODY_PLACEHOLDER_KEY = "capi_relay_quarantine"
# What SQS accepts in a message body or String attribute: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000+.
_NOT_FOR_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_valid(text: str) -> bool:
    """Can SQS store ``text`` as a body or String attribute (no lone surrogate, no U+FFFE/U+FFFF ...)?"""
    return _NOT_FOR_SQS.search(text) is None


def sqs_safe(text: str) -> str:
    """``text`` with every character SQS refuses written as its ``\\uXXXX`` escape."""
    return _NOT_FOR_SQS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


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
    pixel_id: str | None = None  # resolved routing (attributes)
    test_event_code: str | None = None
    events: tuple[Any, ...] | None = None  # the message's events as received (None: the body was not read)
    request_fields: tuple[tuple[str, str], ...] = ()  # parsed request-level fields, whatever the wrapper
    body_routing: tuple[tuple[str, str], ...] = ()  # pixel_id / test_event_code the message itself carried
    identities: tuple[Identity, ...] = ()  # per event position


def dead_letter(source: Source, index: int | None, reason: str, *, fifo: bool) -> DeadLetter:
    """The DLQ message for one event (``index``) or the body (``index`` None)."""
    attributes: dict[str, str] = {"rejection_reason": reason, "source_message_id": source.message_id}
    if index is None or source.events is None or not 0 <= index < len(source.events):
        index = None
        body = source.body if isinstance(source.body, str) and source.body else None
        if body is None or not sqs_valid(body):
            body = _placeholder(reason, body)
    else:
        event = source.events[index]
        identity = source.identities[index] if index < len(source.identities) else Identity()
        if isinstance(event, dict):
            event = dict(event)
            if identity.derived and identity.event_id is not None:
                event["event_id"] = identity.event_id
            if identity.default_event_time is not None:
                event["event_time"] = identity.default_event_time
        if identity.event_id is not None:
            attributes["event_id"] = identity.event_id
        doc: dict[str, Any] = {"data": [event], **dict(source.body_routing), **dict(source.request_fields)}
        body = json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
        attributes["event_index"] = str(index)
    if source.pixel_id:
        attributes["pixel_id"] = source.pixel_id
    if source.test_event_code:
        attributes["test_event_code"] = source.test_event_code
    group = dedup = None
    if fifo:
        group = source.group_id or source.message_id  # a FIFO DLQ demands a group
        dedup = f"{source.message_id}-{'body' if index is None else index}"
    safe = tuple(sorted((k, sqs_safe(v)) for k, v in attributes.items()))
    return DeadLetter(source.message_id, body, safe, group and sqs_safe(group), dedup and sqs_safe(dedup))


def _placeholder(reason: str, body: str | None) -> str:
    note = "the source message body was empty" if body is None else "the source body, escaped (SQS refused it)"
    doc: dict[str, Any] = {"reason": reason, "note": note}
    if body is not None:
        doc["body"] = body
    return json.dumps({EMPTY_BODY_PLACEHOLDER_KEY: doc}, ensure_ascii=True)


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
