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
from collections.abc import Callable, Iterator
from datetime import date, datetime
from functools import cache, partial
from typing import Any

from capi_relay._compat import UTC
from capi_relay.ingest.model import Drop
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


def _no_space(text: str) -> bool:
    """True when ``text`` certainly holds no whitespace: ASCII printable (0x20-0x7E) and no space. Every other
    ASCII whitespace is unprintable; False means "ask the regex", not "has whitespace"."""
    return text.isascii() and " " not in text and text.isprintable()


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
    """Keep the characters whose Unicode general category starts with one of ``prefixes``. A mark (M) is kept
    only on a letter (an accent): on a digit, a symbol or a space it is dropped, and variation selectors
    (U+FE00-FE0F, U+E0100-E01EF: the emoji/text presentation switch) are always dropped."""
    if text.isascii():
        return _NOT_ASCII_CATEGORY[prefixes].sub("", text)
    keep_marks = "M" in prefixes
    out = []
    on_letter = False
    for ch in text:
        cat = unicodedata.category(ch)[0]
        if cat == "M":
            if keep_marks and on_letter and not _is_variation_selector(ch):
                out.append(ch)
            continue
        on_letter = cat == "L"
        if cat in prefixes:
            out.append(ch)
    return "".join(out)


def _is_variation_selector(ch: str) -> bool:
    return "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef"


def _strip_marks(text: str) -> str:
    if text.isascii():
        return text
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch)[0] != "M")


# --------------------------------------------------------------------------------------------- em
def norm_em(value: str, ctx: _Ctx) -> str:
    v = value.lower()
    if (not _no_space(v) and _WS_RE.search(v)) or v.count("@") != 1:
        raise Invalid("invalid_email")
    local, domain = v.split("@")
    if not local or "." not in domain or ".." in v:
        raise Invalid("invalid_email")
    if local[0] == "." or local[-1] == "." or domain[0] == "." or domain[-1] == ".":
        raise Invalid("invalid_email")
    return v


# --------------------------------------------------------------------------------------------- ph
# The strict shape: digits and the separators people have always used. Anything else in the value means a
# looser rule recovered the number (a label, trailing text, other separators): the digits are still exactly the
# ones written, and they must make a national number of the region (parsed by phonenumbers), never one read as
# international (two numbers glued by a separator must not become a third country's number).
_PH_STRICT_RE = re.compile(r"[0-9\s().\-/+]*")
# Where an extension starts: "ext", "ext.", "extension", "x", "#", Japanese 内線, Russian доб. Fixed-width
# alternatives searched once from the first digit: linear (the old ``\s*(...).*$`` was quadratic on spaces).
_PH_EXT_RE = re.compile(r"(?i)ext|x|#|内線|доб")
_PH_DIGIT_OR_PLUS_RE = re.compile(r"[0-9+]")
_PH_DIGIT_RE = re.compile(r"[0-9]")
_PH_NON_DIGIT_RE = re.compile(r"[^0-9]+")
_NANP_REGIONS = frozenset("US CA AG AI AS BB BM BS DM DO GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI".split())


