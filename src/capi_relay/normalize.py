"""``user_data`` normalization and hashing (../shared/spec/normalization.md). Pure: no I/O, no logging.

``normalize_user_data`` returns the dict to POST and the list of values it dropped (field + reason,
never the value). The per-field ``norm_*`` functions return the string that is hashed, or raise
:class:`Invalid` with a reason code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache, partial
from typing import Any

from capi_relay.model import Drop
from capi_relay.settings import NormalizationSettings

HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
PLAIN_FIELDS = (
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
    "whatsapp_business_account_id",
    "instagram_business_account_id",
)
KNOWN_FIELDS = frozenset(HASHED_FIELDS + PLAIN_FIELDS)

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_PB_HASH_RE = re.compile(r"[0-9a-fA-F]{64}\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8})")
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
# ASCII classes and fullmatch() everywhere: ``\d`` would accept Arabic-Indic digits, ``$`` a trailing newline.
_FB_COOKIE_RE = re.compile(r"fb\.[0-9]\.[0-9]{10,13}\.[A-Za-z0-9_-]+(?:\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?")
_WS_RE = re.compile(r"\s")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Invalid(ValueError):
    """A value fails its field rule; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)  # ASCII is always NFC


# ASCII fast paths for _keep_categories: in ASCII, L = [A-Za-z], N = [0-9], no M; the rest is P/S/Z/Cc.
_NOT_ASCII_CATEGORY = {
    ("L",): re.compile(r"[^A-Za-z]+"),
    ("L", "M"): re.compile(r"[^A-Za-z]+"),
    ("L", "M", "N"): re.compile(r"[^A-Za-z0-9]+"),
}


def _keep_categories(text: str, prefixes: tuple[str, ...]) -> str:
    """Keep the characters whose Unicode general category starts with one of ``prefixes``."""
    if text.isascii():
        return _NOT_ASCII_CATEGORY[prefixes].sub("", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in prefixes)


def _strip_marks(text: str) -> str:
    if text.isascii():
        return text
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch)[0] != "M")


# --------------------------------------------------------------------------------------------- em
def norm_em(value: str, ctx: _Ctx) -> str:
    v = value.lower()
    if _WS_RE.search(v) or v.count("@") != 1:
        raise Invalid("invalid_email")
    local, domain = v.split("@")
    if not local or "." not in domain or ".." in v:
        raise Invalid("invalid_email")
    if local[0] == "." or local[-1] == "." or domain[0] == "." or domain[-1] == ".":
        raise Invalid("invalid_email")
    return v


# --------------------------------------------------------------------------------------------- ph
_EXT_RE = re.compile(r"(?i)\s*(?:(?:ext|extension)\b\.?|x|#).*$")
_PH_ALLOWED_RE = re.compile(r"[0-9\s().\-/+]*")
_PH_SEPARATORS_RE = re.compile(r"[\s().\-/]")
_NANP_REGIONS = frozenset("US CA AG AI AS BB BM BS DM DO GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI".split())


def _ascii_digits(text: str) -> str:
    """Any Unicode decimal digit (Arabic-Indic, full-width ...) -> ASCII, and the full-width plus -> "+": a
    phone typed on a phone keyboard is still a phone number, and the hash must be of ASCII digits."""
    out = []
    for ch in text:
        if ch <= "\x7f":
            out.append(ch)
            continue
        digit = unicodedata.decimal(ch, None)
        out.append("+" if ch == "\uff0b" else ch if digit is None else str(digit))
    return "".join(out)


def norm_ph(value: str, ctx: _Ctx) -> str:
    v = value if value.isascii() else _ascii_digits(value)
    v = _EXT_RE.sub("", v).strip()
    if not v or not _PH_ALLOWED_RE.fullmatch(v):
        raise Invalid("invalid_phone")  # letters (vanity numbers) or other symbols
    v = v.replace("(0)", "")
    compact = _PH_SEPARATORS_RE.sub("", v)
    if "+" in compact[1:]:
        raise Invalid("invalid_phone")
    international: str | None = None
    if compact.startswith("+"):
        international = compact[1:].lstrip("0")
    elif compact.startswith("00"):
        international = compact[2:].lstrip("0")
    elif compact.startswith("011") and ctx.region in _NANP_REGIONS:
        international = compact[3:].lstrip("0")
    digits = international if international is not None else _national_to_e164(compact, ctx.region)
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        raise Invalid("invalid_phone")
    return digits


# A NANP number in its usual national shape: [1] NPA NXX XXXX with N = 2-9. phonenumbers gives exactly
# "1" + the 10 digits for these (country code 1 for every NANP region); tests/unit/test_normalize_properties
# checks the shortcut against phonenumbers. It spares the ~20 µs parse for the commonest case.
_NANP_NATIONAL_RE = re.compile(r"1?([2-9][0-9]{2}[2-9][0-9]{6})")


