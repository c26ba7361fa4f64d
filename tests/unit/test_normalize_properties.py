"""Properties of the normalization engine over generated inputs (hypothesis).

- every hashed value sent is 64 lowercase hex, or a param-builder ``<hash>.<token>`` passed verbatim;
- never sha256("");
- idempotence: normalizing what the engine sent changes nothing (and, per field, the normalized string
  of a normalized string is itself; ``ph`` only for national-form input, see below);
- never-hashed fields are byte-identical to the input apart from surrounding whitespace, or dropped;
- no exception for any input string or JSON value (nested lists/dicts, None, bool, NaN, lone surrogates).
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from capi_relay.ingest.model import Prepared, Rejection
from capi_relay.prepare.events import REASONS, prepare_event
from capi_relay.prepare.normalize import normalize_user_data, normalized_string
from capi_relay.prepare.rules import EMPTY_SHA256, HASHED_FIELDS, PLAIN_FIELDS, Invalid
from capi_relay.settings import NormalizationSettings
from tests.factories import NOW, make_event

TODAY = date(2026, 9, 21)
SETTINGS = NormalizationSettings()
HASH_RE = re.compile(r"[0-9a-f]{64}")
PB_RE = re.compile(r"[0-9a-fA-F]{64}\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8})")

# Any code point incl. lone surrogates (JSON "\ud800" decodes to one) and the odd categories.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=40)
# Text that looks like the real thing often enough to reach the deep branches of each rule.
shaped_text = st.one_of(
    any_text,
    st.from_regex(r"[ A-Za-z0-9.+_\-'@()#/,:]{0,30}", fullmatch=True),
    st.from_regex(r"\+?[0-9 ()\-.]{6,20}( ?(x|ext\.?|#) ?[0-9]{1,4})?", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}[-/. ][0-9]{1,2}[-/. ][0-9]{1,4}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9._+-]{1,10}@[a-zA-Z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F]{64}(\.[A-Za-z0-9_-]{2}|\.[A-Za-z0-9_-]{8})?|[0-9a-fA-F]{32}", fullmatch=True),
    st.sampled_from(
        [
            "Male",
            "f",
            "USA",
            "United Kingdom",
            "California",
            "Québec",
            "98121-4892",
            "SW1A 1AA",
            "Vale\u0301ry",
            "İpek",
            "December 31, 1990",
            "(650)555-1212",
            "07911 123456",
        ]
    ),
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), shaped_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)
field_value = st.one_of(shaped_text, st.lists(shaped_text, max_size=4), json_value)
user_data_strategy = st.dictionaries(
    st.one_of(st.sampled_from(HASHED_FIELDS + PLAIN_FIELDS), any_text), field_value, max_size=12
)

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sent_values(out: dict[str, Any], field: str) -> list[Any]:
    value = out[field]
    return value if isinstance(value, list) else [value]


@FAST
@given(user_data_strategy)
def test_hashed_output_is_64_lowercase_hex_or_a_verbatim_param_builder_hash(user_data: dict[str, Any]) -> None:
    out, _ = normalize_user_data(user_data, SETTINGS, TODAY)
    for field in HASHED_FIELDS:
        if field not in out:
            continue
        values = _sent_values(out, field)
        assert values, f"{field}: an empty list must drop the field"
        assert len(values) == len(set(values)), f"{field}: duplicates must be removed"
        for value in values:
            assert value != EMPTY_SHA256, f"{field}: sha256('') must never be sent"
            if HASH_RE.fullmatch(value) is None:
                assert PB_RE.fullmatch(value), f"{field}: {value!r} is neither a hash nor a param-builder hash"
                raw = user_data[field]
                raws = raw if isinstance(raw, list) else [raw]
                assert value in [r.strip() for r in raws if isinstance(r, str)], "must be sent verbatim"


@FAST
@given(user_data_strategy)
def test_normalizing_the_output_again_changes_nothing(user_data: dict[str, Any]) -> None:
    out, _ = normalize_user_data(user_data, SETTINGS, TODAY)
    again, drops = normalize_user_data(out, SETTINGS, TODAY)
    assert again == out
    assert drops == []


@FAST
@given(st.sampled_from([f for f in HASHED_FIELDS if f != "ph"]), shaped_text, st.sampled_from([None, "us", "gb"]))
@example("st", "New York", None)
@example("db", "December 31, 1990", None)
@example("zp", "98121-4892", None)
@example("fn", "Vale\u0301ry", None)
def test_the_normalized_string_of_a_normalized_string_is_itself(field: str, value: str, country: str | None) -> None:
    try:
        once = normalized_string(field, value, SETTINGS, country=country, today=TODAY)
    except Invalid:
        return
    assert normalized_string(field, once, SETTINGS, country=country, today=TODAY) == once


# ph: the spec reads a number without "+"/"00" as national in the event's region, so an arbitrary
# international result (e.g. Denmark's "4532123456") would be re-read as a US national number. The output
# level (hashes) is idempotent regardless (test above); at string level we check national-form input.
@FAST
@given(
    st.sampled_from(
        [
            ("US", "(2{0}{1}) 555-{2}{3}{4}{5}"),
            ("GB", "07911 {0}{1}{2}{3}{4}{5}"),
            ("DE", "030 {0}{1}{2}{3}{4}{5}{6}{7}"),
            ("FR", "06 {0}{1} {2}{3} {4}{5} {6}{7}"),
        ]
    ),
    st.lists(st.sampled_from("0123456789"), min_size=8, max_size=8),
)
def test_phone_normalization_is_idempotent_for_national_numbers(pattern: tuple[str, str], digits: list[str]) -> None:
    region, template = pattern
    value = template.format(*digits)
    once = normalized_string("ph", value, SETTINGS, country=region.lower(), today=TODAY)
    assert once.isascii()
    assert once.isdigit()
    assert normalized_string("ph", once, SETTINGS, country=region.lower(), today=TODAY) == once


@FAST
@given(st.sampled_from(PLAIN_FIELDS), st.one_of(any_text, shaped_text), st.sampled_from(["", " ", "\t\n", "\u3000"]))
def test_never_hashed_fields_are_byte_identical_apart_from_surrounding_whitespace(
    field: str, value: str, pad: str
) -> None:
    out, drops = normalize_user_data({field: pad + value + pad}, SETTINGS, TODAY)
    if field in out:
        assert out[field] == value.strip()
        assert drops == []
    else:
        assert len(drops) == 1
        assert drops[0].field == field


@FAST
@given(st.sampled_from(HASHED_FIELDS), json_value)
def test_normalized_string_raises_only_invalid(field: str, value: Any) -> None:
    try:
        result = normalized_string(field, value, SETTINGS, today=TODAY)
    except Invalid:
        return
    assert result
    result.encode("utf-8")


@FAST
@given(json_value)
def test_user_data_of_any_json_value_never_raises(user_data: Any) -> None:
    out, drops = normalize_user_data(user_data, SETTINGS, TODAY)
    assert isinstance(out, dict)
    for drop in drops:
        assert drop.reason.isidentifier()


def _assert_sendable(result: Prepared | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        return
    body = json.dumps(result.event, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert body
    assert result.event["user_data"]


@FAST
@given(json_value)
def test_prepare_event_of_any_json_value_never_raises(raw: Any) -> None:
    _assert_sendable(prepare_event(raw, SETTINGS, NOW, default_event_time=NOW))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["event_time", "custom_data", "app_data", "opt_out", "event_id",
                                        "data_processing_options", "original_event_data", "event_source_url"]),
                       json_value, max_size=3), user_data_strategy)  # fmt: skip
def test_a_valid_event_with_random_parts_is_sent_as_valid_json_or_rejected_with_a_known_reason(
    parts: dict[str, Any], user_data: dict[str, Any]
) -> None:
    raw = make_event(**parts)
    raw["user_data"].update(user_data)
    _assert_sendable(prepare_event(raw, SETTINGS, NOW, default_event_time=NOW))


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(10**20), max_value=10**20))
def test_event_time_of_any_number_is_either_within_the_window_or_rejected(event_time: float) -> None:
    result = prepare_event(make_event(event_time=event_time), SETTINGS, NOW)
    if isinstance(result, Prepared):
        assert NOW - 7 * 86_400 <= result.event["event_time"] <= NOW
        assert isinstance(result.event["event_time"], int)
    else:
        assert result.reason in {"invalid_event_time", "event_too_old", "event_in_future"}


def test_a_lone_surrogate_is_dropped_from_user_data_not_raised() -> None:
    # Given JSON text "\\ud800" (valid JSON, no UTF-8 form) in a hashed and in a never-hashed field
    user_data = json.loads('{"em": "a\\ud800@x.com", "client_user_agent": "UA\\ud800", "fn": "Jo"}')
    # When normalized
    out, drops = normalize_user_data(user_data, SETTINGS, TODAY)
    # Then both are dropped with a reason and the rest survives
    assert list(out) == ["fn"]
    assert [(d.field, d.reason) for d in drops] == [("em", "invalid_unicode"), ("client_user_agent", "invalid_unicode")]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(["US", "CA", "JM", "PR", "BS", "TT", "GU", "VI", "DO"])),
    st.from_regex(r"1?[0-9]{10}", fullmatch=True),
)
def test_the_nanp_shortcut_gives_exactly_what_phonenumbers_gives(region: str, digits: str) -> None:
    # Given a 10/11-digit string in a NANP region; When both paths normalize it; Then they agree (or both drop)
    from capi_relay.prepare.rules import _national_to_e164, _parse_national

    def run(fn: Any) -> str | None:
        try:
            return str(fn(digits, region))
        except Invalid:
            return None

    assert run(_national_to_e164) == run(_parse_national)


@settings(max_examples=1000, deadline=None)
@given(
    st.from_regex(r"[0-9]{1,9}([-/. ]{1,2}[0-9]{1,5}){0,3}", fullmatch=True)
    | st.dates(date(1850, 1, 1), date(2100, 12, 31)).flatmap(
        lambda d: st.sampled_from(
            [
                d.isoformat(),
                d.strftime("%Y%m%d"),
                d.strftime("%m/%d/%Y"),
                d.strftime("%d.%m.%Y"),
                d.strftime("%Y/%d/%m"),
                d.strftime("%d-%m-%Y"),
            ]
        )
    ),
    st.sampled_from(["MDY", "DMY"]),
)
def test_the_plain_date_shortcut_gives_exactly_what_the_full_reading_gives(value: str, order: str) -> None:
    # Given a date of digits and separators; When the shortcut and the full reading normalize it; Then they agree
    # (the same string, or the same drop reason)
    _assert_the_shortcut_reads_as_the_full_reading(value, order)


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4}){2,4}", fullmatch=True) | st.ip_addresses(v=4).map(str))
def test_the_ipv4_shortcut_accepts_exactly_what_ipaddress_accepts(value: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        valid = True
    except ValueError:
        valid = False
    out, _ = normalize_user_data({"client_ip_address": value}, SETTINGS, TODAY)
    assert ("client_ip_address" in out) is valid


def _iso_like(born: date, spoil: int, char: str) -> str:
    """``born`` in ISO 8601 (extended or basic), one character replaced when ``spoil`` is within it."""
    text = born.isoformat() if spoil % 2 else born.strftime("%Y%m%d")
    return text[:spoil] + char + text[spoil + 1 :] if spoil < len(text) else text


@settings(max_examples=2000, deadline=None)
@given(
    st.builds(
        _iso_like,
        st.dates(date(1850, 1, 1), date(2100, 12, 31)),
        st.integers(0, 20),
        st.sampled_from("0123456789-W+ T:.Z١２"),
    )
    | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}", fullmatch=True)
    | st.from_regex(r".{4}-.{2}-.{2}", fullmatch=True),
    st.sampled_from(["MDY", "DMY"]),
)
@example("1975W115", "MDY")  # an ISO week date: date.fromisoformat reads it, a date of birth it is not
@example("1975-W11-5", "MDY")
@example("1975-14-03", "MDY")  # year, day, month
def test_the_iso_date_shortcut_gives_exactly_what_the_full_reading_gives(value: str, order: str) -> None:
    # Given 8 or 10 characters shaped like an ISO date (or almost: week dates, signs, other digits, a month > 12);
    # When the shortcut and the full reading normalize it; Then they agree (the same string, or the same drop reason)
    _assert_the_shortcut_reads_as_the_full_reading(value, order)


def _assert_the_shortcut_reads_as_the_full_reading(value: str, order: str) -> None:
    """norm_db (with its shortcuts) and _db_read (the full reading) give the same string or the same drop."""
    from capi_relay.prepare.rules import _Ctx, _db_read, norm_db

    ctx = _Ctx(NormalizationSettings(date_order=order), None, date(2026, 12, 1))  # type: ignore[arg-type]

    def run(fn: Any) -> str:
        try:
            return str(fn(value, ctx))
        except Invalid as exc:
            return f"dropped: {exc.reason}"

    assert run(norm_db) == run(_db_read)
