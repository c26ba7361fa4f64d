"""Plain data types shared by the pipeline stages, and their JSON encoding. No I/O."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from capi_relay._compat import orjson as _orjson

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event or a record cannot be sent. ``reason`` is a stable machine-readable code."""

    reason: str
    detail: str = ""


@dataclass(slots=True)
class InboundMessage:
    """One SQS message body, unwrapped: the events it carries and where they should go."""

    events: list[Any]
    pixel_id: str | None = None
    test_event_code: str | None = None
    shape: str = "event"  # event | data | eventbridge | sns
    # Request-level parameters of a {"data": ...} body (upload_tag, upload_source, namespace_id,
    # partner_agent): sorted (key, value) pairs, copied onto every Outbound of the message.
    request_fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """What the relay resolved for one event at first sight and every letter carries: the ``event_id`` it
    sends under (None: the event has none and none can be derived) and the ``event_time`` it filled in when
    the event had none (None: the event's own time is used)."""

    event_id: str | None = None
    derived: bool = False  # the event_id was derived by the relay (written into the letter's event)
    default_event_time: int | None = None


# One Identity is built per event. A frozen dataclass's __init__ sets each field through object.__setattr__
# (~2x the cost of the object); identity() sets the slots through their descriptors instead: the same object.
_new_object = object.__new__
_SET_EVENT_ID = Identity.__dict__["event_id"].__set__
_SET_DERIVED = Identity.__dict__["derived"].__set__
_SET_DEFAULT_EVENT_TIME = Identity.__dict__["default_event_time"].__set__


def identity(event_id: str | None, derived: bool, default_event_time: int | None) -> Identity:
    """``Identity(event_id, derived, default_event_time)``, built faster (it is still frozen)."""
    made: Identity = _new_object(Identity)
    _SET_EVENT_ID(made, event_id)
    _SET_DERIVED(made, derived)
    _SET_DEFAULT_EVENT_TIME(made, default_event_time)
    return made


@dataclass(frozen=True, slots=True)
class Drop:
    """One value removed during normalization: field name and reason, never the value."""

    field: str
    reason: str


@dataclass(slots=True)
class Prepared:
    """An event ready to POST, plus the counters its preparation produced."""

    event: JSONDict
    drops: list[Drop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "event_time_ms", "event_time_clamped"
    match_keys: int = 0
    encoded: bytes = b""  # ``event`` as it is POSTed (see :func:`encode_event`)


@dataclass(slots=True)
class Outbound:
    """One prepared event bound to the SQS record it came from and to its destination. Treated as immutable;
    not frozen because a frozen dataclass's ``__init__`` costs ~2.4 us more per event (object.__setattr__
    per field), and one is built per event."""

    message_id: str
    position: int
    pixel_id: str
    test_event_code: str | None
    encoded: bytes  # the event as UTF-8 JSON (what is POSTed), encoded once while its record can still fail alone
    # Request-level parameters (upload_tag, upload_source, namespace_id, partner_agent) from the message:
    # events with different values never share a request. Sorted (key, value) pairs, hashable.
    request_fields: tuple[tuple[str, str], ...] = ()
    group_id: str | None = None  # SQS FIFO MessageGroupId: events of one group are decided in order


# orjson refuses (instead of converting) what the standard library would treat differently: subclasses,
# dataclasses, datetimes (the stdlib raises TypeError or encodes a str/int subclass as its base type).
_ORJSON_STRICT = (
    _orjson.OPT_PASSTHROUGH_SUBCLASS | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME
    if _orjson is not None
    else 0
)


# ``_NULL.search(encoded) is None`` is ``b"null" not in encoded``, measured faster on a prepared event (~480 ns
# against ~630 for ``find`` and ~890 for ``in``, which first tries its operand as an integer: ingest/envelope.py).
_NULL = re.compile(b"null")
_EMPTY_PAIR = (b"", b"")


def encode_event(event: JSONDict) -> bytes:
    """One event as compact UTF-8 JSON. Raises ``ValueError`` for NaN/Infinity (not JSON: Meta would reject
    the whole request) and ``UnicodeEncodeError`` (a ``ValueError``) for a lone surrogate.

    orjson does the common case (~4x faster than ``json.dumps``, the largest single cost per event after
    normalization; bench/bench_pipeline.py). It writes NaN/Infinity as ``null`` and refuses lone surrogates,
    integers beyond 64 bits and non-string keys; so any output holding ``null`` (rare in a prepared event: an
    explicit null, or the word inside a string) and anything orjson refuses are encoded by the standard
    library, which decides exactly as before. Without orjson (it cannot be imported) the standard library
    does everything."""
    if _orjson is not None:
        try:
            encoded = _orjson.dumps(event, option=_ORJSON_STRICT)
        except _orjson.JSONEncodeError:
            encoded = b"null"  # take the standard library's path below
        if _NULL.search(encoded) is None:
            # A right-sized copy: orjson's result sits in an over-allocated block, and 10,000 of them kept
            # until the batch is sent cost ~70 MB of RSS (copied: ~8 MB, and faster: the blocks are reused).
            # b"" + encoded + b"" in one exact-size allocation: ~3x faster than bytes(memoryview(encoded))
            # (bytes(encoded) and encoded[:] return the same object, no copy).
            return encoded.join(_EMPTY_PAIR)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