def _national_to_e164(digits: str, region: str) -> str:
    """Country code + national number for a number written without ``+``/``00``.

    A number that is only dialable locally (``555-1212`` in the US: no area code) is dropped rather than
    sent as ``15551212``, which no one's hash would match. A string that is not a possible national number
    of ``region`` but is a *valid* number once read as ``+digits`` (Meta's own format, ``447911123456``) is
    taken as already international.
    """
    if region in _NANP_REGIONS and (m := _NANP_NATIONAL_RE.fullmatch(digits)):
        return "1" + m[1]
    return _parse_national(digits, region)


def _parse_national(digits: str, region: str) -> str:
    import phonenumbers  # noqa: PLC0415 -- lazy: ~20 ms of import, needed only for national numbers

    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        raise Invalid("invalid_phone") from None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        try:
            as_intl = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            raise Invalid("invalid_phone") from None
        if not phonenumbers.is_valid_number(as_intl):
            raise Invalid("invalid_phone")
        number = as_intl
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


# ------------------------------------------------------------------------------------------ fn/ln
def norm_name(value: str, ctx: _Ctx) -> str:
    return _keep_categories(value.lower(), ("L", "M", "N"))


# --------------------------------------------------------------------------------------------- ge
_GENDERS = {
    "m": "m", "male": "m", "man": "m", "mr": "m",
    "f": "f", "female": "f", "woman": "f", "mrs": "f", "ms": "f", "miss": "f",
}  # fmt: skip


def norm_ge(value: str, ctx: _Ctx) -> str:
    key = _keep_categories(value.lower(), ("L",))
    try:
        return _GENDERS[key]
    except KeyError:
        raise Invalid("invalid_gender") from None


# --------------------------------------------------------------------------------------------- db
_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_DB_YMD_RE = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})")
_DB_NUM3_RE = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{2}|\d{4})")
_DB_WORD_RE = re.compile(r"[a-z]+|\d+")
# An ISO 8601 date-time ("1990-12-31T00:00:00Z", what many CRMs export): the calendar date is the birth date.
_DB_ISO_DATETIME_RE = re.compile(
    r"(\d{4}-\d{1,2}-\d{1,2})[t ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?"
)
_DB_ORDINAL_RE = re.compile(r"(\d)(?:st|nd|rd|th)\b")  # "31st Dec 1990"


def _month_number(word: str) -> int | None:
    """``dec``, ``dece``, ``december`` and ``sept`` name a month; anything shorter than 3 letters does not."""
    if len(word) < 3:
        return None
    for number, full in enumerate(_MONTH_NAMES, start=1):
        if full.startswith(word):
            return number
    return None


def norm_db(value: str, ctx: _Ctx) -> str:
    v = value.lower().strip()
    if m := _DB_ISO_DATETIME_RE.fullmatch(v):
        v = m[1]
    year: int
    month: int
    day: int
    if len(v) == 8 and v.isdecimal():  # isdecimal, not isdigit: int("²") raises
        year, month, day = int(v[:4]), int(v[4:6]), int(v[6:])
    elif m := _DB_YMD_RE.fullmatch(v):
        year, month, day = int(m[1]), int(m[3]), int(m[4])
    elif m := _DB_NUM3_RE.fullmatch(v):
        a, b, y = int(m[1]), int(m[3]), m[4]
        if len(y) != 4:
            raise Invalid("two_digit_year")
        year = int(y)
        if a > 12 and b > 12:
            raise Invalid("invalid_date")
        if a > 12:
            day, month = a, b
        elif b > 12:
            month, day = a, b
        elif ctx.date_order == "DMY":
            day, month = a, b
        else:
            month, day = a, b
    else:
        tokens = _DB_WORD_RE.findall(_DB_ORDINAL_RE.sub(r"\1", v))
        words = [t for t in tokens if t.isalpha()]
        numbers = [t for t in tokens if t.isdigit()]
        if len(words) != 1 or len(numbers) != 2:
            raise Invalid("invalid_date")
        named = _month_number(words[0])
        if named is None:
            raise Invalid("invalid_date")
        month = named
        years = [n for n in numbers if len(n) == 4]
        days = [n for n in numbers if len(n) <= 2]
        if len(years) != 1 or len(days) != 1:
            raise Invalid("two_digit_year" if not years else "invalid_date")
        year, day = int(years[0]), int(days[0])
    try:
        parsed = date(year, month, day)
    except ValueError:
        raise Invalid("invalid_date") from None
    if year < 1900:
        raise Invalid("invalid_date")
    if parsed > ctx.today:
        raise Invalid("future_date")
    return f"{year:04d}{month:02d}{day:02d}"


