"""``capi-relay check --explain``: what happened to each value of an event, on the producer's own terminal.

The relay hashes personal data, so ``check`` alone shows only hashes: a date of birth read in the wrong order
is invisible. This module runs the same public normalization functions the relay uses
(:func:`capi_relay.prepare.normalize.normalized_strings`) on each raw value and reports the string that is hashed,
the hash sent, and why the value changed. It is used only by the command line: the function never calls it,
and never logs a value.

It also finds **every** reason an event would be rejected, not only the first: the relay stops at the first
rule an event breaks, so :func:`all_rejections` repairs a copy of the event for each reason found (a
placeholder that satisfies that one rule) and runs the relay's own :func:`capi_relay.prepare.events.prepare_event`
again, until the event passes or the reason cannot be repaired.

And it warns about input read by a convention rather than by the value itself (:func:`ambiguity_warnings`):
a date of birth that reads differently day-first and month-first, a phone number in national format read in
``DEFAULT_PHONE_REGION`` because the event names no country.

Pure: the caller passes the settings and ``now``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from capi_relay._compat import UTC
from capi_relay.ingest.model import Rejection
from capi_relay.prepare.events import prepare_event
from capi_relay.prepare.normalize import normalized_string, normalized_strings
from capi_relay.prepare.rules import HASHED_FIELDS, Invalid
from capi_relay.settings import NormalizationSettings

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
_PB_HASH_RE = re.compile(r"[0-9a-fA-F]{64}\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8})")
_NON_DIGIT_RE = re.compile(r"[^0-9]+")

# What each field's rule does, in one line (README's rules table, shortened).
RULES = {
    "em": "lower-cased; must be one address with one @ and a dotted domain",
    "ph": "digits only in E.164 without +: country code added for a national number, extension cut",
    "fn": "lower-cased; letters, digits and marks only",
    "ln": "lower-cased; letters, digits and marks only",
    "ge": "f or m",
    "db": "YYYYMMDD",
    "ct": "lower-cased; letters and marks only",
    "st": "lower-cased; US/Canadian state names to their 2-letter code",
    "zp": "lower-cased, no spaces, cut at '-'; US: first 5 digits",
    "country": "ISO 3166-1 alpha-2, lower-cased",
    "external_id": "trimmed, lower-cased, whitespace removed",
}

# Placeholders that satisfy one rule each, so that the next rule an event breaks shows up.
_PLACEHOLDER_ID = "capi-relay-explain-placeholder"


def _set(key: str, value: Any) -> Callable[[dict[str, Any], int], bool]:
    def repair(event: dict[str, Any], _now: int) -> bool:
        event[key] = value() if callable(value) else value
        return True

    return repair


def _event_time_now(event: dict[str, Any], now: int) -> bool:
    event["event_time"] = now
    return True


def _drop(*keys: str) -> Callable[[dict[str, Any], int], bool]:
    def repair(event: dict[str, Any], _now: int) -> bool:
        for key in keys:
            event.pop(key, None)
        return True

    return repair


def _placeholder_identifier(event: dict[str, Any], _now: int) -> bool:
    user_data = event.get("user_data")
    if not isinstance(user_data, dict):
        return False
    user_data["external_id"] = _PLACEHOLDER_ID
    return True


def _custom_value(key: str, value: Any) -> Callable[[dict[str, Any], int], bool]:
    def repair(event: dict[str, Any], _now: int) -> bool:
        custom = event.get("custom_data")
        if not isinstance(custom, dict):
            event["custom_data"] = custom = {}
        custom[key] = value
        return True

    return repair


def _drop_contents(event: dict[str, Any], _now: int) -> bool:
    custom = event.get("custom_data")
    if not isinstance(custom, dict):
        return False
    custom.pop("contents", None)
    return True


# reason -> how to make an event satisfy the rule behind it. Not repaired (no entry): not_an_object,
# non_finite_number, invalid_unicode, event_too_large, a rule added later.
_REPAIRS: dict[str, Callable[[dict[str, Any], int], bool]] = {
    "missing_event_name": _set("event_name", "Explain"),
    "missing_action_source": _set("action_source", "other"),
    "invalid_action_source": _set("action_source", "other"),
    "missing_event_time": _event_time_now,
    "invalid_event_time": _event_time_now,
    "event_too_old": _event_time_now,
    "event_in_future": _event_time_now,
    "invalid_event_id": _drop("event_id"),
    "missing_user_data": _set("user_data", lambda: {"external_id": _PLACEHOLDER_ID}),
    "no_usable_identifier": _placeholder_identifier,
    "insufficient_customer_information": _placeholder_identifier,
    "website_missing_event_source_url": _set("event_source_url", "https://example.com/"),
    # Not a placeholder user agent: it would change which customer-information combination the event has.
    # The website rules come last among those that depend on action_source, so it can change now.
    "website_missing_user_agent": _set("action_source", "other"),
    "app_missing_app_data": _set("app_data", lambda: {"advertiser_tracking_enabled": 0, "extinfo": ["i2"]}),
    "invalid_custom_data": _set("custom_data", dict),
    "invalid_value": _custom_value("value", 0),
    "missing_value": _custom_value("value", 0),
    "invalid_currency": _custom_value("currency", "usd"),
    "missing_currency": _custom_value("currency", "usd"),
    "invalid_contents": _drop_contents,
    "invalid_data_processing_options": _drop(
        "data_processing_options", "data_processing_options_country", "data_processing_options_state"
    ),
}


def _repair(event: dict[str, Any], reason: str, now: int) -> bool:
    """Make ``event`` satisfy the rule behind ``reason``; False when that cannot be done generically."""
    repair = _REPAIRS.get(reason)
    return repair is not None and repair(event, now)


def all_rejections(raw: Any, settings: NormalizationSettings, now: int) -> list[Rejection]:
    """Every rule ``raw`` breaks, in the order the relay checks them (the first is the relay's reason).
    Empty when the event would be sent."""
    found: list[Rejection] = []
    event = copy.deepcopy(raw)
    for _ in range(64):  # each repair removes one reason; a bound in case a rule cannot be satisfied
        result = prepare_event(event, settings, now, default_event_time=now)
        if not isinstance(result, Rejection):
            break
        if any(r.reason == result.reason for r in found):
            break
        found.append(result)
        if not isinstance(event, dict) or not _repair(event, result.reason, now):
            break
    return found


def _utc_today(now: int) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def _event_country(user_data: dict[str, Any], settings: NormalizationSettings, today: date) -> str | None:
    """The event's country as the relay reads it for the phone region and the ZIP rule (its first value
    that names a country; a hashed one is not looked up here)."""
    raw = user_data.get("country")
    for item in raw if isinstance(raw, list) else [raw]:
        if item is None:
            continue
        try:
            return normalized_string("country", item, settings, None, today)
        except Invalid:
            continue
    return None


def _changes(field: str, raw: Any, forms: list[str], region: str | None) -> list[str]:
    """Why the string hashed differs from the input, as short phrases."""
    if not isinstance(raw, str):
        out = [f"{type(raw).__name__} read as text"]
    else:
        out = _text_changes(field, raw, forms[0], region)
    if len(forms) > 1:
        out.append(f"also sent as {len(forms) - 1} variant(s) that Meta's other normalizers compute")
    return out


def _text_changes(field: str, raw: str, documented: str, region: str | None) -> list[str]:
    out: list[str] = []
    stripped = raw.strip()
    if raw != stripped:
        out.append("trimmed")
    if unicodedata.normalize("NFC", stripped) != stripped:
        out.append("Unicode NFC-normalized")
    if documented == stripped:
        return out or ["unchanged"]
    if documented == stripped.lower():
        return [*out, "lower-cased"]
    if field == "ph":
        if stripped.startswith(("+", "00")) or documented == _NON_DIGIT_RE.sub("", stripped):
            out.append("reduced to its digits")
        else:
            out.append(f"read as a national number of {region}, country code added")
    elif field == "db":
        out.append("read as a date and written YYYYMMDD")
    else:
        out.append(RULES.get(field, "normalized"))
    return out


def explain_value(field: str, raw: Any, settings: NormalizationSettings, country: str | None,
                  today: date) -> dict[str, Any]:  # fmt: skip
    """One value of a hashed field: the input, what is hashed, the hashes sent, and why it changed."""
    entry: dict[str, Any] = {"field": field, "input": raw}
    text = raw.strip() if isinstance(raw, str) else None
    if text is not None and len(text) == 64 and _SHA256_RE.fullmatch(text):
        entry.update(sent=[text.lower()], why=["already a SHA-256 hash: sent as it is (lower-cased)"])
        return entry
    if text is not None and len(text) in {67, 73} and _PB_HASH_RE.fullmatch(text):
        entry.update(sent=[text], why=["already hashed by capi-param-builder: sent as it is"])
        return entry
    if text is not None and len(text) == 32 and field != "external_id" and _MD5_RE.fullmatch(text):
        entry.update(dropped="md5_hash", why=["an MD5 hash: Meta needs SHA-256, so it is dropped"])
        return entry
    try:
        forms = normalized_strings(field, raw, settings, country, today)
    except Invalid as exc:
        entry.update(dropped=exc.reason, why=[f"dropped: {exc.reason} ({RULES.get(field, '')})"])
        return entry
    region = country.upper() if country else settings.default_phone_region
    entry["hashed"] = forms
    entry["sent"] = [hashlib.sha256(form.encode("utf-8")).hexdigest() for form in forms]
    entry["why"] = _changes(field, raw, forms, region)
    if field == "db" and (ambiguity := _date_ambiguity(raw, settings, country, today)) is not None:
        order, by, other = ambiguity
        first = "month" if order == "MDY" else "day"
        if by == "DATE_ORDER":
            other_order = "DMY" if order == "MDY" else "MDY"
            entry["why"].append(
                f"ambiguous: read {first} first by the date order {order}; --date-order {other_order} reads {other}"
            )
        else:
            entry["why"].append(
                f"ambiguous: read {first} first as the event's country {country} writes dates ({order}); "
                f"the other order reads {other}"
            )
    return entry


def _date_ambiguity(
    raw: Any, settings: NormalizationSettings, country: str | None, today: date
) -> tuple[str, str, str] | None:
    """(order used, what decided it: ``country`` or ``DATE_ORDER``, the other reading) for a date of birth
    whose day and month could be swapped; None when the value itself decides (a part > 12, a hint, a name)."""
    mdy = _reading("db", raw, replace(settings, date_order="MDY"), None, today)
    dmy = _reading("db", raw, replace(settings, date_order="DMY"), None, today)
    read = _reading("db", raw, settings, country, today)
    if mdy is None or dmy is None or mdy == dmy or read not in (mdy, dmy):
        return None
    order, other = ("MDY", dmy) if read == mdy else ("DMY", mdy)
    other_order = "DMY" if settings.date_order == "MDY" else "MDY"
    by_setting = _reading("db", raw, replace(settings, date_order=other_order), country, today) != read  # type: ignore[arg-type]
    return order, "DATE_ORDER" if by_setting else "country", other


def _reading(field: str, raw: Any, settings: NormalizationSettings, country: str | None, today: date) -> str | None:
    try:
        return normalized_string(field, raw, settings, country, today)
    except Invalid:
        return None


def ambiguity_warnings(raw_event: Any, settings: NormalizationSettings, now: int) -> list[dict[str, Any]]:
    """Values the relay read by a convention, not by the value itself (no values in the result):

    * ``date_read_by_convention`` (``db``): the date reads differently day-first and month-first; the event's
      country decided (``decided_by: country``), or without one the setting ``DATE_ORDER`` / ``--date-order``;
    * ``phone_region_assumed`` (``ph``): a national-format number (no ``+`` / ``00``) whose reading depends on
      the region, in an event without ``country``: ``DEFAULT_PHONE_REGION`` / ``--phone-region`` decided.
    """
    if not isinstance(raw_event, dict) or not isinstance(raw_event.get("user_data"), dict):
        return []
    user_data = raw_event["user_data"]
    today = _utc_today(now)
    country = _event_country(user_data, settings, today)
    out: list[dict[str, Any]] = []
    for raw in _values(user_data.get("db")):
        if isinstance(raw, str) and _SHA256_RE.fullmatch(raw.strip()):
            continue
        if (ambiguity := _date_ambiguity(raw, settings, country, today)) is not None:
            order, by, _ = ambiguity
            out.append({"field": "db", "warning": "date_read_by_convention", "date_order": order, "decided_by": by})
            break
    if country is None:
        probe = "JP" if settings.default_phone_region != "JP" else "DE"
        for raw in _values(user_data.get("ph")):
            if not isinstance(raw, str) or raw.strip().startswith(("+", "00")) or _SHA256_RE.fullmatch(raw.strip()):
                continue
            read = _reading("ph", raw, settings, None, today)
            other = _reading("ph", raw, replace(settings, default_phone_region=probe), None, today)
            if read is not None and read != other:
                out.append({"field": "ph", "warning": "phone_region_assumed", "region": settings.default_phone_region})
                break
    return out


def _values(raw: Any) -> list[Any]:
    if raw is None:
        return []
    return list(raw) if isinstance(raw, list) else [raw]


def explain_event(index: int, raw: Any, settings: NormalizationSettings, now: int) -> dict[str, Any]:
    """Everything ``--explain`` shows for one event: every rejection reason with its detail, each hashed
    value before and after, and the ambiguity warnings."""
    doc: dict[str, Any] = {"index": index}
    doc["rejected"] = [{"reason": r.reason, "detail": r.detail} for r in all_rejections(raw, settings, now)]
    user_data = raw.get("user_data") if isinstance(raw, dict) else None
    if isinstance(user_data, dict):
        today = _utc_today(now)
        country = _event_country(user_data, settings, today)
        doc["phone_region"] = country.upper() if country else settings.default_phone_region
        doc["date_order"] = settings.date_order
        doc["user_data"] = [
            explain_value(field, value, settings, country, today)
            for field in HASHED_FIELDS
            for value in _values(user_data.get(field))
        ]
    doc["warnings"] = ambiguity_warnings(raw, settings, now)
    return doc


# Event-level conversions (outside user_data) shown under ``adjusted``: the key, the value received, the value sent.
_TIME_NOTES = frozenset({"event_time_ms", "event_time_iso", "event_time_clamped", "event_time_defaulted"})


def conversions(raw: dict[str, Any], sent: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """``{"field", "note": "converted", "from", "to"}`` for every top-level and ``custom_data`` value the relay
    sends differently from how it was received (``"59.90"`` -> ``59.9``, ``"USD"`` -> ``"usd"``, a trimmed
    ``event_name`` ...). ``user_data`` is left to ``--explain``; ``event_time`` conversions a note already
    names (ISO, milliseconds, clamped, defaulted) are not repeated."""
    out: list[dict[str, Any]] = []
    for key, value in sent.items():
        if key in {"user_data", "custom_data"} or key not in raw:
            continue
        if key == "event_time" and _TIME_NOTES.intersection(notes):
            continue
        if raw[key] != value or type(raw[key]) is not type(value):
            out.append({"field": key, "note": "converted", "from": raw[key], "to": value})
    raw_custom, custom = raw.get("custom_data"), sent.get("custom_data")
    if isinstance(raw_custom, dict) and isinstance(custom, dict):
        for key, value in custom.items():
            if key in raw_custom and (raw_custom[key] != value or type(raw_custom[key]) is not type(value)):
                out.append({"field": f"custom_data.{key}", "note": "converted", "from": raw_custom[key], "to": value})
    return out
