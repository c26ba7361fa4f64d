"""Issue 18's rules for customers in every country, each checked against an oracle no one here wrote:

* dates of birth: the event's country decides an ambiguous day/month order, as CLDR (babel) writes dates there;
  DATE_ORDER only without a country (or for a year-last date in a year-first country);
* international phones: a trunk prefix after the country code is removed exactly where libphonenumber's metadata
  for that country has one, and the result is always either the digits as written or a valid number;
* client_ip_address: capi-param-builder's ``<ip>.<appendix>`` (its own tests' values) is sent verbatim.
"""

from __future__ import annotations

import hashlib
from datetime import date

import phonenumbers
import pytest
from babel import Locale
from babel.dates import format_date
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.prepare._tables import date_orders as _date_orders
from capi_relay.prepare.normalize import normalize_user_data, normalized_string
from capi_relay.prepare.rules import Invalid, _plain_ip
from capi_relay.settings import NormalizationSettings

TODAY = date(2026, 9, 21)
MDY = NormalizationSettings(date_order="MDY")
DMY = NormalizationSettings(date_order="DMY")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------- date order
def _cldr_numeric(day: date, country: str) -> str:
    """The date as the country's likely locale writes it numerically (its CLDR short pattern, 4-digit year)."""
    locale = Locale.parse(f"und_{country.upper()}")
    pattern = locale.date_formats["short"].pattern.replace("yy", "y")
    return format_date(day, pattern.replace("y", "yyyy"), locale=locale)


DAY_MONTH_COUNTRIES = sorted(c for c, o in _date_orders.ORDERS.items() if o in ("DMY", "MDY"))


@settings(max_examples=300, deadline=None)
@given(country=st.sampled_from(DAY_MONTH_COUNTRIES), day=st.integers(1, 12), month=st.integers(1, 12),
       year=st.integers(1930, 2005), default=st.sampled_from([MDY, DMY]))  # fmt: skip
def test_an_ambiguous_date_is_read_in_the_order_its_country_writes_dates(
    country: str, day: int, month: int, year: int, default: NormalizationSettings
) -> None:
    born = date(year, month, day)
    written = _cldr_numeric(born, country)  # CLDR (babel) writes it, not the relay
    if not written.isascii():  # a locale with its own digits (ar_EG, fa_IR ...): not this test's subject
        return
    out, drops = normalize_user_data({"db": written, "country": country}, default, TODAY)
    assert drops == []
    assert out["db"] == sha(born.strftime("%Y%m%d")), (country, written)


@pytest.mark.parametrize(("country", "expected"), [("de", "19900403"), ("gb", "19900403"), ("fr", "19900403"),
                                                   ("br", "19900403"), ("in", "19900403"), ("us", "19900304"),
                                                   ("ph", "19900304")])  # fmt: skip
def test_03_04_1990_depends_on_the_events_country_not_on_date_order(country: str, expected: str) -> None:
    for default in (MDY, DMY):
        assert normalized_string("db", "03.04.1990", default, country=country, today=TODAY) == expected


def test_without_a_country_or_in_a_year_first_country_date_order_decides_a_year_last_date() -> None:
    for country in (None, "jp", "cn", "kr", "hu", "se"):
        assert normalized_string("db", "03/04/1990", MDY, country=country, today=TODAY) == "19900304"
        assert normalized_string("db", "03/04/1990", DMY, country=country, today=TODAY) == "19900403"
    # a year-first date in a year-first country: year-month-day, as CLDR writes it there
    assert normalized_string("db", "1990/03/04", MDY, country="jp", today=TODAY) == "19900304"


def test_a_pre_hashed_country_still_decides_the_date_order() -> None:
    out, _ = normalize_user_data({"db": "03/04/1990", "country": sha("de")}, MDY, TODAY)
    assert out["db"] == sha("19900403")


# --------------------------------------------------------------------------------------- trunk prefixes
@pytest.mark.parametrize(
    ("written", "expected"),
    [("+358 01 4839834", "35814839834"), ("+62 (021) 957 3779", "62219573779"), ("(+358) 058680696", "35858680696"),
     ("0062 021 957 3779", "62219573779"), ("+44 020 7946 0958", "442079460958"), ("+33 06 12 34 56 78", "33612345678"),
     ("+39 06 1234 5678", "390612345678"),  # Italy has no trunk prefix: its 0 is part of the number
     ("+39 02 1234 5678", "390212345678"), ("+358 40 1234567", "358401234567")],
)  # fmt: skip
def test_a_trunk_prefix_after_the_country_code_is_removed_where_the_plan_has_one(written: str, expected: str) -> None:
    assert normalized_string("ph", written, MDY, today=TODAY) == expected


