"""The fast paths of normalize.py decide exactly as the reference paths they shortcut (hypothesis).

- each field's hasher (``_HASHERS``: the ASCII fast path) == ``_hashed`` (clean -> rule -> NFC -> SHA-256), the
  same hash or the same drop reason, and the same notes;
- ``norm_ph``'s shortcut for digits-and-separators values == the full rule ``_norm_ph``, in every region;
- a never-hashed field's ASCII fast path in ``normalize_user_data`` == ``_plain_field``;
- a memoized value gives on a hit what it gave on the miss (hash, drop and notes);
- ``_no_space`` (the whitespace shortcut of ``norm_external_id`` and ``norm_em``) is True only without whitespace.
- an event's cached context and field table give what fresh ones give; the cache is cleared with the memo.
"""

from __future__ import annotations

import string
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from capi_relay.ingest.model import Drop
from capi_relay.prepare import normalize, rules
from capi_relay.settings import NormalizationSettings

TODAY = date(2026, 9, 21)
SETTINGS = NormalizationSettings()
COUNTRIES = st.sampled_from([None, "us", "ca", "gb", "de", "fr", "br", "in", "jp", "au", "it", "fi", "id"])
FAST_FIELDS = sorted(field for field in normalize._HASHERS if field not in rules._VARIANTS)

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
phone_like = st.one_of(
    st.from_regex(r"[ ]?\+?[0-9 ()\-./+]{0,22}[ ]?", fullmatch=True),
    st.from_regex(r"\+?(0|00|011|1)?[ .-]?\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}", fullmatch=True),
    st.from_regex(r"\+[0-9]{1,3}[ ]?(\(0\))?[ ]?[0-9 ]{4,14}", fullmatch=True),
    st.from_regex(r"0[0-9 ]{6,13}", fullmatch=True),
)
values = st.one_of(
    ascii_text,
    st.text(max_size=20),
    # lone surrogates (no UTF-8 form) and combining marks among letters: the non-ASCII path's UTF-8 check and NFC
    st.text(st.sampled_from("aZ\u00e9e\u0301\u0308\ud800\udfff\u212b "), max_size=12),
    phone_like,
    st.from_regex(r"[ A-Za-z0-9.+_\-'@()#/,:]{0,30}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9._+-]{1,10}@[a-zA-Z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}[-/. ][0-9]{1,2}[-/. ][0-9]{1,4}", fullmatch=True),
    st.from_regex(r" ?[0-9a-fA-F]{64}(\.[A-Za-z0-9_-]{2}|\.[A-Za-z0-9_-]{8})? ?|[0-9a-fA-F]{32}", fullmatch=True),
    # values of a hash's length (32, 67, 73) that may or may not be one: an email of 32 characters is no MD5
    st.sampled_from([32, 67, 73]).flatmap(lambda n: st.text(st.sampled_from("0aFz@.- _"), min_size=n, max_size=n)),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)


def _outcome(call: Any, ctx: rules._Ctx) -> tuple[object, list[str]]:
    try:
        result = call()
    except rules.Invalid as exc:
        result = ("invalid", exc.reason)
    return result, list(ctx.notes)


@settings(max_examples=700, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from(FAST_FIELDS), value=values, country=COUNTRIES)
@example(field="fn", value="a" * 64, country=None)
@example(field="em", value="  ", country=None)
@example(field="db", value="03/04/1990", country="us")
@example(field="ph", value="+44 (0)20 7946 0958", country=None)
@example(field="external_id", value="0123456789abcdef0123456789abcdef", country=None)
@example(field="ct", value="K\u00f6ln\ud800", country=None)
@example(field="fn", value="Jose\u0301", country=None)
@example(field="em", value="linda.johnson7000001@icloud.coma", country=None)
@example(field="em", value="0123456789abcdef0123456789ABCDEF", country=None)
@example(field="em", value="a" * 64 + ".AQ", country=None)
def test_each_fields_hasher_agrees_with_the_reference_path(field: str, value: Any, country: str | None) -> None:
    fast_ctx = rules._Ctx(SETTINGS, country, TODAY)
    ref_ctx = rules._Ctx(SETTINGS, country, TODAY)
    fast = _outcome(lambda: normalize._HASHERS[field](value, fast_ctx), fast_ctx)
    assert fast == _outcome(lambda: normalize._hashed(field, value, ref_ctx), ref_ctx)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=phone_like, region=st.sampled_from(["US", "CA", "PR", "GB", "DE", "FR", "BR", "IT", "FI", "ID", "IN"]))
