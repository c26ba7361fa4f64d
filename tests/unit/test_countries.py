"""The shipped country/currency tables equal what scripts/gen_countries.py builds from the installed pycountry
(the maintained ISO 3166-1 / ISO 4217 source). On failure: ``make countries`` and commit the result."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pycountry

from capi_relay.prepare._tables import countries as _countries
from capi_relay.prepare._tables import country_names as _country_names
from capi_relay.prepare._tables import date_orders as _date_orders
from capi_relay.prepare.rules import country_key

ROOT = Path(__file__).resolve().parents[2]


def _generator(name: str = "gen_countries") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_country_table_equals_the_generator_output() -> None:
    assert _generator().build() == _countries.COUNTRIES


def test_the_currency_table_equals_the_generator_output() -> None:
    assert sorted(_countries.CURRENCIES) == _generator().build_currencies()


def test_the_generated_file_is_byte_identical_to_a_fresh_render() -> None:
    gen = _generator()
    shipped = (ROOT / "src" / "capi_relay" / "prepare" / "_tables" / "countries.py").read_text(encoding="utf-8")
    assert shipped == gen.render(gen.build())


def test_every_iso_country_is_reachable_by_alpha2_alpha3_and_name() -> None:
    for country in pycountry.countries:
        code = country.alpha_2.lower()
        assert _countries.COUNTRIES[country_key(country.alpha_2)] == code
        assert _countries.COUNTRIES[country_key(country.alpha_3)] == code
        assert _countries.COUNTRIES[country_key(country.name)] == code


def test_aliases_never_shadow_an_iso_code() -> None:
    # An alpha-2/alpha-3 key always maps to its own country, whatever alias the generator adds.
    iso = {country_key(c.alpha_2): c.alpha_2.lower() for c in pycountry.countries}
    iso |= {country_key(c.alpha_3): c.alpha_2.lower() for c in pycountry.countries}
    assert {k: _countries.COUNTRIES[k] for k in iso} == iso
    assert _countries.COUNTRIES["uk"] == "gb"  # not an ISO code, the one explicit exception in the spec


def test_every_value_is_a_real_alpha2_code_and_currencies_are_three_letters() -> None:
    codes = {c.alpha_2.lower() for c in pycountry.countries}
    assert set(_countries.COUNTRIES.values()) <= codes
    assert all(len(c) == 3 and c.isalpha() and c.islower() for c in _countries.CURRENCIES)
    assert {"usd", "eur", "gbp", "jpy"} <= _countries.CURRENCIES


# ------------------------------------------------------------------ names in other languages (CLDR via babel)
def test_the_cldr_name_table_equals_the_generator_output_and_the_file_a_fresh_render() -> None:
    gen = _generator("gen_country_names")
    table, ambiguous = gen.build()
    assert table == _country_names.NAMES
    shipped = (ROOT / "src" / "capi_relay" / "prepare" / "_tables" / "country_names.py").read_text(encoding="utf-8")
    assert shipped == gen.render(table, ambiguous)


def test_cldr_names_never_shadow_the_iso_or_english_table_and_name_real_countries() -> None:
    assert not set(_country_names.NAMES) & set(_countries.COUNTRIES)
    assert set(_country_names.NAMES.values()) <= {c.alpha_2.lower() for c in pycountry.countries}
    assert all(len(key) >= 4 for key in _country_names.NAMES if key.isascii())


def test_a_name_two_languages_give_to_different_countries_is_not_in_the_table() -> None:
    _table, ambiguous = _generator("gen_country_names").build()
    assert ambiguous  # "Kongo" is the Republic of the Congo in one language and the DR Congo in another
    assert not set(ambiguous) & set(_country_names.NAMES)


# ------------------------------------------------------------ date order per country (CLDR date patterns via babel)
def test_the_date_order_table_equals_the_generator_output_and_the_file_a_fresh_render() -> None:
    gen = _generator("gen_date_orders")
    orders, locales = gen.build()
    assert orders == _date_orders.ORDERS
    shipped = (ROOT / "src" / "capi_relay" / "prepare" / "_tables" / "date_orders.py").read_text(encoding="utf-8")
    assert shipped == gen.render(orders, locales)


def test_the_date_order_table_reads_cldr_patterns_as_people_write_dates() -> None:
    gen = _generator("gen_date_orders")
    assert [gen.pattern_order(p) for p in ("dd.MM.yy", "M/d/yy", "y/MM/dd", "yy. M. d.", "d 'de' MMMM 'de' y")] == [
        "DMY", "MDY", "YMD", "YMD", "DMY",
    ]  # fmt: skip
    orders = _date_orders.ORDERS
    assert {c: orders[c] for c in ("de", "gb", "fr", "br", "in", "us", "ph", "cn", "jp", "kr", "hu")} == {
        "de": "DMY", "gb": "DMY", "fr": "DMY", "br": "DMY", "in": "DMY", "us": "MDY", "ph": "MDY",
        "cn": "YMD", "jp": "YMD", "kr": "YMD", "hu": "YMD",
    }  # fmt: skip
    assert set(orders) <= {c.alpha_2.lower() for c in pycountry.countries}
    assert len(orders) >= 240  # every country CLDR has a locale for