# --------------------------------------------------------------------------------------------- ct
def norm_ct(value: str, ctx: _Ctx) -> str:
    return _keep_categories(value.lower(), ("L", "M"))


# --------------------------------------------------------------------------------------------- st
_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "florida": "fl", "georgia": "ga",
    "hawaii": "hi", "idaho": "id", "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks",
    "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma",
    "michigan": "mi", "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt",
    "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm",
    "newyork": "ny", "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok",
    "oregon": "or", "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc",
    "southdakota": "sd", "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt",
    "virginia": "va", "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "districtofcolumbia": "dc", "washingtondc": "dc",
    "puertorico": "pr", "guam": "gu", "usvirginislands": "vi", "virginislands": "vi",
    "unitedstatesvirginislands": "vi", "americansamoa": "as", "northernmarianaislands": "mp",
    "unitedstatesminoroutlyingislands": "um",
}  # fmt: skip
_CA_PROVINCES = {
    "alberta": "ab", "britishcolumbia": "bc", "manitoba": "mb", "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl", "newfoundland": "nl", "novascotia": "ns", "ontario": "on",
    "princeedwardisland": "pe", "quebec": "qc", "saskatchewan": "sk", "northwestterritories": "nt",
    "nunavut": "nu", "yukon": "yt", "yukonterritory": "yt",
}  # fmt: skip
_STATE_NAMES = {**_US_STATES, **_CA_PROVINCES}
_STATE_CODES = frozenset(_STATE_NAMES.values())


def norm_st(value: str, ctx: _Ctx) -> str:
    cleaned = _keep_categories(value.lower(), ("L", "M"))
    key = _strip_marks(cleaned)
    if key in _STATE_CODES:
        return key
    return _STATE_NAMES.get(key, cleaned)


# --------------------------------------------------------------------------------------------- zp
def norm_zp(value: str, ctx: _Ctx) -> str:
    v = _WS_RE.sub("", value.lower()).split("-", 1)[0]
    us_rule = ctx.country == "us" or (ctx.country is None and len(v) == 9 and v.isdigit())
    if us_rule and len(v) >= 5 and v[:5].isdigit():
        v = v[:5]
    if len(v) < 2:
        raise Invalid("invalid_zip")
    return v


# ---------------------------------------------------------------------------------------- country
def country_key(name: str) -> str:
    """Lookup key for country names: lower, accents off, '.' removed, other punctuation -> space."""
    text = _strip_marks(unicodedata.normalize("NFC", name).lower()).replace(".", "").replace("&", " and ")
    text = "".join(ch if ch.isalnum() else " " for ch in text)
    return " ".join(text.split())


def norm_country(value: str, ctx: _Ctx) -> str:
    from capi_relay._countries import COUNTRIES  # noqa: PLC0415 -- generated table, loaded on first use

    code = COUNTRIES.get(value.lower()) or COUNTRIES.get(country_key(value))  # most values need no cleaning
    if code is None:
        raise Invalid("unknown_country")
    return code


# ------------------------------------------------------------------------------------ external_id
def norm_external_id(value: str, ctx: _Ctx) -> str:
    return value.lower()


# ------------------------------------------------------------------------------------------ plain
# Dotted-quad IPv4 without leading zeros: exactly what ipaddress accepts for IPv4, at a fraction of the cost.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def _plain_ip(value: str) -> str:
    if _IPV4_RE.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise Invalid("invalid_ip") from None
    return value


def _plain_fb_cookie(value: str) -> str:
    if not _FB_COOKIE_RE.fullmatch(value):
        raise Invalid("invalid_format")
    return value


_PLAIN_CHECKS: dict[str, Callable[[str], str]] = {
    "client_ip_address": _plain_ip,
    "fbc": _plain_fb_cookie,
    "fbp": _plain_fb_cookie,
}


class _Ctx:
    __slots__ = ("country", "date_order", "region", "today")

    def __init__(self, settings: NormalizationSettings, country: str | None, today: date) -> None:
        self.country = country
        self.region = country.upper() if country else settings.default_phone_region
        self.date_order = settings.date_order
        self.today = today

    def set_country(self, country: str | None) -> None:
        if country:
            self.country = country
            self.region = country.upper()