def _regions_with_trunk_zero() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is not None and metadata.national_prefix == "0" and phonenumbers.example_number(region):
            out.append(region)
    return out


@pytest.mark.parametrize("region", _regions_with_trunk_zero())
def test_every_countrys_example_number_written_with_its_trunk_zero_after_the_code_is_its_e164(region: str) -> None:
    example = phonenumbers.example_number(region)  # libphonenumber's own valid number for the region
    assert example is not None
    national = phonenumbers.national_significant_number(example)
    written = f"+{example.country_code} 0{national}"
    expected = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
    got = normalized_string("ph", written, MDY, today=TODAY)
    # libphonenumber's verdict on the written form is the oracle: it strips the 0 only where the plan says so
    parsed = phonenumbers.parse(written, None)
    if phonenumbers.is_valid_number(parsed):
        assert got == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]
    else:
        assert got == f"{example.country_code}0{national}"  # not valid stripped: the digits as written
    assert got in (expected, f"{example.country_code}0{national}")


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)), rest=st.from_regex(r"0[0-9]{5,11}",
       fullmatch=True))  # fmt: skip
def test_an_international_number_is_never_turned_into_someone_elses(code: int, rest: str) -> None:
    written = f"+{code} {rest}"
    try:
        got = normalized_string("ph", written, MDY, today=TODAY)
    except Invalid:
        return
    as_written = f"{code}{rest}"
    if got != as_written:  # something was removed: what is left must be a valid number of the same country
        number = phonenumbers.parse("+" + got, None)
        assert phonenumbers.is_valid_number(number)
        assert number.country_code == code
        assert as_written.endswith(got[len(str(code)) :])  # only a prefix of the national part was removed


# ---------------------------------------------------------------------------- client_ip_address appendix
@pytest.mark.parametrize(
    "value",
    # capi-param-builder's own tests (nodejs/capi-param-builder/tests/getClientIp.test.js) and language tokens
    ["8.8.8.8.AQQAAQAA", "8.8.8.8.AQQCAQAA", "2001:4860:4860::8888.AQQDAQAA", "8.8.8.8.AQ", "8.8.8.8.BA",
     "2001:4860:4860::8888.Bg", "8.8.8.8.ABCDEFGH", "::ffff:203.0.113.9.Aw", "203.0.113.9", "2001:db8::1"],
)  # fmt: skip
def test_an_ip_with_capi_param_builders_appendix_is_sent_verbatim(value: str) -> None:
    assert _plain_ip(value) == value
    out, drops = normalize_user_data({"client_ip_address": f"  {value} "}, MDY, TODAY)
    assert (out, drops) == ({"client_ip_address": value}, [])


@pytest.mark.parametrize(
    "value",
    ["not.an.ip", "8.8.8.AQ", "8.8.8.8.A", "8.8.8.8.AQQ", "8.8.8.8.AQQAAQAAA", "1.2.3.4.56", "1.2.3.4.12345678",
     "256.1.1.1.AQ", "2001:db8::zz.AQ", "8.8.8.8.AQ.AQ", "8.8.8.8.A Q", ".AQ", "8.8.8.8."],
)  # fmt: skip
def test_an_ip_part_that_does_not_parse_or_another_suffix_is_dropped(value: str) -> None:
    with pytest.raises(Invalid):
        _plain_ip(value)


def test_the_trunk_prefix_table_equals_the_generator_output_from_the_installed_phonenumbers() -> None:
    import importlib.util
    from pathlib import Path

    from capi_relay.prepare._tables import trunk_prefixes as _trunk_prefixes

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gen_trunk_prefixes", root / "scripts" / "gen_trunk_prefixes.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build() == _trunk_prefixes.PREFIXES
    shipped = (root / "src" / "capi_relay" / "prepare" / "_tables" / "trunk_prefixes.py").read_text(encoding="utf-8")
    assert shipped == gen.render(gen.build())
    assert {k: _trunk_prefixes.PREFIXES.get(k) for k in ("358", "62", "44", "39", "7", "36")} == {
        "358": "0", "62": "0", "44": "0", "39": None, "7": "8", "36": "06",
    }  # fmt: skip


def test_a_number_written_internationally_without_a_trunk_prefix_loads_no_phone_metadata() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from capi_relay.prepare.normalize import normalized_string; from capi_relay.settings import "
        "NormalizationSettings as N; assert normalized_string('ph', '+44 20 7946 0958', N()) == '442079460958'; "
        "print(any(m.startswith('phonenumbers') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
