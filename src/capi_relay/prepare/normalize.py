"""``user_data`` normalization and hashing (../shared/spec/normalization.md). Pure: no I/O, no logging.

``normalize_user_data`` returns the dict to POST and the list of values it dropped (field + reason,
never the value). The per-field rules are in ``rules.py`` (each returns the string that is hashed, or raises
:class:`Invalid`); this module caps each value, memoizes the repeating ones and hashes.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date, datetime
from functools import cache, partial
from typing import Any

from capi_relay._compat import UTC
from capi_relay.ingest.model import Drop
from capi_relay.prepare.rules import (
    _FB_COOKIE_RE,
    _MD5_RE,
    _PB_HASH_RE,
    _PLAIN_CHECKS,
    _RULES,
    _SHA256_RE,
    _VARIANTS,
    HASHED_FIELDS,
    PLAIN_FIELDS,
    Invalid,
    _Ctx,
    _nfc,
    norm_country,
    sha256_hex,
)
from capi_relay.settings import NormalizationSettings

MAX_VARIANTS = 3  # values sent per input, the documented form first

# Longest value accepted per field, in characters as received (before trimming): a value over it is dropped
# with ``too_long`` before any rule or regex looks at it. Each is far above any real value of the field, and
# above a padded SHA-256 (64 hex digits).
MAX_CHARS: dict[str, int] = {
    "em": 320, "ph": 128, "fn": 256, "ln": 256, "ge": 128, "db": 128, "ct": 256, "st": 256, "zp": 128,
    "country": 256, "external_id": 1024,
}  # fmt: skip
MAX_VALUES_PER_FIELD = 100  # items of a list value; more are dropped (too_many_values), the first ones kept
MAX_PLAIN_CHARS = 1024  # never-hashed fields (ids, fbc, fbp, IP) ...
MAX_USER_AGENT_CHARS = 4096  # ... and client_user_agent

# never-hashed field -> (its cap, its check): _plain_value's steps for an ASCII string, looked up once.
_PLAIN_FAST: dict[str, tuple[int, Callable[[str], str] | None]] = {
    field: (MAX_USER_AGENT_CHARS if field == "client_user_agent" else MAX_PLAIN_CHARS, _PLAIN_CHECKS.get(field))
    for field in PLAIN_FIELDS
}


def _utf8_safe(text: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``); they have no UTF-8 form, so they can be neither
    hashed nor sent. Such a value is dropped (``invalid_unicode``)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("invalid_unicode") from None
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return _utf8_safe(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("bad_type")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid("bad_type")
        if value.is_integer():
            return str(int(value))
    return str(value)


# Values repeat across events (country, state, city, gender, first names, dates of birth), so the outcome of
# each value is memoized (bench_normalize's "memo" line measures the gain); identifiers are not (below).
# Only values of at most MEMO_MAX_VALUE_CHARS characters, bounded by bytes: value -> what is sent (one hash, or a
# tuple of hashes when variants are sent) or the Drop. One dict per field, so a hit is one lookup keyed by the
# value itself: the fields whose rule ignores the event's context (names, gender, city, country) share one dict
# across contexts; a state, ZIP or date of birth (the country decides the state variants, the ZIP rule and the
# date order; DATE_ORDER and today the rest) has one per (country, DATE_ORDER, today). It holds raw values, so it
# lives for one invocation: the relay calls clear_memo() when an invocation starts. Once full, nothing more is
# added (the values that repeat most, such as countries and states, are seen first and stay).
MEMO_MAX_VALUE_CHARS = 64
MEMO_MAX_BYTES = 16 * 1024 * 1024  # ~35,000 entries: a 10,000-event batch's repeats
_MEMO_ENTRY_OVERHEAD = 400  # dict slot, key tuple, result tuple, str headers (~350-450 bytes)
# Values that identify one person (an email, a phone, an external id) rarely repeat across events: memoizing
# them costs a miss and an insert per event, and fills the memo before the values that do repeat.
_UNMEMOIZED = frozenset({"em", "ph", "external_id"})
_CONTEXT_FREE = ("fn", "ln", "ge", "ct", "country")  # rules that read nothing of _Ctx
_IN_CONTEXT = tuple(f for f in HASHED_FIELDS if f not in _UNMEMOIZED and f not in _CONTEXT_FREE)  # st, zp, db
_COUNTRY_OF = "country_of"  # the memo of _first_country: a raw country value -> the code it names (or None)

_Sent = str | tuple[str, ...] | Drop  # one hash, the hashes of a value with variants, or why it was dropped


class _Noted:
    """A memoized date of birth whose reading made notes (the date order used): noted again on every hit."""

    __slots__ = ("notes", "result")

    def __init__(self, result: _Sent, notes: tuple[str, ...]) -> None:
        self.result = result
        self.notes = notes


_Memoized = _Sent | _Noted
_shared_memo: dict[str, dict[str, Any]] = {field: {} for field in (*_CONTEXT_FREE, _COUNTRY_OF)}
_context_memos: dict[tuple[str | None, str, date], dict[str, dict[str, _Memoized]]] = {}
_memo_entries = 0
_memo_bytes = 0


class _MemoKeys:
    """The memo's keys as (field, value, context) tuples, for tests and the benchmark."""

    def __iter__(self) -> Iterator[tuple[str, str, tuple[str | None, str, date] | None]]:
        for field, values in _shared_memo.items():
            for value in values:
                yield field, value, None
        for context, memos in _context_memos.items():
            for field in _IN_CONTEXT:
                for value in memos[field]:
                    yield field, value, context

    def __len__(self) -> int:
        return _memo_entries


