"""Hostile inputs and the looser rules' limits.

1. Every field rule, fed long adversarial strings (runs of spaces, digits, separators, up to 100 k characters),
   returns a string or raises Invalid -- nothing else -- and the pipeline never hashes the empty string. The time
   per call is measured by ``python -m bench.bench_normalize`` (adversarial section), not asserted here.
2. Each looser rule (normalization.md, revised) recovers its example and refuses what would turn a value into
   another person's: one row per rule.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_relay.prepare import normalize, rules
from capi_relay.prepare.normalize import MAX_CHARS, normalize_user_data, normalized_strings
from capi_relay.prepare.rules import EMPTY_SHA256, HASHED_FIELDS, Invalid
from capi_relay.settings import NormalizationSettings

TODAY = date(2026, 9, 21)
SETTINGS = NormalizationSettings()
RULES = sorted(rules._RULES)  # the field rules themselves, below the caps

UNITS = [" ", "\t", "1", "0", "+", "-", "(", ")", ".", "/", "x", "#", "ext", "内線", "1 ", " 1", "+1", "--", "-1",
         "a", "é", "\u0301", "\ufe0f", "\u200d", "😀", "&", "年", "dd", "mm", "12/", "12 31 ", "＋", "１"]  # fmt: skip


def adversarial() -> st.SearchStrategy[str]:
    """A long run of one unit, optionally between a short prefix and suffix that make the rule go further."""
    run = st.builds(lambda unit, n: unit * n, st.sampled_from(UNITS), st.integers(1, 100_000))
    affix = st.sampled_from(["", "1", "+1 650", "555 ", "Tel: ", "12/31/1990", "x", "a@b.co", "(", "1990-"])
    return st.builds(lambda a, r, b: (a + r + b)[:100_000], affix, run, affix)


HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])  # fmt: skip


@HOSTILE
@given(st.sampled_from(RULES), adversarial(), st.sampled_from([None, "us", "gb", "de"]))
def test_every_field_rule_returns_a_string_or_raises_invalid_on_long_adversarial_input(
    field: str, value: str, country: str | None
) -> None:
    ctx = rules._Ctx(SETTINGS, country, TODAY)
    try:
        result = rules._RULES[field](value, ctx)
    except Invalid:
        return
    assert isinstance(result, str)


@HOSTILE
@given(st.sampled_from(HASHED_FIELDS), adversarial())
def test_the_pipeline_drops_long_values_as_too_long_and_never_hashes_the_empty_string(field: str, value: str) -> None:
    user_data = {field: value} if field == "country" else {field: value, "country": "us"}
    out, drops = normalize_user_data(user_data, SETTINGS, TODAY)
    sent = out.get(field)
    values = [] if sent is None else [sent] if isinstance(sent, str) else sent
    assert EMPTY_SHA256 not in values
    if len(value) > MAX_CHARS[field]:
        assert sent is None
        assert any(d.field == field and d.reason == "too_long" for d in drops)


def test_a_phone_with_a_60k_space_run_is_dropped_by_the_cap_and_its_rule_stays_linear() -> None:
    value = "1" + " " * 60_000 + "2"
    out, drops = normalize_user_data({"ph": value}, SETTINGS, TODAY)
    assert "ph" not in out
    assert [d.reason for d in drops] == ["too_long"]
    with pytest.raises(Invalid):  # the rule itself, below the cap: the old _EXT_RE took ~4 s per 16 k spaces
        rules.norm_ph(value, rules._Ctx(SETTINGS, None, TODAY))


def test_a_list_value_keeps_its_first_100_items_and_counts_the_rest() -> None:
    out, drops = normalize_user_data({"em": [f"u{i}@example.com" for i in range(100_000)]}, SETTINGS, TODAY)
    assert len(out["em"]) == normalize.MAX_VALUES_PER_FIELD
    assert [(d.field, d.reason) for d in drops] == [("em", "too_many_values")]


def test_the_memo_keeps_only_short_values_within_its_byte_bound_until_cleared() -> None:
    normalize.clear_memo()
    for i in range(2_000):
        normalize_user_data({"fn": f"user{i}", "st": "x" * 65 + str(i)}, SETTINGS, TODAY)
    entries, size = normalize.memo_size()
    assert entries == 2_000  # the first names; no 66+ character state
    assert all(len(key[1]) <= normalize.MEMO_MAX_VALUE_CHARS for key in normalize._memo)
    assert 0 < size <= normalize.MEMO_MAX_BYTES
    normalize.clear_memo()  # what the relay does when an invocation starts: no raw value outlives it
    assert normalize.memo_size() == (0, 0)


def test_a_full_memo_takes_no_more_entries_and_keeps_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    normalize.clear_memo()
    monkeypatch.setattr(normalize, "MEMO_MAX_BYTES", 10 * 1024)
    normalize_user_data({"country": "United States"}, SETTINGS, TODAY)
    for i in range(500):
        out, _ = normalize_user_data({"ct": f"City {i}"}, SETTINGS, TODAY)
        assert out["ct"]  # still normalized and hashed, memo or not
        assert normalize.memo_size()[1] <= 10 * 1024
    assert 0 < normalize.memo_size()[0] < 500
    assert any(key[1] == "United States" for key in normalize._memo)
    normalize.clear_memo()


# ------------------------------------------------------------------------------------------------ looser rules
# (rule, field, what it recovers -> string, what it refuses, country). A refused value is dropped, never sent.
LOOSER: list[tuple[str, str, str, str, list[str], str | None]] = [
    ("ph: label before the first digit", "ph", "Tel: 555 123 4567", "15551234567",
     ["Tel: 555 123 4567 or 555 987 6543", "Tel: ext 12"], None),
    ("ph: text after the last digit", "ph", "555-123-4567 (home)", "15551234567",
     ["1-800-356-FLOWERS", "555-1234 today 5678"], None),  # letters stay refused: the 7 digits left are no number
    ("ph: any non-letter symbol between digit groups", "ph", "555|123|4567", "15551234567",
     ["555-1234 | 555-5678", "555 1234/555 5678"], None),  # two numbers glued are not read as an international one
    ("ph: plus between digit groups", "ph", "555＋123＋4567", "15551234567", ["+44 20 7946 +0958"], None),
    ("ph: extra leading zeros before the country code", "ph", "01(650)555-1212", "16505551212",
     ["01(650)123-4567", "07544 538485", "0447911123456", "000"], None),  # valid, and the region's code follows
    ("ph: extra leading zeros outside NANP", "ph", "044 7911 123456", "447911123456", ["0000 12345", "044 1"],
     "gb"),
    ("ph: full-width forms (NFKC)", "ph", "（６５０）５５５－１２１２", "16505551212", ["１２３"], None),
    ("db: any run of non-alphanumerics", "db", "16 – 2 – 1997", "19970216", ["16 – 2 – 97"], None),
    ("db: labels and notes", "db", "Born: 31.12.1990 (verified)", "19901231",
     ["Born: 31.12.1990, died 01.01.2020", "DOB 12/31"], None),
    ("db: a format hint decides", "db", "05/03/1995 (DD/MM/YYYY)", "19950305", ["12/31/1990 (DD/MM/YYYY)"], None),
    ("db: trailing time parts", "db", "1990-12-31-00-00-00", "19901231", ["1990-12-31 555 1234 5678"], None),
    ("db: year-day-month when the middle part > 12", "db", "1985/25/12", "19851225", ["1985/25/13"], None),
    ("db: CJK units", "db", "12月31日1990年", "19901231", ["12月31日90年", "12月1990年"], None),
    ("country: CLDR names in other languages", "country", "Deutschland", "de", ["Kongo", "Deut"], None),
    ("ge: capi-param-builder's gender words", "ge", "mother", "f", ["parent", "they"], None),
    ("external_id: whitespace removed", "external_id", "user 123 id", "user123id", ["   "], None),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "field", "value", "expected", "refused", "country"), LOOSER,
                         ids=[row[0] for row in LOOSER])  # fmt: skip
def test_each_looser_rule_recovers_its_example_and_refuses_what_is_ambiguous(
    rule: str, field: str, value: str, expected: str, refused: list[str], country: str | None
) -> None:
    assert normalized_strings(field, value, SETTINGS, country=country, today=TODAY)[0] == expected, rule
    for bad in refused:
        user_data: dict[str, Any] = {field: bad} | ({"country": country} if country else {})
        out, drops = normalize_user_data(user_data, SETTINGS, TODAY)
        assert field not in out, (rule, bad)
        assert any(d.field == field for d in drops), (rule, bad)


def test_a_variant_is_never_sent_where_the_region_is_another_country_s() -> None:
    # "WA" is Western Australia in an Australian event: no "washington" variant; "CA" with no country stays "ca"
    assert normalized_strings("st", "WA", SETTINGS, country="au", today=TODAY) == ["wa"]
    assert normalized_strings("st", "CA", SETTINGS, today=TODAY) == ["ca"]
    # a US ZIP+4 has no inner-space variant (the US rule keeps 5 digits)
    assert normalized_strings("zp", "98121 4892", SETTINGS, country="us", today=TODAY) == ["98121"]