@example(value="(650) 555-1212", region="US")
@example(value="+1 650 555 1212", region="GB")
@example(value="+358 01 4839834", region="US")
@example(value="+44 20 7946 +0958", region="US")
@example(value="011 44 20 7946 0958", region="US")
@example(value="0016505551212", region="US")
@example(value="+", region="US")
@example(value="(0) 650 555 1212", region="US")
def test_the_phone_shortcut_agrees_with_the_full_rule(value: str, region: str) -> None:
    ctx = rules._Ctx(NormalizationSettings(default_phone_region=region), None, TODAY)
    assert _outcome(lambda: rules.norm_ph(value, ctx), ctx) == _outcome(lambda: rules._norm_ph(value, ctx), ctx)


plain_values = st.one_of(
    ascii_text,
    st.text(max_size=20),
    st.from_regex(r" ?fb\.[0-9]\.[0-9]{10,13}\.[A-Za-z0-9_-]{1,12} ?", fullmatch=True),
    st.from_regex(r" ?([0-9]{1,3}\.){3}[0-9]{1,3}(\.[A-Za-z0-9_-]{2,8})? ?", fullmatch=True),
    st.from_regex(r"[0-9a-f:]{2,20}", fullmatch=True),
    st.from_regex(r"[0-9]{14,17}", fullmatch=True),
    st.integers(),
    st.booleans(),
    st.none(),
    st.text(st.characters(min_codepoint=32, max_codepoint=127), min_size=1020, max_size=1030),
)


@settings(max_examples=700, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(field=st.sampled_from(rules.PLAIN_FIELDS), value=plain_values)
def test_a_plain_fields_fast_path_agrees_with_plain_field(field: str, value: Any) -> None:
    drops: list[Drop] = []
    expected = None if value is None else normalize._plain_field(field, value, drops)
    out, got_drops = normalize.normalize_user_data({field: value}, SETTINGS, TODAY)
    assert (out.get(field), got_drops) == (expected, drops)


# Day and month both <= 12, year last: read in the country's or DATE_ORDER's order, which is noted.
ambiguous_dates = st.builds("{}/{}/{}".format, st.integers(1, 12), st.integers(1, 12), st.integers(1890, 2030))
memo_values = st.one_of(values, ambiguous_dates)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    user_data=st.dictionaries(
        st.sampled_from(rules.HASHED_FIELDS), st.one_of(memo_values, st.lists(memo_values, max_size=3)), max_size=6
    ),
    country=st.one_of(st.none(), st.sampled_from(["us", "United Kingdom", "DE", "fr"])),
)
@example(user_data={"db": "03/04/1990"}, country=None)
@example(user_data={"db": ["03/04/1990", "05/06/2029"]}, country="fr")
def test_a_memo_hit_gives_what_the_miss_gave(user_data: dict[str, Any], country: str | None) -> None:
    if country is not None:
        user_data = {**user_data, "country": country}
    normalize.clear_memo()
    first_notes: list[str] = []
    first = normalize.normalize_user_data(user_data, SETTINGS, TODAY, first_notes)
    again_notes: list[str] = []
    again = normalize.normalize_user_data(user_data, SETTINGS, TODAY, again_notes)
    normalize.clear_memo()
    assert (again, again_notes) == (first, first_notes)


ipv6_like = st.one_of(
    st.lists(st.from_regex(r"[0-9a-fA-F]{0,5}", fullmatch=True), min_size=1, max_size=10).map(":".join),
    st.from_regex(r"[0-9a-fA-F:.%]{0,40}", fullmatch=True),
    st.from_regex(r"([0-9a-f]{1,4}:){0,7}:?([0-9a-f]{1,4}:?){0,7}", fullmatch=True),
)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=ipv6_like)
@example(value="1:2:3:4:5:6:7::")
@example(value="::1:2:3:4:5:6:7")
@example(value="1:2:3:4:5:6:7:8::")
@example(value="1::2::3")
@example(value=":1::")
@example(value="::")
def test_the_ip_shortcut_accepts_only_what_ipaddress_accepts(value: str) -> None:
    if rules._is_plain_ip(value):
        assert rules._is_ip(value)