def _ascii_digits(text: str) -> str:
    """NFKC (full-width digits, ``＋``, ``（）``), then any other Unicode decimal digit (Arabic-Indic ...) -> ASCII:
    a phone typed on a phone keyboard is still a phone number, and the hash must be of ASCII digits."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    out = []
    for ch in text:
        digit = unicodedata.decimal(ch, None) if ch > "\x7f" else None
        out.append(ch if digit is None else str(digit))
    return "".join(out)


_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")


def _has_letter(text: str) -> bool:
    if text.isascii():
        return _ASCII_LETTER_RE.search(text) is not None
    return any(unicodedata.category(ch)[0] in "LM" for ch in text)


def norm_ph(value: str, ctx: _Ctx) -> str:
    if value.isascii() and "(0)" not in value and _PH_STRICT_RE.fullmatch(value):
        # The usual value: digits and separators only, no trunk "(0)". Its digits are the ones the steps below
        # keep (no extension, no letter, nothing outside the first and last digit to cut), so the two common
        # shapes are decided here: "+" once at the start (international), or a NANP national number.
        # the usual separators removed by str.replace (~0.2 µs, the regex ~0.6); anything else left: the regex
        digits = value.replace(" ", "").replace("-", "").replace("(", "").replace(")", "").replace(".", "")
        if not (digits := digits.replace("+", "")).isdigit():
            digits = _PH_NON_DIGIT_RE.sub("", value)
        if digits and value[0] == "+" and value.count("+") == 1:
            e164 = _international(digits.lstrip("0"))
            if not e164.isdigit() or not 7 <= len(e164) <= 15:
                raise Invalid("invalid_phone")
            return e164
        if "+" not in value and ctx.region in _NANP_REGIONS and (nanp := _NANP_NATIONAL_RE.fullmatch(digits)):
            return "1" + nanp[1]
    return _norm_ph(value, ctx)


def _norm_ph(value: str, ctx: _Ctx) -> str:
    """The full phone rule (norm_ph's shortcut decides the common shapes exactly as this does)."""
    v = value if value.isascii() else _ascii_digits(value)
    first = _PH_DIGIT_OR_PLUS_RE.search(v)
    if first is None:
        raise Invalid("invalid_phone")
    if (not v.isascii() or "x" in v or "X" in v or "#" in v) and (ext := _PH_EXT_RE.search(v, first.start())):
        v = v[: ext.start()]
    tail = _PH_DIGIT_RE.search(v[::-1])  # the last digit: one linear scan from the end
    last = len(v) - 1 - tail.start() if tail else -1
    if last < first.start():
        raise Invalid("invalid_phone")
    recovered = not _PH_STRICT_RE.fullmatch(v)  # a label, trailing text, other separators
    core = v[first.start() : last + 1]
    if _has_letter(core):
        raise Invalid("invalid_phone")  # letters between digits: a vanity number, or two values glued
    core = core.replace("(0)", "")  # a trunk (0) is not dialled from abroad
    plus = core.startswith("+")
    if "+" in core[1:]:
        if plus:
            raise Invalid("invalid_phone")  # "+44 20 7946 +0958": two international prefixes
        recovered = True  # "555＋123＋4567": a plus between digit groups is a separator
    compact = ("+" if plus else "") + _PH_NON_DIGIT_RE.sub("", core)
    digits = _e164_digits(compact, ctx.region, recovered)
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        raise Invalid("invalid_phone")
    return digits


def _e164_digits(compact: str, region: str, recovered: bool) -> str:
    if compact.startswith("+"):
        return _international(compact[1:].lstrip("0"))
    if compact.startswith("00"):
        return _international(compact[2:].lstrip("0"))
    if compact.startswith("011") and region in _NANP_REGIONS:
        return _international(compact[3:].lstrip("0"))
    try:
        return _national_to_e164(compact, region, as_international=not recovered)
    except Invalid:
        stripped = compact.lstrip("0")
        code = _country_code(region)
        if stripped == compact or not code or not stripped.startswith(code):
            raise
    # Extra leading zeros before the region's own country code ("01(650)555-1212" in the US, a mangled 011/001
    # prefix; capi-param-builder strips them): removing them changes the digits, so what is left must be a
    # valid number by phonenumbers' metadata, not only a possible one. Zeros before a national number without
    # the country code are not removed: "07544 538485" is a UK mobile, not the Florida number 754-453-8485.
    if not _is_valid(stripped):
        raise Invalid("invalid_phone")
    return stripped


def _international(digits: str) -> str:
    """The E.164 digits of a number written internationally (``+``, ``00``, ``011`` already cut). A national trunk
    prefix written after the country code (``+358 01 4839834``, ``+62 (021) 957 3779``) is removed where that
    country's numbering plan has one (libphonenumber's metadata: Finland's and Indonesia's ``0``; Italy has none and
    keeps its ``0``), and only when what is left is a valid number: never someone else's number. Otherwise the
    digits are sent as written. phonenumbers is loaded only when the digits after the country code start with that
    country's trunk prefix (the generated table prepare/_tables/trunk_prefixes.py says which)."""
    prefixes = _trunk_prefixes()
    for size in (1, 2, 3):  # country codes are prefix-free: at most one of these is a code with a trunk prefix
        trunk = prefixes.get(digits[:size])
        if trunk is not None:
            return _without_trunk_prefix(digits) if digits.startswith(trunk, size) else digits
    return digits


@cache
def _trunk_prefixes() -> dict[str, str]:
    """Country calling code -> its trunk prefix (generated from phonenumbers, scripts/gen_trunk_prefixes.py)."""
    from capi_relay.prepare._tables.trunk_prefixes import PREFIXES  # noqa: PLC0415 -- generated table, loaded on first use

    return PREFIXES


def _without_trunk_prefix(digits: str) -> str:
    import phonenumbers  # noqa: PLC0415 -- lazy, see _parse_national

    try:
        number = phonenumbers.parse("+" + digits, None)  # libphonenumber strips the prefix where the plan says so
    except phonenumbers.NumberParseException:
        return digits
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    return e164 if e164 != digits and phonenumbers.is_valid_number(number) else digits


@cache
def _country_code(region: str) -> str:
    import phonenumbers  # noqa: PLC0415 -- lazy, see _parse_national

    return str(phonenumbers.country_code_for_region(region) or "")


def _is_valid(digits: str) -> bool:
    """A valid number (phonenumbers' metadata), from its E.164 digits."""
    import phonenumbers  # noqa: PLC0415 -- lazy, see _parse_national

    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None)))
    except phonenumbers.NumberParseException:
        return False