_memo = _MemoKeys()


def clear_memo() -> None:
    """Forget every memoized value (per-invocation state: call it at the start of each invocation)."""
    global _memo_bytes, _memo_entries  # noqa: PLW0603 -- the one module-level cache, bounded and cleared here
    for values in _shared_memo.values():
        values.clear()
    _context_memos.clear()
    _contexts.clear()
    _contexts_by_value.clear()
    _memo_bytes = 0
    _memo_entries = 0


def memo_size() -> tuple[int, int]:
    """(entries, estimated bytes) of the memo, for tests and the benchmark."""
    return _memo_entries, _memo_bytes


def _memos(ctx: _Ctx) -> dict[str, dict[str, _Memoized]]:
    """The per-field memo dicts for ``ctx``'s context (memoized fields only)."""
    key = (ctx.country, ctx.date_order, ctx.today)
    memos = _context_memos.get(key)
    if memos is None:
        memos = {field: _shared_memo[field] for field in _CONTEXT_FREE}
        for field in _IN_CONTEXT:
            memos[field] = {}
        _context_memos[key] = memos
    return memos


def _remember(memo: dict[str, Any], value: str, found: Any, size: int) -> bool:
    """Store ``found`` for ``value`` when the byte bound allows; True when stored."""
    global _memo_bytes, _memo_entries  # noqa: PLW0603
    if _memo_bytes + size > MEMO_MAX_BYTES:
        return False
    memo[value] = found
    _memo_bytes += size
    _memo_entries += 1
    return True


def _hash_missed(field: str, value: str, ctx: _Ctx, memo: dict[str, _Memoized]) -> _Sent:
    """A memoized field's value not in the memo yet: hashed, then remembered (notes are made by the rule)."""
    noted = len(ctx.notes)
    found: _Sent
    try:
        found = _HASHERS[field](value, ctx)
    except Invalid as exc:
        found = Drop(field, exc.reason)
    hashes = 0 if type(found) is Drop else 1 if type(found) is str else len(found)  # type: ignore[arg-type]
    stored: _Memoized = found if len(ctx.notes) == noted else _Noted(found, tuple(ctx.notes[noted:]))
    _remember(memo, value, stored, _MEMO_ENTRY_OVERHEAD + len(value) + 64 * hashes)
    return found


def _hash_one(field: str, value: Any, ctx: _Ctx, memos: dict[str, dict[str, _Memoized]]) -> _Sent:
    """One value of a hashed field: what is sent (one hash, or the documented form's hash followed by its
    variants') or the Drop; through the memo where the field is memoized."""
    memo = memos.get(field)
    if memo is None or type(value) is not str or len(value) > MEMO_MAX_VALUE_CHARS:
        try:
            return _HASHERS[field](value, ctx)
        except Invalid as exc:
            return Drop(field, exc.reason)
    found = memo.get(value)
    if found is None:
        return _hash_missed(field, value, ctx, memo)
    if type(found) is _Noted:
        ctx.notes.extend(found.notes)
        return found.result
    return found  # type: ignore[return-value]


