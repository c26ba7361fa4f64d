"""Meta's own normalization tests as an executable oracle (tests/data/meta_oracle.json).

Every input -> expected pair read from Meta's libraries' unit tests (scripts/extract_meta_oracle.py: capi-param-builder
JS and PHP, the Java, Ruby and Node business SDKs; each pair names its repository, commit, path and line) goes
through the code the Lambda runs (normalize_user_data, which prepare_event calls) and gets exactly one outcome:

- ``agree``: the first value sent is the hash of Meta's expected string (``agree_nothing_sent``: both send
  nothing);
- ``variant``: Meta's expected string is one of the variants sent after the documented form
  (normalization.md, "Variants where Meta's own normalizers disagree");
- a deliberate difference named below, with its reason (Meta's doc says otherwise, or the library has a bug);
- ``not_a_user_data_field``: the library's own keys the relay does not have (currency, f5first, dobd ...).

A pair that fits none of them fails the test: nothing is skipped silently. The counts per field and outcome
are printed (and stated in docs/normalization-rules.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from capi_relay.prepare.normalize import normalize_user_data, normalized_strings
from capi_relay.prepare.rules import HASHED_FIELDS, Invalid
from capi_relay.settings import NormalizationSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "meta_oracle.json"
TODAY = date(2026, 9, 21)
SETTINGS = NormalizationSettings()  # DEFAULT_PHONE_REGION=US, DATE_ORDER=MDY: what the suites assume
HEX64 = re.compile(r"[0-9a-fA-F]{64}")
HEX32 = re.compile(r"[0-9a-fA-F]{32}")
EXT = re.compile(r"(?i)ext|x|#|内線")


@dataclass(frozen=True)
class Case:
    pair: dict[str, Any]
    sent: list[str]  # the hashes sent for the field, documented form first
    ours: list[str] | None  # the strings hashed (None: dropped)
    drop: str | None  # the reason the pipeline dropped the value

    @property
    def field(self) -> str:
        return str(self.pair["field"])

    @property
    def input(self) -> str:
        return str(self.pair["input"])

    @property
    def expected(self) -> str | None:
        value = self.pair["expected"]
        return None if value is None else str(value)

    @property
    def letters(self) -> str:
        return re.sub(r"[^a-z]", "", self.input.lower())


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run(pair: dict[str, Any]) -> Case:
    field = pair["field"]
    if field not in HASHED_FIELDS:
        return Case(pair, [], None, None)
    out, drops = normalize_user_data({field: pair["input"]}, SETTINGS, TODAY)
    sent = out.get(field)
    hashes = [] if sent is None else [sent] if isinstance(sent, str) else list(sent)
    drop = next((d.reason for d in drops if d.field == field), None)  # what the pipeline counted
    try:
        return Case(pair, hashes, normalized_strings(field, pair["input"], SETTINGS, today=TODAY), drop)
    except Invalid as exc:
        return Case(pair, hashes, None, drop or exc.reason)


def _is_real_date(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return len(text) == 8 and text.isdigit()


def _has_letter_between_digits(text: str) -> bool:
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    return bool(digits) and any(unicodedata.category(ch)[0] == "L" for ch in text[digits[0] : digits[-1]])


# (outcome, reason, predicate). Evaluated in order after agree/variant; the first that holds names the outcome.
DIFFERENCES: list[tuple[str, str, Callable[[Case], bool]]] = [
    ("md5_not_forwarded", "doc: Meta matches SHA-256; capi-param-builder forwards a 32-hex MD5 as if hashed",
     lambda c: c.drop == "md5_hash" and c.expected is not None and c.expected.lower() == c.input.strip().lower()),
    ("ph_country_code_added", "doc: a phone must include its country code; the library sends the national "
     "number as typed (the relay adds the region's code: DEFAULT_PHONE_REGION=US here)",
     lambda c: c.field == "ph" and c.ours is not None and c.expected is not None and c.ours[0] != c.expected
     and c.ours[0].endswith(c.expected) and 1 <= len(c.ours[0]) - len(c.expected) <= 3),
    ("ph_extension_cut", "doc: cut the extension; the library glues its digits to the number",
     lambda c: c.field == "ph" and c.ours is not None and c.expected is not None and bool(EXT.search(c.input))
     and any(c.expected.startswith(c.ours[0][k:]) for k in range(4))),
    ("ph_not_7_to_15_digits", "E.164 (doc: the number with its country code) has 7 to 15 digits; the library "
     "sends any run of digits ('911', '1', a 23-digit string)",
     lambda c: c.field == "ph" and c.ours is None and c.expected is not None and not 7 <= len(c.expected) <= 15),
    ("ph_letters_between_digits", "letters between digits (vanity numbers, 'key: value' text, hex strings): the "
     "library keeps the digits of several values glued; the relay refuses (never another person's number)",
     lambda c: c.field == "ph" and c.ours is None and _has_letter_between_digits(c.input)),
    ("ph_leading_zeros_kept_unless_valid", "extra leading zeros are removed only before the region's country code "
     "and when a valid number (phonenumbers) is left; the library strips them from any digits ('07544 538485' "
     "would become Florida's 754-453-8485; '01(650)123-4567': exchange 123 does not exist)",
     lambda c: c.field == "ph" and c.drop == "invalid_phone" and c.input.strip().startswith("0")
     and not _has_letter_between_digits(c.input)),
    ("ph_not_a_number_of_the_region", "7-15 digits that are no possible number of the region (a date, a ZIP+4): "
     "phonenumbers refuses them, the library sends them",
     lambda c: c.field == "ph" and c.drop == "invalid_phone" and c.expected is not None
     and not _has_letter_between_digits(c.input)),
    ("ph_unicode_digits_folded", "normalization.md: full-width and other Unicode digits are digits (NFKC); the "
     "library keeps ASCII 0-9 only and drops or truncates the number",
     lambda c: c.field == "ph" and c.ours is not None and not c.input.isascii()),
    ("db_formats_the_doc_accepts", "doc/normalization.md accept month names and full-width digits; "
     "capi-param-builder's JS reads digit groups only",
     lambda c: c.field == "db" and c.expected is None and c.ours is not None),
    ("db_year_before_1900", "normalization.md: year >= 1900; the library accepts 1800-1899",
     lambda c: c.field == "db" and c.ours is None and c.expected is not None and c.expected[:2] == "18"),
    ("db_not_a_real_date", "the library does not check the calendar ('19000229', '15011990' sent as is)",
     lambda c: c.field == "db" and c.ours is None and c.expected is not None and not _is_real_date(c.expected)),
    ("letters_of_any_script_kept", "doc: Unicode letters are kept (Meta's Java SDK: 'sanjosé'); "
     "capi-param-builder keeps ASCII only and drops the value",
     lambda c: c.field in ("ct", "st") and c.expected is None and c.ours is not None
     and any(ord(ch) > 127 for ch in c.ours[0])),
    ("ct_digits_dropped_not_the_city", "doc: a city is its letters; capi-param-builder refuses a city that "
     "starts with a digit ('123 Main City')",
     lambda c: c.field == "ct" and c.expected is None and c.ours is not None and c.input.strip()[:1].isdigit()),
    ("ge_letters_only", "normalization.md compares the letters of the value ('ma le' -> 'male' -> m); the "
     "library compares the trimmed string",
     lambda c: c.field == "ge" and c.expected is None and c.ours is not None),
    ("truncated_to_2_letters", "doc: a state/country is a code or a known name, never truncated: the library "
     "keeps the first 2 letters (or of a name found inside a longer word), another region's code ('UAE' -> 'ua' "
     "= Ukraine, 'Québec' -> 'qu')",
     lambda c: c.field in ("country", "st") and c.expected is not None and len(c.expected) <= 2
     and sha(c.expected) not in c.sent and (c.letters.startswith(c.expected) or c.expected in _contained_codes(c))),
    ("country_name_the_library_lacks", "doc: country names map to their code (CLDR names in other languages, "
     "generated); the Java SDK refuses names, capi-param-builder knows English ones",
     lambda c: c.field == "country" and c.expected is None and c.ours is not None),
    ("em_shape_only", "doc: an email is trimmed and lower-cased; capi-param-builder also refuses '_' in the "
     "domain (such an address matches no one, hashing it costs nothing)",
     lambda c: c.field == "em" and c.expected is None and c.ours is not None and "_" in c.input.split("@")[-1]),
    ("name_symbols_removed", "normalization.md: symbols and emoji are removed from names; capi-param-builder "
     "removes ASCII punctuation only",
     lambda c: c.field in ("fn", "ln") and c.ours is not None and c.expected is not None
     and "".join(ch for ch in c.expected if unicodedata.category(ch)[0] in "LMN" and not "\ufe00" <= ch <= "\ufe0f")
     == c.ours[0]),
]  # fmt: skip


def _contained_codes(case: Case) -> set[str]:
    from capi_relay.prepare.rules import _STATE_NAMES  # the table the library's substring match uses

    return {code for name, code in _STATE_NAMES.items() if len(name) > 2 and name in case.letters}


def outcome(case: Case) -> str:
    if case.field not in HASHED_FIELDS:
        return "not_a_user_data_field"
    expected = case.expected
    if expected is None:
        if not case.sent:
            return "agree_nothing_sent"
    else:
        want = expected.lower() if HEX64.fullmatch(expected) else sha(expected)
        if case.sent and case.sent[0] == want:
            return "agree"
        if want in case.sent[1:]:
            return "variant"
    for name, _reason, applies in DIFFERENCES:
        if applies(case):
            return name
    return "UNEXPLAINED"


@pytest.fixture(scope="module")
def oracle() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def outcomes(oracle: dict[str, Any]) -> list[tuple[Case, str]]:
    return [(case, outcome(case)) for case in map(run, oracle["pairs"])]


def test_every_pair_agrees_is_a_sent_variant_or_a_listed_deliberate_difference(
    outcomes: list[tuple[Case, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    by_outcome = Counter(name for _, name in outcomes)
    by_field = Counter((case.field, name) for case, name in outcomes)
    with capsys.disabled():
        print(f"\nMeta oracle: {len(outcomes)} pairs")
        for name, count in by_outcome.most_common():
            print(f"  {name:36} {count}")
        fields = sorted({case.field for case, _ in outcomes})
        for field in fields:
            row = {name: n for (f, name), n in by_field.items() if f == field}
            print(f"  {field:18} " + ", ".join(f"{k}={v}" for k, v in sorted(row.items())))
    unexplained = [
        f"{c.pair['repo']}@{c.pair['commit'][:7]}:{c.pair['path']}:{c.pair['line']} {c.field} {c.input!r} -> "
        f"{c.expected!r}; relay: {c.ours or c.drop}"
        for c, name in outcomes
        if name == "UNEXPLAINED"
    ]
    assert not unexplained, "\n".join(unexplained)


def test_most_pairs_agree_and_every_listed_difference_is_still_needed(outcomes: list[tuple[Case, str]]) -> None:
    by_outcome = Counter(name for _, name in outcomes)
    hashed = sum(n for name, n in by_outcome.items() if name != "not_a_user_data_field")
    assert by_outcome["agree"] + by_outcome["agree_nothing_sent"] + by_outcome["variant"] >= 0.75 * hashed
    unused = [name for name, _reason, _ in DIFFERENCES if by_outcome[name] == 0]
    assert not unused, f"deliberate differences no pair needs any more: {unused}"


def test_the_oracle_names_the_source_of_every_pair(oracle: dict[str, Any]) -> None:
    assert set(oracle["sources"]) == {
        "facebook/capi-param-builder",
        "facebook/facebook-java-business-sdk",
        "facebook/facebook-ruby-business-sdk",
        "facebook/facebook-nodejs-business-sdk",
    }
    assert len(oracle["pairs"]) >= 1000
    for pair in oracle["pairs"]:
        assert oracle["sources"][pair["repo"]] == pair["commit"]
        assert pair["path"]
        assert pair["line"] >= 1
        assert isinstance(pair["input"], str)


def test_where_meta_s_libraries_disagree_with_each_other_every_variant_is_sent(
    outcomes: list[tuple[Case, str]],
) -> None:
    # Pairs whose expected string differs between two of Meta's libraries for the same input and field.
    expected: dict[tuple[str, str], set[str]] = {}
    for case, _ in outcomes:
        if case.expected is not None and case.field in HASHED_FIELDS:
            expected.setdefault((case.field, case.input), set()).add(case.expected)
    sent = {(case.field, case.input): set(case.sent) for case, _ in outcomes}
    disagreements = {key: forms for key, forms in expected.items() if len(forms) > 1}
    for key, forms in disagreements.items():
        reasons = {name for case, name in outcomes if (case.field, case.input) == key}
        if reasons <= {"agree", "agree_nothing_sent", "variant"}:
            assert {sha(form) for form in forms} <= sent[key], key