# A NANP number in its usual national shape: [1] NPA NXX XXXX with N = 2-9. phonenumbers gives exactly
# "1" + the 10 digits for these (country code 1 for every NANP region); tests/unit/test_normalize_properties
# checks the shortcut against phonenumbers. It spares the ~20 µs parse for the commonest case.
_NANP_NATIONAL_RE = re.compile(r"1?([2-9][0-9]{2}[2-9][0-9]{6})")


def _national_to_e164(digits: str, region: str, *, as_international: bool = True) -> str:
    """Country code + national number for a number written without ``+``/``00``.

    A number that is only dialable locally (``555-1212`` in the US: no area code) is dropped rather than
    sent as ``15551212``, which no one's hash would match. A string that is not a possible national number
    of ``region`` but is a *valid* number once read as ``+digits`` (Meta's own format, ``447911123456``) is
    taken as already international -- but not a recovered value (``as_international=False``): two numbers
    glued by a separator (``555-1234 | 555-5678``) must not become a third country's number.
    """
    if region in _NANP_REGIONS and (m := _NANP_NATIONAL_RE.fullmatch(digits)):
        return "1" + m[1]
    return _parse_national(digits, region, as_international)


def _parse_national(digits: str, region: str, as_international: bool = True) -> str:
    import phonenumbers  # noqa: PLC0415 -- lazy: ~20 ms of import, needed only for national numbers

    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        raise Invalid("invalid_phone") from None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        if not as_international:
            raise Invalid("invalid_phone")
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
# The documented words, plus the gender words Meta's capi-param-builder maps (client_js/shared/utils/piiUtil/
# genderUtil.js, facebook/capi-param-builder@b0b6f0b: MALE_SET / FEMALE_SET), compared after removing
# punctuation ("ma'am" -> "maam", "Mr." -> "mr").
_MALE_WORDS = (
    "m man male mr boy gentleman guy sir mister son father dad daddy papa uncle nephew brother husband "
    "boyfriend groom widower king prince duke count emperor god lord lad fellow chap bloke dude he him his himself"
)
_FEMALE_WORDS = (
    "f woman female mrs ms miss girl lady madam maam daughter mother mom mama mommy aunt niece sister wife "
    "girlfriend bride widow queen princess duchess countess empress goddess maiden lass gal chick dame belle "
    "she her hers herself"
)
_GENDERS = dict.fromkeys(_MALE_WORDS.split(), "m") | dict.fromkeys(_FEMALE_WORDS.split(), "f")


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
# A date is read as tokens: runs of ASCII digits and runs of letters (any script); every other character,
# in any number, is a separator. One pass, linear.
_DB_TOKEN_RE = re.compile(r"[0-9]+|[^\W\d_]+")
# CJK/Korean unit markers: the number before them is the year, month or day.
_DB_UNITS = {"年": "y", "년": "y", "月": "m", "월": "m", "日": "d", "일": "d"}
# A format hint written next to the date ("31/12/1990 (DD/MM/YYYY)") decides the order.
_DB_HINT_PARTS = {"d": "d", "dd": "d", "m": "m", "mm": "m", "y": "y", "yy": "y", "yyyy": "y", "jj": "d", "aaaa": "y"}
_DB_HINT_PART_RE = re.compile(r"dd?|mm?|y{2,4}")
_DB_HINT_RE = re.compile(r"(?:dd?|mm?|y{2,4})(?:[^a-z0-9]{0,3}(?:dd?|mm?|y{2,4})){2}")
_DB_MAX_TIME_PARTS = 6  # trailing hh mm ss, a fraction, a UTC offset ("1990-12-31-00-00-00", "...T00:00:00.000Z")