_RULES: dict[str, Callable[[str, _Ctx], str]] = {
    "em": norm_em,
    "ph": norm_ph,
    "fn": norm_name,
    "ln": norm_name,
    "ge": norm_ge,
    "db": norm_db,
    "ct": norm_ct,
    "st": norm_st,
    "zp": norm_zp,
    "country": norm_country,
    "external_id": norm_external_id,
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


# Values repeat across events (country, state, city, gender, the same customer's email and phone), so the
# outcome of hash_value is memoized per (field, raw string, context). Bounded; cleared when full.
_MEMO_MAX = 32_768
_memo: dict[tuple[Any, ...], str | Invalid] = {}


def hash_value(field: str, value: Any, *, ctx: _Ctx) -> str:
    """Normalize one value of a hashed field and return what is sent (a hash). Raises :class:`Invalid`."""
    if type(value) is not str:
        return _hash_value(field, value, ctx)
    key = (field, value, ctx.country, ctx.region, ctx.date_order, ctx.today)
    found = _memo.get(key)
    if found is None:
        try:
            found = _hash_value(field, value, ctx)
        except Invalid as exc:
            found = exc
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[key] = found
    if isinstance(found, Invalid):
        raise Invalid(found.reason)
    return found


def _clean(value: Any) -> str:
    """General rules 1-2, first half: a string (numbers accepted), NFC, trimmed, never empty."""
    text = _nfc(_as_text(value)).strip()
    if not text:
        raise Invalid("empty")
    return text


def _apply_rule(field: str, text: str, ctx: _Ctx) -> str:
    """The field's rule, then NFC again (lower-casing can decompose); an empty result is never hashed."""
    normalized = _nfc(_RULES[field](text, ctx))
    if not normalized:
        raise Invalid("empty")
    return normalized


def _hash_value(field: str, value: Any, ctx: _Ctx) -> str:
    text = _clean(value)
    size = len(text)
    if size == 64 and _SHA256_RE.fullmatch(text):
        return text.lower()
    if size in {67, 73} and _PB_HASH_RE.fullmatch(text):
        return text
    if size == 32 and field != "external_id" and _MD5_RE.fullmatch(text):
        raise Invalid("md5_hash")
    return sha256_hex(_apply_rule(field, text, ctx))


def normalized_string(field: str, value: Any, settings: NormalizationSettings, country: str | None = None,
                      today: date | None = None) -> str:  # fmt: skip
    """The exact string that would be hashed for ``value`` (for tests and the conformance table)."""
    ctx = _Ctx(settings, country, today or datetime.now(UTC).date())
    return _apply_rule(field, _clean(value), ctx)


def _plain_value(field: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise Invalid("bad_type")
    check = _PLAIN_CHECKS.get(field)
    if isinstance(value, int) and check is None and field != "client_user_agent":
        return value  # fb_login_id / lead_id / page_id ... are integers in Meta's docs: sent as given
    if not isinstance(value, str):
        raise Invalid("bad_type")
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


@cache
def _hashed_countries() -> dict[str, str]:
    from capi_relay._countries import COUNTRIES  # noqa: PLC0415 -- generated table, loaded on first use

    return {sha256_hex(code): code for code in set(COUNTRIES.values())}


def _country_of_hash(text: str) -> str | None:
    """The alpha-2 code whose SHA-256 is ``text``. A pre-hashed country (what SDK users send) still tells us
    the phone region and the US ZIP rule: there are only ~250 possible inputs."""
    return _hashed_countries().get(text.lower())


def _first_country(raw: Any, ctx: _Ctx) -> str | None:
    """The event's country for the phone region and the ZIP rule: its first value that names a country."""
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        try:
            text = _nfc(_as_text(item)).strip()
            if _SHA256_RE.fullmatch(text):
                code = _country_of_hash(text)
                if code is not None:
                    return code
                continue
            return norm_country(text, ctx)
        except Invalid:
            continue
    return None


def normalize_user_data(
    user_data: Any, settings: NormalizationSettings, today: date | None = None
) -> tuple[dict[str, Any], list[Drop]]:
    """Normalize and hash a ``user_data`` object. Unknown keys and invalid values are dropped."""
    drops: list[Drop] = []
    if not isinstance(user_data, dict):
        return {}, [Drop("user_data", "bad_type")]
    today = today or datetime.now(UTC).date()
    ctx = _Ctx(settings, None, today)
    if "country" in user_data:
        ctx.set_country(_first_country(user_data["country"], ctx))
    out: dict[str, Any] = {}
    for key, raw in user_data.items():
        if key not in KNOWN_FIELDS:
            drops.append(Drop("user_data", "unknown_key"))
            continue
        if raw is None:
            continue
        if key not in _RULES:
            result = _plain_field(key, raw, drops)
        elif isinstance(raw, list):
            result = _normalize_list(key, raw, partial(hash_value, key, ctx=ctx), drops)
        else:
            try:
                result = hash_value(key, raw, ctx=ctx)
            except Invalid as exc:
                drops.append(Drop(key, exc.reason))
                result = None
        if result is not None:
            out[key] = result
    return out, drops


def is_fb_cookie(value: str) -> bool:
    return bool(_FB_COOKIE_RE.fullmatch(value))
