"""Realistic people in many locales (Faker), hashed by the relay and checked against oracles no one here wrote:

* phones: libphonenumber (the region of the person's country) -- a number it reads as valid must be sent as the
  SHA-256 of its E.164 digits; ``ph_trunk`` is the same number written the way many people write it abroad, the
  country code followed by the national form with its trunk prefix (``+49 030 …``, ``+358 040 …``), with
  libphonenumber's reading of that string as the oracle;
* dates of birth: the generating date, written as the person's country writes a numeric date (CLDR's short pattern
  via babel, four-digit year) -- the hash must be of that date as YYYYMMDD;
* country: the country's name in the locale's own language (CLDR via babel) -- the hash must be of the ISO code;
* names, emails and postcodes: Meta's documented rules (customer-information-parameters), written out here from the
  documentation, not taken from the relay.

Each person's ``country`` is sent with the event, as a producer that knows its customers' countries would.
``python -m tests.unit.test_realistic_people`` prints the per-field figures README's "What it guarantees" quotes.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

import phonenumbers
from babel import Locale
from babel.dates import format_date
from faker import Faker

from capi_relay.prepare.normalize import normalize_user_data
from capi_relay.settings import NormalizationSettings

# 34 locales, 6 continents; Faker's phone, postcode and name providers for each.
LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "es_MX", "it_IT", "pt_BR", "pt_PT", "nl_NL", "pl_PL", "ru_RU",
    "tr_TR", "ja_JP", "ko_KR", "zh_CN", "hi_IN", "en_IN", "id_ID", "fi_FI", "sv_SE", "da_DK", "cs_CZ", "hu_HU",
    "ro_RO", "uk_UA", "el_GR", "th_TH", "en_AU", "de_AT", "ar_EG", "fa_IR", "bn_BD", "ne_NP",
)  # fmt: skip
PER_LOCALE = 40
TODAY = date(2026, 9, 21)
SETTINGS = NormalizationSettings()  # DEFAULT_PHONE_REGION=US, DATE_ORDER=MDY: the country must decide
MIN_MATCH = {"ph": 0.97, "ph_trunk": 0.97, "db": 0.99, "country": 1.0, "fn": 1.0, "ln": 1.0, "em": 1.0, "zp": 0.95}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Person:
    locale: str
    country: str  # ISO alpha-2, upper case
    raw: dict[str, str]
    expected: dict[str, str | None]  # field -> the string Meta's rule hashes (None: no oracle verdict, not counted)


def _numeric_date(born: date, locale: Locale) -> str:
    """The date as the locale writes it numerically: its CLDR short pattern with a four-digit year."""
    pattern = re.sub(r"y+", "yyyy", locale.date_formats["short"].pattern)
    return format_date(born, pattern, locale=locale)


def _phone_oracle(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None  # libphonenumber gives no verdict to test against
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def _with_trunk_prefix(raw: str, region: str) -> tuple[str | None, str | None]:
    """(the number as "+<code> <national form>" when its national form starts with a trunk prefix, its oracle)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None, None
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    trunk = metadata.national_prefix if metadata is not None else None
    if not phonenumbers.is_valid_number(number) or not trunk or not national.startswith(trunk):
        return None, None
    written = f"+{number.country_code} {national}"
    return written, _phone_oracle(written, "ZZ")


def _name_rule(name: str) -> str:
    # Meta: lower case, no punctuation; UTF-8 letters kept (customer-information-parameters)
    text = unicodedata.normalize("NFC", name).lower()
    return unicodedata.normalize("NFC", "".join(ch for ch in text if unicodedata.category(ch)[0] in "LMN"))


def _zip_rule(postcode: str, country: str) -> str:
    # Meta: lower case, no spaces, no dash (the part before it); US: the first 5 digits
    text = "".join(postcode.lower().split()).split("-")[0]
    return text[:5] if country == "US" else text


def people() -> list[Person]:
    out: list[Person] = []
    for tag in LOCALES:
        fake = Faker(tag)
        fake.seed_instance(18)
        locale = Locale.parse(tag)
        country = tag.split("_")[1]
        country_name = locale.territories[country]  # CLDR, in the locale's language: "Deutschland", "日本"
        for _ in range(PER_LOCALE):
            born = fake.date_of_birth(minimum_age=18, maximum_age=90)
            first, last, phone, postcode = fake.first_name(), fake.last_name(), fake.phone_number(), fake.postcode()
            email = f"{fake.user_name()}@{fake.free_email_domain()}"
            trunk_form, trunk_e164 = _with_trunk_prefix(phone, country)
            raw = {"fn": first, "ln": last, "ph": phone, "db": _numeric_date(born, locale), "country": country_name,
                   "em": email, "zp": postcode, "ph_trunk": trunk_form or ""}  # fmt: skip
            expected = {
                "fn": _name_rule(first), "ln": _name_rule(last), "ph": _phone_oracle(phone, country),
                "db": born.strftime("%Y%m%d"), "country": country.lower(), "em": email.strip().lower(),
                "zp": _zip_rule(postcode, country), "ph_trunk": trunk_e164,
            }  # fmt: skip
            out.append(Person(tag, country, raw, expected))
    return out


def _sent(person: Person) -> dict[str, Any]:
    """What the relay sends for the person (``ph_trunk``: for the trunk-prefix form of the phone, as ``ph``)."""
    user_data = {k: v for k, v in person.raw.items() if k != "ph_trunk"}
    sent, _drops = normalize_user_data(user_data, SETTINGS, TODAY)
    if person.raw["ph_trunk"]:
        trunk, _ = normalize_user_data({**user_data, "ph": person.raw["ph_trunk"]}, SETTINGS, TODAY)
        sent["ph_trunk"] = trunk.get("ph")
    return sent


def _hit(sent: dict[str, Any], field: str, expected: str) -> bool:
    value = sent.get(field)
    return sha(expected) in (value if isinstance(value, list) else [value])


def figures(population: list[Person]) -> dict[str, tuple[int, int]]:
    """field -> (values whose hash is Meta's, values with an oracle verdict)."""
    matched: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for person in population:
        sent = _sent(person)
        for field, expected in person.expected.items():
            if expected is not None:
                total[field] += 1
                matched[field] += _hit(sent, field, expected)
    return {field: (matched[field], total[field]) for field in total}


def misses(population: list[Person], field: str) -> list[tuple[str, str, str | None]]:
    return [
        (person.locale, person.raw[field], expected)
        for person in population
        if (expected := person.expected[field]) is not None and not _hit(_sent(person), field, expected)
    ]


POPULATION = people()


def test_enough_locales_and_people_with_an_oracle_verdict() -> None:
    assert len(LOCALES) >= 20
    counts = figures(POPULATION)
    assert counts["ph"][1] >= 0.6 * len(POPULATION)  # libphonenumber reads most of Faker's numbers as valid
    assert counts["ph_trunk"][1] >= 300
    assert counts["db"][1] == len(POPULATION)


def test_every_field_matches_what_meta_computes_for_people_of_every_country() -> None:
    counts = figures(POPULATION)
    for field, (hit, total) in counts.items():
        assert hit / total >= MIN_MATCH[field], (field, hit, total, misses(POPULATION, field)[:10])


if __name__ == "__main__":
    for field, (hit, total) in sorted(figures(POPULATION).items()):
        print(f"{field:8} {hit:5} / {total:5}  {100 * hit / total:6.2f} %")
    if len(sys.argv) > 1:
        for miss in misses(POPULATION, sys.argv[1])[:40]:
            print(miss)
