"""The per-field normalization rules (../shared/spec/normalization.md): each ``norm_*`` function turns one
trimmed value of a ``user_data`` field into the string Meta hashes, or raises :class:`Invalid` with a reason
code; the variants Meta's other normalizer computes (ct, st, zp); the never-hashed fields' checks; and
:class:`_Ctx`, what a rule may depend on (the event's country, the configured defaults, today). Pure: no I/O.
``normalize.py`` applies them: caps, memo, hashing, the whole ``user_data``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from datetime import date
from functools import cache

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
    if (digits := _strict_digits(value)) is not None:
        # The usual value: digits and separators only, no trunk "(0)". Its digits are the ones the steps below
        # keep (no extension, no letter, nothing outside the first and last digit to cut), so the two common
        # shapes are decided here: "+" once at the start (international), or a national number its region's
        # plan decides (_national_shortcut: NANP and common countries).
        if digits and value[0] == "+" and value.count("+") == 1:
            e164 = _international(digits.lstrip("0"))
            if not e164.isdigit() or not 7 <= len(e164) <= 15:
                raise Invalid("invalid_phone")
            return e164
        if "+" not in value and (national := _national_shortcut(digits, ctx.region)) is not None:
            if not 7 <= len(national) <= 15:
                raise Invalid("invalid_phone")
            return national
    return _norm_ph(value, ctx)


def _strict_digits(value: str) -> str | None:
    """The digits of a value in the strict shape (ASCII, _PH_STRICT_RE, no trunk "(0)"); None for any other value.
    The usual separators are removed by str.replace (~0.2 µs, the regexes ~0.8): when digits alone are left, the
    value was of that shape without asking _PH_STRICT_RE."""
    if not value.isascii() or "(0)" in value:
        return None
    digits = value.replace(" ", "").replace("-", "").replace("(", "").replace(")", "").replace(".", "").replace("+", "")
    if digits.isdigit():
        return digits
    return _PH_NON_DIGIT_RE.sub("", value) if _PH_STRICT_RE.fullmatch(value) else None


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
    e164 = _national_shortcut(digits, region)
    return _parse_national(digits, region, as_international) if e164 is None else e164


# The national numbering plans of common countries, in the shape phonenumbers reads without surprises: region ->
# (country code, trunk prefix or "", lengths of the national significant number (phonenumbers' possible lengths
# for the region), prefixes refused when written without the trunk prefix (where phonenumbers' national prefix
# for parsing also matches: GB 180020, BR 90)). For a string of digits D, phonenumbers.parse(D, region) gives
# country code + N, with N = D less its trunk prefix "0" when D = "0" + N and N starts with 1-9 (the region's
# numbers never start with 0, so the prefix is always removed), or N = D when D starts with 1-9 and not with the
# country code (no prefix to remove, and none of the country-code reading); and N is possible when its length is
# one of the region's. Everything else is left to phonenumbers (tests/unit/test_normalize_phone_plans.py checks
# each region against phonenumbers over every leading-digit pattern and length).
_NATIONAL_PLANS: dict[str, tuple[str, str, frozenset[int], tuple[str, ...]]] = {
    region: (code, trunk, frozenset(lengths), refused)
    for region, code, trunk, lengths, refused in (
        ("GB", "44", "0", (7, 9, 10), ("180020",)),
        ("DE", "49", "0", range(4, 16), ()),
        ("FR", "33", "0", (9,), ()),
        ("NL", "31", "0", range(5, 12), ()),
        ("BE", "32", "0", (8, 9), ()),
        ("CH", "41", "0", (9, 12), ()),
        ("AT", "43", "0", range(4, 14), ()),
        ("IE", "353", "0", (7, 8, 9, 10), ()),
        ("SE", "46", "0", (6, 7, 8, 9, 10, 12), ()),
        ("ZA", "27", "0", range(5, 11), ()),
        ("IN", "91", "0", range(8, 14), ()),
        ("TR", "90", "0", (7, 10, 12, 13), ()),
        ("PH", "63", "0", (6, 8, 9, 10, 11, 12, 13), ()),
        ("BR", "55", "", (8, 9, 10, 11), ("90",)),
        ("ES", "34", "", (9,), ()),
        ("MX", "52", "", (10,), ()),
        ("PL", "48", "", (6, 7, 8, 9, 10), ()),
        ("DK", "45", "", (8,), ()),
        ("NO", "47", "", (5, 8), ()),
        ("PT", "351", "", (9,), ()),
    )
}


def _national_shortcut(digits: str, region: str) -> str | None:
    """The E.164 digits phonenumbers gives for a national number of ``digits`` (ASCII digits only) in ``region``
    when the region's plan decides it without phonenumbers (a NANP number, or a common country's, above); None:
    ask phonenumbers. Spares the ~20 µs parse for the usual national shapes."""
    if region in _NANP_REGIONS:
        return "1" + nanp[1] if (nanp := _NANP_NATIONAL_RE.fullmatch(digits)) else None
    plan = _NATIONAL_PLANS.get(region)
    if plan is None or not digits:
        return None
    code, trunk, lengths, refused = plan
    if digits[0] == "0":
        national = digits[1:] if trunk else ""
        if national[:1] in {"", "0"}:
            return None
    elif digits.startswith(code) or digits.startswith(refused):
        return None
    else:
        national = digits
    return code + national if len(national) in lengths else None


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


def _ascii_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def norm_db(value: str, ctx: _Ctx) -> str:
    size = len(value)
    if (size == 10 and value[4] == "-" and value[7] == "-") or (size == 8 and _ascii_number(value)):
        # ISO 8601 (1990-12-31, 19901231), the usual shapes: a value date.fromisoformat reads (ASCII digits, year
        # first, a real month and day) is the date every other step reads too, and its YYYYMMDD is in the value
        # (test_normalize_properties checks this shortcut against the full reading); anything else goes on below
        try:
            born = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            _db_check(born, ctx)
            return value if size == 8 else value[:4] + value[5:7] + value[8:]
    elif size == 10 and value[2] == value[5] and value[2] in "-/.":
        # 12/31/1990, 31.12.1990: the three numbers _DB_PLAIN_RE finds below, taken without it
        n1, n2, year = value[:2], value[3:5], value[6:]
        if _ascii_number(n1 + n2 + year):
            return _db_string(*_db_three(n1, n2, year, None, ctx), ctx)
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
    _db_check(parsed, ctx)
    # YYYYMMDD: the year is 1900..today's, so four digits as it is
    return f"{year}{_TWO_DIGITS[month]}{_TWO_DIGITS[day]}"


def _db_check(born: date, ctx: _Ctx) -> None:
    """A date of birth is from 1900 to today."""
    if born.year < 1900:
        raise Invalid("invalid_date")
    if born > ctx.today:
        raise Invalid("future_date")


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
    """True only for an address ipaddress accepts (IPv4 exactly; IPv6 in its usual shapes); False: ask it. One
    regex per value: an IPv4 has no colon, an IPv6 of eight groups no "::", one with a gap has it."""
    if ":" not in text:
        return _IPV4_RE.fullmatch(text) is not None
    if "::" not in text:
        return _IPV6_FULL_RE.fullmatch(text) is not None
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

    def __init__(self, settings: NormalizationSettings | None, country: str | None, today: date,
                 notes: list[str] | None = None) -> None:  # fmt: skip
        """``settings`` None: an empty context that :meth:`for_event` fills (``_Ctx.__new__`` would skip __init__
        in Python, but a compiled class cannot be made that way: src/build_core.py)."""
        self.country: str | None = None
        if settings is None:
            return
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
        ctx = _Ctx(None, None, self.today)
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