@settings(max_examples=1500, deadline=None)
@given(text=st.text(st.characters(max_codepoint=0x3000), max_size=12) | st.text(string.printable, max_size=12))
@example(text="a\x1cb")
@example(text="a\x85b")
@example(text="a\u3000b")
@example(text="cust-007")
def test_no_space_is_true_only_for_text_without_any_whitespace(text: str) -> None:
    # the shortcut of norm_external_id / norm_em: True only where the \s regex finds nothing
    if rules._no_space(text):
        assert rules._WS_RE.search(text) is None
    ctx = rules._Ctx(SETTINGS, None, TODAY)
    assert rules.norm_external_id(text, ctx) == rules._WS_RUN_RE.sub("", text.lower())


def test_a_cached_context_gives_what_a_fresh_one_gives_and_is_cleared_with_the_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the event's context and field table are cached per (country, DEFAULT_PHONE_REGION, DATE_ORDER, today): an
    # event read after others of other contexts gives what it gives with nothing cached
    cases = [
        ({"country": "gb", "db": "03/04/1990", "ph": "020 7946 0958", "zp": "SW1A 1AA"}, "DMY", "GB"),
        ({"country": "us", "db": "03/04/1990", "ph": "(650) 555-1212", "zp": "94043-1351"}, "MDY", "US"),
        ({"db": "03/04/1990", "ph": "020 7946 0958"}, "MDY", "GB"),
        ({"db": "03/04/1990", "ph": "030 1234567"}, "DMY", "GB"),
        ({"db": "03/04/1990", "ph": "030 1234567"}, "DMY", "DE"),
    ]

    def run(user_data: dict[str, Any], order: str, region: str, today: date) -> object:
        notes: list[str] = []
        cfg = NormalizationSettings(date_order=order, default_phone_region=region)  # type: ignore[arg-type]
        return normalize.normalize_user_data(user_data, cfg, today, notes), notes

    fresh = []
    for case in cases:
        normalize.clear_memo()
        fresh.append(run(*case, TODAY))
    normalize.clear_memo()
    for _ in range(2):
        assert [run(*case, TODAY) for case in cases] == fresh
    assert run(cases[1][0], "MDY", "US", date(1990, 3, 1)) != fresh[1]  # another day: db is in the future
    assert normalize._contexts
    normalize.clear_memo()
    assert not normalize._contexts
    monkeypatch.setattr(normalize, "_CONTEXTS_MAX", 2)
    for case in cases:
        run(*case, TODAY)
    assert len(normalize._contexts) <= 2
    assert len(normalize._contexts_by_value) <= 2
    normalize.clear_memo()


event_countries = st.one_of(
    st.none(),
    st.sampled_from(["us", "US", "United Kingdom", "gb", "DE", "fr", "zz", ""]),
    st.lists(st.sampled_from(["gb", "DE", "nowhere", None]), max_size=2),
)
context_events = st.fixed_dictionaries(
    {
        "db": st.sampled_from(["03/04/1990", "1990-04-03", "12/31/1990"]),
        "ph": st.sampled_from(["020 7946 0958", "(650) 555-1212"]),
    },
    optional={"country": event_countries, "zp": st.sampled_from(["SW1A 1AA", "94043-1351"])},
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    events=st.lists(
        st.tuples(context_events, st.sampled_from(["MDY", "DMY"]), st.sampled_from([TODAY, date(1990, 4, 1)])),
        min_size=2,
        max_size=6,
    )
)
def test_events_in_a_row_get_the_context_each_gets_alone(events: list[tuple[dict[str, Any], str, date]]) -> None:
    # _event_ctx finds a context by the country field's value (with the settings and the day): a row of events of
    # other countries (one value, a list, none), orders and days gives what each gives with nothing cached
    def run(user_data: dict[str, Any], order: str, today: date) -> object:
        notes: list[str] = []
        cfg = NormalizationSettings(date_order=order)  # type: ignore[arg-type]
        return normalize.normalize_user_data(user_data, cfg, today, notes), notes

    alone = []
    for event in events:
        normalize.clear_memo()
        alone.append(run(*event))
    normalize.clear_memo()
    assert [run(*event) for event in events] == alone
    normalize.clear_memo()


def test_the_memo_is_used_again_after_clear_memo() -> None:
    # clear_memo forgets the contexts found by value too: their field tables hold the memo dicts it cleared
    user_data = {"country": "gb", "db": "03/04/1990", "zp": "SW1A 1AA"}
    for _ in range(2):
        normalize.clear_memo()
        normalize.normalize_user_data(user_data, SETTINGS, TODAY, [])
        assert {(field, value) for field, value, _ in normalize._memo} >= {("db", "03/04/1990"), ("zp", "SW1A 1AA")}
    normalize.clear_memo()