def _month_number(word: str) -> int | None:
    """``dec``, ``dece``, ``december`` and ``sept`` name a month; anything shorter than 3 letters does not."""
    if len(word) < 3 or len(word) > 9:
        return None
    for number, full in enumerate(_MONTH_NAMES, start=1):
        if full.startswith(word):
            return number
    return None


def _db_hint(text: str) -> str | None:
    """The order a hint such as ``DD/MM/YYYY`` or ``yyyy-mm-dd`` names ("dmy", "mdy", "ymd", "ydm"), or None."""
    if "d" not in text or "m" not in text:
        return None
    for match in _DB_HINT_RE.finditer(text):
        parts = "".join(_DB_HINT_PARTS[w] for w in _DB_HINT_PART_RE.findall(match[0]))
        if sorted(parts) == ["d", "m", "y"]:
            return parts
    return None


# The shapes most dates arrive in (1990-12-31, 12/31/1990, 31.12.1990, 19901231): digits and one kind of
# separator only, so no hint, unit or month word can be in them and their tokens are the digit runs. They go
# straight to _db_parts, which decides exactly as for any other value (test_normalize_properties checks the
# shortcut against the full reading).
_DB_PLAIN_RE = re.compile(r"([0-9]{1,8})(?:([-/.])([0-9]{1,4})\2([0-9]{1,4}))?")


def norm_db(value: str, ctx: _Ctx) -> str:
    if plain := _DB_PLAIN_RE.fullmatch(value):
        # _db_parts' steps for digit runs without roles, month words or hint: 8 digits alone, or three numbers.
        first, _, second, third = plain.groups()
        if second is None:
            if len(first) != 8:
                raise Invalid("invalid_date")
            return _db_string(int(first[:4]), int(first[4:6]), int(first[6:]), ctx)
        if len(first) > 4:
            raise Invalid("invalid_date")
        return _db_string(*_db_three(first, second, third, None, ctx), ctx)
    return _db_read(value, ctx)


def _db_read(value: str, ctx: _Ctx) -> str:
    """The full reading of a date of birth: tokens, CJK units, month words and a format hint."""
    v = value.lower()
    if not v.isascii():
        v = unicodedata.normalize("NFKC", v)  # full-width digits
    hint = _db_hint(v)
    tokens = _DB_TOKEN_RE.findall(v)
    numbers: list[str] = []
    roles: list[str] = []  # y/m/d from a CJK unit after the number, else ""
    month_words: list[int] = []
    for token in tokens:
        if token[0].isdigit():
            numbers.append(token)
            roles.append("")
        elif token in _DB_UNITS and roles and not roles[-1]:
            roles[-1] = _DB_UNITS[token]
        elif (named := _month_number(token)) is not None:
            month_words.append(named)
        # any other word is a label or a note ("born", "dob", "verified", "t", "z", ordinals "st"/"th")
    return _db_string(*_db_parts(numbers, roles, month_words, hint, ctx), ctx)


# "00".."31": month and day of a valid date, two digits each (a table lookup, not a format spec: ~0.1 µs, not ~0.6).
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(32))


def _db_string(year: int, month: int, day: int, ctx: _Ctx) -> str:
    try:
        parsed = date(year, month, day)
    except ValueError:
        raise Invalid("invalid_date") from None
    if year < 1900:
        raise Invalid("invalid_date")
    if parsed > ctx.today:
        raise Invalid("future_date")
    # YYYYMMDD: the year is 1900..today's, so four digits as it is
    return f"{year}{_TWO_DIGITS[month]}{_TWO_DIGITS[day]}"


