"""Conformance table for ../shared/spec/normalization.md: every rule and every example, each asserting the
exact string that is hashed (or the drop reason), plus SHA-256 values for a sample incl. Meta's vectors.

A row is (field, input, expected, country, settings). ``expected`` is the normalized string, or
``Dropped(reason)`` when the value must be dropped. ``country`` is the event's normalized country (the
phone region and the US ZIP rule); ``settings`` defaults to DEFAULT_PHONE_REGION=US, DATE_ORDER=MDY.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from capi_relay.ingest.model import Drop
from capi_relay.prepare.normalize import normalize_user_data, normalized_string, normalized_strings
from capi_relay.prepare.rules import EMPTY_SHA256, Invalid
from capi_relay.settings import NormalizationSettings

TODAY = date(2026, 9, 21)
US_MDY = NormalizationSettings()
DMY = NormalizationSettings(date_order="DMY")
GB = NormalizationSettings(default_phone_region="GB")
DE = NormalizationSettings(default_phone_region="DE")


@dataclass(frozen=True)
class Dropped:
    reason: str


Row = tuple[str, Any, "str | Dropped", "str | None", NormalizationSettings]


def r(field: str, value: Any, expected: str | Dropped, country: str | None = None,
      settings: NormalizationSettings = US_MDY) -> Row:  # fmt: skip
    return (field, value, expected, country, settings)


CASES: list[Row] = [
    # ---------------------------------------------------------------- em (spec examples first)
    r("em", "John_Smith@gmail.com", "john_smith@gmail.com"),
    r("em", "john smith@x.com", Dropped("invalid_email")),
    r("em", "a@b", Dropped("invalid_email")),
    r("em", "  JOHN_SMITH@GMAIL.COM\t", "john_smith@gmail.com"),
    r("em", "John.Smith+promo@Gmail.com", "john.smith+promo@gmail.com"),  # no Gmail canonicalization
    r("em", "j.o.h.n@googlemail.com", "j.o.h.n@googlemail.com"),
    r("em", "a@b@example.com", Dropped("invalid_email")),
    r("em", "@example.com", Dropped("invalid_email")),
    r("em", "john@", Dropped("invalid_email")),
    r("em", "john@localhost", Dropped("invalid_email")),
    r("em", "john..smith@example.com", Dropped("invalid_email")),
    r("em", ".john@example.com", Dropped("invalid_email")),
    r("em", "john.@example.com", Dropped("invalid_email")),
    r("em", "john@.example.com", Dropped("invalid_email")),
    r("em", "john@example.com.", Dropped("invalid_email")),
    r("em", "john@example..com", Dropped("invalid_email")),
    r("em", "jo\u00a0hn@example.com", Dropped("invalid_email")),  # no-break space is whitespace too
    r("em", "Jürgen@Bücher.DE", "jürgen@bücher.de"),  # Unicode allowed
    r("em", "Ju\u0308rgen@example.com", "j\u00fcrgen@example.com"),  # NFC: decomposed ü composes
    r("em", "ÉLODIE@example.fr", "élodie@example.fr"),
    r("em", "noemail", Dropped("invalid_email")),
    # ---------------------------------------------------------------- ph
    r("ph", "(650)555-1212", "16505551212"),
    r("ph", "+44 20 7946 0958", "442079460958"),
    r("ph", "0044 20 7946 0958", "442079460958"),
    r("ph", "07911 123456", "447911123456", "gb"),
    r("ph", "+49 (0)30 12345678", "493012345678"),
    r("ph", "+1-555-123-4567 ext. 123", "15551234567"),
    r("ph", "12345", Dropped("invalid_phone")),
    r("ph", "650-555-1212", "16505551212"),
    r("ph", "650.555.1212", "16505551212"),
    r("ph", "1 (650) 555-1212", "16505551212"),
    r("ph", "+1 650 555 1212 x12", "16505551212"),
    r("ph", "+1 650 555 1212 extension 5", "16505551212"),
    r("ph", "650 555 1212 #3", "16505551212"),
    r("ph", "011 44 20 7946 0958", "442079460958"),  # NANP international prefix (default region US)
    r("ph", "011 44 20 7946 0958", "442079460958", "ca"),
    r("ph", "+0044 20 7946 0958", "442079460958"),  # zeros right after + are stripped
    r("ph", "+44 (0)20 7946 0958", "442079460958"),  # trunk (0) dropped
    r("ph", "07911 123456", "447911123456", None, GB),  # no country: DEFAULT_PHONE_REGION
    r("ph", "030 12345678", "493012345678", "de"),
    r("ph", "030 12345678", "493012345678", None, DE),
    r("ph", "07911 123456", "447911123456", "gb", DE),  # the event's country beats the default region
    r("ph", "06 12 34 56 78", "33612345678", "fr"),
    r("ph", "16505551212", "16505551212"),  # already E.164 digits: unchanged
    r("ph", "447911123456", "447911123456"),  # E.164 digits of another country, default region US
    r("ph", "1-800-FLOWERS", Dropped("invalid_phone")),  # vanity number
    r("ph", "call me", Dropped("invalid_phone")),
    r("ph", "555-1212", Dropped("invalid_phone")),  # local-only: no area code
    r("ph", "+1234", Dropped("invalid_phone")),  # fewer than 7 digits
    r("ph", "+1234567890123456", Dropped("invalid_phone")),  # more than 15 digits
    r("ph", "+44 20 7946 +0958", Dropped("invalid_phone")),
    r("ph", "＋１ ６５０ ５５５ １２１２", "16505551212"),  # full-width digits and plus
    r("ph", "٠٧٩١١ ١٢٣٤٥٦", "447911123456", "gb"),  # Arabic-Indic digits
    r("ph", 16505551212, "16505551212"),  # numbers are turned into strings
    r("ph", "+", Dropped("invalid_phone")),
    # revised rules: labels, trailing text, other separators, full-width forms, extensions, leading zeros
    r("ph", "Tel: 555 123 4567", "15551234567"),
    r("ph", "Phone: 555-123-4567", "15551234567"),
    r("ph", "Call me at +1 (555) 123-4567 today!", "15551234567"),
    r("ph", "[555] 123-4567", "15551234567"),
    r("ph", "{555} 123-4567", "15551234567"),
    r("ph", "555_123_4567", "15551234567"),
    r("ph", "555|123|4567", "15551234567"),
    r("ph", "555*123*4567", "15551234567"),
    r("ph", "555%123$4567@", "15551234567"),
    r("ph", "555＋123＋4567", "15551234567"),  # a plus between digit groups is a separator
    r("ph", "555-123-4567（内線123）", "15551234567"),
    r("ph", "555-123-4567 (ext 12)", "15551234567"),
    r("ph", "01(650)555-1212", "16505551212"),  # zeros before the country code, as capi-param-builder strips them
    r("ph", "001-650-555-1212", "16505551212"),  # (00: the international prefix)
    r("ph", "01(650)123-4567", Dropped("invalid_phone")),  # ... only if valid: exchange 123 does not exist
    r("ph", "06505551212", Dropped("invalid_phone")),  # a zero before a national number without the code ...
    r("ph", "07544 538485", Dropped("invalid_phone")),  # ... is kept: this is a UK mobile, not Florida's 754
    r("ph", "Tel 07911 123456", "447911123456", "gb"),
    # ... and what the looser rules refuse
    r("ph", "1-800-356-FLOWERS", Dropped("invalid_phone")),  # letters after digits are dropped, 7 digits stay
    r("ph", "555 123 4567 or 555 987 6543", Dropped("invalid_phone")),  # letters between digits
    r("ph", "555-1234 | 555-5678", Dropped("invalid_phone")),  # two numbers glued: not read as +55 ...
    r("ph", "0447911123456", Dropped("invalid_phone")),  # zeros off, 447911123456 is not a US number
    r("ph", "07544 538485", "447544538485", "gb"),  # in the UK the 0 is the trunk prefix
    r("ph", "00 1234", Dropped("invalid_phone")),
    r("ph", "Tel: ", Dropped("invalid_phone")),
    r("ph", "5" * 129, Dropped("too_long")),
    # ---------------------------------------------------------------- fn / ln
    r("fn", "Mary Jane", "maryjane"),
    r("ln", "O'Connor", "oconnor"),
    r("fn", "Jean-Luc", "jeanluc"),
    r("fn", "정", "정"),
    r("fn", "Mary", "mary"),
    r("fn", "Valéry", "valéry"),
    r("fn", "Vale\u0301ry", "val\u00e9ry"),  # NFC before
    r("fn", "İpek", "i\u0307pek"),  # str.lower(), not casefold(), as JavaScript does
    r("fn", "STRASSE", "strasse"),
    r("fn", "Straße", "straße"),  # casefold() would give "strasse"
    r("ln", "van der Berg", "vanderberg"),
    r("ln", "Smith-Jones, Jr.", "smithjonesjr"),
    r("fn", "José María", "josémaría"),
    r("fn", "ΣΟΦΙΑ", "σοφια"),
    r("ln", "Müller😀", "müller"),  # symbols (So) removed
    r("fn", "John3", "john3"),  # digits kept
    r("fn", "Anne-Marie ♥", "annemarie"),
    r("ln", "D’Angelo", "dangelo"),  # typographic apostrophe is punctuation
    r("fn", "王小明", "王小明"),
    r("fn", "Mary ❤️", "mary"),  # the heart (So) and its variation selector U+FE0F
    r("fn", "Mary\ufe0f", "mary"),  # a variation selector after a letter is not an accent either
    r("fn", "Zoe\u0308", "zoë"),  # a combining mark on a letter is kept (and composed)
    r("fn", "Ann 1\u20e3", "ann1"),  # a keycap mark on a digit is dropped, the digit stays
    r("ln", "Smith\u200d👨\u200d👩", "smith"),  # zero-width joiners and emoji
    r("fn", "...", Dropped("empty")),
    r("fn", "   ", Dropped("empty")),
    # ---------------------------------------------------------------- ge
    r("ge", "Male", "m"),
    r("ge", "other", Dropped("invalid_gender")),
    r("ge", "m", "m"),
    r("ge", "M", "m"),
    r("ge", "man", "m"),
    r("ge", "Mr.", "m"),
    r("ge", "f", "f"),
    r("ge", "FEMALE", "f"),
    r("ge", "woman", "f"),
    r("ge", "Mrs", "f"),
    r("ge", "Ms.", "f"),
    r("ge", "miss", "f"),
    r("ge", "x", Dropped("invalid_gender")),
    r("ge", "unknown", Dropped("invalid_gender")),
    r("ge", "boy", "m"),  # capi-param-builder's gender words
    r("ge", "He", "m"),
    r("ge", "father", "m"),
    r("ge", "gentleman", "m"),
    r("ge", "girl", "f"),
    r("ge", "she", "f"),
    r("ge", "Mother", "f"),
    r("ge", "lady", "f"),
    r("ge", "Ma'am", "f"),
    r("ge", "daughter", "f"),
    # ---------------------------------------------------------------- db
    r("db", "1997-02-16", "19970216"),
    r("db", "16/02/1997", "19970216"),
    r("db", "05-03-1995", "19950503"),  # both <= 12: configured order, default month first
    r("db", "05-03-1995", "19950305", None, DMY),
    r("db", "2/16/1997", "19970216"),  # Meta's own example
    r("db", "19970216", "19970216"),
    r("db", "1997/02/16", "19970216"),
    r("db", "1997.02.16", "19970216"),
    r("db", "16.02.1997", "19970216"),
    r("db", "02.16.1997", "19970216"),
    r("db", "16-02-1997", "19970216", None, DMY),
    r("db", "02/16/1997", "19970216", None, DMY),  # a part > 12 decides, whatever the order
    r("db", "December 31, 1990", "19901231"),
    r("db", "31 Dec 1990", "19901231"),
    r("db", "Dec 31 1990", "19901231"),
    r("db", "31 December 1990", "19901231"),
    r("db", "sept 5, 1990", "19900905"),
    r("db", "1997-2-6", "19970206"),
    r("db", "02/16/97", Dropped("two_digit_year")),
    r("db", "16-2-97", Dropped("two_digit_year")),
    r("db", "Dec 31 90", Dropped("two_digit_year")),
    r("db", "1899-12-31", Dropped("invalid_date")),
    r("db", "1900-01-01", "19000101"),
    r("db", "2030-01-01", Dropped("future_date")),
    r("db", "2026-09-21", "20260921"),  # today is not the future
    r("db", "2026-09-22", Dropped("future_date")),
    r("db", "1997-02-30", Dropped("invalid_date")),
    r("db", "1997-13-01", "19970113"),  # year first, middle part > 12: year-day-month
    r("db", "1997-13-13", Dropped("invalid_date")),
    r("db", "13/13/1997", Dropped("invalid_date")),
    r("db", "2/29/1996", "19960229"),
    r("db", "2/29/1997", Dropped("invalid_date")),
    r("db", "1997-02/16", "19970216"),  # mixed separators
    r("db", "yesterday", Dropped("invalid_date")),
    r("db", "1990-12-31T00:00:00Z", "19901231"),  # ISO date-time: the calendar date
    r("db", "12 31 1990", "19901231"),  # revised rules: any run of non-alphanumerics separates
    r("db", "16–2–1997", "19970216"),  # en dash
    r("db", "16—2—1997", "19970216"),  # em dash
    r("db", "12-31/1990", "19901231"),
    r("db", "31 _ 12 | 1990", "19901231"),
    r("db", "Born: 31.12.1990", "19901231"),
    r("db", "DOB is 12/31/1990 (verified)", "19901231"),
    r("db", "31/12/1990 (DD/MM/YYYY)", "19901231"),
    r("db", "05/03/1995 (DD/MM/YYYY)", "19950305"),  # the hint beats the configured order
    r("db", "05/03/1995 (mm-dd-yyyy)", "19950503", None, DMY),
    r("db", "12/31/1990 (DD/MM/YYYY)", Dropped("invalid_date")),  # the hint contradicts the value: dropped
    r("db", "12月31日1990年", "19901231"),
    r("db", "1990年12月31日", "19901231"),
    r("db", "1990년 12월 31일", "19901231"),
    r("db", "１９９０－１２－３１", "19901231"),  # full-width
    r("db", "1990-12-31-00-00-00", "19901231"),
    r("db", "1990-12-31T00:00:00.000+05:30", "19901231"),
    r("db", "1985/25/12", "19851225"),  # year first, middle part > 12: year-day-month
    r("db", "12 31 1990 555 1234", Dropped("invalid_date")),  # more than a date and a time: refused
    r("db", "12/31/1990 or 01/02/1991", Dropped("invalid_date")),
    r("db", "1" * 40, Dropped("invalid_date")),
    r("db", "1" * 129, Dropped("too_long")),
    # ---------------------------------------------------------------- ct
    r("ct", "Menlo Park", "menlopark"),
    r("ct", "Seattle-98121", "seattle"),
    r("ct", "São Paulo", "sãopaulo"),
    r("ct", "Москва", "москва"),
    r("ct", "New York", "newyork"),
    r("ct", "St. Louis", "stlouis"),
    r("ct", "Winston-Salem", "winstonsalem"),
    r("ct", "Coeur d'Alene", "coeurdalene"),
    r("ct", "Zürich", "zürich"),
    r("ct", "Sa\u0303o Paulo", "s\u00e3opaulo"),  # NFC
    r("ct", "東京", "東京"),
    r("ct", "12345", Dropped("empty")),
    # ---------------------------------------------------------------- st
    r("st", "California", "ca"),
    r("st", "N.Y.", "ny"),
    r("st", "Ontario", "on"),
    r("st", "Tex.", "tex"),  # an abbreviation that is not a code: the cleaned string
    r("st", "Bayern", "bayern"),
    r("st", "Québec", "qc"),
    r("st", "Quebec", "qc"),
    r("st", "QUÉBEC", "qc"),
    r("st", "CA", "ca"),
    r("st", "ca", "ca"),
    r("st", "new york", "ny"),
    r("st", "NEW-YORK", "ny"),
    r("st", "District of Columbia", "dc"),
    r("st", "Washington, D.C.", "dc"),
    r("st", "Puerto Rico", "pr"),
    r("st", "Guam", "gu"),
    r("st", "U.S. Virgin Islands", "vi"),
    r("st", "American Samoa", "as"),
    r("st", "Northern Mariana Islands", "mp"),
    r("st", "British Columbia", "bc"),
    r("st", "Newfoundland and Labrador", "nl"),
    r("st", "Prince Edward Island", "pe"),
    r("st", "Yukon", "yt"),
    r("st", "Nunavut", "nu"),
    r("st", "Northwest Territories", "nt"),
    r("st", "Île-de-France", "îledefrance"),  # others: cleaned, accents kept, never truncated
    r("st", "New South Wales", "newsouthwales"),
    r("st", "Nordrhein-Westfalen", "nordrheinwestfalen"),
    r("st", "12", Dropped("empty")),
    # ---------------------------------------------------------------- zp
    r("zp", "98121-4892", "98121"),
    r("zp", "123459876", "12345"),  # no country, 9 digits: the US rule
    r("zp", "SW1A 1AA", "sw1a1aa"),
    r("zp", "02101", "02101"),  # leading zeros kept
    r("zp", "98121-4892", "98121", "us"),
    r("zp", "98121 4892", "98121", "us"),
    r("zp", "981214892", "98121", "us"),
    r("zp", "M1 1AE", "m11ae", "gb"),  # Meta's UK example
    r("zp", "1987", "1987", "au"),
    r("zp", "75018", "75018", "fr"),
    r("zp", "K1A 0B1", "k1a0b1", "ca"),
    r("zp", "123456789", "123456789", "cn"),  # 9 digits, but not US: never truncated
    r("zp", "12345678", "12345678"),  # 8 digits, no country: not the US rule
    r("zp", "1010-123", "1010", "at"),
    r("zp", "1", Dropped("invalid_zip")),
    r("zp", "-1234", Dropped("invalid_zip")),
    r("zp", 2101, "2101"),  # numbers are turned into strings (no guessing of a lost leading zero)
    # ---------------------------------------------------------------- country
    r("country", "USA", "us"),
    r("country", "United States", "us"),
    r("country", "U.K.", "gb"),
    r("country", "uk", "gb"),
    r("country", "US", "us"),
    r("country", "us", "us"),
    r("country", "usa", "us"),
    r("country", "U.S.A.", "us"),
    r("country", "united states of america", "us"),
    r("country", "South Korea", "kr"),
    r("country", "Korea, Republic of", "kr"),
    r("country", "Russia", "ru"),
    r("country", "Russian Federation", "ru"),
    r("country", "great britain", "gb"),
    r("country", "United Kingdom", "gb"),
    r("country", "GBR", "gb"),
    r("country", "DEU", "de"),
    r("country", "Germany", "de"),
    r("country", "Côte d'Ivoire", "ci"),
    r("country", "Bolivia", "bo"),
    r("country", "Viet Nam", "vn"),
    r("country", "Vietnam", "vn"),
    r("country", "Türkiye", "tr"),
    r("country", "Netherlands", "nl"),
    r("country", "The Netherlands", "nl"),
    r("country", "Atlantis", Dropped("unknown_country")),
    r("country", "United", Dropped("unknown_country")),  # never guess by truncating
    r("country", "Germ", Dropped("unknown_country")),
    r("country", "XX", Dropped("unknown_country")),
    r("country", "França", "fr"),  # CLDR names in other languages (generated table)
    r("country", "Deutschland", "de"),
    r("country", "España", "es"),
    r("country", "Allemagne", "de"),
    r("country", "Германия", "de"),
    r("country", "ドイツ", "de"),
    r("country", "Estados Unidos", "us"),
    r("country", "Kongo", Dropped("unknown_country")),  # two countries in two languages: not guessed
    # ---------------------------------------------------------------- external_id
    r("external_id", "  USER-123  ", "user-123"),
    r("external_id", "ABC_def-9", "abc_def-9"),
    r("external_id", 12345, "12345"),
    r("external_id", "user 123 id", "user123id"),  # whitespace removed, as capi-param-builder does
    r("external_id", "a\tb\u00a0c", "abc"),
    r("external_id", "x" * 1025, Dropped("too_long")),
    r("external_id", "d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e"),
]


# Variants where Meta's own normalizers disagree: the documented form first, then each variant (at most 3).
VARIANTS = [
    ("ct", "São Paulo", None, ["sãopaulo", "sopaulo"]),
    ("ct", "District 9", None, ["district", "district9"]),
    ("ct", "Seattle-98121", None, ["seattle", "seattle98121"]),
    ("ct", "Москва", None, ["москва"]),  # capi-param-builder computes nothing for a non-Latin city
    ("ct", "Menlo Park", None, ["menlopark"]),
    ("zp", "SW1A 1AA", "gb", ["sw1a1aa", "sw1a 1aa"]),
    ("zp", "SW1A 1AA", None, ["sw1a1aa", "sw1a 1aa"]),
    ("zp", "98121 4892", "us", ["98121"]),  # the event says US: Meta's documented 5 digits only
    # A ZIP+4 written with a space and no country: capi-param-builder keeps it as written, the server SDKs keep all
    # nine digits (tests/data/meta_oracle.json: zipCodeUtil.test.js line 264).
    ("zp", "10001 0001", None, ["10001", "10001 0001", "100010001"]),
    ("zp", "10001-0001", None, ["10001"]),  # with the dash every library agrees on the first five
    ("zp", "123459876", None, ["12345"]),  # the US rule (9 digits, no country): no variant
    ("st", "California", None, ["ca", "california"]),
    ("st", "CA", "us", ["ca", "california"]),
    ("st", "CA", None, ["ca"]),  # a code without a country: could be another country's region
    ("st", "WA", "au", ["wa"]),  # Western Australia, not Washington
    ("st", "Washington, D.C.", "us", ["dc", "washingtondc", "districtofcolumbia"]),
    ("st", "Québec", "ca", ["qc", "québec", "quebec"]),
    ("st", "Bayern", "de", ["bayern"]),
]


@pytest.mark.parametrize(("field", "value", "country", "forms"), VARIANTS)
def test_every_variant_is_sent_after_the_documented_form(field: str, value: str, country: str | None,
                                                          forms: list[str]) -> None:  # fmt: skip
    assert normalized_strings(field, value, US_MDY, country=country, today=TODAY) == forms
    user_data: dict[str, Any] = {field: value} | ({"country": country} if country else {})
    out, _ = normalize_user_data(user_data, US_MDY, TODAY)
    hashes = [hashlib.sha256(form.encode("utf-8")).hexdigest() for form in forms]
    assert out[field] == (hashes[0] if len(hashes) == 1 else hashes)


def test_variants_of_list_items_are_flattened_deduplicated_and_capped_per_input() -> None:
    out, _ = normalize_user_data({"ct": ["São Paulo", "sao paulo", "Sao-Paulo"]}, US_MDY, TODAY)
    sha = [hashlib.sha256(s.encode()).hexdigest() for s in ("sãopaulo", "sopaulo", "saopaulo")]
    assert out["ct"] == sha


def test_match_key_coverage_counts_a_field_once_whatever_its_variants() -> None:
    from capi_relay.prepare.events import match_key_count

    out, _ = normalize_user_data({"em": ["a@b.co", "c@d.co"], "ct": "São Paulo", "st": "California"}, US_MDY, TODAY)
    assert isinstance(out["ct"], list)
    assert match_key_count(out) == 1


def _id(row: Row) -> str:
    field, value, _expected, country, settings = row
    extra = f"@{country}" if country else ""
    if settings != US_MDY:
        extra += f"[{settings.default_phone_region},{settings.date_order}]"
    return f"{field}:{value!r}{extra}"


def test_the_table_is_large_enough_and_covers_every_hashed_field() -> None:
    assert len(CASES) >= 150
    assert {row[0] for row in CASES} >= {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country",
                                          "external_id"}  # fmt: skip


@pytest.mark.parametrize("row", CASES, ids=[_id(row) for row in CASES])
def test_normalized_string(row: Row) -> None:
    # Given one value of one field (and the event's country / the settings)
    field, value, expected, country, settings = row
    # When it is normalized
    if isinstance(expected, Dropped):
        # Then it is dropped, with the expected reason
        with pytest.raises(Invalid) as caught:
            normalized_string(field, value, settings, country=country, today=TODAY)
        assert caught.value.reason == expected.reason
    else:
        # Then exactly this string is what gets hashed
        assert normalized_string(field, value, settings, country=country, today=TODAY) == expected


@pytest.mark.parametrize("row", CASES, ids=[_id(row) for row in CASES])
def test_the_pipeline_sends_the_sha256_of_that_string_or_drops_the_field(row: Row) -> None:
    # Given the same value inside a user_data object (with the country, if any)
    field, value, expected, country, settings = row
    user_data: dict[str, Any] = {field: value}
    if country is not None and field != "country":
        user_data["country"] = country
    # When user_data is normalized
    out, drops = normalize_user_data(user_data, settings, TODAY)
    # Then the field is the SHA-256 of the expected string (first, when variants follow it: a list), or absent
    # with its drop counted
    if isinstance(expected, Dropped):
        assert field not in out
        assert Drop(field, expected.reason) in drops
    else:
        forms = normalized_strings(field, value, settings, country=country, today=TODAY)
        assert forms[0] == expected
        hashes = [hashlib.sha256(form.encode("utf-8")).hexdigest() for form in forms]
        assert out[field] == (hashes[0] if len(hashes) == 1 else hashes)
        assert EMPTY_SHA256 not in hashes


# Meta's published vectors (meta-capi.md A4: first 8 and last 6 hex digits), through the whole pipeline.
META_VECTORS = [
    ("em", "John_Smith@gmail.com", "62a14e44", "a0f62f"),
    ("ph", "(650)555-1212", "e323ec62", "ab3176"),
    ("fn", "Mary", "6915771b", "49f4ec"),
    ("fn", "Valéry", "08e1996b", "17149c"),
    ("fn", "Vale\u0301ry", "08e1996b", "17149c"),  # decomposed input hashes like the composed one
    ("ln", "정", "8fa8cd9c", "51db14"),
    ("db", "2/16/1997", "01acdbf6", "f40f0c"),
    ("db", "1997-02-16", "01acdbf6", "f40f0c"),
    ("country", "United States", "79adb2a2", "904621"),
    ("country", "US", "79adb2a2", "904621"),
]


@pytest.mark.parametrize(("field", "value", "head", "tail"), META_VECTORS)
def test_meta_published_hash_vectors(field: str, value: str, head: str, tail: str) -> None:
    out, drops = normalize_user_data({field: value}, US_MDY, TODAY)
    assert drops == []
    assert out[field].startswith(head)
    assert out[field].endswith(tail)
    assert len(out[field]) == 64


# Full SHA-256 values, written out (not recomputed) for a sample of rows.
FULL_HASHES = [
    ("em", "John_Smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"),
    ("ph", "(650)555-1212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    ("country", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
    ("ge", "Female", "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"),
    ("ge", "male", "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
]


@pytest.mark.parametrize(("field", "value", "digest"), FULL_HASHES)
def test_full_sha256_values(field: str, value: str, digest: str) -> None:
    out, _ = normalize_user_data({field: value}, US_MDY, TODAY)
    assert out[field] == digest


# ------------------------------------------------------------------ general rules (lists, hashes, keys)
SHA = "62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F"
PB = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f.AQICAQEA"


def test_lists_are_normalized_item_by_item_deduplicated_in_order_and_empties_dropped() -> None:
    out, drops = normalize_user_data({"em": ["B@x.com", " b@X.com ", "", "a@x.com", "bad"]}, US_MDY, TODAY)
    sha = [hashlib.sha256(s.encode()).hexdigest() for s in ("b@x.com", "a@x.com")]
    assert out["em"] == sha
    assert Drop("em", "empty") in drops
    assert Drop("em", "invalid_email") in drops


def test_a_list_that_ends_empty_drops_the_field() -> None:
    out, drops = normalize_user_data({"fn": ["", "...", "  "], "em": []}, US_MDY, TODAY)
    assert out == {}
    assert drops.count(Drop("fn", "empty")) == 3
    assert Drop("em", "empty") in drops


def test_a_single_value_that_normalizes_to_empty_drops_the_field() -> None:
    out, drops = normalize_user_data({"ct": "123", "fn": ""}, US_MDY, TODAY)
    assert out == {}
    assert drops == [Drop("ct", "empty"), Drop("fn", "empty")]


def test_sha256_input_is_lower_cased_and_passed_through_in_every_hashed_field() -> None:
    fields = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
    out, drops = normalize_user_data(dict.fromkeys(fields, f"  {SHA} "), US_MDY, TODAY)
    assert drops == []
    assert out == dict.fromkeys(fields, SHA.lower())


def test_param_builder_hash_with_token_is_sent_verbatim() -> None:
    token2 = PB.split(".", maxsplit=1)[0].upper() + ".Ab"
    out, drops = normalize_user_data({"em": PB, "ph": token2}, US_MDY, TODAY)
    assert drops == []
    assert out == {"em": PB, "ph": token2}  # neither the hex nor the base64url token is lower-cased


def test_param_builder_form_with_a_wrong_token_length_is_not_a_hash() -> None:
    out, drops = normalize_user_data({"em": PB.split(".", maxsplit=1)[0] + ".ABC"}, US_MDY, TODAY)
    assert out == {}
    assert drops == [Drop("em", "invalid_email")]


def test_md5_is_dropped_except_in_external_id_where_it_is_a_raw_id_and_hashed() -> None:
    md5 = "D41D8CD98F00B204E9800998ECF8427E"
    out, drops = normalize_user_data({"em": md5, "fn": md5, "external_id": md5}, US_MDY, TODAY)
    assert drops == [Drop("em", "md5_hash"), Drop("fn", "md5_hash")]
    assert out == {"external_id": hashlib.sha256(md5.lower().encode()).hexdigest()}


def test_unknown_user_data_keys_are_dropped_and_counted() -> None:
    out, drops = normalize_user_data({"email": "a@b.com", "em": "a@b.com", "f5first": "john"}, US_MDY, TODAY)
    assert list(out) == ["em"]
    assert drops == [Drop("user_data", "unknown_key"), Drop("user_data", "unknown_key")]


def test_the_event_country_sets_the_phone_region_and_the_zip_rule() -> None:
    out, _ = normalize_user_data({"country": "United Kingdom", "ph": "07911 123456"}, US_MDY, TODAY)
    assert out["ph"] == hashlib.sha256(b"447911123456").hexdigest()
    out, _ = normalize_user_data({"country": "Canada", "zp": "123456789"}, US_MDY, TODAY)
    assert out["zp"] == hashlib.sha256(b"123456789").hexdigest()


def test_a_prehashed_country_still_sets_the_phone_region() -> None:
    gb = hashlib.sha256(b"gb").hexdigest()
    out, drops = normalize_user_data({"country": gb, "ph": "07911 123456"}, US_MDY, TODAY)
    assert drops == []
    assert out == {"country": gb, "ph": hashlib.sha256(b"447911123456").hexdigest()}


def test_never_hashed_fields_keep_their_case_and_lose_only_surrounding_whitespace() -> None:
    ua = "  Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)  "
    fbc = "fb.1.1554763741205.AbCdEfGhIjKlMnOp"
    user_data = {"client_user_agent": ua, "fbc": f" {fbc}\n", "fbp": "fb.2.1596403881668.1116446470",
                 "client_ip_address": " 2001:DB8::1 ", "madid": "AbC-123", "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
                 "lead_id": 123456789012345, "anon_id": "XyZ"}  # fmt: skip
    out, drops = normalize_user_data(user_data, US_MDY, TODAY)
    assert drops == []
    assert out == {"client_user_agent": ua.strip(), "fbc": fbc, "fbp": "fb.2.1596403881668.1116446470",
                   "client_ip_address": "2001:DB8::1", "madid": "AbC-123", "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
                   "lead_id": 123456789012345, "anon_id": "XyZ"}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("203.0.113.7", True),
        ("2001:db8::1", True),
        ("::ffff:192.0.2.1", True),
        ("256.1.1.1", False),
        ("1.2.3", False),
        ("01.2.3.4", False),
        ("not an ip", False),
        ("1.2.3.4, 5.6.7.8", False),  # an X-Forwarded-For chain is not an IP
    ],
)
def test_client_ip_address_must_parse(value: str, ok: bool) -> None:
    out, drops = normalize_user_data({"client_ip_address": value}, US_MDY, TODAY)
    assert (out == {"client_ip_address": value}) is ok
    assert (drops == [Drop("client_ip_address", "invalid_ip")]) is not ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("fb.1.1554763741205.AbCdEfGhIjKlMnOp", True),
        ("fb.1.1554763741.AbCdEf", True),  # 10-digit time
        ("fb.0.1554763741205.123456789", True),
        ("fb.1.1554763741205.AbCdEf.Bg", True),  # param-builder 5th part, 2 chars
        ("fb.1.1554763741205.AbCdEf.AQICAQEA", True),  # 8 chars
        ("fb.1.1554763741205.AbCdEf.ABC", False),  # 3 chars
        ("fb.1.155476374.AbCdEf", False),  # 9-digit time
        ("fb.12.1554763741205.AbCdEf", False),
        ("FB.1.1554763741205.AbCdEf", False),
        ("fb.1.1554763741205.", False),
        ("fb.1.1554763741205.Ab Cd", False),
        ("fb.١.1554763741205.AbCdEf", False),  # Arabic-Indic digit
        ("IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB", False),  # a bare fbclid
    ],
)
def test_fbc_and_fbp_format(value: str, ok: bool) -> None:
    for field in ("fbc", "fbp"):
        out, drops = normalize_user_data({field: value}, US_MDY, TODAY)
        assert (out == {field: value}) is ok
        assert (drops == [Drop(field, "invalid_format")]) is not ok


def test_wrong_json_types_are_dropped_as_bad_type_never_raised() -> None:
    user_data = {"em": {"a": 1}, "ph": [["16505551212"]], "fn": True, "ln": 1.5e400, "client_ip_address": 7,
                 "client_user_agent": ["ua-1", "ua-2"], "ct": None}  # fmt: skip
    out, drops = normalize_user_data(user_data, US_MDY, TODAY)
    assert out == {}
    assert drops == [Drop("em", "bad_type"), Drop("ph", "bad_type"), Drop("fn", "bad_type"), Drop("ln", "bad_type"),
                     Drop("client_ip_address", "bad_type"), Drop("client_user_agent", "multiple_values")]  # fmt: skip


def test_a_one_item_list_in_a_never_hashed_field_is_unwrapped() -> None:
    out, drops = normalize_user_data({"client_user_agent": ["UA/1", " UA/1 "]}, US_MDY, TODAY)
    assert (out, drops) == ({"client_user_agent": "UA/1"}, [])


def test_user_data_that_is_not_an_object() -> None:
    assert normalize_user_data(["em"], US_MDY, TODAY) == ({}, [Drop("user_data", "bad_type")])
