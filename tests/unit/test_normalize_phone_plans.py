"""The national-number shortcut of rules.py (``_national_shortcut``) gives exactly what phonenumbers gives.

phonenumbers stays the reference and the fallback: for each region the shortcut covers, every string of digits it
decides (all two-digit leading patterns, every length up to phonenumbers' longest national number, written with the
trunk prefix, without it, and after the country code; then hypothesis' random digit strings) must come out as
``_parse_national`` (phonenumbers.parse + is_possible + E.164) makes it. What it refuses goes to phonenumbers.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_relay.prepare import rules
from capi_relay.prepare.normalize import normalized_string
from capi_relay.settings import NormalizationSettings

PLANS = sorted(rules._NATIONAL_PLANS)


def _phonenumbers(digits: str, region: str) -> str | None:
    try:
        return rules._parse_national(digits, region)
    except rules.Invalid:
        return None


def _candidates(region: str, rng: random.Random) -> list[str]:
    """Digit strings of every two-digit leading pattern and national length 1-17, in the three written forms."""
    code = rules._NATIONAL_PLANS[region][0]
    out = []
    for length in range(1, 18):
        for lead in range(100):
            national = (f"{lead:02d}" + "".join(rng.choices("0123456789", k=length)))[:length]
            out += [national, "0" + national, code + national]
    for refused in rules._NATIONAL_PLANS[region][3]:
        out += [refused + "".join(rng.choices("0123456789", k=n)) for n in range(2, 8)]
    return out


@pytest.mark.parametrize("region", PLANS)
def test_the_plan_of_each_region_is_phonenumbers_metadata(region: str) -> None:
    # Given the region's plan; Then its code, trunk prefix and lengths are phonenumbers' (the table cannot drift)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    assert metadata.general_desc is not None
    code, trunk, lengths, _ = rules._NATIONAL_PLANS[region]
    assert code == str(metadata.country_code)
    # the trunk prefix is the plan's, removed without a transform (Brazil's carrier codes: its trunk form is refused)
    assert trunk in {"", metadata.national_prefix}
    assert not trunk or metadata.national_prefix_transform_rule is None
    assert lengths == frozenset(metadata.general_desc.possible_length)
    assert str(metadata.international_prefix).startswith("0")  # an IDD starts with 0: refused without a trunk prefix


@pytest.mark.parametrize("region", PLANS)
def test_the_shortcut_gives_what_phonenumbers_gives_for_every_leading_pattern_and_length(region: str) -> None:
    # Given every leading pattern and length of the region's numbers; When the shortcut decides one; Then
    # phonenumbers gives the same digits
    rng = random.Random(region)
    decided = 0
    for digits in _candidates(region, rng):
        found = rules._national_shortcut(digits, region)
        if found is not None:
            decided += 1
            assert found == _phonenumbers(digits, region), (region, digits)
    assert decided >= 50  # the shortcut does decide the region's numbers


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(PLANS), st.from_regex(r"[0-9]{1,18}", fullmatch=True))
def test_the_shortcut_gives_what_phonenumbers_gives_for_any_digits(region: str, digits: str) -> None:
    found = rules._national_shortcut(digits, region)
    if found is not None:
        assert found == _phonenumbers(digits, region)


@pytest.mark.parametrize(
    ("country", "written", "e164"),
    [
        ("gb", "07911 123456", "447911123456"),
        ("gb", "020 7946 0958", "442079460958"),
        ("de", "030 1234567", "49301234567"),
        ("de", "0151 23456789", "4915123456789"),
        ("fr", "06 12 34 56 78", "33612345678"),
        ("br", "(11) 91234-5678", "5511912345678"),
        ("es", "612 34 56 78", "34612345678"),
        ("mx", "55 1234 5678", "525512345678"),
        ("in", "098765 43210", "919876543210"),
    ],
)
def test_the_usual_national_shapes_are_decided_by_the_shortcut(country: str, written: str, e164: str) -> None:
    # Given a number as people in the country write it; Then the shortcut decides it, as phonenumbers would
    digits = "".join(ch for ch in written if ch.isdigit())
    assert rules._national_shortcut(digits, country.upper()) == e164
    assert _phonenumbers(digits, country.upper()) == e164
    assert normalized_string("ph", written, NormalizationSettings(), country) == e164