def _db_parts(numbers: list[str], roles: list[str], month_words: list[int], hint: str | None,
              ctx: _Ctx) -> tuple[int, int, int]:  # fmt: skip
    if any(len(n) > 8 for n in numbers):
        raise Invalid("invalid_date")
    if len(numbers) == 1 and len(numbers[0]) == 8 and not month_words:
        n = numbers[0]
        return int(n[:4]), int(n[4:6]), int(n[6:])
    if any(roles[:3]) and len(numbers) == 3:
        parts = dict(zip(roles, numbers, strict=True))
        if sorted(parts) != ["d", "m", "y"]:
            raise Invalid("invalid_date")
        if len(parts["y"]) != 4:
            raise Invalid("two_digit_year")
        return int(parts["y"]), int(parts["m"]), int(parts["d"])
    if len(month_words) == 1 and len(numbers) >= 2:
        date_numbers, rest = numbers[:2], numbers[2:]
        _check_time_parts(rest)
        years = [n for n in date_numbers if len(n) == 4]
        days = [n for n in date_numbers if len(n) <= 2]
        if len(years) != 1 or len(days) != 1:
            raise Invalid("two_digit_year" if not years else "invalid_date")
        return int(years[0]), month_words[0], int(days[0])
    if month_words or len(numbers) < 3:
        raise Invalid("invalid_date")
    (n1, n2, n3), rest = numbers[:3], numbers[3:]
    _check_time_parts(rest)
    if any(len(n) > 4 for n in (n1, n2, n3)):
        raise Invalid("invalid_date")
    return _db_three(n1, n2, n3, hint, ctx)


def _db_three(n1: str, n2: str, n3: str, hint: str | None, ctx: _Ctx) -> tuple[int, int, int]:
    """Year, month, day from three numbers of at most 4 digits, in the order the year's place, a part > 12, the
    hint, or else the country's or DATE_ORDER's order decides."""
    a, b = int(n2), int(n3)
    if len(n1) == 4:  # year first: year-month-day, or year-day-month when the middle part is > 12
        if hint == "ydm" or (hint != "ymd" and a > 12):
            return int(n1), b, a
        return int(n1), a, b
    if len(n3) != 4:
        raise Invalid("two_digit_year")
    a, b, year = int(n1), int(n2), int(n3)
    if hint in ("dmy", "mdy"):
        return (year, b, a) if hint == "dmy" else (year, a, b)  # a contradiction fails date() below
    if a > 12 and b > 12:
        raise Invalid("invalid_date")
    if a > 12:
        return year, b, a
    if b > 12:
        return year, a, b
    # Day and month both <= 12: the order the event's country writes dates in (CLDR), else DATE_ORDER. When the
    # two readings differ, the event says which order was used (``check`` shows it under ``adjusted``).
    if a != b:
        ctx.notes.append(ctx.year_last_note)
    return (year, b, a) if ctx.year_last_order == "DMY" else (year, a, b)


def _check_time_parts(rest: list[str]) -> None:
    """Numbers after the date may only be a time of day (hh, mm, ss, a fraction): anything else means the value
    holds more than one date or number, and it is dropped."""
    if len(rest) > _DB_MAX_TIME_PARTS or any(len(n) > 3 for n in rest):
        raise Invalid("invalid_date")


# --------------------------------------------------------------------------------------------- ct
def norm_ct(value: str, ctx: _Ctx) -> str:
    return _keep_categories(value.lower(), ("L", "M"))


_NOT_LATIN_ALNUM_RE = re.compile(r"[^a-zA-Z0-9]+")


def _ct_variants(text: str, documented: str, ctx: _Ctx) -> list[str]:
    """capi-param-builder's city (the browser side): ASCII letters and digits only, and it must start with a
    letter (``São Paulo`` -> ``sopaulo``, ``District 9`` -> ``district9``, ``Москва`` -> nothing)."""
    pb = _NOT_LATIN_ALNUM_RE.sub("", text).lower()
    return [pb] if pb[:1].isalpha() else []


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


_STATE_FULL_NAMES = {code: name for name, code in reversed(_STATE_NAMES.items())}  # first name per code wins


