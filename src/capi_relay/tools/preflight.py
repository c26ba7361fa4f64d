"""What a producer's events become before they are sent: the relay's own prepare step, run offline, with
everything it changed or lost made visible. Shared by ``capi-relay check`` and ``capi-relay send``.

Pure: the caller passes the events, the normalization settings and ``now``; nothing here reads the clock,
the environment or the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from capi_relay.ingest.model import Prepared, Rejection
from capi_relay.prepare.events import KNOWN_EVENT_KEYS, prepare_event
from capi_relay.settings import NormalizationSettings

MAX_KEY_CHARS = 64  # an unknown key's name is echoed back, cut to this length

# Warnings: the event is sent, but something about it costs matching or deduplication.
WEBSITE_WITHOUT_EVENT_ID = "website_event_without_event_id"
NO_PIXEL_ID = "no_pixel_id"


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event the relay would send: its position in the input, the producer's raw event, and what the
    relay makes of it."""

    index: int
    raw: dict[str, Any]
    prepared: Prepared


@dataclass(slots=True)
class Preflight:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"index", "field", "reason"[, "key"]}
    adjusted: list[dict[str, Any]] = field(default_factory=list)  # {"index", "note"}
    warnings: list[dict[str, Any]] = field(default_factory=list)  # {"index" (None: the message), "warning"}
    details: list[str] = field(default_factory=list)  # human-readable rejection details (no values)

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected else 0


def _unknown_keys(raw: dict[str, Any]) -> list[str]:
    return [key[:MAX_KEY_CHARS] for key in raw if key not in KNOWN_EVENT_KEYS]


def preflight(
    events: Sequence[Any],
    settings: NormalizationSettings,
    now: int,
    *,
    pixel_id: str | None = None,
    start_index: int = 0,
) -> Preflight:
    """Prepare every event as the relay would (a missing ``event_time`` defaults to ``now``, as the relay
    defaults it to the message's SentTimestamp) and record rejections, dropped values, adjustments and
    warnings by event index (``start_index`` + position)."""
    out = Preflight()
    if pixel_id is None:
        out.warnings.append({"index": None, "warning": NO_PIXEL_ID})
    for position, raw in enumerate(events):
        index = start_index + position
        result = prepare_event(raw, settings, now, default_event_time=now)
        if isinstance(result, Rejection):
            out.rejected.append({"index": index, "reason": result.reason})
            out.details.append(f"event {index} rejected: {result.reason}: {result.detail}")
            continue
        assert isinstance(raw, dict)  # prepare_event rejects anything else (not_an_object)
        out.accepted.append(Accepted(index, raw, result))
        unknown = iter(_unknown_keys(raw))
        for drop in result.drops:
            entry: dict[str, Any] = {"index": index, "field": drop.field, "reason": drop.reason}
            if drop.field == "event" and drop.reason == "unknown_key":
                entry["key"] = next(unknown, "")  # validate drops unknown keys in the event's key order
            out.dropped.append(entry)
        out.adjusted.extend({"index": index, "note": note} for note in result.notes)
        if result.event.get("action_source") == "website" and "event_id" not in result.event:
            # The relay would derive cr1-<hash of pixel + content>: the browser Pixel can never send that id.
            out.warnings.append({"index": index, "warning": WEBSITE_WITHOUT_EVENT_ID})
    return out