def hash_value(field: str, value: Any, *, ctx: _Ctx) -> tuple[str, ...]:
    """Normalize one value of a hashed field and return what is sent: one hash, or the documented form's hash
    followed by its variants' (at most MAX_VARIANTS). Raises :class:`Invalid`."""
    found = _hash_one(field, value, ctx, _memos(ctx))
    if type(found) is str:
        return (found,)
    if type(found) is Drop:
        raise Invalid(found.reason)
    return found  # type: ignore[return-value]


def _clean(field: str, value: Any) -> str:
    """General rules 1-2, first half: a string (numbers accepted) within the field's cap, NFC, trimmed, never
    empty."""
    if isinstance(value, str) and len(value) > MAX_CHARS[field]:
        raise Invalid("too_long")  # before any other look at the value (even its UTF-8 check)
    # The usual case, an ASCII string, is valid UTF-8 and NFC as it is.
    text = value.strip() if type(value) is str and value.isascii() else _nfc(_as_text(value)).strip()
    if not text:
        raise Invalid("empty")
    return text


def _apply_rule(field: str, text: str, ctx: _Ctx) -> str:
    """The field's rule, then NFC again (lower-casing can decompose); an empty result is never hashed."""
    normalized = _RULES[field](text, ctx)
    if not normalized.isascii():
        normalized = unicodedata.normalize("NFC", normalized)
    if not normalized:
        raise Invalid("empty")
    return normalized


def _forms(field: str, text: str, ctx: _Ctx) -> list[str]:
    """The documented form, then each variant Meta's other normalizer computes (distinct, non-empty)."""
    documented = _apply_rule(field, text, ctx)
    variants = _VARIANTS.get(field)
    if variants is None:
        return [documented]
    forms = [documented]
    for variant in variants(text, documented, ctx):
        form = _nfc(variant)
        if form and form not in forms and len(forms) < MAX_VARIANTS:
            forms.append(form)
    return forms


def _hash_forms(field: str, value: Any, ctx: _Ctx) -> tuple[str, ...]:
    text = _clean(field, value)
    size = len(text)
    if size == 64 and _SHA256_RE.fullmatch(text):
        return (text.lower(),)
    if size in {67, 73} and _PB_HASH_RE.fullmatch(text):
        return (text,)
    if size == 32 and field != "external_id" and _MD5_RE.fullmatch(text):
        raise Invalid("md5_hash")
    if field not in _VARIANTS:
        return (sha256_hex(_apply_rule(field, text, ctx)),)
    return tuple([sha256_hex(form) for form in _forms(field, text, ctx)])


def _hashed(field: str, value: Any, ctx: _Ctx) -> str | tuple[str, ...]:
    """What is sent for one value of ``field``: its hash, or a tuple of hashes when variants are sent. The
    reference path: every field's hasher in _HASHERS returns exactly this."""
    forms = _hash_forms(field, value, ctx)
    return forms[0] if len(forms) == 1 else forms


# The lengths at which _hash_forms looks for an MD5 or capi-param-builder's hash, and the regex each needs: a value
# of such a length that is neither (an email of 32 characters) is hashed like any other, a hash is left to
# _hash_forms.
_HASH_SHAPES = {32: _MD5_RE, 67: _PB_HASH_RE, 73: _PB_HASH_RE}


def _string_hasher(field: str) -> Callable[[Any, _Ctx], str | tuple[str, ...]]:
    """The hasher of a field without variants: a string that is no hash (the usual value) is trimmed, put through
    the field's rule and hashed in one call, and a SHA-256 (64 hex digits) is sent lower-cased; anything else (an
    MD5, capi-param-builder's hash, a number, a value over the cap) takes the reference path (_hashed).
    Both do the same steps in the same order (cap, UTF-8 check, NFC, trim, empty, rule, NFC, empty); an ASCII
    string needs no UTF-8 check and no NFC. tests/unit/test_normalize_fast_paths.py checks the two agree."""
    rule = _RULES[field]
    cap = MAX_CHARS[field]
    sha256 = hashlib.sha256

    def hasher(value: Any, ctx: _Ctx) -> str | tuple[str, ...]:
        if type(value) is str and len(value) <= cap:
            text = value.strip() if value.isascii() else _nfc(_utf8_safe(value)).strip()
            size = len(text)
            if size == 64 and _SHA256_RE.fullmatch(text):
                return text.lower()
            shape = _HASH_SHAPES.get(size)
            if size and (shape is None or not shape.fullmatch(text)):
                normalized = rule(text, ctx)
                if not normalized.isascii():
                    normalized = unicodedata.normalize("NFC", normalized)
                if not normalized:
                    raise Invalid("empty")
                return sha256(normalized.encode()).hexdigest()
        return _hashed(field, value, ctx)

    return hasher