def norm_st(value: str, ctx: _Ctx) -> str:
    cleaned = _keep_categories(value.lower(), ("L", "M"))
    key = _strip_marks(cleaned)
    if key in _STATE_CODES:
        return key
    return _STATE_NAMES.get(key, cleaned)


def _st_variants(text: str, documented: str, ctx: _Ctx) -> list[str]:
    """US states and Canadian provinces: also the full-name form Meta's Java and Ruby SDKs send (they only
    lower-case and strip: "California" -> "california"), and the canonical full name of the code. Only when the
    event is in the US or Canada, or names no country and the value was a full name: "WA" in Australia is
    Western Australia, not Washington."""
    full = _STATE_FULL_NAMES.get(documented)
    if full is None:
        return []
    cleaned = _keep_categories(text.lower(), ("L", "M"))
    if ctx.country not in ("us", "ca") and (ctx.country is not None or _strip_marks(cleaned) == documented):
        return []
    return [cleaned, full]


# --------------------------------------------------------------------------------------------- zp
def _zp_compact(value: str) -> str:
    return _WS_RE.sub("", value.lower()).split("-", 1)[0]


def _zp_us_rule(compact: str, ctx: _Ctx) -> bool:
    return ctx.country == "us" or (ctx.country is None and len(compact) == 9 and compact.isdigit())


def norm_zp(value: str, ctx: _Ctx) -> str:
    v = _zp_compact(value)
    if _zp_us_rule(v, ctx) and len(v) >= 5 and v[:5].isdigit():
        v = v[:5]
    if len(v) < 2:
        raise Invalid("invalid_zip")
    return v


# A US ZIP+4 written with whitespace instead of the dash ("10001 0001").
_ZIP4_SPACED_RE = re.compile(r"[0-9]{5}\s+[0-9]{4}")


def _zp_variants(text: str, documented: str, ctx: _Ctx) -> list[str]:
    """capi-param-builder keeps a postcode's inner space (``SW1A 1AA`` -> ``sw1a 1aa``). A US ZIP+4 written with a
    space is the one US value Meta's libraries disagree on: capi-param-builder keeps it as written (``10001 0001``,
    client_js/shared/tests/zipCodeUtil.test.js), the Java/Python SDKs remove whitespace and keep all nine digits
    (``100010001``); the documented form is the first five (``10001``). Only without a country: an event that
    says US gets Meta's documented five digits alone."""
    compact = _zp_compact(text)
    pb = text.lower().split("-", 1)[0].strip()
    if _zp_us_rule(compact, ctx):
        return [pb, compact] if ctx.country is None and _ZIP4_SPACED_RE.fullmatch(text) else []
    return [pb] if len(pb) >= 2 else []


# ---------------------------------------------------------------------------------------- country
def country_key(name: str) -> str:
    """Lookup key for country names: lower, accents off, '.' removed, other punctuation -> space."""
    text = _strip_marks(unicodedata.normalize("NFC", name).lower()).replace(".", "")
    if "&" in text:  # "Trinidad & Tobago"; a "&" without a word on each side is punctuation ("&" alone is not AND)
        parts = text.split("&")
        joiner = " and " if all(any(ch.isalpha() for ch in part) for part in parts) else " "
        text = joiner.join(parts)
    text = "".join(ch if ch.isalnum() else " " for ch in text)
    return " ".join(text.split())


def norm_country(value: str, ctx: _Ctx | None = None) -> str:
    from capi_relay.prepare._tables.countries import COUNTRIES  # noqa: PLC0415 -- generated table, loaded on first use

    code = COUNTRIES.get(value.lower())  # most values need no cleaning
    if code is None:
        key = country_key(value)
        code = COUNTRIES.get(key) or _country_names().get(key)
    if code is None:
        raise Invalid("unknown_country")
    return code


@cache
def _country_names() -> dict[str, str]:
    """CLDR names in other languages (generated, scripts/gen_country_names.py): loaded on the first value that
    is neither a code nor an English name."""
    from capi_relay.prepare._tables.country_names import NAMES  # noqa: PLC0415 -- generated table, loaded on first use

    return NAMES


# ------------------------------------------------------------------------------------ external_id
_WS_RUN_RE = re.compile(r"\s+")


def norm_external_id(value: str, ctx: _Ctx) -> str:
    """Lower case, every whitespace removed: capi-param-builder does so in the browser next to the Pixel, and
    the advertiser's own id only matches when both sides hash the same string."""
    v = value.lower()
    if _no_space(v):
        return v
    return _WS_RUN_RE.sub("", v)


# ------------------------------------------------------------------------------------------ plain
# Dotted-quad IPv4 without leading zeros: exactly what ipaddress accepts for IPv4, at a fraction of the cost.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


# capi-param-builder's client_ip_address is ``<ip>.<appendix>``: the IP, a dot, and the builder's appendix, a
# 2-character language token or an 8-character v2 appendix, base64url (facebook/capi-param-builder@b0b6f0b,
# nodejs/capi-param-builder/src/ParamBuilder.js _getClientIp / _removeLanguageToken, src/model/Constants.js
# SUPPORTED_PARAM_BUILDER_LANGUAGES_TOKEN "AQ Ag Aw BA BQ Bg", tests/getClientIp.test.js: "8.8.8.8.AQQAAQAA",
# "2001:4860:4860::8888.AQQCAQAA"). Its README tells integrators to send it as it is. A language token is one byte
# in base64url (its second character is A, Q, g or w) and an appendix is not all digits, so a dotted run of
# numbers ("1.2.3.4.56") is never read as an IP with an appendix.
_IP_APPENDIX_RE = re.compile(r"[A-Za-z0-9_-][AQgw]|(?![0-9]{8})[A-Za-z0-9_-]{8}")


# The usual IPv6 shapes, each certainly accepted by ipaddress (a shortcut, not the rule: anything else goes to
# ipaddress): eight groups of 1-4 hex digits, or groups around one "::" that stands for at least one group (at
# most seven colons, so at most seven groups written). test_normalize_fast_paths checks the subset.
_IPV6_FULL_RE = re.compile(r"(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}")
_IPV6_GAP_RE = re.compile(r"(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?")


def _is_plain_ip(text: str) -> bool:
    """True only for an address ipaddress accepts (IPv4 exactly; IPv6 in its usual shapes); False: ask it."""
    if _IPV4_RE.fullmatch(text) or _IPV6_FULL_RE.fullmatch(text):
        return True
    return text.count(":") <= 7 and _IPV6_GAP_RE.fullmatch(text) is not None


def _plain_ip(value: str) -> str:
    """A valid IPv4/IPv6 address, or one followed by capi-param-builder's appendix: sent verbatim."""
    if _is_plain_ip(value) or _is_ip(value):
        return value
    ip, dot, appendix = value.rpartition(".")
    if dot and _IP_APPENDIX_RE.fullmatch(appendix) and (_is_plain_ip(ip) or _is_ip(ip)):
        return value
    raise Invalid("invalid_ip")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _plain_fb_cookie(value: str) -> str:
    if not _FB_COOKIE_RE.fullmatch(value):
        raise Invalid("invalid_format")
    return value


# lead_id: the id Meta's Lead Ads gave the lead, 15 or 16 digits (conversion leads integration, M-CIP; Meta's
# answer to another value is 2804036, meta-capi.md A8). An integer or a string of digits, sent as given.
_LEAD_ID_RE = re.compile(r"[0-9]{15,16}")


def _plain_lead_id(value: str) -> str:
    if not _LEAD_ID_RE.fullmatch(value):
        raise Invalid("invalid_lead_id")
    return value


_PLAIN_CHECKS: dict[str, Callable[[str], str]] = {
    "client_ip_address": _plain_ip,
    "fbc": _plain_fb_cookie,
    "fbp": _plain_fb_cookie,
    "lead_id": _plain_lead_id,
}


@cache
def _date_orders() -> dict[str, str]:
    from capi_relay.prepare._tables.date_orders import ORDERS  # noqa: PLC0415 -- generated table (CLDR), loaded on first use

    return ORDERS