# field -> its hasher, built once: the fast path for the fields without variants, the reference path for the rest.
_HASHERS: dict[str, Callable[[Any, _Ctx], str | tuple[str, ...]]] = {
    field: partial(_hashed, field) if field in _VARIANTS else _string_hasher(field) for field in _RULES
}


def normalized_string(field: str, value: Any, settings: NormalizationSettings, country: str | None = None,
                      today: date | None = None) -> str:  # fmt: skip
    """The exact string that is hashed for ``value`` (its documented form; for tests and the conformance table)."""
    ctx = _Ctx(settings, country, today or datetime.now(UTC).date())
    return _apply_rule(field, _clean(field, value), ctx)


def normalized_strings(field: str, value: Any, settings: NormalizationSettings, country: str | None = None,
                       today: date | None = None) -> list[str]:  # fmt: skip
    """Every string hashed for ``value``: the documented form first, then its variants."""
    ctx = _Ctx(settings, country, today or datetime.now(UTC).date())
    return _forms(field, _clean(field, value), ctx)


def _plain_value(field: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise Invalid("bad_type")
    check = _PLAIN_CHECKS.get(field)
    if isinstance(value, int) and field != "client_user_agent":
        if check is not None and field == "lead_id":
            check(str(value))
        elif check is not None:
            raise Invalid("bad_type")
        return value  # fb_login_id / lead_id / page_id ... are integers in Meta's docs: sent as given
    if not isinstance(value, str):
        raise Invalid("bad_type")
    if len(value) > (MAX_USER_AGENT_CHARS if field == "client_user_agent" else MAX_PLAIN_CHARS):
        raise Invalid("too_long")
    text = _utf8_safe(value).strip()
    if not text:
        raise Invalid("empty")
    return check(text) if check else text


def _plain_field(field: str, raw: Any, drops: list[Drop]) -> Any:
    """A never-hashed field takes one value (Meta's UserData types them as scalars). A list is accepted
    when it holds exactly one distinct valid value (it is unwrapped); several distinct values cannot be
    sent, so the field is dropped with ``multiple_values``."""
    if not isinstance(raw, list):
        try:
            return _plain_value(field, raw)
        except Invalid as exc:
            drops.append(Drop(field, exc.reason))
            return None
    values = _normalize_list(field, raw, partial(_plain_value, field), drops)
    if values is None:
        return None
    if len(values) > 1:
        drops.append(Drop(field, "multiple_values"))
        return None
    return values[0]


def _normalize_list(field: str, raw: list[Any], fn: Callable[[Any], Any], drops: list[Drop]) -> list[Any] | None:
    """General rule 1 for lists: each item normalized, failures dropped, duplicates removed in first order;
    None when nothing is left."""
    out: list[Any] = []
    seen: set[Any] = set()
    if len(raw) > MAX_VALUES_PER_FIELD:
        drops.append(Drop(field, "too_many_values"))  # the first MAX_VALUES_PER_FIELD are kept
        raw = raw[:MAX_VALUES_PER_FIELD]
    for item in raw:
        try:
            result = fn(item)
        except Invalid as exc:
            drops.append(Drop(field, exc.reason))
            continue
        if result not in seen:
            seen.add(result)
            out.append(result)
    if not out:
        if not raw:
            drops.append(Drop(field, "empty"))
        return None
    return out


def _hashed_list(field: str, raw: list[Any], ctx: _Ctx, drops: list[Drop]) -> list[str] | None:
    """A list: each item's forms, flattened, duplicates removed in first order."""
    groups = _normalize_list(field, raw, partial(hash_value, field, ctx=ctx), drops)
    if groups is None:
        return None
    return list(dict.fromkeys(h for forms in groups for h in forms))


@cache
def _hashed_countries() -> dict[str, str]:
    from capi_relay.prepare._tables.countries import COUNTRIES  # noqa: PLC0415 -- generated table, loaded on first use

    return {sha256_hex(code): code for code in set(COUNTRIES.values())}


def _country_of_hash(text: str) -> str | None:
    """The alpha-2 code whose SHA-256 is ``text``. A pre-hashed country (what SDK users send) still tells us
    the phone region and the US ZIP rule: there are only ~250 possible inputs."""
    return _hashed_countries().get(text.lower())


def _first_country(raw: Any) -> str | None:
    """The event's country for the phone region and the ZIP rule: its first value that names a country."""
    if type(raw) is str and len(raw) <= MEMO_MAX_VALUE_CHARS:  # one value, the usual case: memoized
        memo = _shared_memo[_COUNTRY_OF]
        if raw in memo:
            return memo[raw]  # type: ignore[no-any-return]
        code = _country_named(raw)
        _remember(memo, raw, code, _MEMO_ENTRY_OVERHEAD + len(raw))
        return code
    for item in raw if isinstance(raw, list) else [raw]:
        code = _country_named(item)
        if code is not None:
            return code
    return None


def _country_named(item: Any) -> str | None:
    """The code one country value names, or None."""
    try:
        text = _clean("country", item)  # the field's cap first, as for every value
        if _SHA256_RE.fullmatch(text):
            return _country_of_hash(text)
        return norm_country(text)
    except Invalid:
        return None


def normalize_user_data(
    user_data: Any, settings: NormalizationSettings, today: date | None = None, notes: list[str] | None = None
) -> tuple[dict[str, Any], list[Drop]]:
    """Normalize and hash a ``user_data`` object. Unknown keys and invalid values are dropped. ``notes`` (when
    given) receives the adjustments worth showing: the order an ambiguous date of birth was read in."""
    if not isinstance(user_data, dict):
        return {}, [Drop("user_data", "bad_type")]
    ctx, fields = _event_ctx(user_data, settings, today, notes)
    out: dict[str, Any] = {}
    drops: list[Drop] = []
    # One pass in the order the keys came, one table lookup per key. The usual value, one string, is decided
    # here without a further call (this loop runs ~13 times per event); every other value goes to the helper of
    # its kind.
    for key, raw in user_data.items():
        field = fields.get(key, _UNKNOWN_FIELD)
        hasher, memo, _, _ = field
        if hasher is None:  # a never-hashed field, or an unknown key
            if (result := _plain(key, raw, field, drops)) is not None:
                out[key] = result
            continue
        if type(raw) is not str:
            if (result := _hashed_other(key, raw, ctx, drops)) is not None:
                out[key] = result
            continue
        # memoized where the field's values repeat (a hit needs no length check: only short values are stored)
        found = None if memo is None else memo.get(raw)
        if found is None:
            if memo is not None and len(raw) <= MEMO_MAX_VALUE_CHARS:
                found = _hash_missed(key, raw, ctx, memo)
            else:
                try:
                    found = hasher(raw, ctx)
                except Invalid as exc:
                    drops.append(Drop(key, exc.reason))
                    continue
        # a single value with one form is sent as a string (the usual case); anything else goes to _put_sent
        if type(found) is str:
            out[key] = found
        else:
            _put_sent(key, found, ctx, out, drops)
    return out, drops


# One known field of user_data in one context: (its hasher, its memo dict) for a hashed field (the memo None when
# the field is not memoized), (None, None, its cap, its check) for a never-hashed one.
_Field = tuple[Callable[[Any, "_Ctx"], "str | tuple[str, ...]"] | None, "dict[str, _Memoized] | None", int,
               Callable[[str], str] | None]  # fmt: skip
# (country, DEFAULT_PHONE_REGION, DATE_ORDER, today) -> the context as it starts for each event, and its field table.
# Derived from the settings and the memo dicts: cleared with the memo, and at _CONTEXTS_MAX entries (~3 KB each, so
# at most ~3 MB; an invocation sees at most one per country).
_contexts: dict[tuple[str | None, str, str, date], tuple[_Ctx, dict[str, _Field]]] = {}
_CONTEXTS_MAX = 1024
_UNKNOWN_FIELD: _Field = (None, None, -1, None)  # a key that is no field of user_data: dropped by _plain


# (the country field's value, DEFAULT_PHONE_REGION, DATE_ORDER, today) -> the same (context, field table) as
# _contexts: an event whose country is one short string (or none) finds its context by that value, without reading
# it (_first_country). Cleared with the memo, and at _CONTEXTS_MAX entries (~300 bytes each: the values are shared).
_contexts_by_value: dict[tuple[str | None, str, str, date], tuple[_Ctx, dict[str, _Field]]] = {}


def _event_ctx(user_data: dict[str, Any], settings: NormalizationSettings, today: date | None,
               notes: list[str] | None) -> tuple[_Ctx, dict[str, _Field]]:  # fmt: skip
    """The event's context (the settings, today, the country its ``country`` field names) and its field table.
    Both are built once per context; each event gets its own copy of the context (its notes are its own)."""
    raw = user_data.get("country")
    day = today or datetime.now(UTC).date()
    if raw is None or (type(raw) is str and len(raw) <= MEMO_MAX_VALUE_CHARS):
        key = (raw, settings.default_phone_region, settings.date_order, day)
        found = _contexts_by_value.get(key)
        if found is None:
            if len(_contexts_by_value) >= _CONTEXTS_MAX:
                _contexts_by_value.clear()
            found = _contexts_by_value[key] = _context_of(raw, settings, day)
    else:
        found = _context_of(raw, settings, day)
    return found[0].for_event(notes), found[1]


def _context_of(raw_country: Any, settings: NormalizationSettings, today: date) -> tuple[_Ctx, dict[str, _Field]]:
    """The context (and field table) of the country ``raw_country`` names (None: no such field) on ``today``."""
    country = None if raw_country is None else _first_country(raw_country)
    key = (country, settings.default_phone_region, settings.date_order, today)
    found = _contexts.get(key)
    if found is None:
        found = _new_context(key, settings)
    return found


def _new_context(key: tuple[str | None, str, str, date], settings: NormalizationSettings,
                 ) -> tuple[_Ctx, dict[str, _Field]]:  # fmt: skip
    ctx = _Ctx(settings, key[0], key[3])
    memos = _memos(ctx)
    fields: dict[str, _Field] = {field: (hasher, memos.get(field), 0, None) for field, hasher in _HASHERS.items()}
    for field, (cap, check) in _PLAIN_FAST.items():
        fields[field] = (None, None, cap, check)
    if len(_contexts) >= _CONTEXTS_MAX:
        _contexts.clear()
    _contexts[key] = ctx, fields
    return ctx, fields


def _put_sent(key: str, found: _Memoized, ctx: _Ctx, out: dict[str, Any], drops: list[Drop]) -> None:
    """What a hashed field's value came to, other than one hash: a Drop, a value's forms (sent as a list), or a
    memo hit whose reading made notes (noted for this event too)."""
    if type(found) is _Noted:
        ctx.notes.extend(found.notes)
        found = found.result
    if type(found) is Drop:
        drops.append(found)
    elif type(found) is str:
        out[key] = found
    else:
        out[key] = list(found)  # type: ignore[arg-type]


def _hashed_other(key: str, raw: Any, ctx: _Ctx, drops: list[Drop]) -> str | list[str] | None:
    """What is sent for a hashed field's value that is not one string: None (absent), a list, or a number (or a
    wrong type, dropped); None when nothing is."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return _hashed_list(key, raw, ctx, drops)
    found = _hash_one(key, raw, ctx, _memos(ctx))
    if type(found) is Drop:
        drops.append(found)
        return None
    return found if type(found) is str else list(found)  # type: ignore[arg-type]


def _plain(key: str, raw: Any, field: _Field, drops: list[Drop]) -> Any:
    """What is sent for a never-hashed field's value (checked, sent as it is); None when nothing is."""
    if field[2] < 0:  # _UNKNOWN_FIELD (by value: compiled, a tuple is a copy, never the same object)
        drops.append(Drop("user_data", "unknown_key"))
        return None
    # The usual value, a non-empty ASCII string within the cap, goes straight to the field's check; anything
    # else to _plain_field (tests/unit/test_normalize_fast_paths.py checks they agree).
    if type(raw) is str and len(raw) <= field[2] and raw.isascii() and (text := raw.strip()):
        check = field[3]
        if check is None:
            return text
        try:
            return check(text)
        except Invalid as exc:
            drops.append(Drop(key, exc.reason))
            return None
    return None if raw is None else _plain_field(key, raw, drops)


def is_fb_cookie(value: str) -> bool:
    return bool(_FB_COOKIE_RE.fullmatch(value))