class _Ctx:
    """What normalizing one event's values depends on: its country (phone region, date order, ZIP rule), the
    configured defaults and today's date; ``notes`` collects the adjustments worth showing (the date order used)."""

    __slots__ = ("country", "date_order", "notes", "region", "today", "year_last_by_country", "year_last_order")

    def __init__(self, settings: NormalizationSettings, country: str | None, today: date,
                 notes: list[str] | None = None) -> None:  # fmt: skip
        self.country: str | None = None
        self.region = settings.default_phone_region
        self.date_order = settings.date_order  # the configured DATE_ORDER (part of the memo key)
        self.year_last_order: str = settings.date_order  # how a year-last date with day and month <= 12 is read
        self.year_last_by_country = False
        self.today = today
        self.notes: list[str] = [] if notes is None else notes
        if country:
            self.set_country(country)

    def set_country(self, country: str | None) -> None:
        if country:
            self.country = country
            self.region = country.upper()
            # A year-first country (CLDR: cn, jp, kr, hu, se ...) says nothing about a date written year last:
            # DATE_ORDER decides those.
            order = _date_orders().get(country)
            if order == "DMY" or order == "MDY":  # noqa: PLR1714 -- two compares beat a tuple's
                self.year_last_order = order
                self.year_last_by_country = True

    def for_event(self, notes: list[str] | None) -> _Ctx:
        """A copy of this context (built once per country, settings and day) for one event, with its own notes."""
        ctx = _Ctx.__new__(_Ctx)
        ctx.country = self.country
        ctx.region = self.region
        ctx.date_order = self.date_order
        ctx.year_last_order = self.year_last_order
        ctx.year_last_by_country = self.year_last_by_country
        ctx.today = self.today
        ctx.notes = [] if notes is None else notes
        return ctx

    @property
    def year_last_note(self) -> str:
        """The adjustment noted when the order decided a date: db_read_{dmy|mdy}_by_{country|default}."""
        return _DB_ORDER_NOTES[self.year_last_order, self.year_last_by_country]


_DB_ORDER_NOTES = {
    (order, by_country): f"db_read_{order.lower()}_by_{'country' if by_country else 'default'}"
    for order in ("DMY", "MDY")
    for by_country in (True, False)
}


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


_VARIANTS: dict[str, Callable[[str, str, _Ctx], list[str]]] = {
    "ct": _ct_variants,
    "st": _st_variants,
    "zp": _zp_variants,
}
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


# The lengths at which _hash_forms looks for capi-param-builder's hash or an MD5: it decides those.
_HASH_SHAPED = frozenset({32, 67, 73})


def _ascii_hasher(field: str) -> Callable[[Any, _Ctx], str | tuple[str, ...]]:
    """The hasher of a field without variants: an ASCII string of no hash's length (the usual value) is trimmed,
    put through the field's rule and hashed in one call, and a SHA-256 (64 hex digits) is sent lower-cased;
    anything else takes the reference path (_hashed).
    Both do the same steps in the same order (cap, trim, empty, rule, NFC, empty); an ASCII string needs no
    UTF-8 check and no NFC. tests/unit/test_normalize_fast_paths.py checks the two agree."""
    rule = _RULES[field]
    cap = MAX_CHARS[field]
    sha256 = hashlib.sha256

    def hasher(value: Any, ctx: _Ctx) -> str | tuple[str, ...]:
        if type(value) is str and len(value) <= cap and value.isascii():
            text = value.strip()
            size = len(text)
            if size == 64 and _SHA256_RE.fullmatch(text):
                return text.lower()
            if size and size not in _HASH_SHAPED:
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
    field: partial(_hashed, field) if field in _VARIANTS else _ascii_hasher(field) for field in _RULES
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


def _event_ctx(user_data: dict[str, Any], settings: NormalizationSettings, today: date | None,
               notes: list[str] | None) -> tuple[_Ctx, dict[str, _Field]]:  # fmt: skip
    """The event's context (the settings, today, the country its ``country`` field names) and its field table.
    Both are built once per context; each event gets its own copy of the context (its notes are its own)."""
    country = _first_country(user_data["country"]) if "country" in user_data else None
    key = (country, settings.default_phone_region, settings.date_order, today or datetime.now(UTC).date())
    found = _contexts.get(key)
    if found is None:
        found = _new_context(key, settings)
    return found[0].for_event(notes), found[1]


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
    if field is _UNKNOWN_FIELD:
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
